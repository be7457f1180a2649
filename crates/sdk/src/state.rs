//! Everything a device must remember between runs, and its versioned binary encoding.
//!
//! State encoding, version 4 (see `codec.rs` for the primitives):
//! ```text
//! 0x01 | account id | device id (u32) | registration id (u32) | username
//!      | identity private key (32) | tokens flag [| access | refresh | session id]
//!      | prekeys (LocalKeys) | peer count (u32) | peers... | last server id (u64)
//!      | own devices flag [| count (u32) | ids (u32)...]
//!      | MLS flag [| MlsClient::to_bytes] | group count (u32) | group ids...
//!      | trust (pinned identity keys and held messages, see `Trust::encode`)
//!      | client config flag [| version (u64) | issued at (u64) | expires at (u64) | key id
//!                            | payload]
//!      | group log count (u32) | (group id | highest processed log position (u64))...
//! peer = account | device (u32) | registration id (u32) | record count (u32) | records...
//! record = base key (33) | pending flag [| signed prekey id (u32) | otk flag [| id]
//!          | kem flag [| id | ciphertext]] | Session::to_bytes
//! ```
//! Version 3 is the same without the group log positions (read as none processed), version 2
//! also without the client configuration, version 1 also without the trust part; all are
//! still read (version 1 pinning the identity of each peer's current session). The whole
//! encoding is sealed by `store.rs` before it touches the disk.

use std::collections::{BTreeMap, BTreeSet};

use guardyn_crypto::mls::{Group, MlsClient};
use guardyn_crypto::{IdentityKeyPair, InitialMessage, PublicKey, RatchetMessage, Session};

use crate::codec::{Reader, Writer};
use crate::config_doc::AppliedClientConfig;
use crate::error::SdkError;
use crate::keys::LocalKeys;
use crate::trust::Trust;

/// Version byte of the state encoding.
pub const STATE_VERSION: u8 = 4;
/// Older versions, read for upgrade.
const STATE_VERSION_1: u8 = 1;
const STATE_VERSION_2: u8 = 2;
const STATE_VERSION_3: u8 = 3;
/// Sessions kept per peer device besides the current one (simultaneous-initiation races).
const ARCHIVED_SESSIONS: usize = 4;

/// Access and refresh token of the device's session.
#[derive(Clone)]
pub(crate) struct Tokens {
    pub access: String,
    pub refresh: String,
    pub session_id: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// The X3DH/PQXDH header an initiator repeats on every message until the peer answers, so a
/// peer that never saw the first message (e.g. it was in a rejected SendMessage) can still
/// start the session.
#[derive(Clone)]
pub(crate) struct PendingInitial {
    pub signed_prekey_id: u32,
    pub one_time_prekey_id: Option<u32>,
    pub kem: Option<(u32, Vec<u8>)>,
}

/// One Double Ratchet session with a peer device.
pub(crate) struct SessionRecord {
    pub session: Session,
    /// The initiator's base key: ours for sessions we started, theirs for sessions we accepted.
    pub base_key: PublicKey,
    /// Set while a session we started has not been answered yet.
    pub pending: Option<PendingInitial>,
}

/// Sessions with one peer device: the current one first, then older ones that may still
/// receive in-flight messages.
pub(crate) struct PeerSessions {
    pub registration_id: u32,
    pub records: Vec<SessionRecord>,
}

impl PeerSessions {
    pub(crate) fn new(registration_id: u32, record: SessionRecord) -> Self {
        Self {
            registration_id,
            records: vec![record],
        }
    }

    /// Makes `record` the current session, keeping a few older ones.
    pub(crate) fn promote(&mut self, record: SessionRecord) {
        self.records.insert(0, record);
        self.records.truncate(1 + ARCHIVED_SESSIONS);
    }

    /// Decrypts with the first session that accepts the message and makes it current.
    pub(crate) fn decrypt(
        &mut self,
        message: &RatchetMessage,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, SdkError> {
        let mut last = None;
        for i in 0..self.records.len() {
            match self.records[i].session.decrypt(message) {
                Ok(plaintext) => {
                    let mut record = self.records.remove(i);
                    // The peer answered, so it holds the session: no more initial messages.
                    record.pending = None;
                    self.records.insert(0, record);
                    return Ok(plaintext);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or(
            SdkError::Protocol("no session for the sending device".into()),
            SdkError::from,
        ))
    }

    /// Encrypts with the current session, as an initial message while it is unanswered.
    /// Returns (is_initial, bytes).
    pub(crate) fn encrypt(
        &mut self,
        identity: &IdentityKeyPair,
        plaintext: &[u8],
    ) -> Result<(bool, Vec<u8>), SdkError> {
        let record = self
            .records
            .first_mut()
            .ok_or_else(|| SdkError::Protocol("empty session list".into()))?;
        let message = record.session.encrypt(plaintext)?;
        Ok(match &record.pending {
            Some(p) => (
                true,
                InitialMessage {
                    identity_key: identity.identity_key(),
                    base_key: record.base_key,
                    signed_prekey_id: p.signed_prekey_id,
                    one_time_prekey_id: p.one_time_prekey_id,
                    kem: p.kem.clone(),
                    message,
                }
                .to_bytes(),
            ),
            None => (false, message.to_bytes()),
        })
    }
}

/// The device's whole state.
pub(crate) struct State {
    pub account_id: String,
    pub device_id: u32,
    pub registration_id: u32,
    pub username: String,
    pub identity: IdentityKeyPair,
    pub tokens: Option<Tokens>,
    pub keys: LocalKeys,
    pub peers: BTreeMap<(String, u32), PeerSessions>,
    /// Highest queue position processed (server ids increase per device): redeliveries of
    /// processed envelopes are acknowledged without decrypting again.
    pub last_server_id: u64,
    /// Our account's other devices, when known (ListDevices / notices).
    pub own_devices: Option<BTreeSet<u32>>,
    pub mls: Option<MlsClient>,
    pub groups: BTreeMap<Vec<u8>, Group>,
    /// Per group id, the highest position in the group's log processed (group-log envelopes
    /// are numbered per group, not per device, so `last_server_id` cannot recognise their
    /// redeliveries). Kept after this device leaves a group: a redelivered removal commit must
    /// still be recognised, and a later re-join continues at higher positions of the same log.
    pub group_log_seen: BTreeMap<Vec<u8>, u64>,
    /// Pinned identity keys of peer devices (trust on first use).
    pub trust: Trust,
    /// The signed client configuration applied last: no older version is applied after it.
    pub client_config: Option<AppliedClientConfig>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("account_id", &self.account_id)
            .field("device_id", &self.device_id)
            .field("peers", &self.peers.len())
            .field("groups", &self.groups.len())
            .finish_non_exhaustive()
    }
}

impl State {
    pub(crate) fn new(identity: IdentityKeyPair, registration_id: u32, username: &str) -> Self {
        Self {
            account_id: String::new(),
            device_id: 0,
            registration_id,
            username: username.to_owned(),
            identity,
            tokens: None,
            keys: LocalKeys::default(),
            peers: BTreeMap::new(),
            last_server_id: 0,
            own_devices: None,
            mls: None,
            groups: BTreeMap::new(),
            group_log_seen: BTreeMap::new(),
            trust: Trust::default(),
            client_config: None,
        }
    }

    /// The MLS credential identity of this device: `<account_id>.<device_id>`.
    pub(crate) fn mls_identity(&self) -> String {
        format!("{}.{}", self.account_id, self.device_id)
    }

    pub(crate) fn encode(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, SdkError> {
        let mut w = Writer::new();
        w.u8(STATE_VERSION)
            .str(&self.account_id)
            .u32(self.device_id)
            .u32(self.registration_id)
            .str(&self.username)
            .raw(self.identity.private_bytes().as_ref());
        match &self.tokens {
            Some(t) => {
                w.u8(1).str(&t.access).str(&t.refresh).str(&t.session_id);
            }
            None => {
                w.u8(0);
            }
        }
        self.keys.encode(&mut w);
        w.u32(self.peers.len() as u32);
        for ((account, device), peer) in &self.peers {
            w.str(account)
                .u32(*device)
                .u32(peer.registration_id)
                .u32(peer.records.len() as u32);
            for r in &peer.records {
                w.raw(&r.base_key.to_bytes());
                match &r.pending {
                    Some(p) => {
                        w.u8(1).u32(p.signed_prekey_id);
                        match p.one_time_prekey_id {
                            Some(id) => w.u8(1).u32(id),
                            None => w.u8(0),
                        };
                        match &p.kem {
                            Some((id, ct)) => w.u8(1).u32(*id).bytes(ct),
                            None => w.u8(0),
                        };
                    }
                    None => {
                        w.u8(0);
                    }
                }
                w.bytes(&r.session.to_bytes());
            }
        }
        w.u64(self.last_server_id);
        match &self.own_devices {
            Some(devices) => {
                w.u8(1).u32(devices.len() as u32);
                for d in devices {
                    w.u32(*d);
                }
            }
            None => {
                w.u8(0);
            }
        }
        match &self.mls {
            Some(mls) => {
                w.u8(1).bytes(&zeroize::Zeroizing::new(mls.to_bytes()?));
            }
            None => {
                w.u8(0);
            }
        }
        w.u32(self.groups.len() as u32);
        for id in self.groups.keys() {
            w.bytes(id);
        }
        self.trust.encode(&mut w);
        match &self.client_config {
            Some(c) => {
                w.u8(1)
                    .u64(c.version)
                    .u64(c.issued_at_ms)
                    .u64(c.expires_at_ms)
                    .str(&c.key_id)
                    .str(&c.payload_json);
            }
            None => {
                w.u8(0);
            }
        }
        w.u32(self.group_log_seen.len() as u32);
        for (id, position) in &self.group_log_seen {
            w.bytes(id).u64(*position);
        }
        Ok(w.finish())
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, SdkError> {
        let mut r = Reader::new(bytes, "state");
        let version = r.u8()?;
        if ![
            STATE_VERSION,
            STATE_VERSION_3,
            STATE_VERSION_2,
            STATE_VERSION_1,
        ]
        .contains(&version)
        {
            return Err(SdkError::Format {
                what: "state",
                reason: "unsupported state version",
            });
        }
        let account_id = r.str()?;
        let device_id = r.u32()?;
        let registration_id = r.u32()?;
        let username = r.str()?;
        let identity = IdentityKeyPair::from_private_bytes(r.array()?)?;
        let tokens = match r.u8()? {
            1 => Some(Tokens {
                access: r.str()?,
                refresh: r.str()?,
                session_id: r.str()?,
            }),
            _ => None,
        };
        let keys = LocalKeys::decode(&mut r)?;
        let mut peers = BTreeMap::new();
        for _ in 0..r.u32()? {
            let account = r.str()?;
            let device = r.u32()?;
            let registration_id = r.u32()?;
            let mut records = Vec::new();
            for _ in 0..r.u32()? {
                let base_key = PublicKey::from_bytes(&r.array::<33>()?)?;
                let pending = match r.u8()? {
                    1 => {
                        let signed_prekey_id = r.u32()?;
                        let one_time_prekey_id = match r.u8()? {
                            1 => Some(r.u32()?),
                            _ => None,
                        };
                        let kem = match r.u8()? {
                            1 => Some((r.u32()?, r.bytes()?.to_vec())),
                            _ => None,
                        };
                        Some(PendingInitial {
                            signed_prekey_id,
                            one_time_prekey_id,
                            kem,
                        })
                    }
                    _ => None,
                };
                let session = Session::from_bytes(r.bytes()?)?;
                records.push(SessionRecord {
                    session,
                    base_key,
                    pending,
                });
            }
            peers.insert(
                (account, device),
                PeerSessions {
                    registration_id,
                    records,
                },
            );
        }
        let last_server_id = r.u64()?;
        let own_devices = match r.u8()? {
            1 => {
                let mut set = BTreeSet::new();
                for _ in 0..r.u32()? {
                    set.insert(r.u32()?);
                }
                Some(set)
            }
            _ => None,
        };
        let mls = match r.u8()? {
            1 => Some(MlsClient::from_bytes(r.bytes()?)?),
            _ => None,
        };
        let mut groups = BTreeMap::new();
        for _ in 0..r.u32()? {
            let id = r.bytes()?.to_vec();
            if let Some(mls) = &mls {
                let group = Group::load(mls, &id)?;
                groups.insert(id, group);
            }
        }
        let trust = if version == STATE_VERSION_1 {
            Trust::from_sessions(peers.iter().filter_map(|(device, p)| {
                p.records
                    .first()
                    .map(|r| (device.clone(), r.session.remote_identity()))
            }))
        } else {
            Trust::decode(&mut r)?
        };
        let has_client_config = version == STATE_VERSION || version == STATE_VERSION_3;
        let client_config = if has_client_config && r.u8()? == 1 {
            Some(AppliedClientConfig {
                version: r.u64()?,
                issued_at_ms: r.u64()?,
                expires_at_ms: r.u64()?,
                key_id: r.str()?,
                payload_json: r.str()?,
            })
        } else {
            None
        };
        let mut group_log_seen = BTreeMap::new();
        if version == STATE_VERSION {
            for _ in 0..r.u32()? {
                let id = r.bytes()?.to_vec();
                group_log_seen.insert(id, r.u64()?);
            }
        }
        r.end()?;
        Ok(Self {
            account_id,
            device_id,
            registration_id,
            username,
            identity,
            tokens,
            keys,
            peers,
            last_server_id,
            own_devices,
            mls,
            groups,
            group_log_seen,
            trust,
            client_config,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use guardyn_crypto::PreKeyBundle;

    use super::*;

    #[test]
    fn a_version_1_state_is_read_and_pins_the_identity_of_each_session() {
        let bob = IdentityKeyPair::generate();
        let mut bob_keys = LocalKeys::default();
        let bundle = PreKeyBundle {
            identity_key: bob.identity_key(),
            signed_prekey: bob_keys.new_signed(&bob).public(),
            one_time_prekey: None,
            kem_prekey: Some(bob_keys.new_kem(&bob, true).public()),
        };
        let mut state = State::new(IdentityKeyPair::generate(), 7, "alice");
        let (session, initial) = guardyn_crypto::initiate(&state.identity, &bundle, b"hi").unwrap();
        let record = SessionRecord {
            session,
            base_key: initial.base_key,
            pending: None,
        };
        state
            .peers
            .insert(("bob".into(), 1), PeerSessions::new(9, record));
        // Version 3 is version 4 without the group log positions (a zero count when none),
        // version 2 also without the client configuration (a zero flag when none), version 1
        // also without the trust part (two zero counts when empty).
        let v4 = state.encode().unwrap();
        assert_eq!(v4[0], STATE_VERSION);
        assert_eq!(&v4[v4.len() - 13..], &[0; 13]);
        let mut v2 = v4[..v4.len() - 5].to_vec();
        v2[0] = STATE_VERSION_2;
        let from_v2 = State::decode(&v2).unwrap();
        assert_eq!(from_v2.peers.len(), 1);
        assert!(from_v2.client_config.is_none());
        let mut v1 = v4[..v4.len() - 13].to_vec();
        v1[0] = STATE_VERSION_1;

        let upgraded = State::decode(&v1).unwrap();
        assert_eq!(upgraded.trust.active("bob"), vec![(1, bob.identity_key())]);
        let again = State::decode(&upgraded.encode().unwrap()).unwrap();
        assert_eq!(again.trust.active("bob"), vec![(1, bob.identity_key())]);
        v1[0] = STATE_VERSION + 1;
        assert!(State::decode(&v1).is_err());
    }

    fn applied_config() -> AppliedClientConfig {
        AppliedClientConfig {
            version: 4,
            issued_at_ms: 10,
            expires_at_ms: 20,
            key_id: "00aa".into(),
            payload_json: r#"{"x":1}"#.into(),
        }
    }

    #[test]
    fn group_log_positions_survive_encoding_and_a_version_3_state_has_none() {
        let mut state = State::new(IdentityKeyPair::generate(), 7, "alice");
        state.last_server_id = 12;
        state.client_config = Some(applied_config());
        let v3 = state.encode().unwrap();
        state.group_log_seen.insert(vec![1, 2, 3], 41);
        state.group_log_seen.insert(vec![9; 32], u64::MAX);
        let v4 = state.encode().unwrap();

        let again = State::decode(&v4).unwrap();
        assert_eq!(again.group_log_seen, state.group_log_seen);
        assert_eq!(again.last_server_id, 12);
        assert_eq!(again.client_config, state.client_config);

        // Version 3 is version 4 without the trailing group log part (a zero count when empty).
        assert_eq!(&v3[v3.len() - 4..], &[0; 4]);
        let mut v3 = v3[..v3.len() - 4].to_vec();
        v3[0] = STATE_VERSION_3;
        let from_v3 = State::decode(&v3).unwrap();
        assert!(from_v3.group_log_seen.is_empty());
        assert_eq!(from_v3.last_server_id, 12);
        assert_eq!(from_v3.client_config, state.client_config);
        // Upgraded on the next save.
        let upgraded = from_v3.encode().unwrap();
        assert_eq!(upgraded[0], STATE_VERSION);
        assert!(State::decode(&upgraded).unwrap().group_log_seen.is_empty());
        // A version 3 state followed by extra bytes is refused, not misread.
        let mut padded = v3.clone();
        padded.extend_from_slice(&[0; 4]);
        assert!(State::decode(&padded).is_err());
    }

    #[test]
    fn the_applied_client_config_survives_encoding() {
        let mut state = State::new(IdentityKeyPair::generate(), 7, "alice");
        state.client_config = Some(applied_config());
        let again = State::decode(&state.encode().unwrap()).unwrap();
        assert_eq!(again.client_config, state.client_config);
    }
}
