//! KeyDirectoryService handlers.

use std::sync::Arc;

use guardyn_common::caller;
use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_proto::guardyn::auth::v1 as pb;
use guardyn_proto::guardyn::auth::v1::key_directory_service_server::KeyDirectoryService;
use tonic::{Request, Response, Status};

use super::convert::{self, counts};
use crate::core::Core;
use crate::prekeys::PreKeyUpload;

/// The KeyDirectoryService implementation.
#[derive(Clone, Debug)]
pub struct KeysApi(pub Arc<Core>);

type Res<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl KeyDirectoryService for KeysApi {
    async fn upload_pre_keys(
        &self,
        request: Request<pb::UploadPreKeysRequest>,
    ) -> Res<pb::UploadPreKeysResponse> {
        let c = caller(&request)?.clone();
        let upload = PreKeyUpload::from(request.into_inner());
        let n = self
            .0
            .upload_prekeys(c.account_id, c.device_id, upload)
            .await?;
        Ok(Response::new(pb::UploadPreKeysResponse {
            counts: Some(counts(n)),
        }))
    }

    async fn get_pre_key_bundle(
        &self,
        request: Request<pb::GetPreKeyBundleRequest>,
    ) -> Res<pb::GetPreKeyBundleResponse> {
        let c = caller(&request)?.clone();
        let r = request.into_inner();
        let acc = AccountId::parse_field("account_id", &r.account_id)?;
        // 0 = every device except the caller's.
        let device = match r.device_id {
            0 => None,
            id => Some(DeviceId::parse_field("device_id", id)?),
        };
        let (bundles, unavailable) = self
            .0
            .fetch_bundles(c.account_id, c.device_id, acc, device)
            .await?;
        Ok(Response::new(pb::GetPreKeyBundleResponse {
            bundles: bundles.into_iter().map(convert::bundle).collect(),
            unavailable_device_ids: convert::device_ids(unavailable),
        }))
    }

    async fn get_pre_key_counts(
        &self,
        request: Request<pb::GetPreKeyCountsRequest>,
    ) -> Res<pb::GetPreKeyCountsResponse> {
        let c = caller(&request)?.clone();
        let n = self.0.prekey_counts(c.account_id, c.device_id).await?;
        Ok(Response::new(pb::GetPreKeyCountsResponse {
            counts: Some(counts(n)),
        }))
    }

    async fn upload_key_packages(
        &self,
        request: Request<pb::UploadKeyPackagesRequest>,
    ) -> Res<pb::UploadKeyPackagesResponse> {
        let c = caller(&request)?.clone();
        let r = request.into_inner();
        let (n, lr) = self
            .0
            .upload_key_packages(c.account_id, c.device_id, r.key_packages, r.last_resort)
            .await?;
        Ok(Response::new(pb::UploadKeyPackagesResponse {
            one_time_count: n,
            has_last_resort: lr,
        }))
    }

    async fn claim_key_packages(
        &self,
        request: Request<pb::ClaimKeyPackagesRequest>,
    ) -> Res<pb::ClaimKeyPackagesResponse> {
        let c = caller(&request)?.clone();
        let r = request.into_inner();
        let acc = AccountId::parse_field("account_id", &r.account_id)?;
        let device_ids = r
            .device_ids
            .iter()
            .enumerate()
            .map(|(i, id)| DeviceId::parse_field(&format!("device_ids[{i}]"), *id))
            .collect::<Result<Vec<_>, _>>()?;
        let (claimed, unavailable) = self
            .0
            .claim_key_packages(c.account_id, c.device_id, acc, &device_ids)
            .await?;
        Ok(Response::new(pb::ClaimKeyPackagesResponse {
            key_packages: claimed.into_iter().map(convert::claimed).collect(),
            unavailable_device_ids: convert::device_ids(unavailable),
        }))
    }

    async fn get_mls_signature_keys(
        &self,
        request: Request<pb::GetMlsSignatureKeysRequest>,
    ) -> Res<pb::GetMlsSignatureKeysResponse> {
        let c = caller(&request)?.clone();
        let r = request.into_inner();
        let acc = AccountId::parse_field("account_id", &r.account_id)?;
        let keys = self.0.mls_signature_keys(c.account_id, acc).await?;
        Ok(Response::new(pb::GetMlsSignatureKeysResponse {
            keys: keys
                .into_iter()
                .map(|(d, signature_key)| pb::DeviceMlsKey {
                    device_id: d.get(),
                    signature_key,
                })
                .collect(),
        }))
    }

    async fn get_key_package_count(
        &self,
        request: Request<pb::GetKeyPackageCountRequest>,
    ) -> Res<pb::GetKeyPackageCountResponse> {
        let c = caller(&request)?.clone();
        let (n, lr) = self.0.key_package_counts(c.account_id, c.device_id).await?;
        Ok(Response::new(pb::GetKeyPackageCountResponse {
            one_time_count: n,
            has_last_resort: lr,
        }))
    }
}
