//! MLS groups over GroupService: create, add/remove members (claim KeyPackages, commit,
//! welcome), application messages, and STALE_EPOCH recovery (process the winning commit,
//! then retry).
//!
//! Member identities are checked against the key directory, not taken from the credentials:
//! a claimed KeyPackage must carry the signature key the directory pins for its device, and
//! before this device sends to a group in an epoch whose members it has not checked yet, every
//! member leaf's signature key is compared with the pinned key of the device it names
//! ([`Client::verify_group_members`]). A mismatch is [`SdkError::MlsIdentityMismatch`] and
//! nothing is sent. The pinned keys fetched that way (and with claimed KeyPackages) are kept in
//! memory. Before an incoming commit, proposal or application message of a group is
//! processed, the pinned keys of every account with a member in it are fetched (once per
//! account), so the sender's leaf and any leaf a commit adds or changes is checked against
//! the directory; one that contradicts its pin, or names a device of a fetched account without
//! a pin, is refused (not merged, not delivered). A Welcome's members are checked against what
//! is known when it arrives and fetched before the group's first message is processed.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::Duration;

use guardyn_crypto::mls::{
    CommitBundle, Group, KeyPackagePolicy, MemberInfo, MlsClient, OpenWelcome, Received,
    validate_key_package,
};
use guardyn_proto::guardyn::auth::v1 as auth;
use guardyn_proto::guardyn::auth::v1::key_directory_service_client::KeyDirectoryServiceClient;
use guardyn_proto::guardyn::common::v1::{DeviceAddress, ErrorReason};
use guardyn_proto::guardyn::messaging::v1 as msg;
use guardyn_proto::guardyn::messaging::v1::group_service_client::GroupServiceClient;
use rand::Rng as _;

use crate::client::{Client, Inner};
use crate::content::{BodyType, Content, Kind};
use crate::error::SdkError;
use crate::events::{Address, Event};
use crate::messages::now_ms;
use crate::state::State;

/// How long a retry waits for the Listen stream to bring a group up to the server's epoch.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// Tries at fetching a Welcome's ratchet tree through rate limits and unavailability.
const TREE_FETCH_ATTEMPTS: u32 = 4;
/// Largest ratchet tree accepted from the server: about 200 bytes per member, so room for
/// groups far beyond the server's default 10,000 devices (tonic's default is 4 MiB).
const MAX_TREE_BYTES: usize = 32 * 1024 * 1024;

fn parse_identity(identity: &[u8]) -> Option<Address> {
    let s = std::str::from_utf8(identity).ok()?;
    let (account, device) = s.rsplit_once('.')?;
    Some(Address {
        account_id: account.to_owned(),
        device_id: device.parse().ok()?,
    })
}

/// [`MlsError::UntrustedMember`] as the SDK's typed error.
fn untrusted(e: guardyn_crypto::mls::MlsError) -> SdkError {
    match e {
        guardyn_crypto::mls::MlsError::UntrustedMember { identity } => {
            match parse_identity(&identity) {
                Some(a) => SdkError::MlsIdentityMismatch {
                    account: a.account_id,
                    device: a.device_id,
                },
                None => {
                    SdkError::Protocol("group member identity is not <account>.<device>".into())
                }
            }
        }
        other => other.into(),
    }
}

/// Checks every member leaf against the pinned keys of the devices the leaves name.
fn check_members(
    members: &[MemberInfo],
    pins: &HashMap<(String, u32), Vec<u8>>,
) -> Result<(), SdkError> {
    for m in members {
        let a = parse_identity(&m.identity).ok_or_else(|| {
            SdkError::Protocol("group member identity is not <account>.<device>".into())
        })?;
        if pins.get(&(a.account_id.clone(), a.device_id)) != Some(&m.signature_key) {
            return Err(SdkError::MlsIdentityMismatch {
                account: a.account_id,
                device: a.device_id,
            });
        }
    }
    Ok(())
}

fn stale_epoch(e: &SdkError) -> bool {
    e.reason() == Some(ErrorReason::StaleEpoch)
}

fn parts<'a>(
    st: &'a mut State,
    group_id: &[u8],
) -> Result<(&'a MlsClient, &'a mut Group), SdkError> {
    let mls = st
        .mls
        .as_ref()
        .ok_or(SdkError::NotSignedIn("no MLS client"))?;
    let group = st.groups.get_mut(group_id).ok_or(SdkError::UnknownGroup)?;
    Ok((mls, group))
}

/// Pinned-key fetches in flight at once: at 16, 10,000 accounts took 0.5–0.6 s, spent mostly
/// waiting on round trips.
const PIN_FETCHES: usize = 64;

impl Inner {
    /// Fetches the pinned MLS signature keys of `accounts` (into the cache, marking them
    /// fetched) and returns them, [`PIN_FETCHES`] accounts at a time: one at a time, the first
    /// message to a 10,000-device group waited 2.5 s for them.
    pub(crate) async fn fetch_mls_pins(
        &self,
        accounts: impl IntoIterator<Item = String>,
    ) -> Result<HashMap<(String, u32), Vec<u8>>, SdkError> {
        use futures::StreamExt as _;
        let mut pins = HashMap::new();
        let mut fetches = futures::stream::iter(accounts)
            .map(|account| async move {
                let resp = self
                    .call(
                        auth::GetMlsSignatureKeysRequest {
                            account_id: account.clone(),
                        },
                        |ch, r| async move {
                            KeyDirectoryServiceClient::new(ch)
                                .get_mls_signature_keys(r)
                                .await
                        },
                    )
                    .await;
                (account, resp)
            })
            .buffer_unordered(PIN_FETCHES);
        let mut done = BTreeSet::new();
        let mut failed = None;
        while let Some((account, resp)) = fetches.next().await {
            match resp {
                Ok(resp) => {
                    for k in resp.keys {
                        pins.insert((account.clone(), k.device_id), k.signature_key);
                    }
                    done.insert(account);
                }
                Err(status) => {
                    failed = Some(status);
                    break;
                }
            }
        }
        // The cache takes what was fetched, even when a later fetch failed; updated once, not
        // per account (which was quadratic in the group's size).
        if let Ok(mut cache) = self.mls_pins.lock() {
            cache.retain(|(a, _), _| !done.contains(a));
            cache.extend(pins.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Ok(mut fetched) = self.mls_fetched.lock() {
            fetched.extend(done);
        }
        match failed {
            Some(status) => Err(status.into()),
            None => Ok(pins),
        }
    }

    /// Before an MLS envelope is processed: for a Welcome, fetch the ratchet tree it leaves
    /// out (returned, for [`Inner::open_mls`]); for a known group, fetch the pins of member
    /// accounts not fetched yet. A failure is logged: a Welcome without its tree is then
    /// reported undecryptable, and unfetched leaves stay unchecked until the next envelope or
    /// send.
    pub(crate) async fn prepare_mls(&self, env: &msg::DeliveredEnvelope) -> Option<Vec<u8>> {
        if env.mls_kind == msg::MlsMessageKind::Welcome as i32 {
            return match self.welcome_tree(env).await {
                Ok(tree) => tree,
                Err(e) => {
                    tracing::warn!(error = %e, "could not fetch the ratchet tree of a Welcome");
                    None
                }
            };
        }
        let group_id = env.group_id.as_ref()?;
        let missing: BTreeSet<String> = {
            let st = self.state.lock().await;
            let group = st.groups.get(group_id)?;
            let fetched = self
                .mls_fetched
                .lock()
                .map(|f| f.clone())
                .unwrap_or_default();
            group
                .members()
                .iter()
                .filter_map(|m| parse_identity(&m.identity))
                .map(|a| a.account_id)
                .filter(|a| !fetched.contains(a))
                .collect()
        };
        if missing.is_empty() {
            return None;
        }
        if let Err(e) = self.fetch_mls_pins(missing).await {
            tracing::warn!(error = %e, "could not fetch pinned MLS keys of group members");
        }
        None
    }

    /// The ratchet tree a Welcome leaves out, from the delivery service: that of the epoch the
    /// envelope says the Welcome is for (`None` for envelopes queued before the server said,
    /// whose Welcomes carry the tree). Verified against the Welcome's tree hash on joining, so
    /// a wrong one only fails the join.
    async fn welcome_tree(
        &self,
        env: &msg::DeliveredEnvelope,
    ) -> Result<Option<Vec<u8>>, SdkError> {
        let (Some(group_id), Some(epoch)) = (env.group_id.clone(), env.epoch) else {
            return Ok(None);
        };
        // A Welcome whose tree cannot be had is lost to this device: a rate limit or an
        // unavailable server is waited out a few times (the server's hint, at most 5 s).
        let mut attempts = 0;
        loop {
            let req = msg::GetRatchetTreeRequest {
                group_id: group_id.clone(),
                epoch,
            };
            let status = match self
                .call(req, |ch, r| async move {
                    GroupServiceClient::new(ch)
                        .max_decoding_message_size(MAX_TREE_BYTES)
                        .get_ratchet_tree(r)
                        .await
                })
                .await
            {
                Ok(resp) => return Ok(Some(resp.ratchet_tree)),
                Err(status) => status,
            };
            let transient = matches!(
                status.code(),
                tonic::Code::ResourceExhausted | tonic::Code::Unavailable
            );
            attempts += 1;
            if !transient || attempts >= TREE_FETCH_ATTEMPTS {
                return Err(status.into());
            }
            let wait = tonic_types::StatusExt::get_details_retry_info(&status)
                .and_then(|r| r.retry_delay)
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(5));
            tokio::time::sleep(wait).await;
        }
    }

    /// Processes an MLS envelope (welcome, commit, proposal or application message).
    pub(crate) fn open_mls(
        &self,
        st: &mut State,
        env: &msg::DeliveredEnvelope,
        welcome_tree: Option<&[u8]>,
    ) -> Result<Option<Event>, SdkError> {
        let pins = self.mls_pins.lock().map(|p| p.clone()).unwrap_or_default();
        let fetched = self
            .mls_fetched
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default();
        let accept = |m: &MemberInfo| {
            parse_identity(&m.identity).is_some_and(|a| {
                match pins.get(&(a.account_id.clone(), a.device_id)) {
                    Some(k) => *k == m.signature_key,
                    // Not fetched yet (a member added by the commit being processed): checked
                    // before the group's next message.
                    None => !fetched.contains(&a.account_id),
                }
            })
        };
        if env.mls_kind == msg::MlsMessageKind::Welcome as i32 {
            let mls = st
                .mls
                .as_ref()
                .ok_or(SdkError::NotSignedIn("no MLS client"))?;
            let group = OpenWelcome::open(mls, &env.content)
                .and_then(|w| w.join(mls, welcome_tree, accept))
                .map_err(untrusted)?;
            let group_id = group.group_id().to_vec();
            st.groups.insert(group_id.clone(), group);
            return Ok(Some(Event::GroupJoined { group_id }));
        }
        let group_id = env
            .group_id
            .clone()
            .ok_or_else(|| SdkError::Protocol("MLS envelope without group id".into()))?;
        let (mls, group) = parts(st, &group_id)?;
        let received = group
            .process_message_checked(mls, &env.content, accept)
            .map_err(untrusted)?;
        Ok(match received {
            Received::Application {
                sender_identity,
                plaintext,
                ..
            } => {
                let sender = parse_identity(&sender_identity).ok_or_else(|| {
                    SdkError::Protocol("group sender identity is not <account>.<device>".into())
                })?;
                let content = Content::decode(&plaintext)?;
                if content.kind != Kind::Group {
                    return Err(SdkError::Protocol("1:1 content in a group message".into()));
                }
                Some(Event::GroupMessage {
                    group_id,
                    message: content.into_message(sender)?,
                })
            }
            Received::Commit(summary) => {
                if summary.self_removed {
                    st.groups.remove(&group_id);
                }
                Some(Event::GroupChanged {
                    group_id,
                    epoch: summary.epoch,
                    added: summary
                        .added
                        .iter()
                        .filter_map(|i| parse_identity(i))
                        .collect(),
                    removed: summary.removed.len(),
                    self_removed: summary.self_removed,
                })
            }
            Received::Proposal { .. } | Received::OwnMessage => None,
        })
    }

    /// Brings `group_id` to at least `epoch` by processing queued traffic: waits for the
    /// running Listen pump, or drains the queue itself when none runs.
    async fn catch_up(&self, client: &Client, group_id: &[u8], epoch: u64) -> Result<(), SdkError> {
        let reached = |st: &State| {
            st.groups
                .get(group_id)
                .is_none_or(|g| g.epoch() >= epoch || !g.is_active())
        };
        if self.pump_active.load(Ordering::SeqCst) {
            let mut changed = self.changed.subscribe();
            let wait = async {
                loop {
                    if reached(&*self.state.lock().await) {
                        return;
                    }
                    if changed.changed().await.is_err() {
                        return;
                    }
                }
            };
            return tokio::time::timeout(CATCH_UP_TIMEOUT, wait)
                .await
                .map_err(|_| SdkError::Timeout("the group's new epoch"));
        }
        let events = client.sync().await?;
        if let Ok(mut stash) = self.stash.lock() {
            stash.extend(events);
        }
        Ok(())
    }

    fn current_epoch_of(status: &tonic::Status) -> Option<u64> {
        use prost::Message as _;
        let decoded = tonic_types::pb::Status::decode(status.details()).ok()?;
        decoded
            .details
            .iter()
            .find(|a| a.type_url.ends_with("StaleEpoch"))
            .and_then(|a| {
                guardyn_proto::guardyn::common::v1::StaleEpoch::decode(a.value.as_slice()).ok()
            })
            .map(|s| s.current_epoch)
    }
}

impl Client {
    /// Creates a group with this device as its only member; returns the group id.
    pub async fn create_group(&self) -> Result<Vec<u8>, SdkError> {
        let mut group_id = vec![0u8; 32];
        rand::rng().fill_bytes(&mut group_id);
        let mut st = self.inner.state.lock().await;
        let mls = st
            .mls
            .as_ref()
            .ok_or(SdkError::NotSignedIn("no MLS client"))?;
        let group = Group::create(mls, &group_id)?;
        let group_info = group.export_group_info(mls)?;
        st.groups.insert(group_id.clone(), group);
        self.inner.persist(&mut st)?;
        let req = msg::CreateGroupRequest {
            group_id: group_id.clone(),
            group_info,
        };
        let created = self
            .inner
            .call(req, |ch, r| async move {
                GroupServiceClient::new(ch).create_group(r).await
            })
            .await;
        if let Err(status) = created {
            st.groups.remove(&group_id);
            return Err(status.into());
        }
        Ok(group_id)
    }

    /// Group ids this device is a member of.
    pub async fn groups(&self) -> Vec<Vec<u8>> {
        self.inner
            .state
            .lock()
            .await
            .groups
            .keys()
            .cloned()
            .collect()
    }

    /// Current members of a group (from the local MLS tree) and its epoch.
    pub async fn group_members(&self, group_id: &[u8]) -> Result<(u64, Vec<Address>), SdkError> {
        let st = self.inner.state.lock().await;
        let group = st.groups.get(group_id).ok_or(SdkError::UnknownGroup)?;
        Ok((
            group.epoch(),
            group
                .members()
                .iter()
                .filter_map(|m| parse_identity(&m.identity))
                .collect(),
        ))
    }

    /// Adds every device of each account (our own other devices included when our account is
    /// listed) to the group. Returns the new epoch.
    pub async fn add_to_group(&self, group_id: &[u8], accounts: &[&str]) -> Result<u64, SdkError> {
        let mut key_packages = Vec::new();
        for account in accounts {
            let resp = self
                .inner
                .call(
                    auth::ClaimKeyPackagesRequest {
                        account_id: (*account).to_owned(),
                        device_ids: Vec::new(),
                    },
                    |ch, r| async move {
                        KeyDirectoryServiceClient::new(ch)
                            .claim_key_packages(r)
                            .await
                    },
                )
                .await?;
            for kp in resp.key_packages {
                let mismatch = || SdkError::MlsIdentityMismatch {
                    account: (*account).to_owned(),
                    device: kp.device_id,
                };
                let summary = validate_key_package(&kp.key_package, &KeyPackagePolicy::default())
                    .map_err(|_| mismatch())?;
                if summary.identity != format!("{account}.{}", kp.device_id).into_bytes()
                    || summary.signature_key != kp.mls_signature_key
                {
                    return Err(mismatch());
                }
                if let Ok(mut pins) = self.inner.mls_pins.lock() {
                    pins.insert(
                        ((*account).to_owned(), kp.device_id),
                        kp.mls_signature_key.clone(),
                    );
                }
                key_packages.push((
                    DeviceAddress {
                        account_id: (*account).to_owned(),
                        device_id: kp.device_id,
                    },
                    kp.key_package,
                ));
            }
        }
        if key_packages.is_empty() {
            return Err(SdkError::Invalid(
                "none of these accounts has a device with a KeyPackage".into(),
            ));
        }
        let recipients: Vec<DeviceAddress> = key_packages.iter().map(|(a, _)| a.clone()).collect();
        self.commit(group_id, recipients, |group, mls| {
            let kps: Vec<&[u8]> = key_packages.iter().map(|(_, kp)| kp.as_slice()).collect();
            group.add_members(mls, &kps)
        })
        .await
    }

    /// Removes every device of `account` from the group. Returns the new epoch.
    pub async fn remove_from_group(&self, group_id: &[u8], account: &str) -> Result<u64, SdkError> {
        let prefix = format!("{account}.");
        self.commit(group_id, Vec::new(), |group, mls| {
            let leaves: Vec<u32> = group
                .members()
                .iter()
                .filter(|m| m.identity.starts_with(prefix.as_bytes()))
                .map(|m| m.leaf_index)
                .collect();
            if leaves.is_empty() {
                return Err(guardyn_crypto::mls::MlsError::UnknownMember(0));
            }
            group.remove_members(mls, &leaves)
        })
        .await
    }

    /// Creates a commit with `make`, submits it, and merges it once accepted; on STALE_EPOCH
    /// drops it, processes the winning commit and tries again.
    async fn commit<F>(
        &self,
        group_id: &[u8],
        welcome_recipients: Vec<DeviceAddress>,
        make: F,
    ) -> Result<u64, SdkError>
    where
        F: Fn(&mut Group, &MlsClient) -> Result<CommitBundle, guardyn_crypto::mls::MlsError>,
    {
        let mut last = None;
        for _ in 0..self.inner.config.max_attempts {
            // The state stays locked until the server answered, so the Listen pump cannot
            // process a competing commit while ours is pending.
            let mut st = self.inner.state.lock().await;
            let (epoch, bundle) = {
                let (mls, group) = parts(&mut st, group_id)?;
                let epoch = group.epoch();
                (epoch, make(group, mls)?)
            };
            let req = msg::SendCommitRequest {
                group_id: group_id.to_vec(),
                epoch,
                commit: bundle.commit,
                welcome: bundle.welcome,
                welcome_recipients: if bundle_has_welcome(&welcome_recipients) {
                    welcome_recipients.clone()
                } else {
                    Vec::new()
                },
                group_info: bundle.group_info.unwrap_or_default(),
            };
            let result = self
                .inner
                .call(req, |ch, r| async move {
                    GroupServiceClient::new(ch).send_commit(r).await
                })
                .await;
            let (mls, group) = parts(&mut st, group_id)?;
            match result {
                Ok(resp) => {
                    group.merge_pending_commit(mls)?;
                    self.inner.persist(&mut st)?;
                    return Ok(resp.epoch);
                }
                Err(status) => {
                    group.discard_pending_commit(mls)?;
                    self.inner.persist_if_dirty(&mut st)?;
                    drop(st);
                    last = Some(self.catch_up_after(group_id, epoch, status).await?);
                }
            }
        }
        Err(SdkError::exhausted(self.inner.config.max_attempts, last))
    }

    /// After a refused group call: on STALE_EPOCH, process the group's pending traffic up to the
    /// server's epoch and hand back the error to remember for the next attempt; any other error
    /// ends the operation.
    async fn catch_up_after(
        &self,
        group_id: &[u8],
        epoch: u64,
        status: tonic::Status,
    ) -> Result<SdkError, SdkError> {
        let current = Inner::current_epoch_of(&status);
        let err = SdkError::from(status);
        if !stale_epoch(&err) {
            return Err(err);
        }
        self.inner
            .catch_up(self, group_id, current.unwrap_or(epoch + 1))
            .await?;
        Ok(err)
    }

    /// Sends an application message to the group; returns its message id.
    pub async fn send_group(&self, group_id: &[u8], body: &[u8]) -> Result<String, SdkError> {
        self.send_group_body(group_id, BodyType::Plain, body).await
    }

    /// Sends a body of the given type to a group (see [`Client::send_group`]).
    pub(crate) async fn send_group_body(
        &self,
        group_id: &[u8],
        body_type: BodyType,
        body: &[u8],
    ) -> Result<String, SdkError> {
        let message_id = crate::messages::new_message_id();
        let mut last = None;
        for _ in 0..self.inner.config.max_attempts {
            self.ensure_members_verified(group_id).await?;
            let (epoch, message) = {
                let mut st = self.inner.state.lock().await;
                let content = Content {
                    kind: Kind::Group,
                    message_id: message_id.clone(),
                    sent_at_ms: now_ms(),
                    registration_id: st.registration_id,
                    body_type,
                    body: body.to_vec(),
                };
                let (mls, group) = parts(&mut st, group_id)?;
                let epoch = group.epoch();
                let message = group.encrypt(mls, &content.encode())?;
                self.inner.persist(&mut st)?;
                (epoch, message)
            };
            let req = msg::SendGroupMessageRequest {
                group_id: group_id.to_vec(),
                epoch,
                client_message_id: message_id.clone(),
                message,
                urgent: true,
            };
            match self
                .inner
                .call(req, |ch, r| async move {
                    GroupServiceClient::new(ch).send_group_message(r).await
                })
                .await
            {
                Ok(_) => return Ok(message_id),
                Err(status) => {
                    last = Some(self.catch_up_after(group_id, epoch, status).await?);
                }
            }
        }
        Err(SdkError::exhausted(self.inner.config.max_attempts, last))
    }
}

impl Client {
    /// Checks every member leaf of the group (at its current epoch) against the MLS signature
    /// key the key directory pins for the device the leaf names; [`SdkError::MlsIdentityMismatch`]
    /// names the first that differs.
    pub async fn verify_group_members(&self, group_id: &[u8]) -> Result<(), SdkError> {
        let (epoch, members) = {
            let st = self.inner.state.lock().await;
            let group = st.groups.get(group_id).ok_or(SdkError::UnknownGroup)?;
            (group.epoch(), group.members())
        };
        let accounts: BTreeSet<String> = members
            .iter()
            .filter_map(|m| parse_identity(&m.identity))
            .map(|a| a.account_id)
            .collect();
        let pins = self.inner.fetch_mls_pins(accounts).await?;
        check_members(&members, &pins)?;
        if let Ok(mut verified) = self.inner.mls_verified.lock() {
            verified.insert(group_id.to_vec(), epoch);
        }
        Ok(())
    }

    /// [`Client::verify_group_members`] unless this epoch of the group was already checked.
    async fn ensure_members_verified(&self, group_id: &[u8]) -> Result<(), SdkError> {
        let epoch = {
            let st = self.inner.state.lock().await;
            st.groups
                .get(group_id)
                .ok_or(SdkError::UnknownGroup)?
                .epoch()
        };
        let done = self
            .inner
            .mls_verified
            .lock()
            .map(|v| v.get(group_id) == Some(&epoch))
            .unwrap_or(false);
        if done {
            return Ok(());
        }
        self.verify_group_members(group_id).await
    }
}

fn bundle_has_welcome(recipients: &[DeviceAddress]) -> bool {
    !recipients.is_empty()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn member_identities_parse_as_device_addresses() {
        assert_eq!(
            parse_identity(b"0b0c5c8e-7c4b-4c1e-9a34-1d5b0d3b8f11.2"),
            Some(Address {
                account_id: "0b0c5c8e-7c4b-4c1e-9a34-1d5b0d3b8f11".into(),
                device_id: 2
            })
        );
        assert_eq!(parse_identity(b"no-device"), None);
        assert_eq!(parse_identity(b"acct.x"), None);
    }

    #[test]
    fn a_member_whose_key_is_not_the_pinned_one_is_refused() {
        let acct = "0b0c5c8e-7c4b-4c1e-9a34-1d5b0d3b8f11";
        let member = |device: u32, key: u8| MemberInfo {
            leaf_index: device,
            identity: format!("{acct}.{device}").into_bytes(),
            signature_key: vec![key; 32],
        };
        let pins: HashMap<(String, u32), Vec<u8>> = [
            ((acct.to_owned(), 1), vec![1; 32]),
            ((acct.to_owned(), 2), vec![2; 32]),
        ]
        .into();
        check_members(&[member(1, 1), member(2, 2)], &pins).unwrap();
        // Device 2's identity under another key (an impostor's leaf).
        match check_members(&[member(1, 1), member(2, 9)], &pins) {
            Err(SdkError::MlsIdentityMismatch { account, device }) => {
                assert_eq!((account.as_str(), device), (acct, 2));
            }
            other => panic!("expected MlsIdentityMismatch, got {other:?}"),
        }
        // A device the directory pins nothing for.
        assert!(matches!(
            check_members(&[member(3, 3)], &pins),
            Err(SdkError::MlsIdentityMismatch { device: 3, .. })
        ));
    }
}
