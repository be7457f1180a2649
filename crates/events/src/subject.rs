//! Subject and pattern syntax shared by every backend (NATS semantics).
//!
//! A subject is a non-empty list of tokens separated by `.`. In a pattern, a token that is
//! exactly `*` matches any one token and a final token `>` matches one or more trailing tokens.
//! Subjects whose first token starts with `_` or `$` are reserved: NATS uses them for inboxes,
//! system traffic and our own job queues, so callers may neither publish to nor subscribe to them.

use std::fmt;
use std::sync::Arc;

use crate::error::EventError;

/// Longest subject or pattern accepted, in bytes.
pub const MAX_SUBJECT_LEN: usize = 256;
/// Longest queue name accepted, in bytes.
pub const MAX_QUEUE_NAME_LEN: usize = 64;

fn invalid_subject(subject: &str, reason: &'static str) -> EventError {
    EventError::InvalidSubject {
        subject: truncate_for_error(subject),
        reason,
    }
}

/// Error messages quote the offending subject; cap it so a hostile input cannot bloat logs.
fn truncate_for_error(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The rules on the whole text, common to subjects and patterns.
fn check_text(s: &str) -> Result<(), EventError> {
    if s.is_empty() {
        return Err(invalid_subject(s, "empty"));
    }
    if s.len() > MAX_SUBJECT_LEN {
        return Err(invalid_subject(s, "longer than 256 bytes"));
    }
    // Every publish checks its subject: ASCII (all of Guardyn's) is checked by byte, where
    // whitespace and control characters are exactly the ASCII ones.
    let bad_char = if s.is_ascii() {
        s.bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    } else {
        s.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    if bad_char {
        return Err(invalid_subject(
            s,
            "contains whitespace or control characters",
        ));
    }
    Ok(())
}

/// The rules on token `i` of `s`, common to subjects and patterns.
fn check_token(s: &str, i: usize, token: &str) -> Result<(), EventError> {
    if token.is_empty() {
        return Err(invalid_subject(
            s,
            "empty token (leading, trailing or double '.')",
        ));
    }
    if i == 0 && (token.starts_with('_') || token.starts_with('$')) {
        return Err(invalid_subject(
            s,
            "first token starting with '_' or '$' is reserved",
        ));
    }
    Ok(())
}

/// Checks the rules common to subjects and patterns and returns the tokens.
fn split_tokens(s: &str) -> Result<Vec<&str>, EventError> {
    check_text(s)?;
    let tokens: Vec<&str> = s.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        check_token(s, i, t)?;
    }
    Ok(tokens)
}

/// Validates a concrete subject (as used by `publish`): no wildcards anywhere.
pub fn validate_subject(subject: &str) -> Result<(), EventError> {
    check_text(subject)?;
    for (i, t) in subject.split('.').enumerate() {
        check_token(subject, i, t)?;
        if t.contains(['*', '>']) {
            return Err(invalid_subject(
                subject,
                "wildcards are not allowed in a subject",
            ));
        }
    }
    Ok(())
}

/// Validates a queue name: 1 to 64 bytes of ASCII letters, digits, `-` and `_`, not starting
/// with `_` (JetStream consumer names and storage partitions both accept this set).
pub fn validate_queue_name(queue: &str) -> Result<(), EventError> {
    let reason = if queue.is_empty() {
        Some("empty")
    } else if queue.len() > MAX_QUEUE_NAME_LEN {
        Some("longer than 64 bytes")
    } else if !queue
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Some("only ASCII letters, digits, '-' and '_' are allowed")
    } else if queue.starts_with('_') {
        Some("names starting with '_' are reserved")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(EventError::InvalidQueue {
            queue: truncate_for_error(queue),
            reason,
        }),
        None => Ok(()),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PatternToken {
    Literal(Box<str>),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more trailing tokens.
    Tail,
}

/// See [`Pattern::shape`].
pub(crate) enum Shape<'a> {
    /// No wildcard: the pattern matches this subject only (shared with the pattern).
    Subject(&'a Arc<str>),
    Wild(&'a [PatternToken]),
}

/// A validated subscription pattern.
///
/// Most subscriptions (one per Listen stream, per presence topic) name one concrete subject:
/// those keep only their text, so a clone shares one allocation and the in-process bus files
/// them by that text; only a pattern with a wildcard keeps its tokens.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    raw: Arc<str>,
    /// `None`: no wildcard, the pattern matches its own text only.
    wild: Option<Arc<[PatternToken]>>,
}

impl Pattern {
    pub fn parse(pattern: &str) -> Result<Self, EventError> {
        let raw_tokens = split_tokens(pattern)?;
        if !raw_tokens.iter().any(|t| t.contains(['*', '>'])) {
            return Ok(Self {
                raw: pattern.into(),
                wild: None,
            });
        }
        let last = raw_tokens.len() - 1;
        let mut tokens = Vec::with_capacity(raw_tokens.len());
        for (i, t) in raw_tokens.into_iter().enumerate() {
            let token = match t {
                "*" => PatternToken::One,
                ">" if i == last => PatternToken::Tail,
                ">" => {
                    return Err(invalid_subject(
                        pattern,
                        "'>' is only allowed as the last token",
                    ));
                }
                // NATS would treat `a*` as a literal; rejecting it avoids a pattern that looks
                // like a wildcard but is not one.
                t if t.contains(['*', '>']) => {
                    return Err(invalid_subject(
                        pattern,
                        "wildcards must be whole tokens ('*' or '>')",
                    ));
                }
                t => PatternToken::Literal(t.into()),
            };
            tokens.push(token);
        }
        Ok(Self {
            raw: pattern.into(),
            wild: Some(tokens.into()),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// What the pattern matches: its own text, or its tokens with a wildcard among them.
    pub(crate) fn shape(&self) -> Shape<'_> {
        match self.wild.as_deref() {
            None => Shape::Subject(&self.raw),
            Some(tokens) => Shape::Wild(tokens),
        }
    }

    /// Whether a (valid) subject matches this pattern.
    pub fn matches(&self, subject: &str) -> bool {
        let Some(tokens) = self.wild.as_deref() else {
            return subject == &*self.raw;
        };
        let mut subject_tokens = subject.split('.');
        for token in tokens {
            match token {
                PatternToken::Tail => return subject_tokens.next().is_some(),
                PatternToken::One => {
                    if subject_tokens.next().is_none() {
                        return false;
                    }
                }
                PatternToken::Literal(lit) => {
                    if subject_tokens.next() != Some(&**lit) {
                        return false;
                    }
                }
            }
        }
        subject_tokens.next().is_none()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pattern").field(&&*self.raw).finish()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn m(pattern: &str, subject: &str) -> bool {
        validate_subject(subject).unwrap();
        Pattern::parse(pattern).unwrap().matches(subject)
    }

    #[test]
    fn literal_patterns_match_only_the_same_subject() {
        assert!(m("a.b.c", "a.b.c"));
        assert!(!m("a.b.c", "a.b"));
        assert!(!m("a.b", "a.b.c"));
        assert!(!m("a.b.c", "a.b.cc"));
        assert!(m("a", "a"));
    }

    #[test]
    fn star_matches_exactly_one_token() {
        assert!(m("a.*.c", "a.b.c"));
        assert!(m("a.*.c", "a.xyz.c"));
        assert!(!m("a.*.c", "a.c"));
        assert!(!m("a.*.c", "a.b.d.c"));
        assert!(m("*", "a"));
        assert!(!m("*", "a.b"));
        assert!(m("*.*", "a.b"));
        assert!(m("a.*", "a.b"));
        assert!(!m("a.*", "a"));
    }

    #[test]
    fn tail_matches_one_or_more_trailing_tokens() {
        assert!(m("a.>", "a.b"));
        assert!(m("a.>", "a.b.c.d"));
        assert!(!m("a.>", "a"));
        assert!(!m("a.>", "b.c"));
        assert!(m(">", "a"));
        assert!(m(">", "a.b.c"));
        assert!(m("*.b.>", "x.b.c"));
        assert!(!m("*.b.>", "x.b"));
    }

    #[test]
    fn invalid_subjects_are_rejected_with_a_reason() {
        let too_long = "a".repeat(MAX_SUBJECT_LEN + 1);
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "a b",
            "a\tb",
            "a\n",
            "a\u{b}b",
            "a\u{7f}",
            "a.*",
            "a.>",
            "*",
            "a*b",
            "_INBOX.x",
            "$SYS.x",
            "a\u{2003}b",
            "\u{e9}.\u{85}",
            &too_long,
        ] {
            let err = validate_subject(bad).unwrap_err();
            assert!(
                matches!(err, EventError::InvalidSubject { .. }),
                "{bad:?}: {err}"
            );
        }
        validate_subject(&"a".repeat(MAX_SUBJECT_LEN)).unwrap();
        validate_subject("user.0190-abc.inbox").unwrap();
        validate_subject("a_b.$c").unwrap();
        validate_subject("caf\u{e9}.x").unwrap();
    }

    #[test]
    fn invalid_patterns_are_rejected_with_a_reason() {
        for bad in [
            "", "a..b", "a.>.b", ">.a", "a.b*", "a.>>", "a b.*", "_x.>", "a.",
        ] {
            let err = Pattern::parse(bad).unwrap_err();
            assert!(
                matches!(err, EventError::InvalidSubject { .. }),
                "{bad:?}: {err}"
            );
        }
        let err = Pattern::parse("a.>.b").unwrap_err().to_string();
        assert!(err.contains("last token"), "{err}");
    }

    #[test]
    fn error_messages_truncate_huge_inputs() {
        let huge = "é".repeat(1000);
        let err = validate_subject(&huge).unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn queue_names_are_restricted() {
        validate_queue_name("push-delivery_2").unwrap();
        for bad in ["", "a.b", "a b", "a*", "_x", "ä", &"q".repeat(65)] {
            assert!(
                matches!(
                    validate_queue_name(bad),
                    Err(EventError::InvalidQueue { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
