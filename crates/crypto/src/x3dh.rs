//! X3DH (<https://signal.org/docs/specifications/x3dh/>) and PQXDH
//! (<https://signal.org/docs/specifications/pqxdh/>) session establishment.
//!
//! `SK = HKDF-SHA256(salt = 32 zero bytes, ikm = F || DH1 || DH2 || DH3 [|| DH4] [|| SS], info)`
//! with `F` = 32 bytes of 0xFF, `DH1 = DH(IK_A, SPK_B)`, `DH2 = DH(EK_A, IK_B)`,
//! `DH3 = DH(EK_A, SPK_B)`, `DH4 = DH(EK_A, OPK_B)` and, for PQXDH, `SS` the ML-KEM-1024 shared
//! secret encapsulated to the responder's signed KEM prekey. The associated data is
//! `Encode(IK_A) || Encode(IK_B)` (33-byte libsignal encodings). `SK` then seeds the Double
//! Ratchet with the signed prekey as the responder's first ratchet key.
//!
//! PQXDH is used whenever the bundle carries a KEM prekey. A malicious server could strip it and
//! downgrade the session to X3DH; SDKs that require post-quantum protection should refuse bundles
//! without `kem_prekey` (and may check [`crate::Session::is_post_quantum`]).

use zeroize::Zeroizing;

use crate::error::{Error, PreKeyKind};
use crate::kdf::hkdf_sha256;
use crate::keys::{EcKeyPair, IdentityKeyPair};
use crate::prekeys::{PreKeyBundle, PreKeyStore};
use crate::ratchet::{RatchetConfig, RatchetState};
use crate::session::{Role, Session};
use crate::wire::InitialMessage;

/// HKDF info for X3DH.
pub const X3DH_INFO: &[u8] = b"Guardyn_X3DH_CURVE25519_SHA-256_v1";
/// HKDF info for PQXDH.
pub const PQXDH_INFO: &[u8] = b"Guardyn_PQXDH_CURVE25519_SHA-256_ML-KEM-1024_v1";

fn derive_sk(dhs: &[&[u8; 32]], kem_ss: Option<&[u8; 32]>) -> Zeroizing<[u8; 32]> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 * 6));
    ikm.extend_from_slice(&[0xFF; 32]);
    for dh in dhs {
        ikm.extend_from_slice(*dh);
    }
    let info = match kem_ss {
        Some(ss) => {
            ikm.extend_from_slice(ss);
            PQXDH_INFO
        }
        None => X3DH_INFO,
    };
    hkdf_sha256::<32>(&[0u8; 32], &ikm, info)
}

/// Starts a session with the owner of `bundle` (default [`RatchetConfig`]), encrypting
/// `first_plaintext` into the initial message. Uses PQXDH if the bundle has a KEM prekey.
pub fn initiate(
    our_identity: &IdentityKeyPair,
    bundle: &PreKeyBundle,
    first_plaintext: &[u8],
) -> Result<(Session, InitialMessage), Error> {
    initiate_with_config(
        our_identity,
        bundle,
        first_plaintext,
        RatchetConfig::default(),
    )
}

/// [`initiate`] with explicit skipped-key bounds.
pub fn initiate_with_config(
    our_identity: &IdentityKeyPair,
    bundle: &PreKeyBundle,
    first_plaintext: &[u8],
    config: RatchetConfig,
) -> Result<(Session, InitialMessage), Error> {
    config.validate()?;
    bundle.verify()?;
    let mut rng = rand::rng();
    let ephemeral = EcKeyPair::generate(&mut rng);
    let spk = &bundle.signed_prekey.key;
    let ik_b = bundle.identity_key.public_key();

    let dh1 = our_identity.pair.dh(spk)?;
    let dh2 = ephemeral.dh(ik_b)?;
    let dh3 = ephemeral.dh(spk)?;
    let dh4 = bundle
        .one_time_prekey
        .as_ref()
        .map(|otk| ephemeral.dh(&otk.key))
        .transpose()?;
    let kem = bundle
        .kem_prekey
        .as_ref()
        .map(|kem| {
            kem.key
                .encapsulate(&mut rng)
                .map(|(ct, ss)| (kem.id, ct, ss))
        })
        .transpose()?;

    let mut dhs = vec![&*dh1, &*dh2, &*dh3];
    dhs.extend(dh4.as_deref());
    let sk = derive_sk(&dhs, kem.as_ref().map(|(_, _, ss)| &**ss));

    let state = RatchetState::init_initiator(&sk, *spk)?;
    let mut session = Session::new(
        Role::Initiator,
        our_identity.identity_key(),
        bundle.identity_key,
        kem.is_some(),
        config,
        state,
    );
    let message = session.encrypt(first_plaintext)?;
    let initial = InitialMessage {
        identity_key: our_identity.identity_key(),
        base_key: ephemeral.public,
        signed_prekey_id: bundle.signed_prekey.id,
        one_time_prekey_id: bundle.one_time_prekey.as_ref().map(|otk| otk.id),
        kem: kem.map(|(id, ct, _)| (id, ct)),
        message,
    };
    Ok((session, initial))
}

/// Accepts an initial message (default [`RatchetConfig`]): returns the session and the first
/// plaintext. The one-time prekey is taken from `store` only after the message authenticated;
/// a second initial message naming the same one-time prekey fails with
/// [`Error::PreKeyReplayed`].
pub fn respond<S: PreKeyStore + ?Sized>(
    our_identity: &IdentityKeyPair,
    store: &mut S,
    message: &InitialMessage,
) -> Result<(Session, Zeroizing<Vec<u8>>), Error> {
    respond_with_config(our_identity, store, message, RatchetConfig::default())
}

/// [`respond`] with explicit skipped-key bounds.
pub fn respond_with_config<S: PreKeyStore + ?Sized>(
    our_identity: &IdentityKeyPair,
    store: &mut S,
    message: &InitialMessage,
    config: RatchetConfig,
) -> Result<(Session, Zeroizing<Vec<u8>>), Error> {
    config.validate()?;
    let spk = store
        .signed_prekey(message.signed_prekey_id)
        .ok_or(Error::UnknownPreKey {
            kind: PreKeyKind::Signed,
            id: message.signed_prekey_id,
        })?;
    let ik_a = message.identity_key.public_key();
    let ek_a = &message.base_key;

    let dh1 = spk.pair.dh(ik_a)?;
    let dh2 = our_identity.pair.dh(ek_a)?;
    let dh3 = spk.pair.dh(ek_a)?;
    let dh4 = match message.one_time_prekey_id {
        Some(id) => Some(store.one_time_prekey(id)?.pair.dh(ek_a)?),
        None => None,
    };
    let kem_ss = match &message.kem {
        Some((id, ct)) => {
            let kem = store.kem_prekey(*id).ok_or(Error::UnknownPreKey {
                kind: PreKeyKind::Kem,
                id: *id,
            })?;
            Some(kem.pair.decapsulate(ct)?)
        }
        None => None,
    };

    let mut dhs = vec![&*dh1, &*dh2, &*dh3];
    dhs.extend(dh4.as_deref());
    let sk = derive_sk(&dhs, kem_ss.as_deref());

    let state = RatchetState::init_responder(&sk, spk.pair.clone());
    let mut session = Session::new(
        Role::Responder,
        our_identity.identity_key(),
        message.identity_key,
        kem_ss.is_some(),
        config,
        state,
    );
    let plaintext = session.decrypt(&message.message)?;
    if let Some(id) = message.one_time_prekey_id {
        store.take_one_time_prekey(id)?;
    }
    Ok((session, plaintext))
}
