//! The gRPC edge: authenticate the caller, convert wire requests into validated domain values
//! ([`convert`]), call the core, convert the results back. Nothing else lives here.

mod convert;
mod notification;

use std::sync::Arc;

use guardyn_proto::guardyn::notification::v1::notification_service_server::NotificationServiceServer;

use crate::core::Core;

/// The NotificationService implementation.
#[derive(Debug, Clone)]
pub struct NotificationApi {
    core: Arc<Core>,
}

pub(crate) fn notification_server(core: Arc<Core>) -> NotificationServiceServer<NotificationApi> {
    NotificationServiceServer::new(NotificationApi { core })
}
