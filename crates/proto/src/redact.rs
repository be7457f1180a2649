//! Redacting `Debug` implementations for messages that carry secrets or
//! ciphertext. `build.rs` turns prost's derived `Debug` off for exactly these
//! messages (its `REDACTED` list); keep that list and the impls below in
//! sync (a parent message deriving `Debug` fails to compile when an impl is
//! missing). The tests below check that secrets never reach the output.
//!
//! Secret fields print only their size, so logs stay useful for debugging
//! ("password: <12 bytes>") without leaking content.

use std::fmt;

use crate::guardyn::{admin, auth, internal, media, messaging, notification};

/// Debug stand-in for a secret value: prints its size only.
enum Redacted {
    Bytes(usize),
    Items(usize),
    Absent,
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bytes(n) => write!(f, "<redacted {n} bytes>"),
            Self::Items(n) => write!(f, "<redacted {n} items>"),
            Self::Absent => f.write_str("None"),
        }
    }
}

/// Values whose size may be shown in place of their content.
trait Redact {
    fn redacted(&self) -> Redacted;
}

impl Redact for String {
    fn redacted(&self) -> Redacted {
        Redacted::Bytes(self.len())
    }
}

impl Redact for Vec<u8> {
    fn redacted(&self) -> Redacted {
        Redacted::Bytes(self.len())
    }
}

impl Redact for Vec<String> {
    fn redacted(&self) -> Redacted {
        Redacted::Items(self.len())
    }
}

impl<T: Redact> Redact for Option<T> {
    fn redacted(&self) -> Redacted {
        self.as_ref().map_or(Redacted::Absent, Redact::redacted)
    }
}

/// `redacted_debug!(module::path => Type { shown, fields; hidden, fields })`
/// implements `Debug` printing shown fields normally and hidden ones as sizes.
macro_rules! redacted_debug {
    ($($module:ident)::+ => $name:ident { $($show:ident),* ; $($hide:ident),* $(,)? }) => {
        impl fmt::Debug for $($module)::+::$name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    $(.field(stringify!($show).trim_start_matches("r#"), &self.$show))*
                    $(.field(stringify!($hide), &self.$hide.redacted()))*
                    .finish()
            }
        }
    };
}

/// Debug for a oneof of secret strings: prints the variant name only.
macro_rules! redacted_oneof {
    ($($module:ident)::+ => $name:ident { $($variant:ident),+ $(,)? }) => {
        impl fmt::Debug for $($module)::+::$name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Self::$variant(value) => f
                        .debug_tuple(stringify!($variant))
                        .field(&value.redacted())
                        .finish(),)+
                }
            }
        }
    };
}

// guardyn.auth.v1
redacted_debug!(auth::v1 => Tokens {
    access_token_expires_at, refresh_token_expires_at, session_id, mfa_enrollment_required;
    access_token, refresh_token
});
redacted_debug!(auth::v1 => RegisterRequest { username, device; password });
redacted_debug!(auth::v1 => LoginRequest { username, device_id; password });
redacted_debug!(auth::v1 => MfaChallenge { expires_at; mfa_ticket });
redacted_debug!(auth::v1 => CompleteMfaLoginRequest { code; mfa_ticket });
redacted_oneof!(auth::v1::complete_mfa_login_request => Code { TotpCode, RecoveryCode });
redacted_debug!(auth::v1 => RefreshSessionRequest { ; refresh_token });
redacted_debug!(auth::v1 => ChangePasswordRequest { ; old_password, new_password });
redacted_debug!(auth::v1 => DeleteAccountRequest { second_factor; password });
redacted_oneof!(auth::v1::delete_account_request => SecondFactor { TotpCode, RecoveryCode });
redacted_debug!(auth::v1 => StepUpRequest { second_factor; password });
redacted_oneof!(auth::v1::step_up_request => SecondFactor { TotpCode, RecoveryCode });
redacted_debug!(auth::v1 => RequestLinkResponse { expires_at; link_code, link_secret });
redacted_debug!(auth::v1 => ApproveLinkRequest { ; link_code });
redacted_debug!(auth::v1 => LinkDeviceRequest { ; link_code, link_secret });
redacted_debug!(auth::v1 => BeginTotpEnrollmentResponse { expires_at; otpauth_uri, secret });
redacted_debug!(auth::v1 => ConfirmTotpEnrollmentRequest { ; totp_code });
redacted_debug!(auth::v1 => ConfirmTotpEnrollmentResponse { ; recovery_codes });
redacted_debug!(auth::v1 => DisableTotpRequest { second_factor; password });
redacted_oneof!(auth::v1::disable_totp_request => SecondFactor { TotpCode, RecoveryCode });
redacted_debug!(auth::v1 => RegenerateRecoveryCodesRequest { ; totp_code });
redacted_debug!(auth::v1 => RegenerateRecoveryCodesResponse { ; recovery_codes });

// guardyn.messaging.v1
redacted_debug!(messaging::v1 => Envelope {
    destination_device_id, destination_registration_id, r#type;
    content
});
redacted_debug!(messaging::v1 => DeliveredEnvelope {
    server_id, server_timestamp, sender_account_id, sender_device_id, r#type, urgent,
    group_id, mls_kind, epoch;
    content
});
redacted_debug!(messaging::v1 => SendCommitRequest {
    group_id, epoch, welcome_recipients;
    commit, welcome, group_info
});
redacted_debug!(messaging::v1 => SendProposalRequest { group_id, epoch; proposal });
redacted_debug!(messaging::v1 => SendGroupMessageRequest {
    group_id, epoch, client_message_id, urgent;
    message
});
redacted_debug!(messaging::v1 => LeaveGroupRequest { group_id, epoch; remove_proposal });

// guardyn.media.v1
redacted_debug!(media::v1 => UploadChunkRequest { upload_id, offset; data });
redacted_debug!(media::v1 => DownloadResponse { offset; data });

// guardyn.notification.v1
redacted_debug!(notification::v1 => RegisterPushTokenRequest {
    platform, topic, apns_environment, web_push_keys;
    token
});
redacted_debug!(notification::v1 => WebPushKeys { p256dh; auth });
redacted_debug!(admin::v1 => ClaimOwnerRequest { ; code });
redacted_debug!(admin::v1 => IssueCredentialResponse { credential; secret });
redacted_debug!(admin::v1 => RotateCredentialResponse { credential; secret });

// guardyn.internal.v1
redacted_debug!(internal::v1 => VerifyCredentialRequest { method, remote_address; credential });

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn passwords_and_tokens_do_not_reach_debug_output() {
        let login = auth::v1::LoginRequest {
            username: "alice".into(),
            password: "correct horse battery".into(),
            device_id: 2,
        };
        let out = format!("{login:?}");
        assert!(out.contains("alice"), "{out}");
        assert!(!out.contains("correct horse"), "{out}");
        assert!(out.contains("<redacted 21 bytes>"), "{out}");

        let response = auth::v1::LoginResponse {
            outcome: Some(auth::v1::login_response::Outcome::Tokens(
                auth::v1::Tokens {
                    access_token: "eyJhbGciOiJFZERTQSJ9.secret".into(),
                    refresh_token: "refresh-secret".into(),
                    session_id: "sess-1".into(),
                    ..Default::default()
                },
            )),
            account_id: "acct".into(),
        };
        let out = format!("{response:?}");
        assert!(out.contains("sess-1"), "{out}");
        assert!(
            !out.contains("eyJ") && !out.contains("refresh-secret"),
            "{out}"
        );
    }

    #[test]
    fn second_factor_codes_do_not_reach_debug_output() {
        let request = auth::v1::CompleteMfaLoginRequest {
            mfa_ticket: "ticket-secret".into(),
            code: Some(auth::v1::complete_mfa_login_request::Code::TotpCode(
                "123456".into(),
            )),
        };
        let out = format!("{request:?}");
        assert!(out.contains("TotpCode"), "{out}");
        assert!(
            !out.contains("123456") && !out.contains("ticket-secret"),
            "{out}"
        );

        let codes = auth::v1::ConfirmTotpEnrollmentResponse {
            recovery_codes: vec!["aaaa-bbbb-cccc-dddd".into(); 10],
        };
        let out = format!("{codes:?}");
        assert!(out.contains("<redacted 10 items>"), "{out}");
        assert!(!out.contains("aaaa"), "{out}");
    }

    #[test]
    fn ciphertext_bodies_print_only_their_length() {
        let envelope = messaging::v1::Envelope {
            destination_device_id: 3,
            destination_registration_id: 77,
            r#type: messaging::v1::EnvelopeType::Ciphertext.into(),
            content: b"SECRETCIPHERTEXT".to_vec(),
        };
        let out = format!("{envelope:?}");
        assert!(out.contains("destination_device_id: 3"), "{out}");
        assert!(out.contains("type: 1"), "{out}");
        assert!(out.contains("<redacted 16 bytes>"), "{out}");
        // The derived Debug would print bytes as a list of numbers.
        assert!(!out.contains("83, 69, 67"), "{out}");

        let commit = messaging::v1::SendCommitRequest {
            welcome: None,
            ..Default::default()
        };
        assert!(format!("{commit:?}").contains("welcome: None"));
    }
}
