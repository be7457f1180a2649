//! Per-account token buckets of the sending paths (`messaging.limits`), refused with
//! `RESOURCE_EXHAUSTED` / `RATE_LIMITED` and a RetryInfo. Keyed by the sending account, not
//! the device, so that linking more devices does not multiply an account's allowance.
//!
//! Buckets live in this process's memory: with several instances an account gets each
//! instance's allowance, and a restart refills them. The queue quotas ([`crate::quota`]) are
//! the persisted bound; these only slow a flood down.

use guardyn_common::AccountId;
use guardyn_common::ratelimit::KeyedLimiter;

use crate::config::MessagingLimits;
use crate::error::MessagingError;

#[derive(Debug)]
pub(crate) struct Limits {
    send: KeyedLimiter<AccountId>,
    create_group: KeyedLimiter<AccountId>,
    welcome: KeyedLimiter<AccountId>,
    tree_fetch: KeyedLimiter<AccountId>,
}

impl Limits {
    pub(crate) fn new(cfg: &MessagingLimits) -> Self {
        Self {
            send: KeyedLimiter::new("send_per_account", cfg.send_per_account),
            create_group: KeyedLimiter::new(
                "create_group_per_account",
                cfg.create_group_per_account,
            ),
            welcome: KeyedLimiter::new("welcome_per_account", cfg.welcome_per_account),
            tree_fetch: KeyedLimiter::new("tree_fetch_per_account", cfg.tree_fetch_per_account),
        }
    }

    /// SendMessage, SendGroupMessage.
    pub(crate) fn send(&self, account: AccountId) -> Result<(), MessagingError> {
        self.send.check(&account).map_err(MessagingError::limited)
    }

    pub(crate) fn create_group(&self, account: AccountId) -> Result<(), MessagingError> {
        self.create_group
            .check(&account)
            .map_err(MessagingError::limited)
    }

    /// A commit that carries a Welcome.
    pub(crate) fn welcome(&self, account: AccountId) -> Result<(), MessagingError> {
        self.welcome
            .check(&account)
            .map_err(MessagingError::limited)
    }

    /// GetGroupInfo, GetRatchetTree.
    pub(crate) fn tree_fetch(&self, account: AccountId) -> Result<(), MessagingError> {
        self.tree_fetch
            .check(&account)
            .map_err(MessagingError::limited)
    }
}
