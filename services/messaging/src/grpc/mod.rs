//! The gRPC edge: authenticate the caller, convert wire requests into validated domain values
//! ([`convert`]), call the core, convert the results back. Nothing else lives here.

mod convert;
mod groups;
mod messaging;

use std::sync::Arc;

use guardyn_proto::guardyn::messaging::v1::group_service_server::GroupServiceServer;
use guardyn_proto::guardyn::messaging::v1::messaging_service_server::MessagingServiceServer;

use crate::core::Core;

/// The MessagingService implementation.
#[derive(Debug, Clone)]
pub struct MessagingApi {
    core: Arc<Core>,
}

/// The GroupService implementation.
#[derive(Debug, Clone)]
pub struct GroupApi {
    core: Arc<Core>,
}

pub(crate) fn messaging_server(core: Arc<Core>) -> MessagingServiceServer<MessagingApi> {
    MessagingServiceServer::new(MessagingApi { core })
}

pub(crate) fn group_server(core: Arc<Core>) -> GroupServiceServer<GroupApi> {
    GroupServiceServer::new(GroupApi { core })
}
