//! One-to-one messages: session establishment (PQXDH, X3DH only when allowed), per-device
//! encryption, SendMessage with device-mismatch repair, and decryption of delivered
//! envelopes. Every identity key met on the way is checked against the pins of `trust.rs`.

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
use crate::trust::Seen;

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

/// A new message id (also the idempotency key): a UUIDv7, so a device's ids sort in the order
/// it sent them. The server keeps each device's recent ids in key order for 24 hours;
/// time-ordered ids land next to each other there (one leaf written per sender and batch),
/// where random ones each land on a page of their own.
pub(crate) fn new_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
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

    /// Checks fresh bundles of `dest` against the pins before any is used: a bundle without
    /// a KEM prekey is refused unless allowed, a changed identity key is recorded (and blocks
    /// the account), a new device is pinned and reported in `events`.
    fn vet_bundles(
        &self,
        state: &mut State,
        dest: &str,
        fresh: &BTreeMap<u32, Fetched>,
        events: &mut Vec<Event>,
    ) -> Result<(), SdkError> {
        for (device, f) in fresh {
            if f.bundle.kem_prekey.is_none() && !self.config.allow_x3dh_fallback {
                return Err(SdkError::PqxdhRequired {
                    account: dest.to_owned(),
                    device: *device,
                });
            }
        }
        for (device, f) in fresh {
            let peer = Address {
                account_id: dest.to_owned(),
                device_id: *device,
            };
            match state
                .trust
                .observe(&(dest.to_owned(), *device), &f.bundle.identity_key)
            {
                Seen::Changed { first: true } => events.push(Event::IdentityChanged { peer }),
                Seen::NewDevice => events.push(Event::NewDevice { peer }),
                Seen::Trusted | Seen::FirstContact | Seen::Changed { first: false } => {}
            }
        }
        match state.trust.blocked(dest) {
            Some(device) => Err(SdkError::IdentityChanged {
                account: dest.to_owned(),
                device,
            }),
            None => Ok(()),
        }
    }

    /// Encrypts `plaintext` for every known device of `dest`, starting sessions from
    /// `fresh` bundles first (which [`Inner::vet_bundles`] accepted).
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
                let mut events = Vec::new();
                let vetted = self.vet_bundles(&mut st, dest, &fresh, &mut events);
                let envelopes =
                    vetted.and_then(|()| Self::encrypt_for(&mut st, dest, &mut fresh, &plaintext));
                // Saved before sending: a crash after the send must not reuse message keys.
                // Saved on refusal too: the pins and pending changes it recorded.
                self.persist(&mut st)?;
                self.stash_events(events);
                envelopes?
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
                        // A stale device keeps its pin: its fresh bundle must match it.
                        for d in &mismatch.extra_devices {
                            st.trust.removed(&(dest.to_owned(), *d));
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

    /// Keeps events produced outside a Listen pump for the next `Inbox` or `Client::sync`.
    fn stash_events(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        if let Ok(mut stash) = self.stash.lock() {
            stash.extend(events);
        }
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

    /// Decrypts a 1:1 envelope and turns it into events: the message, preceded by
    /// [`Event::NewDevice`] for a new device of a known account; only
    /// [`Event::IdentityChanged`] (once per pending key) when an initial message carries a
    /// key other than the pinned one, which is held instead of accepted.
    pub(crate) fn open_envelope(
        &self,
        state: &mut State,
        env: &msg::DeliveredEnvelope,
    ) -> Result<Vec<Event>, SdkError> {
        let mut events = Vec::new();
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
                    if initial.kem.is_none() && !self.config.allow_x3dh_fallback {
                        return Err(SdkError::PqxdhRequired {
                            account: sender.account_id,
                            device: sender.device_id,
                        });
                    }
                    if state.trust.conflicts(&key, &initial.identity_key) {
                        let first = state.trust.observe(&key, &initial.identity_key)
                            == (Seen::Changed { first: true });
                        state.trust.hold(&key, env.content.clone());
                        tracing::warn!(peer = %sender, "held an initial message: identity changed");
                        return Ok(if first {
                            vec![Event::IdentityChanged { peer: sender }]
                        } else {
                            Vec::new()
                        });
                    }
                    let (session, plaintext) =
                        guardyn_crypto::respond(&state.identity, &mut state.keys, &initial)?;
                    // Pinned only once the message authenticated under the key.
                    if state.trust.observe(&key, &initial.identity_key) == Seen::NewDevice {
                        events.push(Event::NewDevice {
                            peer: sender.clone(),
                        });
                    }
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
        events.push(match kind {
            Kind::Direct => Event::Message(message),
            Kind::Sync { destination } => Event::SentByOtherDevice {
                destination,
                message,
            },
            Kind::Group => {
                return Err(SdkError::Protocol("group content in a 1:1 envelope".into()));
            }
        });
        Ok(events)
    }

    /// Opens initial messages held for a device whose new identity key was just accepted.
    fn release_held(
        &self,
        state: &mut State,
        account: &str,
        device: u32,
        held: Vec<Vec<u8>>,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        for content in held {
            let env = msg::DeliveredEnvelope {
                sender_account_id: Some(account.to_owned()),
                sender_device_id: Some(device),
                r#type: msg::EnvelopeType::PrekeyMessage as i32,
                content,
                ..Default::default()
            };
            match self.open_envelope(state, &env) {
                Ok(opened) => events.extend(opened),
                Err(e) => events.push(Event::Undecryptable {
                    sender: Some(Address {
                        account_id: account.to_owned(),
                        device_id: device,
                    }),
                    reason: e.to_string(),
                }),
            }
        }
        events
    }
}

impl Client {
    /// Accepts the changed identity keys of `account`'s devices (after the user compared
    /// safety numbers, [`Client::safety_number`]): they are pinned, sessions under the old
    /// keys are dropped (the next send starts new ones) and sending is unblocked. Returns the
    /// events of the initial messages held while the change was pending.
    pub async fn accept_identity(&self, account: &str) -> Result<Vec<Event>, SdkError> {
        let mut st = self.inner.state.lock().await;
        let mut events = Vec::new();
        for (device, key, held) in st.trust.accept(account) {
            let peer = (account.to_owned(), device);
            if let Some(sessions) = st.peers.get_mut(&peer) {
                sessions
                    .records
                    .retain(|r| r.session.remote_identity().ct_eq(&key));
                if sessions.records.is_empty() {
                    st.peers.remove(&peer);
                }
            }
            events.extend(self.inner.release_held(&mut st, account, device, held));
        }
        self.inner.persist(&mut st)?;
        Ok(events)
    }

    /// The safety number of the conversation with `account` (60 digits in groups of five;
    /// see `trust.rs` for the derivation): over this account's devices (this one and the
    /// others it has pinned) and the pinned devices of `account`. Both people see the same
    /// number when neither side's keys were substituted; compare it out of band. An account
    /// never contacted has its current devices fetched and pinned first.
    pub async fn safety_number(&self, account: &str) -> Result<String, SdkError> {
        if account == self.inner.account_id {
            return Err(SdkError::Invalid(
                "a safety number is between two accounts".into(),
            ));
        }
        let known = self.inner.state.lock().await.trust.has_account(account);
        if !known {
            let fresh = self.inner.fetch_bundles(account, 0).await?;
            let mut st = self.inner.state.lock().await;
            let mut events = Vec::new();
            self.inner
                .vet_bundles(&mut st, account, &fresh, &mut events)?;
            self.inner.persist(&mut st)?;
            self.inner.stash_events(events);
        }
        let st = self.inner.state.lock().await;
        let remote = st.trust.active(account);
        if remote.is_empty() {
            return Err(SdkError::Invalid(format!(
                "no device of account {account} is known"
            )));
        }
        Ok(Self::number_with(&st, account, &remote))
    }

    /// While identity keys of `account` changed and are not yet accepted: the safety number
    /// it will have after [`Client::accept_identity`], to compare with the peer first.
    pub async fn pending_safety_number(&self, account: &str) -> Option<String> {
        let st = self.inner.state.lock().await;
        let remote = st.trust.active_if_accepted(account)?;
        Some(Self::number_with(&st, account, &remote))
    }

    fn number_with(
        st: &State,
        account: &str,
        remote: &[(u32, guardyn_crypto::IdentityKey)],
    ) -> String {
        let mut local = st.trust.active(&st.account_id);
        local.retain(|(d, _)| *d != st.device_id);
        local.push((st.device_id, st.identity.identity_key()));
        crate::trust::safety_number((&st.account_id, &local), (account, remote))
    }

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
        let message_id = new_message_id();
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
    fn message_ids_sort_in_the_order_they_were_made() {
        let ids: Vec<String> = (0..1000).map(|_| new_message_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ids, sorted);
        assert!(ids.iter().all(|id| id.len() <= 64));
    }

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
