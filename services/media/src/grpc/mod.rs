//! The gRPC edge: authenticate the caller, convert wire requests into validated domain values
//! ([`convert`]), call the core, convert the results back. Nothing else lives here.

mod convert;
mod media;

use std::sync::Arc;

use guardyn_proto::guardyn::media::v1::media_service_server::MediaServiceServer;

use crate::core::Core;

/// The MediaService implementation.
#[derive(Debug, Clone)]
pub struct MediaApi {
    core: Arc<Core>,
}

pub(crate) fn media_server(core: Arc<Core>) -> MediaServiceServer<MediaApi> {
    MediaServiceServer::new(MediaApi { core })
}
