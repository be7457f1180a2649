//! `MessagingService`: 1:1 envelopes into device queues, the Listen stream, Ack and Echo.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use guardyn_common::{ApiError, caller};
use guardyn_proto::guardyn::messaging::v1::{
    AckRequest, AckResponse, DeliveredEnvelope, EchoRequest, EchoResponse, EnvelopeType,
    ListenRequest, ListenResponse, QueuedEnvelope, SendMessageRequest, SendMessageResponse,
    messaging_service_server::MessagingService,
};
use guardyn_storage::{NewEntry, Txn};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::MessagingError;
use crate::idempotency::Claim;
use crate::listen::Listener;
use crate::store::{self, IdempotencyRecord, MailEvent, QueueEntry};
use crate::{Core, devices};

/// Most ids one Ack may list.
const MAX_ACK_IDS: usize = 1000;

/// The MessagingService implementation.
#[derive(Debug, Clone)]
pub struct MessagingSvc {
    pub(crate) core: Arc<Core>,
}

/// A validated SendMessage.
struct SendReq {
    destination: String,
    client_message_id: String,
    envelopes: Vec<(u32, u32, EnvelopeType, Vec<u8>)>,
    urgent: bool,
    online_only: bool,
    sync: bool,
}

pub(crate) fn check_account_id(field: &str, id: &str) -> Result<(), MessagingError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(MessagingError::invalid(
            field,
            "must be an account id (UUID)",
        ));
    }
    Ok(())
}

pub(crate) fn check_client_message_id(id: &str) -> Result<(), MessagingError> {
    if id.is_empty() || id.chars().count() > 64 {
        return Err(MessagingError::invalid(
            "client_message_id",
            "must be 1..64 characters",
        ));
    }
    Ok(())
}

impl SendReq {
    fn parse(
        r: SendMessageRequest,
        caller_account: &str,
        core: &Core,
    ) -> Result<Self, MessagingError> {
        check_account_id("destination_account_id", &r.destination_account_id)?;
        check_client_message_id(&r.client_message_id)?;
        let own = r.destination_account_id == caller_account;
        if own != r.sync {
            return Err(MessagingError::invalid(
                "sync",
                "must be set exactly when sending to the own account",
            ));
        }
        if r.envelopes.is_empty() && !r.sync {
            return Err(MessagingError::invalid(
                "envelopes",
                "at least one envelope is required",
            ));
        }
        if r.envelopes.len() > core.cfg.max_devices_per_send {
            return Err(MessagingError::too_large(
                "envelopes",
                format!("at most {} envelopes", core.cfg.max_devices_per_send),
            ));
        }
        let mut seen = HashSet::new();
        let mut envelopes = Vec::with_capacity(r.envelopes.len());
        for (i, e) in r.envelopes.into_iter().enumerate() {
            let field = format!("envelopes[{i}]");
            if !(1..=127).contains(&e.destination_device_id) {
                return Err(MessagingError::invalid(
                    &format!("{field}.destination_device_id"),
                    "must be 1..127",
                ));
            }
            if !seen.insert(e.destination_device_id) {
                return Err(MessagingError::invalid(
                    &format!("{field}.destination_device_id"),
                    "duplicate destination device",
                ));
            }
            let ty = EnvelopeType::try_from(e.r#type).unwrap_or(EnvelopeType::Unspecified);
            if !matches!(
                ty,
                EnvelopeType::Ciphertext
                    | EnvelopeType::PrekeyMessage
                    | EnvelopeType::SenderKey
                    | EnvelopeType::Plaintext
            ) {
                return Err(MessagingError::invalid(
                    &format!("{field}.type"),
                    "must be CIPHERTEXT, PREKEY_MESSAGE, SENDER_KEY or PLAINTEXT",
                ));
            }
            if e.content.is_empty() {
                return Err(MessagingError::invalid(
                    &format!("{field}.content"),
                    "must not be empty",
                ));
            }
            if e.content.len() > core.cfg.max_envelope_bytes {
                return Err(MessagingError::too_large(
                    &format!("{field}.content"),
                    format!("at most {} bytes", core.cfg.max_envelope_bytes),
                ));
            }
            envelopes.push((
                e.destination_device_id,
                e.destination_registration_id,
                ty,
                e.content,
            ));
        }
        Ok(Self {
            destination: r.destination_account_id,
            client_message_id: r.client_message_id,
            envelopes,
            urgent: r.urgent,
            online_only: r.online_only,
            sync: r.sync,
        })
    }
}

impl Core {
    async fn send_message(
        &self,
        account: &str,
        device: u32,
        send: SendReq,
    ) -> Result<SendMessageResponse, MessagingError> {
        let now = self.clock.now_ms();
        if send.online_only {
            return self.send_online_only(account, device, send, now).await;
        }
        let idem_key = store::idempotency_key(account, device, &send.client_message_id);
        let reservation = match self.reserve(&idem_key).await? {
            Claim::Replay(r) => return Ok(replay(&r)),
            Claim::Reserved(bytes) => bytes,
        };
        match self.deliver(account, device, send, now).await {
            Ok(queued) => {
                let record = self.completed(now, queued);
                let txn = Txn::new()
                    .require_equals(idem_key.clone(), reservation)
                    .put(idem_key, record.encode());
                if !self.kv.commit(txn).await?.is_committed() {
                    // Our lease expired and another send took the id over; our result stands.
                    tracing::debug!("idempotency reservation was taken over");
                }
                let mut response = replay(&record);
                response.duplicate = false;
                Ok(response)
            }
            // Nothing was stored (or, after a storage failure, possibly part of it).
            Err(e) => {
                self.release(idem_key, reservation).await?;
                Err(e)
            }
        }
    }

    async fn send_online_only(
        &self,
        account: &str,
        device: u32,
        send: SendReq,
        now: u64,
    ) -> Result<SendMessageResponse, MessagingError> {
        self.check_devices(device, &send).await?;
        let mut queued = Vec::new();
        for (dest, _, ty, content) in send.envelopes {
            if self.registry.is_connected(&send.destination, dest) {
                queued.push(QueuedEnvelope {
                    destination_device_id: dest,
                    server_id: 0,
                });
            }
            let env = envelope(account, device, now, send.urgent, ty, content);
            let event = MailEvent::OnlineOnly(env).encode();
            self.bus
                .publish(&store::mail_subject(&send.destination, dest), event)
                .await?;
        }
        Ok(SendMessageResponse {
            server_timestamp: Some(store::timestamp(now)),
            queued,
            duplicate: false,
        })
    }

    async fn check_devices(&self, device: u32, send: &SendReq) -> Result<(), MessagingError> {
        let current = self
            .directory
            .devices(&send.destination)
            .await?
            .ok_or(MessagingError::AccountNotFound)?;
        let addressed: Vec<(u32, u32)> = send.envelopes.iter().map(|e| (e.0, e.1)).collect();
        if let Some(m) = devices::mismatch(&addressed, &current, send.sync.then_some(device)) {
            return Err(MessagingError::DeviceMismatch(m));
        }
        Ok(())
    }

    /// Check and append the envelopes; returns (destination device, server id) per envelope.
    async fn deliver(
        &self,
        account: &str,
        device: u32,
        send: SendReq,
        now: u64,
    ) -> Result<Vec<(u32, u64)>, MessagingError> {
        self.check_devices(device, &send).await?;
        for (dest, ..) in &send.envelopes {
            let stats = self
                .log
                .stats(&store::queue_partition(&send.destination, *dest))
                .await?;
            if stats.len >= self.cfg.max_queue_len {
                return Err(MessagingError::QueueFull { device: *dest });
            }
        }
        let ttl = Duration::from_secs(self.cfg.retention_secs);
        let mut queued = Vec::with_capacity(send.envelopes.len());
        for (dest, _, ty, content) in send.envelopes {
            let partition = store::queue_partition(&send.destination, dest);
            let env = envelope(account, device, now, send.urgent, ty, content);
            let entry = QueueEntry::Inline(env).encode();
            let seqs = self
                .log
                .append(
                    &partition,
                    vec![NewEntry {
                        payload: entry,
                        ttl,
                    }],
                )
                .await?;
            let server_id = seqs.first().copied().unwrap_or_default();
            queued.push((dest, server_id));
        }
        for (dest, _) in &queued {
            self.notify_mail(&send.destination, *dest).await;
        }
        Ok(queued)
    }

    /// Tell the device's stream (on any instance) that its queue changed.
    pub(crate) async fn notify_mail(&self, account: &str, device: u32) {
        self.registry.wake(account, device);
        if let Err(e) = self
            .bus
            .publish(
                &store::mail_subject(account, device),
                MailEvent::Stored.encode(),
            )
            .await
        {
            // The envelope is stored; the device gets it on its next Listen or wake-up.
            tracing::warn!(error = %e, "could not publish a mail event");
        }
    }

    async fn ack(&self, account: &str, device: u32, r: AckRequest) -> Result<u32, MessagingError> {
        if r.server_ids.len() > MAX_ACK_IDS {
            return Err(MessagingError::too_large(
                "server_ids",
                format!("at most {MAX_ACK_IDS} ids"),
            ));
        }
        let partition = store::queue_partition(account, device);
        let mut acked = 0u32;
        if r.up_to_server_id > 0 {
            let mut from = 1;
            'count: loop {
                let batch = self.log.read(&partition, from, 1000).await?;
                let full = batch.len() == 1000;
                for e in &batch {
                    if e.seq > r.up_to_server_id {
                        break 'count;
                    }
                    acked += 1;
                    from = e.seq + 1;
                }
                if !full {
                    break;
                }
            }
            self.log
                .delete_through(&partition, r.up_to_server_id)
                .await?;
        }
        let mut ids: Vec<u64> = r
            .server_ids
            .into_iter()
            .filter(|id| *id > r.up_to_server_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut present = Vec::with_capacity(ids.len());
        for id in ids {
            if self
                .log
                .read(&partition, id, 1)
                .await?
                .first()
                .is_some_and(|e| e.seq == id)
            {
                present.push(id);
            }
        }
        if !present.is_empty() {
            self.log.delete(&partition, &present).await?;
            acked += u32::try_from(present.len()).unwrap_or(u32::MAX);
        }
        if acked > 0 {
            self.notify_mail(account, device).await;
        }
        Ok(acked)
    }
}

fn envelope(
    account: &str,
    device: u32,
    now: u64,
    urgent: bool,
    ty: EnvelopeType,
    content: Vec<u8>,
) -> DeliveredEnvelope {
    DeliveredEnvelope {
        server_id: 0,
        server_timestamp: Some(store::timestamp(now)),
        sender_account_id: Some(account.to_owned()),
        sender_device_id: Some(device),
        r#type: ty as i32,
        content,
        urgent,
        ..Default::default()
    }
}

fn replay(rec: &IdempotencyRecord) -> SendMessageResponse {
    SendMessageResponse {
        server_timestamp: Some(store::timestamp(rec.server_timestamp_ms)),
        queued: rec
            .queued
            .iter()
            .map(|(d, s)| QueuedEnvelope {
                destination_device_id: *d,
                server_id: *s,
            })
            .collect(),
        duplicate: true,
    }
}

type ListenStream = Pin<Box<dyn Stream<Item = Result<ListenResponse, Status>> + Send>>;

#[tonic::async_trait]
impl MessagingService for MessagingSvc {
    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let who = caller(&request)?.clone();
        let send = SendReq::parse(request.into_inner(), &who.account_id, &self.core)?;
        let r = self
            .core
            .send_message(&who.account_id, who.device_id, send)
            .await?;
        Ok(Response::new(r))
    }

    type ListenStream = ListenStream;

    async fn listen(
        &self,
        request: Request<ListenRequest>,
    ) -> Result<Response<Self::ListenStream>, Status> {
        let who = caller(&request)?.clone();
        let core = self.core.clone();
        // Subscribe before registering so nothing published after the first read is missed.
        let sub = core
            .bus
            .subscribe(&store::mail_subject(&who.account_id, who.device_id))
            .await
            .map_err(|e| ApiError::internal(&e))?;
        let ctl = core
            .registry
            .register(&who.account_id, who.device_id, &who.session_id);
        let claim = store::ListenClaim {
            instance: core.registry.instance,
            stream: ctl.id,
        };
        if let Err(e) = core
            .bus
            .publish(
                &store::listen_subject(&who.account_id, who.device_id),
                claim.encode(),
            )
            .await
        {
            tracing::warn!(error = %e, "could not publish a listen claim");
        }
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(
            Listener {
                core,
                ctl,
                account: who.account_id,
                device: who.device_id,
                sub,
                tx,
            }
            .run(),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<AckResponse>, Status> {
        let who = caller(&request)?.clone();
        let acked = self
            .core
            .ack(&who.account_id, who.device_id, request.into_inner())
            .await?;
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
            server_timestamp: Some(store::timestamp(self.core.clock.now_ms())),
        }))
    }
}
