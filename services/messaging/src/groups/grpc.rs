//! The gRPC edge of `GroupService`: authenticate, validate, call the core, convert.

use guardyn_common::caller;
use guardyn_proto::guardyn::messaging::v1::{
    CreateGroupRequest, CreateGroupResponse, GetGroupInfoRequest, GetGroupInfoResponse,
    GetGroupRequest, GetGroupResponse, Group, LeaveGroupRequest, LeaveGroupResponse,
    SendCommitRequest, SendCommitResponse, SendGroupMessageRequest, SendGroupMessageResponse,
    SendProposalRequest, SendProposalResponse, group_service_server::GroupService,
};
use tonic::{Request, Response, Status};

use super::state::{GroupState, Member};
use super::{GroupSvc, MAX_LEAVE_PROPOSAL, check_group_id, check_size};
use crate::error::MessagingError;
use crate::store;

fn group_proto(group_id: &[u8], g: &GroupState) -> Group {
    Group {
        group_id: group_id.to_vec(),
        epoch: g.epoch,
        members: g.members().map(Member::address).collect(),
        created_at: Some(store::timestamp(g.created_ms)),
        updated_at: Some(store::timestamp(g.updated_ms)),
    }
}

#[tonic::async_trait]
impl GroupService for GroupSvc {
    async fn create_group(
        &self,
        request: Request<CreateGroupRequest>,
    ) -> Result<Response<CreateGroupResponse>, Status> {
        let who = caller(&request)?.clone();
        let r = request.into_inner();
        let group_id = r.group_id.clone();
        let g = self
            .core
            .create_group(&who.account_id, who.device_id, r)
            .await?;
        Ok(Response::new(CreateGroupResponse {
            group: Some(group_proto(&group_id, &g)),
        }))
    }

    async fn get_group(
        &self,
        request: Request<GetGroupRequest>,
    ) -> Result<Response<GetGroupResponse>, Status> {
        let who = caller(&request)?.clone();
        let r = request.into_inner();
        check_group_id(&r.group_id)?;
        let g = self.core.load_group(&r.group_id).await?.state;
        if g.leaf_of(&who.account_id, who.device_id).is_none() {
            return Err(MessagingError::NotMember.into());
        }
        Ok(Response::new(GetGroupResponse {
            group: Some(group_proto(&r.group_id, &g)),
        }))
    }

    async fn send_commit(
        &self,
        request: Request<SendCommitRequest>,
    ) -> Result<Response<SendCommitResponse>, Status> {
        let who = caller(&request)?.clone();
        let r = self
            .core
            .send_commit(&who.account_id, who.device_id, request.into_inner())
            .await?;
        Ok(Response::new(r))
    }

    async fn send_proposal(
        &self,
        request: Request<SendProposalRequest>,
    ) -> Result<Response<SendProposalResponse>, Status> {
        let who = caller(&request)?.clone();
        let r = request.into_inner();
        check_group_id(&r.group_id)?;
        check_size("proposal", &r.proposal, self.core.cfg.max_mls_message_bytes)?;
        let now = self
            .core
            .relay_proposal(
                &who.account_id,
                who.device_id,
                &r.group_id,
                r.epoch,
                "proposal",
                &r.proposal,
                false,
            )
            .await?;
        Ok(Response::new(SendProposalResponse {
            server_timestamp: Some(store::timestamp(now)),
        }))
    }

    async fn send_group_message(
        &self,
        request: Request<SendGroupMessageRequest>,
    ) -> Result<Response<SendGroupMessageResponse>, Status> {
        let who = caller(&request)?.clone();
        let r = self
            .core
            .send_group_message(&who.account_id, who.device_id, request.into_inner())
            .await?;
        Ok(Response::new(r))
    }

    async fn get_group_info(
        &self,
        request: Request<GetGroupInfoRequest>,
    ) -> Result<Response<GetGroupInfoResponse>, Status> {
        let who = caller(&request)?.clone();
        let r = request.into_inner();
        check_group_id(&r.group_id)?;
        let g = self.core.load_group(&r.group_id).await?.state;
        // Members' accounts may fetch it: a newly linked device joins its account's groups by
        // external commit.
        if !g.has_account(&who.account_id) {
            return Err(MessagingError::NotMember.into());
        }
        Ok(Response::new(GetGroupInfoResponse {
            group_info: g.group_info,
            epoch: g.epoch,
        }))
    }

    async fn leave_group(
        &self,
        request: Request<LeaveGroupRequest>,
    ) -> Result<Response<LeaveGroupResponse>, Status> {
        let who = caller(&request)?.clone();
        let r = request.into_inner();
        check_group_id(&r.group_id)?;
        check_size("remove_proposal", &r.remove_proposal, MAX_LEAVE_PROPOSAL)?;
        self.core
            .relay_proposal(
                &who.account_id,
                who.device_id,
                &r.group_id,
                r.epoch,
                "remove_proposal",
                &r.remove_proposal,
                true,
            )
            .await?;
        Ok(Response::new(LeaveGroupResponse {}))
    }
}
