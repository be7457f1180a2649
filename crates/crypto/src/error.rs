//! The single error type of the Signal-protocol half of the crate.

/// Which kind of prekey an [`Error::UnknownPreKey`] refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreKeyKind {
    /// A signed EC (X25519) prekey.
    Signed,
    /// A one-time EC (X25519) prekey.
    OneTime,
    /// A signed post-quantum KEM prekey.
    Kem,
}

impl std::fmt::Display for PreKeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Signed => "signed",
            Self::OneTime => "one-time",
            Self::Kem => "KEM",
        })
    }
}

/// Everything that can go wrong in key handling, X3DH/PQXDH and the Double Ratchet.
///
/// Messages never contain key material; they name the object and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A serialized key has the wrong length, type byte or is not a valid curve/lattice point.
    #[error("invalid {what}: {reason}")]
    InvalidKey {
        /// The kind of key (e.g. "identity key").
        what: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An XEdDSA signature did not verify.
    #[error("signature verification failed")]
    BadSignature,
    /// The initial message names a prekey the store does not have.
    #[error("unknown {kind} prekey id {id}")]
    UnknownPreKey {
        /// Which kind of prekey was looked up.
        kind: PreKeyKind,
        /// The id named in the message.
        id: u32,
    },
    /// The initial message names a one-time prekey that has already been consumed.
    #[error("one-time prekey {id} was already used")]
    PreKeyReplayed {
        /// The id of the consumed one-time prekey.
        id: u32,
    },
    /// Decrypting would require skipping more message keys in one chain than the configured bound.
    #[error("message requires skipping {requested} message keys in one chain; limit is {limit}")]
    TooManySkipped {
        /// How many keys would have to be skipped.
        requested: u64,
        /// The configured per-chain bound (`RatchetConfig::max_skip`).
        limit: u32,
    },
    /// The message key for this message was already used (replayed ratchet message).
    #[error("message was already decrypted (replay)")]
    DuplicateMessage,
    /// Authentication failed: wrong key, tampered header or ciphertext.
    #[error("decryption failed: message is not authentic")]
    DecryptFailed,
    /// Bytes from outside do not follow the expected encoding.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A versioned encoding carries a version this build does not understand.
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// The KEM key is of a kind we can verify signatures over but cannot encapsulate to
    /// (libsignal's pre-standard Kyber1024).
    #[error("KEM key type {type_byte:#04x} cannot be used for encapsulation (only ML-KEM-1024)")]
    UnsupportedKem {
        /// The key's type byte.
        type_byte: u8,
    },
    /// A message counter would overflow; the session must be replaced.
    #[error("message counter exhausted; start a new session")]
    CounterExhausted,
    /// The configuration is unusable (e.g. a zero bound).
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
}

pub(crate) fn malformed(what: &'static str, reason: &'static str) -> Error {
    Error::Malformed { what, reason }
}
