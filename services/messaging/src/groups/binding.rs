//! Binding MLS leaves to devices: a leaf naming `<account_id>.<device_id>` is accepted only
//! with the signature key the device directory pins for that device, and an Add only for a
//! KeyPackage the directory handed out (ClaimKeyPackages). Without this any member could add a
//! leaf claiming another device's identity under its own key and then speak as that device.

use guardyn_common::{AccountId, DeviceId};
use guardyn_crypto::mls::{AddedKeyPackage, LeafInfo, VerifiedCommit};

use super::state::Member;
use crate::core::Core;
use crate::error::MessagingError;

impl Core {
    /// The device a leaf names, when the leaf carries the device's pinned signature key.
    pub(crate) async fn bound_leaf(
        &self,
        field: &str,
        leaf: &LeafInfo,
    ) -> Result<Member, MessagingError> {
        self.bound(field, &leaf.identity, &leaf.signature_key).await
    }

    /// The device an added KeyPackage names, when the directory handed that package out and it
    /// carries the device's pinned key.
    pub(crate) async fn bound_key_package(
        &self,
        field: &str,
        kp: &AddedKeyPackage,
    ) -> Result<Member, MessagingError> {
        let m = self.bound(field, &kp.identity, &kp.signature_key).await?;
        let handed_out = self
            .directory
            .key_package_claimed(&m.account.to_string(), m.device.get(), &kp.key_package_ref)
            .await?;
        if !handed_out {
            return Err(MessagingError::identity(
                field,
                "adds a KeyPackage that ClaimKeyPackages did not hand out",
            ));
        }
        Ok(m)
    }

    async fn bound(
        &self,
        field: &str,
        identity: &[u8],
        signature_key: &[u8],
    ) -> Result<Member, MessagingError> {
        let m = Member::from_identity(identity).ok_or_else(|| {
            MessagingError::identity(field, "credential identity is not <account_id>.<device_id>")
        })?;
        let pinned = self
            .directory
            .mls_key_pinned(&m.account.to_string(), m.device.get(), signature_key)
            .await?;
        if !pinned {
            return Err(MessagingError::identity(
                field,
                "leaf signature key is not the device's pinned MLS signature key",
            ));
        }
        Ok(m)
    }

    /// Checks every leaf a verified commit added or changed; returns the added devices.
    /// A member may re-key its leaf but never change the identity it names; an external
    /// joiner's leaf must name the calling device.
    pub(crate) async fn check_commit_binding(
        &self,
        c: &VerifiedCommit,
        caller: (AccountId, DeviceId),
    ) -> Result<Vec<Member>, MessagingError> {
        let mut added = Vec::with_capacity(c.added.len());
        for kp in &c.added {
            added.push(self.bound_key_package("commit", kp).await?);
        }
        for change in &c.changed {
            let is_add = c.added.iter().any(|kp| {
                kp.identity == change.leaf.identity && kp.signature_key == change.leaf.signature_key
            });
            let m = self.bound_leaf("commit", &change.leaf).await?;
            if is_add {
                continue;
            }
            match &change.previous {
                // The same member re-keyed its leaf (update path or Update proposal).
                Some(p) if !c.removed.contains(&p.leaf_index) => {
                    if p.identity != change.leaf.identity {
                        return Err(MessagingError::identity(
                            "commit",
                            "a member may not change the identity of its leaf",
                        ));
                    }
                }
                // A leaf that is neither added nor kept: an external commit's joiner.
                _ => {
                    if change.leaf.leaf_index != c.sender_leaf || !m.is(caller.0, caller.1) {
                        return Err(MessagingError::identity(
                            "commit",
                            "a joining leaf must name the calling device",
                        ));
                    }
                }
            }
        }
        Ok(added)
    }
}
