//! Plain domain values the gRPC edge, the store and the job runner share.

use std::fmt;

use uuid::Uuid;

use crate::providers::{Platform, WebPushKeys};

/// A registered token's id: a random UUID, in its hyphenated lowercase form on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TokenId(pub Uuid);

impl TokenId {
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn parse(s: &str) -> Option<Self> {
        let id = Uuid::parse_str(s).ok()?;
        // One spelling only, so an id compares equal to what ListPushTokens returned.
        (id.hyphenated().to_string() == s).then_some(Self(id))
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// How a device wants to be woken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Urgent mail raises a generic visible notification; other mail wakes silently.
    #[default]
    Alert,
    /// Always wake silently.
    Silent,
    /// Never push.
    None,
}

/// A device's notification settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Settings {
    pub mode: Mode,
    /// Unix ms; while in the future urgent mail wakes silently. 0 = not muted.
    pub mute_until_ms: u64,
}

impl Settings {
    /// Whether a wake for mail of this urgency should alert at `now_ms`; `None` when the
    /// device must not be pushed at all.
    pub fn wake(&self, urgent: bool, now_ms: u64) -> Option<bool> {
        match self.mode {
            Mode::None => None,
            Mode::Silent => Some(false),
            Mode::Alert => Some(urgent && self.mute_until_ms <= now_ms),
        }
    }
}

/// A validated RegisterPushToken request.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct NewToken {
    pub platform: Platform,
    pub token: String,
    pub topic: String,
    pub apns_sandbox: bool,
    pub web_push: Option<WebPushKeys>,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("platform", &self.platform)
            .field("token_hint", &hint(&self.token))
            .finish_non_exhaustive()
    }
}

/// What ListPushTokens shows of a token: never the token itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenInfo {
    pub id: TokenId,
    pub platform: Platform,
    pub hint: String,
    pub topic: String,
    pub apns_sandbox: bool,
    pub registered_ms: u64,
}

/// The last 6 characters of a token.
pub(crate) fn hint(token: &str) -> String {
    let skip = token.chars().count().saturating_sub(6);
    token.chars().skip(skip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_only_for_urgent_unmuted_alert_mode() {
        let alert = Settings::default();
        assert_eq!(alert.wake(true, 10), Some(true));
        assert_eq!(alert.wake(false, 10), Some(false));
        let muted = Settings {
            mute_until_ms: 11,
            ..alert
        };
        assert_eq!(muted.wake(true, 10), Some(false));
        assert_eq!(muted.wake(true, 11), Some(true));
        let silent = Settings {
            mode: Mode::Silent,
            mute_until_ms: 0,
        };
        assert_eq!(silent.wake(true, 10), Some(false));
        let none = Settings {
            mode: Mode::None,
            mute_until_ms: 0,
        };
        assert_eq!(none.wake(true, 10), None);
        assert_eq!(hint("abcdefgh"), "cdefgh");
        assert_eq!(hint("ab"), "ab");
    }
}
