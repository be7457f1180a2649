//! Client-side MLS identity: credential, signature key, KeyPackages, and the
//! persistent provider that holds every private key openmls needs later.

use std::{fmt, path::Path};

use openmls::prelude::{
    BasicCredential, Capabilities, Ciphersuite, CredentialWithKey, ExtensionType, KeyPackage,
    Lifetime, MIXED_PLAINTEXT_WIRE_FORMAT_POLICY, MlsGroupCreateConfig, MlsGroupJoinConfig,
    MlsMessageOut, tls_codec::Serialize as _,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::OpenMlsProvider as _;

use super::{error::MlsError, provider::MlsProvider};

/// Guardyn's default (and only default-allowed) ciphersuite.
pub const DEFAULT_CIPHERSUITE: Ciphersuite =
    Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// Lifetime of ordinary KeyPackages: 28 days (openmls' default is 12 weeks;
/// the server rejects expired ones and clients top up regularly).
pub const KEY_PACKAGE_LIFETIME_SECS: u64 = 28 * 24 * 60 * 60;

/// How many past epochs a member keeps decryption keys for, so application
/// messages that were in flight while a commit was accepted still decrypt.
/// A small value bounds the loss of forward secrecy.
pub const MAX_PAST_EPOCHS: usize = 2;

const CLIENT_MAGIC: &[u8; 4] = b"GMLC";
/// Version byte of the persisted client format.
pub const CLIENT_STATE_VERSION: u8 = 1;

/// One MLS client (a device): BasicCredential identity, Ed25519 signature key
/// and the provider whose key store holds KeyPackage and group secrets.
pub struct MlsClient {
    pub(crate) provider: MlsProvider,
    pub(crate) signer: SignatureKeyPair,
    pub(crate) credential: CredentialWithKey,
    identity: Vec<u8>,
    ciphersuite: Ciphersuite,
}

impl fmt::Debug for MlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MlsClient")
            .field("identity", &String::from_utf8_lossy(&self.identity))
            .field("ciphersuite", &self.ciphersuite)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl MlsClient {
    /// New client with [`DEFAULT_CIPHERSUITE`]. `identity` is what the other
    /// members and the server see, e.g. `b"<account_id>:<device_id>"`.
    pub fn new(identity: &[u8]) -> Result<Self, MlsError> {
        Self::with_ciphersuite(identity, DEFAULT_CIPHERSUITE)
    }

    /// New client for a specific ciphersuite.
    pub fn with_ciphersuite(identity: &[u8], ciphersuite: Ciphersuite) -> Result<Self, MlsError> {
        let provider = MlsProvider::new();
        let signer = SignatureKeyPair::new(ciphersuite.signature_algorithm())
            .map_err(|_| MlsError::KeyGeneration)?;
        // Stored so that a persisted provider also restores the signer.
        signer.store(provider.storage())?;
        Ok(Self::assemble(
            provider,
            signer,
            identity.to_vec(),
            ciphersuite,
        ))
    }

    fn assemble(
        provider: MlsProvider,
        signer: SignatureKeyPair,
        identity: Vec<u8>,
        ciphersuite: Ciphersuite,
    ) -> Self {
        let credential = CredentialWithKey {
            credential: BasicCredential::new(identity.clone()).into(),
            signature_key: signer.public().into(),
        };
        Self {
            provider,
            signer,
            credential,
            identity,
            ciphersuite,
        }
    }

    /// The credential identity bytes.
    pub fn identity(&self) -> &[u8] {
        &self.identity
    }

    /// The client's ciphersuite.
    pub fn ciphersuite(&self) -> Ciphersuite {
        self.ciphersuite
    }

    /// The Ed25519 public signature key (safe to publish).
    pub fn signature_public_key(&self) -> &[u8] {
        self.signer.public()
    }

    /// The provider (crypto + key store) backing this client.
    pub fn provider(&self) -> &MlsProvider {
        &self.provider
    }

    /// A fresh one-time KeyPackage, serialised as an `MLSMessage` ready to be
    /// uploaded. Its private keys stay in this client's key store (persist the
    /// client to keep it joinable across restarts).
    pub fn create_key_package(&self) -> Result<Vec<u8>, MlsError> {
        self.create_key_package_with(Lifetime::new(KEY_PACKAGE_LIFETIME_SECS), false)
    }

    /// A last-resort KeyPackage (RFC 9420 §17.3 `last_resort` extension):
    /// the server hands it out when one-time packages are exhausted, and
    /// joining with it does not delete its private keys.
    pub fn create_last_resort_key_package(&self) -> Result<Vec<u8>, MlsError> {
        self.create_key_package_with(Lifetime::new(KEY_PACKAGE_LIFETIME_SECS), true)
    }

    /// A KeyPackage with an explicit lifetime (Unix seconds).
    pub fn create_key_package_with_lifetime(
        &self,
        not_before: u64,
        not_after: u64,
        last_resort: bool,
    ) -> Result<Vec<u8>, MlsError> {
        self.create_key_package_with(Lifetime::init(not_before, not_after), last_resort)
    }

    fn create_key_package_with(
        &self,
        lifetime: Lifetime,
        last_resort: bool,
    ) -> Result<Vec<u8>, MlsError> {
        let mut builder = KeyPackage::builder()
            .key_package_lifetime(lifetime)
            .leaf_node_capabilities(capabilities());
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder.build(
            self.ciphersuite,
            &self.provider,
            &self.signer,
            self.credential.clone(),
        )?;
        Ok(MlsMessageOut::from(bundle.key_package().clone()).tls_serialize_detached()?)
    }

    pub(crate) fn create_config(&self) -> MlsGroupCreateConfig {
        MlsGroupCreateConfig::builder()
            .ciphersuite(self.ciphersuite)
            .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .max_past_epochs(MAX_PAST_EPOCHS)
            .capabilities(capabilities())
            .build()
    }

    /// Serialises the whole client (identity, ciphersuite, signature key and
    /// key store). Contains private keys: store it encrypted.
    ///
    /// Layout: `b"GMLC"` · version `u8` · ciphersuite `u16` ·
    /// identity (`u32` length + bytes) · signature public key (`u32` length +
    /// bytes) · provider blob ([`MlsProvider::to_bytes`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, MlsError> {
        let provider = self.provider.to_bytes()?;
        let public = self.signer.public();
        let mut out = Vec::with_capacity(15 + self.identity.len() + public.len() + provider.len());
        out.extend_from_slice(CLIENT_MAGIC);
        out.push(CLIENT_STATE_VERSION);
        out.extend_from_slice(&u16::from(self.ciphersuite).to_be_bytes());
        for part in [self.identity.as_slice(), public] {
            let len = u32::try_from(part.len())
                .map_err(|_| MlsError::StateFormat("identity too long"))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
        out.extend_from_slice(&provider);
        Ok(out)
    }

    /// Restores a client saved with [`MlsClient::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MlsError> {
        let rest = bytes
            .strip_prefix(CLIENT_MAGIC)
            .ok_or(MlsError::StateFormat("missing GMLC magic"))?;
        let (&version, rest) = rest
            .split_first()
            .ok_or(MlsError::StateFormat("truncated"))?;
        if version != CLIENT_STATE_VERSION {
            return Err(MlsError::UnsupportedStateVersion(version));
        }
        let (cs, rest) = split(rest, 2)?;
        let ciphersuite = Ciphersuite::try_from(u16::from_be_bytes([cs[0], cs[1]]))
            .map_err(|_| MlsError::StateFormat("unknown ciphersuite"))?;
        let (identity, rest) = split_prefixed(rest)?;
        let (public, rest) = split_prefixed(rest)?;
        let provider = MlsProvider::from_bytes(rest)?;
        let signer = SignatureKeyPair::read(
            provider.storage(),
            public,
            ciphersuite.signature_algorithm(),
        )
        .ok_or(MlsError::MissingSignatureKey)?;
        Ok(Self::assemble(
            provider,
            signer,
            identity.to_vec(),
            ciphersuite,
        ))
    }

    /// Writes [`MlsClient::to_bytes`] to `path` atomically.
    pub fn save_to_file(&self, path: &Path) -> Result<(), MlsError> {
        super::provider::write_secret_file(path, &self.to_bytes()?)
    }

    /// Reads a client saved with [`MlsClient::save_to_file`].
    pub fn load_from_file(path: &Path) -> Result<Self, MlsError> {
        Self::from_bytes(&std::fs::read(path)?)
    }
}

/// Join configuration used for Welcome and external joins (must match
/// [`MlsClient::create_config`]).
pub(crate) fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .build()
}

/// Leaf capabilities: openmls defaults plus the last-resort extension, which
/// RFC 9420 requires to be listed before a KeyPackage may carry it.
pub(crate) fn capabilities() -> Capabilities {
    Capabilities::new(None, None, Some(&[ExtensionType::LastResort]), None, None)
}

fn split(bytes: &[u8], n: usize) -> Result<(&[u8], &[u8]), MlsError> {
    if bytes.len() < n {
        return Err(MlsError::StateFormat("truncated"));
    }
    Ok(bytes.split_at(n))
}

fn split_prefixed(bytes: &[u8]) -> Result<(&[u8], &[u8]), MlsError> {
    let (len, rest) = split(bytes, 4)?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    split(rest, len)
}
