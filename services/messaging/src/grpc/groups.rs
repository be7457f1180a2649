//! `GroupService` over gRPC.

use guardyn_common::caller;
use guardyn_common::wire::timestamp;
use guardyn_proto::guardyn::messaging::v1::{
    CreateGroupRequest, CreateGroupResponse, GetGroupInfoRequest, GetGroupInfoResponse,
    GetGroupRequest, GetGroupResponse, GetRatchetTreeRequest, GetRatchetTreeResponse,
    LeaveGroupRequest, LeaveGroupResponse, SendCommitRequest, SendCommitResponse,
    SendGroupMessageRequest, SendGroupMessageResponse, SendProposalRequest, SendProposalResponse,
    group_service_server::GroupService,
};
use tonic::{Request, Response, Status};

use super::{GroupApi, convert};
use crate::error::MessagingError;
use crate::groups::{MAX_LEAVE_PROPOSAL, check_size};

#[tonic::async_trait]
impl GroupService for GroupApi {
    async fn create_group(
        &self,
        request: Request<CreateGroupRequest>,
    ) -> Result<Response<CreateGroupResponse>, Status> {
        let who = caller(&request)?.clone();
        let r = request.into_inner();
        let group = convert::group_id(&r.group_id)?;
        let g = self
            .core
            .create_group(who.account_id, who.device_id, &group, r.group_info)
            .await?;
        Ok(Response::new(CreateGroupResponse {
            group: Some(convert::group(&group, &g)),
        }))
    }

    async fn get_group(
        &self,
        request: Request<GetGroupRequest>,
    ) -> Result<Response<GetGroupResponse>, Status> {
        let who = caller(&request)?.clone();
        let group = convert::group_id(&request.into_inner().group_id)?;
        let g = self.core.load_group(&group).await?.state;
        if g.leaf_of(who.account_id, who.device_id).is_none() {
            return Err(MessagingError::NotMember.into());
        }
        Ok(Response::new(GetGroupResponse {
            group: Some(convert::group(&group, &g)),
        }))
    }

    async fn send_commit(
        &self,
        request: Request<SendCommitRequest>,
    ) -> Result<Response<SendCommitResponse>, Status> {
        let who = caller(&request)?.clone();
        let commit = convert::commit(request.into_inner())?;
        let (epoch, at_ms) = self
            .core
            .send_commit(who.account_id, who.device_id, commit)
            .await?;
        Ok(Response::new(SendCommitResponse {
            epoch,
            server_timestamp: Some(timestamp(at_ms)),
        }))
    }

    async fn send_proposal(
        &self,
        request: Request<SendProposalRequest>,
    ) -> Result<Response<SendProposalResponse>, Status> {
        let who = caller(&request)?.clone();
        let r = request.into_inner();
        let group = convert::group_id(&r.group_id)?;
        check_size("proposal", &r.proposal, self.core.cfg.max_mls_message_bytes)?;
        let now = self
            .core
            .relay_proposal(
                who.account_id,
                who.device_id,
                &group,
                r.epoch,
                "proposal",
                &r.proposal,
                false,
            )
            .await?;
        Ok(Response::new(SendProposalResponse {
            server_timestamp: Some(timestamp(now)),
        }))
    }

    async fn send_group_message(
        &self,
        request: Request<SendGroupMessageRequest>,
    ) -> Result<Response<SendGroupMessageResponse>, Status> {
        let who = caller(&request)?.clone();
        let message = convert::group_message(request.into_inner())?;
        let (at_ms, duplicate) = self
            .core
            .send_group_message(who.account_id, who.device_id, message)
            .await?;
        Ok(Response::new(SendGroupMessageResponse {
            server_timestamp: Some(timestamp(at_ms)),
            duplicate,
        }))
    }

    async fn get_group_info(
        &self,
        request: Request<GetGroupInfoRequest>,
    ) -> Result<Response<GetGroupInfoResponse>, Status> {
        let who = caller(&request)?.clone();
        let group = convert::group_id(&request.into_inner().group_id)?;
        let (epoch, group_info, ratchet_tree) = self
            .core
            .published_group_info(who.account_id, &group)
            .await?;
        Ok(Response::new(GetGroupInfoResponse {
            group_info,
            epoch,
            ratchet_tree,
        }))
    }

    async fn get_ratchet_tree(
        &self,
        request: Request<GetRatchetTreeRequest>,
    ) -> Result<Response<GetRatchetTreeResponse>, Status> {
        let who = caller(&request)?.clone();
        let r = request.into_inner();
        let group = convert::group_id(&r.group_id)?;
        let ratchet_tree = self
            .core
            .welcome_tree(who.account_id, who.device_id, &group, r.epoch)
            .await?;
        Ok(Response::new(GetRatchetTreeResponse { ratchet_tree }))
    }

    async fn leave_group(
        &self,
        request: Request<LeaveGroupRequest>,
    ) -> Result<Response<LeaveGroupResponse>, Status> {
        let who = caller(&request)?.clone();
        let r = request.into_inner();
        let group = convert::group_id(&r.group_id)?;
        check_size("remove_proposal", &r.remove_proposal, MAX_LEAVE_PROPOSAL)?;
        self.core
            .relay_proposal(
                who.account_id,
                who.device_id,
                &group,
                r.epoch,
                "remove_proposal",
                &r.remove_proposal,
                true,
            )
            .await?;
        Ok(Response::new(LeaveGroupResponse {}))
    }
}
