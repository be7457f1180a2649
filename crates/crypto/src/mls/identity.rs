//! Reading the identity out of a member's credential, shared by the client
//! side (group operations) and the server-side helpers.
//!
//! Guardyn clients use BasicCredentials whose identity is the opaque byte
//! string the client was created with (e.g. `<account_id>:<device_id>`).

use openmls::prelude::{BasicCredential, Credential};

/// The identity bytes of a BasicCredential; `None` for any other credential type.
pub(crate) fn identity_of(credential: &Credential) -> Option<Vec<u8>> {
    BasicCredential::try_from(credential.clone())
        .ok()
        .map(|c| c.identity().to_vec())
}
