//! The wire format of an `MLSMessage`, used by the error type, the client
//! side and the server-side parser alike.

use openmls::prelude::MlsMessageBodyIn;

/// The `wire_format` of an `MLSMessage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Signed, unencrypted handshake message.
    PublicMessage,
    /// Encrypted message (application, or handshake under other policies).
    PrivateMessage,
    /// Welcome for new members.
    Welcome,
    /// Signed GroupInfo (external joins).
    GroupInfo,
    /// KeyPackage.
    KeyPackage,
}

impl MessageKind {
    pub(crate) fn of(body: &MlsMessageBodyIn) -> Self {
        match body {
            MlsMessageBodyIn::PublicMessage(_) => Self::PublicMessage,
            MlsMessageBodyIn::PrivateMessage(_) => Self::PrivateMessage,
            MlsMessageBodyIn::Welcome(_) => Self::Welcome,
            MlsMessageBodyIn::GroupInfo(_) => Self::GroupInfo,
            MlsMessageBodyIn::KeyPackage(_) => Self::KeyPackage,
        }
    }
}
