//! `MessagingService` over gRPC.

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use guardyn_common::events::Payload as _;
use guardyn_common::events::messaging::{ListenClaim, listen_subject, mail_subject};
use guardyn_common::wire::timestamp;
use guardyn_common::{ApiError, caller};
use guardyn_proto::guardyn::messaging::v1::{
    AckRequest, AckResponse, EchoRequest, EchoResponse, ListenRequest, ListenResponse,
    SendMessageRequest, SendMessageResponse, messaging_service_server::MessagingService,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{MessagingApi, convert};
use crate::error::MessagingError;
use crate::listen::Listener;

type ListenStream = Pin<Box<dyn Stream<Item = Result<ListenResponse, Status>> + Send>>;

#[tonic::async_trait]
impl MessagingService for MessagingApi {
    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let who = caller(&request)?.clone();
        let send = convert::send_message(
            request.into_inner(),
            who.account_id,
            &self.core.cfg,
            self.core.max_envelope_bytes(),
        )?;
        let r = self
            .core
            .send_message(who.account_id, who.device_id, send)
            .await?;
        Ok(Response::new(convert::send_outcome(r)))
    }

    type ListenStream = ListenStream;

    async fn listen(
        &self,
        request: Request<ListenRequest>,
    ) -> Result<Response<Self::ListenStream>, Status> {
        let who = caller(&request)?.clone();
        let (account, device) = (who.account_id, who.device_id);
        let core = self.core.clone();
        // Before registering: a revocation arriving from here on ends the stream.
        let auth = core.verifier.guard_stream(&who);
        // Subscribe before registering so nothing published after the first read is missed.
        let sub = core
            .bus
            .subscribe(&mail_subject(account, device))
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let ctl = core.registry.register(account, device, &who.session_id);
        core.remote.forget(account, device);
        let claim = ListenClaim {
            instance: core.registry.instance,
            stream: ctl.id,
        };
        if let Err(e) = core
            .bus
            .publish(&listen_subject(account, device), claim.encode())
            .await
        {
            tracing::warn!(error = %e, "could not publish a listen claim");
        }
        let (tx, rx) = mpsc::channel(16);
        let connected = core.stats.listen(account, device);
        let listener = Listener {
            core,
            ctl,
            account,
            device,
            sub,
            tx,
            auth,
            groups: std::collections::HashMap::new(),
            entry_bytes: crate::listen::READ_BYTES,
            buffer: std::sync::Arc::new(tokio::sync::Semaphore::new(
                crate::listen::STREAM_BUFFER_BYTES,
            )),
            needs_acks: false,
            _connected: connected,
        };
        tokio::spawn(listener.run());
        // The item's share of the Listen buffer is given back here, as the transport takes it.
        let stream = ReceiverStream::new(rx)
            .map(|out| out.item.map(convert::listen_item).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        let who = caller(&request)?.clone();
        let ack = convert::ack(request.into_inner())?;
        let acked = self.core.ack(who.account_id, who.device_id, ack).await?;
        Ok(Response::new(AckResponse { acked }))
    }

    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        caller(&request)?;
        let payload = request.into_inner().payload;
        if payload.len() > self.core.cfg.max_echo_bytes {
            return Err(MessagingError::too_large(
                "payload",
                format!("at most {} bytes", self.core.cfg.max_echo_bytes),
            )
            .into());
        }
        Ok(Response::new(EchoResponse {
            payload,
            server_timestamp: Some(timestamp(self.core.clock.now_ms())),
        }))
    }
}
