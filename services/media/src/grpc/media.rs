//! `MediaService` over gRPC.

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use guardyn_common::wire::timestamp;
use guardyn_common::{AccountId, MediaId, caller};
use guardyn_proto::guardyn::media::v1::{
    CompleteUploadRequest, CompleteUploadResponse, CreateUploadRequest, CreateUploadResponse,
    DeleteAvatarRequest, DeleteAvatarResponse, DeleteMediaRequest, DeleteMediaResponse,
    DownloadRequest, DownloadResponse, GetAvatarRequest, GetAvatarResponse, GetMediaInfoRequest,
    GetMediaInfoResponse, GetUploadRequest, GetUploadResponse, SetAvatarRequest, SetAvatarResponse,
    UploadChunkRequest, UploadChunkResponse, media_service_server::MediaService,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{MediaApi, convert};
use crate::model::UploadId;

type DownloadStream = Pin<Box<dyn Stream<Item = Result<DownloadResponse, Status>> + Send>>;

#[tonic::async_trait]
impl MediaService for MediaApi {
    async fn create_upload(
        &self,
        request: Request<CreateUploadRequest>,
    ) -> Result<Response<CreateUploadResponse>, Status> {
        let account = caller(&request)?.account_id;
        let new = convert::create_upload(request.into_inner(), self.core.max_blob_bytes())?;
        self.core.upload_limiter.check(&account)?;
        let s = self.core.create_upload(account, new).await?;
        Ok(Response::new(convert::created(s)))
    }

    async fn upload_chunk(
        &self,
        request: Request<UploadChunkRequest>,
    ) -> Result<Response<UploadChunkResponse>, Status> {
        let account = caller(&request)?.account_id;
        let r = request.into_inner();
        let id = UploadId::parse_field("upload_id", &r.upload_id)?;
        let committed_offset = self
            .core
            .upload_chunk(account, id, r.offset, r.data.into())
            .await?;
        Ok(Response::new(UploadChunkResponse { committed_offset }))
    }

    async fn get_upload(
        &self,
        request: Request<GetUploadRequest>,
    ) -> Result<Response<GetUploadResponse>, Status> {
        let account = caller(&request)?.account_id;
        let id = UploadId::parse_field("upload_id", &request.get_ref().upload_id)?;
        let s = self.core.get_upload(account, id).await?;
        Ok(Response::new(convert::upload_status(s)))
    }

    async fn complete_upload(
        &self,
        request: Request<CompleteUploadRequest>,
    ) -> Result<Response<CompleteUploadResponse>, Status> {
        let account = caller(&request)?.account_id;
        let id = UploadId::parse_field("upload_id", &request.get_ref().upload_id)?;
        let info = self.core.complete_upload(account, id).await?;
        Ok(Response::new(CompleteUploadResponse {
            media: Some(convert::media_info(info)),
        }))
    }

    type DownloadStream = DownloadStream;

    async fn download(
        &self,
        request: Request<DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let auth = self.core.verifier.guard_stream(caller(&request)?);
        let r = request.into_inner();
        let id = MediaId::parse_field("media_id", &r.media_id)?;
        let rx = self.core.download(id, convert::range(&r)).await?;
        let stream = ReceiverStream::new(rx).map(|piece| {
            piece
                .map(|p| DownloadResponse {
                    offset: p.offset,
                    data: p.data.to_vec(),
                })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(auth.wrap(stream))))
    }

    async fn get_media_info(
        &self,
        request: Request<GetMediaInfoRequest>,
    ) -> Result<Response<GetMediaInfoResponse>, Status> {
        caller(&request)?;
        let id = MediaId::parse_field("media_id", &request.get_ref().media_id)?;
        let info = self.core.media_info(id).await?;
        Ok(Response::new(GetMediaInfoResponse {
            media: Some(convert::media_info(info)),
        }))
    }

    async fn delete_media(
        &self,
        request: Request<DeleteMediaRequest>,
    ) -> Result<Response<DeleteMediaResponse>, Status> {
        let account = caller(&request)?.account_id;
        let id = MediaId::parse_field("media_id", &request.get_ref().media_id)?;
        self.core.delete_media(account, id).await?;
        Ok(Response::new(DeleteMediaResponse {}))
    }

    async fn set_avatar(
        &self,
        request: Request<SetAvatarRequest>,
    ) -> Result<Response<SetAvatarResponse>, Status> {
        let account = caller(&request)?.account_id;
        // Avatar changes share the per-account upload budget.
        self.core.upload_limiter.check(&account)?;
        let at = self
            .core
            .set_avatar(account, request.into_inner().image)
            .await?;
        Ok(Response::new(SetAvatarResponse {
            updated_at: Some(timestamp(at)),
        }))
    }

    async fn get_avatar(
        &self,
        request: Request<GetAvatarRequest>,
    ) -> Result<Response<GetAvatarResponse>, Status> {
        caller(&request)?;
        let r = request.into_inner();
        let account = AccountId::parse_field("account_id", &r.account_id)?;
        let a = self.core.get_avatar(account, r.thumbnail).await?;
        Ok(Response::new(GetAvatarResponse {
            png: a.png.to_vec(),
            updated_at: Some(timestamp(a.updated_ms)),
        }))
    }

    async fn delete_avatar(
        &self,
        request: Request<DeleteAvatarRequest>,
    ) -> Result<Response<DeleteAvatarResponse>, Status> {
        let account = caller(&request)?.account_id;
        self.core.delete_avatar(account).await?;
        Ok(Response::new(DeleteAvatarResponse {}))
    }
}
