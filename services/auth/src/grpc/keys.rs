//! KeyDirectoryService handlers.

use std::sync::Arc;

use guardyn_common::caller;
use guardyn_proto::guardyn::auth::v1 as pb;
use guardyn_proto::guardyn::auth::v1::key_directory_service_server::KeyDirectoryService;
use tonic::{Request, Response, Status};

use super::convert::{self, counts};
use crate::core::Auth;
use crate::limits::take;
use crate::prekeys::PreKeyUpload;

/// The KeyDirectoryService implementation.
#[derive(Clone, Debug)]
pub struct KeysApi(pub Arc<Auth>);

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
            .upload_prekeys(&c.account_id, c.device_id, upload)
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
        let acc = convert::account_id(&r.account_id, "account_id")?;
        if r.device_id != 0 {
            convert::device_id(r.device_id, "device_id")?;
        }
        take(
            &self.0.limits.prekey_fetch_per_target,
            &(c.account_id.clone(), acc.clone()),
        )?;
        let (bundles, unavailable) = self
            .0
            .fetch_bundles(&c.account_id, c.device_id, &acc, r.device_id)
            .await?;
        let bundles = bundles
            .into_iter()
            .map(|b| pb::DeviceBundle {
                device_id: b.device_id,
                registration_id: b.registration_id,
                identity_key: b.identity_key,
                signed_prekey: Some(pb::SignedPreKey {
                    key_id: b.signed.key_id,
                    public_key: b.signed.public_key,
                    signature: b.signed.signature,
                }),
                kem_prekey: Some(pb::KemPreKey {
                    key_id: b.kem.key_id,
                    public_key: b.kem.public_key,
                    signature: b.kem.signature,
                }),
                kem_prekey_is_last_resort: b.kem_is_last_resort,
                one_time_prekey: b.ec.map(|k| pb::OneTimePreKey {
                    key_id: k.key_id,
                    public_key: k.public_key,
                }),
            })
            .collect();
        Ok(Response::new(pb::GetPreKeyBundleResponse {
            bundles,
            unavailable_device_ids: unavailable,
        }))
    }

    async fn get_pre_key_counts(
        &self,
        request: Request<pb::GetPreKeyCountsRequest>,
    ) -> Res<pb::GetPreKeyCountsResponse> {
        let c = caller(&request)?.clone();
        let n = self.0.prekey_counts(&c.account_id, c.device_id).await?;
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
            .upload_key_packages(&c.account_id, c.device_id, r.key_packages, r.last_resort)
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
        let acc = convert::account_id(&r.account_id, "account_id")?;
        for (i, id) in r.device_ids.iter().enumerate() {
            convert::device_id(*id, &format!("device_ids[{i}]"))?;
        }
        take(
            &self.0.limits.prekey_fetch_per_target,
            &(c.account_id.clone(), acc.clone()),
        )?;
        let (claimed, unavailable) = self
            .0
            .claim_key_packages(&c.account_id, c.device_id, &acc, &r.device_ids)
            .await?;
        Ok(Response::new(pb::ClaimKeyPackagesResponse {
            key_packages: claimed
                .into_iter()
                .map(|k| pb::ClaimedKeyPackage {
                    device_id: k.device_id,
                    key_package: k.bytes,
                    last_resort: k.last_resort,
                })
                .collect(),
            unavailable_device_ids: unavailable,
        }))
    }

    async fn get_key_package_count(
        &self,
        request: Request<pb::GetKeyPackageCountRequest>,
    ) -> Res<pb::GetKeyPackageCountResponse> {
        let c = caller(&request)?.clone();
        let (n, lr) = self
            .0
            .key_package_counts(&c.account_id, c.device_id)
            .await?;
        Ok(Response::new(pb::GetKeyPackageCountResponse {
            one_time_count: n,
            has_last_resort: lr,
        }))
    }
}
