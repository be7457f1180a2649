//! Guardyn end-to-end cryptography: the code every client SDK runs to establish and use
//! end-to-end-encrypted sessions, and the server uses to validate uploaded public key material.
//!
//! This crate owns key formats, signatures, session establishment, message encryption and the
//! wire/storage encodings of those. It must not depend on any other Guardyn crate, on I/O, on
//! async runtimes or on serialization frameworks: everything here is pure computation over
//! bytes, so it can be embedded in every SDK and audited on its own.
//!
//! # Signal-protocol half
//!
//! * **Keys** ([`IdentityKeyPair`], [`IdentityKey`], [`PublicKey`], [`KemPublicKey`]):
//!   Curve25519 keys in libsignal's 33-byte serialization (`0x05 || u`), XEdDSA signatures
//!   (Signal's XEdDSA specification, implemented in `xeddsa.rs` on curve25519-dalek), and
//!   ML-KEM-1024 (FIPS 203, RustCrypto `ml-kem`) prekeys with type byte `0x0A`. libsignal's
//!   pre-standard Kyber1024 keys (type `0x08`) are accepted for signature verification only.
//! * **Prekeys** ([`SignedPreKey`], [`OneTimePreKey`], [`KemPreKey`], [`PreKeyBundle`]): each
//!   signed prekey is signed by the identity key over its serialization, type byte included.
//!   The server checks uploads with [`verify_prekey_signature`]. XEdDSA interoperability with
//!   libsignal is pinned by known-answer tests against `@signalapp/libsignal-client` 0.103.0.
//! * **X3DH / PQXDH** ([`initiate`], [`respond`]): exactly Signal's X3DH, and PQXDH with one
//!   ML-KEM-1024 encapsulation to the peer's signed KEM prekey whose shared secret is appended
//!   after the DH outputs. The initial message names the prekeys used; the responder takes the
//!   one-time prekey from its [`PreKeyStore`] only after the first message authenticated and
//!   refuses a replayed one ([`Error::PreKeyReplayed`]).
//! * **Double Ratchet** ([`Session`]): Signal's Double Ratchet with X25519, HKDF-SHA256,
//!   HMAC-SHA256 chains and AES-256-GCM (key and nonce derived per message key). Skipped keys are
//!   bounded per chain and in total ([`RatchetConfig`]). The header is authenticated. A message
//!   changes the session only if it decrypts.
//! * **Encodings**: [`RatchetMessage`], [`InitialMessage`] and [`Session`] have versioned compact
//!   binary encodings with strict decoders (fuzzed in `crates/crypto/fuzz`); sessions can be
//!   sealed at rest with a caller key ([`Session::seal`]).
//!
//! # Threat model
//!
//! Guaranteed, assuming the primitives (X25519, XEdDSA/Ed25519 arithmetic, ML-KEM-1024,
//! SHA-2, HKDF, HMAC, AES-256-GCM) are secure and the device is not compromised:
//!
//! * Confidentiality and integrity of message contents against the server and the network;
//!   any modified header, ciphertext, initial message or signature is rejected.
//! * Forward secrecy and post-compromise recovery as given by the Double Ratchet; with PQXDH,
//!   the initial key agreement also resists a future quantum adversary recording traffic today
//!   (the ratchet itself is classical X25519, as in Signal's PQXDH).
//! * Replay protection for one-time prekeys (via the caller's store) and for ratchet messages.
//! * Bounded memory for skipped keys, whatever a peer sends.
//! * Secret key material is zeroized when dropped and never printed by `Debug`.
//!
//! Not guaranteed:
//!
//! * No protection against a compromised device or a malicious SDK: whoever holds the session
//!   state or identity private key can read and forge messages.
//! * Authentication of the peer depends on users comparing identity keys (safety numbers);
//!   the server can substitute keys otherwise (the usual TOFU caveat of X3DH).
//! * Metadata is visible to the server: who talks to whom, when, message sizes, prekey usage.
//!   A server can also withhold one-time or KEM prekeys (the latter downgrades to X3DH, see
//!   [`initiate`]) or drop and delay messages.
//! * No deniability claims beyond those of Signal's X3DH/PQXDH specifications.
//! * Side channels: constant-time primitives are used for secret-dependent operations and MAC /
//!   signature comparisons, but no guarantees are made about the platform (caches, swap, etc.).
//!
//! ## MLS
//!
//! Groups use MLS (RFC 9420) through `openmls`, ciphersuite
//! `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`: confidentiality, authenticity, forward
//! secrecy and post-compromise security for members; handshake messages travel as
//! PublicMessage so the server can order commits by epoch and follow membership, which means
//! the server sees group ids, epochs and who adds or removes whom. The server-side helpers
//! (`mls::server`) never touch group secrets: they parse messages and fully validate uploaded
//! KeyPackages, but do not verify PublicMessage signatures (members do). The full guarantees and
//! limits are in the [`mls`] module docs.

mod codec;
mod error;
mod kdf;
mod keys;
mod prekeys;
mod ratchet;
mod session;
mod wire;
mod x3dh;
mod xeddsa;

pub mod mls;

pub use error::{Error, PreKeyKind};
pub use keys::{
    EC_PUBLIC_KEY_LEN, EC_TYPE, IdentityKey, IdentityKeyPair, KEM_CIPHERTEXT_LEN, KEM_KEY_LEN,
    KEM_PUBLIC_KEY_LEN, KemKind, KemPublicKey, LIBSIGNAL_KYBER1024_TYPE, MLKEM1024_TYPE, PublicKey,
};
pub use prekeys::{
    InMemoryPreKeyStore, KemPreKey, KemPreKeyPublic, OneTimePreKey, OneTimePreKeyPublic,
    PREKEY_RECORD_VERSION, PreKeyBundle, PreKeyStore, SignedPreKey, SignedPreKeyPublic,
    verify_prekey_signature,
};
pub use ratchet::RatchetConfig;
pub use session::{SEALED_SESSION_VERSION, SESSION_VERSION, Session};
pub use wire::{
    Header, INITIAL_MESSAGE_VERSION, InitialMessage, RATCHET_MESSAGE_VERSION, RatchetMessage,
};
pub use x3dh::{
    PQXDH_INFO, X3DH_INFO, initiate, initiate_with_config, respond, respond_with_config,
};
pub use xeddsa::SIGNATURE_LEN;

#[cfg(test)]
mod tests;
