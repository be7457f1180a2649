//! One-to-one messages: session establishment (X3DH/PQXDH), per-device encryption,
//! SendMessage with device-mismatch repair, and decryption of delivered envelopes.

use std::collections::{BTreeMap, BTreeSet};

use guardyn_crypto::{
    IdentityKey, InitialMessage, KemPreKeyPublic, KemPublicKey, OneTimePreKeyPublic, PreKeyBundle,
    PublicKey, RatchetMessage, SignedPreKeyPublic,
};
use guardyn_proto::guardyn::auth::v1 as auth;
use guardyn_proto::guardyn::auth::v1::device_service_client::DeviceServiceClient;
use guardyn_proto::guardyn::auth::v1::key_directory_service_client::KeyDirectoryServiceClient;
use guardyn_proto::guardyn::common::v1::DeviceMismatch;
use guardyn_proto::guardyn::messaging::v1 as msg;
use guardyn_proto::guardyn::messaging::v1::messaging_service_client::MessagingServiceClient;
use prost::Message as _;

use crate::client::{Client, Inner};
use crate::content::{BodyType, Content, Kind};
use crate::error::SdkError;
use crate::events::{Address, Event};
use crate::state::{PeerSessions, PendingInitial, SessionRecord, State};

/// What [`Client::send`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentMessage {
    /// The message id (also the idempotency key).
    pub message_id: String,
    /// Destination devices reached.
    pub devices: usize,
    /// True when the server had already accepted this message id.
    pub duplicate: bool,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A bundle ready for `initiate`, with the device's registration id.
struct Fetched {
    registration_id: u32,
    bundle: PreKeyBundle,
}

fn convert_bundle(b: &auth::DeviceBundle) -> Result<Fetched, SdkError> {
    let bad = |reason| SdkError::Format {
        what: "prekey bundle",
        reason,
    };
    let spk = b.signed_prekey.as_ref().ok_or(bad("no signed prekey"))?;
    let sig = |s: &[u8]| -> Result<[u8; 64], SdkError> {
        s.try_into().map_err(|_| bad("signature is not 64 bytes"))
    };
    let kem = b
        .kem_prekey
        .as_ref()
        .map(|k| -> Result<_, SdkError> {
            Ok(KemPreKeyPublic {
                id: k.key_id,
                key: KemPublicKey::from_bytes(&k.public_key)?,
                signature: sig(&k.signature)?,
            })
        })
        .transpose()?;
    let one_time = b
        .one_time_prekey
        .as_ref()
        .map(|k| -> Result<_, SdkError> {
            Ok(OneTimePreKeyPublic {
                id: k.key_id,
                key: PublicKey::from_bytes(&k.public_key)?,
            })
        })
        .transpose()?;
    Ok(Fetched {
        registration_id: b.registration_id,
        bundle: PreKeyBundle {
            identity_key: IdentityKey::from_bytes(&b.identity_key)?,
            signed_prekey: SignedPreKeyPublic {
                id: spk.key_id,
                key: PublicKey::from_bytes(&spk.public_key)?,
                signature: sig(&spk.signature)?,
            },
            one_time_prekey: one_time,
            kem_prekey: kem,
        },
    })
}

/// The `DeviceMismatch` detail of a FAILED_PRECONDITION / DEVICE_MISMATCH status.
fn mismatch_of(status: &tonic::Status) -> Option<DeviceMismatch> {
    if status.code() != tonic::Code::FailedPrecondition {
        return None;
    }
    let decoded = tonic_types::pb::Status::decode(status.details()).ok()?;
    decoded
        .details
        .iter()
        .find(|a| a.type_url.ends_with("DeviceMismatch"))
        .and_then(|a| DeviceMismatch::decode(a.value.as_slice()).ok())
}

impl Inner {
    async fn fetch_bundles(
        &self,
        account: &str,
        device: u32,
    ) -> Result<BTreeMap<u32, Fetched>, SdkError> {
        let resp = self
            .call(
                auth::GetPreKeyBundleRequest {
                    account_id: account.to_owned(),
                    device_id: device,
                },
                |ch, r| async move {
                    KeyDirectoryServiceClient::new(ch)
                        .get_pre_key_bundle(r)
                        .await
                },
            )
            .await?;
        let mut out = BTreeMap::new();
        for b in &resp.bundles {
            if account == self.account_id && b.device_id == self.device_id {
                continue;
            }
            out.insert(b.device_id, convert_bundle(b)?);
        }
        Ok(out)
    }

    /// Encrypts `plaintext` for every known device of `dest`, starting sessions from
    /// `fresh` bundles first.
    fn encrypt_for(
        state: &mut State,
        dest: &str,
        fresh: &mut BTreeMap<u32, Fetched>,
        plaintext: &[u8],
    ) -> Result<Vec<msg::Envelope>, SdkError> {
        let mut envelopes = Vec::new();
        let mut started = BTreeSet::new();
        for (device, f) in std::mem::take(fresh) {
            let (session, initial) =
                guardyn_crypto::initiate(&state.identity, &f.bundle, plaintext)?;
            let record = SessionRecord {
                session,
                base_key: initial.base_key,
                pending: Some(PendingInitial {
                    signed_prekey_id: initial.signed_prekey_id,
                    one_time_prekey_id: initial.one_time_prekey_id,
                    kem: initial.kem.clone(),
                }),
            };
            match state.peers.get_mut(&(dest.to_owned(), device)) {
                Some(peer) => {
                    peer.registration_id = f.registration_id;
                    peer.promote(record);
                }
                None => {
                    state.peers.insert(
                        (dest.to_owned(), device),
                        PeerSessions::new(f.registration_id, record),
                    );
                }
            }
            started.insert(device);
            envelopes.push(msg::Envelope {
                destination_device_id: device,
                destination_registration_id: f.registration_id,
                r#type: msg::EnvelopeType::PrekeyMessage as i32,
                content: initial.to_bytes(),
            });
        }
        let identity = &state.identity;
        for ((account, device), peer) in state.peers.range_mut((dest.to_owned(), 0)..) {
            if account != dest {
                break;
            }
            if started.contains(device) {
                continue;
            }
            let (initial, content) = peer.encrypt(identity, plaintext)?;
            envelopes.push(msg::Envelope {
                destination_device_id: *device,
                destination_registration_id: peer.registration_id,
                r#type: if initial {
                    msg::EnvelopeType::PrekeyMessage
                } else {
                    msg::EnvelopeType::Ciphertext
                } as i32,
                content,
            });
        }
        Ok(envelopes)
    }

    /// Sends one content to every device of `dest` (or our other devices with `sync`),
    /// repairing the device list on DEVICE_MISMATCH and retrying with the same id.
    pub(crate) async fn send_content(
        &self,
        dest: &str,
        content: &Content,
        sync: bool,
        client_message_id: &str,
    ) -> Result<SentMessage, SdkError> {
        let plaintext = content.encode();
        let known = {
            let st = self.state.lock().await;
            st.peers
                .range((dest.to_owned(), 0)..)
                .next()
                .is_some_and(|((a, _), _)| a == dest)
        };
        let mut fresh = if known {
            BTreeMap::new()
        } else {
            self.fetch_bundles(dest, 0).await?
        };
        let mut last = None;
        for _ in 0..self.config.max_attempts {
            let envelopes = {
                let mut st = self.state.lock().await;
                let envelopes = Self::encrypt_for(&mut st, dest, &mut fresh, &plaintext)?;
                // Saved before sending: a crash after the send must not reuse message keys.
                self.persist(&mut st)?;
                envelopes
            };
            if sync && envelopes.is_empty() {
                return Ok(SentMessage {
                    message_id: content.message_id.clone(),
                    devices: 0,
                    duplicate: false,
                });
            }
            let devices = envelopes.len();
            let req = msg::SendMessageRequest {
                destination_account_id: dest.to_owned(),
                client_message_id: client_message_id.to_owned(),
                envelopes,
                urgent: true,
                online_only: false,
                sync,
            };
            match self
                .call(req, |ch, r| async move {
                    MessagingServiceClient::new(ch).send_message(r).await
                })
                .await
            {
                Ok(resp) => {
                    return Ok(SentMessage {
                        message_id: content.message_id.clone(),
                        devices,
                        duplicate: resp.duplicate,
                    });
                }
                Err(status) => {
                    let Some(mismatch) = mismatch_of(&status) else {
                        return Err(status.into());
                    };
                    tracing::debug!(?mismatch, dest, "device mismatch; repairing sessions");
                    {
                        let mut st = self.state.lock().await;
                        for d in mismatch.extra_devices.iter().chain(&mismatch.stale_devices) {
                            st.peers.remove(&(dest.to_owned(), *d));
                            fresh.remove(d);
                        }
                        if sync && let Some(own) = &mut st.own_devices {
                            for d in &mismatch.extra_devices {
                                own.remove(d);
                            }
                            own.extend(mismatch.missing_devices.iter().copied());
                        }
                    }
                    let need: BTreeSet<u32> = mismatch
                        .missing_devices
                        .iter()
                        .chain(&mismatch.stale_devices)
                        .copied()
                        .collect();
                    if need.len() > 1 {
                        let mut all = self.fetch_bundles(dest, 0).await?;
                        all.retain(|d, _| need.contains(d));
                        fresh.extend(all);
                    } else {
                        for d in need {
                            fresh.extend(self.fetch_bundles(dest, d).await?);
                        }
                    }
                    last = Some(SdkError::from(status));
                }
            }
        }
        Err(SdkError::exhausted(self.config.max_attempts, last))
    }

    /// Whether this account has other devices that should get sync copies.
    async fn other_own_devices(&self) -> Result<bool, SdkError> {
        {
            let fresh = self
                .own_checked
                .lock()
                .ok()
                .and_then(|t| *t)
                .is_some_and(|t| t.elapsed() < crate::client::OWN_DEVICES_TTL);
            let st = self.state.lock().await;
            if let Some(devices) = &st.own_devices
                && fresh
            {
                return Ok(!devices.is_empty());
            }
        }
        let resp = self
            .call(auth::ListDevicesRequest {}, |ch, r| async move {
                DeviceServiceClient::new(ch).list_devices(r).await
            })
            .await?;
        let others: BTreeSet<u32> = resp
            .devices
            .iter()
            .map(|d| d.device_id)
            .filter(|d| *d != self.device_id)
            .collect();
        let any = !others.is_empty();
        if let Ok(mut t) = self.own_checked.lock() {
            *t = Some(std::time::Instant::now());
        }
        let mut st = self.state.lock().await;
        st.own_devices = Some(others);
        self.persist(&mut st)?;
        Ok(any)
    }

    /// Decrypts a 1:1 envelope and turns it into an event.
    pub(crate) fn open_envelope(
        &self,
        state: &mut State,
        env: &msg::DeliveredEnvelope,
    ) -> Result<Option<Event>, SdkError> {
        let sender = Address {
            account_id: env
                .sender_account_id
                .clone()
                .ok_or_else(|| SdkError::Protocol("envelope without sender".into()))?,
            device_id: env
                .sender_device_id
                .ok_or_else(|| SdkError::Protocol("envelope without sender device".into()))?,
        };
        let key = (sender.account_id.clone(), sender.device_id);
        let plaintext = if env.r#type == msg::EnvelopeType::PrekeyMessage as i32 {
            let initial = InitialMessage::from_bytes(&env.content)?;
            let existing = state.peers.get_mut(&key).filter(|p| {
                p.records
                    .iter()
                    .any(|r| r.base_key == initial.base_key && r.pending.is_none())
            });
            match existing {
                // A repeat of an initial message for a session we already accepted.
                Some(peer) => peer.decrypt(&initial.message)?,
                None => {
                    let (session, plaintext) =
                        guardyn_crypto::respond(&state.identity, &mut state.keys, &initial)?;
                    if let Some((kem_id, _)) = &initial.kem {
                        state.keys.used_kem(*kem_id);
                    }
                    let record = SessionRecord {
                        session,
                        base_key: initial.base_key,
                        pending: None,
                    };
                    match state.peers.get_mut(&key) {
                        Some(peer) => peer.promote(record),
                        None => {
                            // The registration id is learned from the content below.
                            state
                                .peers
                                .insert(key.clone(), PeerSessions::new(0, record));
                        }
                    }
                    plaintext
                }
            }
        } else if env.r#type == msg::EnvelopeType::Ciphertext as i32 {
            let message = RatchetMessage::from_bytes(&env.content)?;
            state
                .peers
                .get_mut(&key)
                .ok_or_else(|| SdkError::Protocol("no session with the sending device".into()))?
                .decrypt(&message)?
        } else {
            return Err(SdkError::Protocol(format!(
                "unsupported envelope type {}",
                env.r#type
            )));
        };
        let content = Content::decode(&plaintext)?;
        if let Some(peer) = state.peers.get_mut(&key) {
            peer.registration_id = content.registration_id;
        }
        if sender.account_id == state.account_id
            && let Some(own) = &mut state.own_devices
        {
            own.insert(sender.device_id);
        }
        let kind = content.kind.clone();
        let message = content.into_message(sender)?;
        Ok(Some(match kind {
            Kind::Direct => Event::Message(message),
            Kind::Sync { destination } => Event::SentByOtherDevice {
                destination,
                message,
            },
            Kind::Group => {
                return Err(SdkError::Protocol("group content in a 1:1 envelope".into()));
            }
        }))
    }
}

impl Client {
    /// MessagingService.Echo through the same authenticated call path as every other RPC
    /// (the load generator's baseline).
    pub async fn echo(&self, payload: &[u8]) -> Result<Vec<u8>, SdkError> {
        let resp = self
            .inner
            .call(
                msg::EchoRequest {
                    payload: payload.to_vec(),
                },
                |ch, r| async move { MessagingServiceClient::new(ch).echo(r).await },
            )
            .await?;
        Ok(resp.payload)
    }

    /// Sends an end-to-end-encrypted message to every device of account `to`, and a sync copy
    /// to this account's other devices.
    pub async fn send(&self, to: &str, body: &[u8]) -> Result<SentMessage, SdkError> {
        let message_id = uuid::Uuid::new_v4().to_string();
        self.send_with_id(to, body, &message_id).await
    }

    /// [`Client::send`] with a caller-chosen message id: calling it again with the same id
    /// (after a timeout, say) is idempotent on the server.
    pub async fn send_with_id(
        &self,
        to: &str,
        body: &[u8],
        message_id: &str,
    ) -> Result<SentMessage, SdkError> {
        self.send_body(to, BodyType::Plain, body, message_id).await
    }

    /// Sends a body of the given type (see [`Client::send_with_id`]).
    pub(crate) async fn send_body(
        &self,
        to: &str,
        body_type: BodyType,
        body: &[u8],
        message_id: &str,
    ) -> Result<SentMessage, SdkError> {
        if to == self.inner.account_id {
            return Err(SdkError::Invalid(
                "sending to your own account: use the sync copies of a normal send".into(),
            ));
        }
        let registration_id = self.inner.state.lock().await.registration_id;
        let content = Content {
            kind: Kind::Direct,
            message_id: message_id.to_owned(),
            sent_at_ms: now_ms(),
            registration_id,
            body_type,
            body: body.to_vec(),
        };
        let sent = self
            .inner
            .send_content(to, &content, false, message_id)
            .await?;
        if self.inner.other_own_devices().await? {
            let copy = Content {
                kind: Kind::Sync {
                    destination: to.to_owned(),
                },
                ..content
            };
            let own = self.inner.account_id.clone();
            self.inner
                .send_content(&own, &copy, true, &format!("{message_id}.sync"))
                .await?;
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn mismatch_detail_is_read_from_the_status() {
        let detail = DeviceMismatch {
            missing_devices: vec![2],
            extra_devices: vec![3],
            stale_devices: vec![],
        };
        let status = tonic_types::pb::Status {
            code: tonic::Code::FailedPrecondition as i32,
            message: "m".into(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/guardyn.common.v1.DeviceMismatch".into(),
                value: detail.encode_to_vec(),
            }],
        };
        let s = tonic::Status::with_details(
            tonic::Code::FailedPrecondition,
            "m",
            status.encode_to_vec().into(),
        );
        assert_eq!(mismatch_of(&s), Some(detail));
        assert_eq!(mismatch_of(&tonic::Status::internal("x")), None);
    }
}
