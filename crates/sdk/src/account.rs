//! Account security helpers: TOTP enrolment, the server's key counts and username lookup.

use guardyn_proto::guardyn::auth::v1 as pb;
use guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient;
use guardyn_proto::guardyn::auth::v1::key_directory_service_client::KeyDirectoryServiceClient;
use guardyn_proto::guardyn::auth::v1::mfa_service_client::MfaServiceClient;

use crate::client::Client;
use crate::error::SdkError;

/// A pending TOTP enrolment: show `otpauth_uri` as a QR code (or `secret` for manual entry),
/// then confirm with a code from the authenticator app.
#[derive(Clone)]
pub struct TotpEnrollment {
    /// `otpauth://` URI (contains the secret).
    pub otpauth_uri: String,
    /// The secret, base32.
    pub secret: String,
}

impl std::fmt::Debug for TotpEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpEnrollment(..)")
    }
}

/// Keys the server holds for this device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyCounts {
    /// One-time EC prekeys.
    pub one_time_prekeys: u32,
    /// One-time KEM prekeys.
    pub one_time_kem_prekeys: u32,
    /// One-time MLS KeyPackages.
    pub key_packages: u32,
}

impl Client {
    /// Starts TOTP enrolment for the account.
    pub async fn begin_totp_enrollment(&self) -> Result<TotpEnrollment, SdkError> {
        let resp = self
            .inner
            .call(pb::BeginTotpEnrollmentRequest {}, |ch, r| async move {
                MfaServiceClient::new(ch).begin_totp_enrollment(r).await
            })
            .await?;
        Ok(TotpEnrollment {
            otpauth_uri: resp.otpauth_uri,
            secret: resp.secret,
        })
    }

    /// Confirms TOTP enrolment with a current code; returns the recovery codes (shown once).
    pub async fn confirm_totp_enrollment(&self, code: &str) -> Result<Vec<String>, SdkError> {
        let resp = self
            .inner
            .call(
                pb::ConfirmTotpEnrollmentRequest {
                    totp_code: code.to_owned(),
                },
                |ch, r| async move { MfaServiceClient::new(ch).confirm_totp_enrollment(r).await },
            )
            .await?;
        Ok(resp.recovery_codes)
    }

    /// The account id of a username (exact match, case-insensitive). An unknown name and one
    /// its owner hid both fail with NOT_FOUND; lookups are rate limited per account.
    pub async fn lookup_username(&self, username: &str) -> Result<String, SdkError> {
        let resp = self
            .inner
            .call(
                pb::LookupUsernameRequest {
                    username: username.to_owned(),
                },
                |ch, r| async move { AuthServiceClient::new(ch).lookup_username(r).await },
            )
            .await?;
        Ok(resp.account_id)
    }

    /// Whether this account's username can be found with [`Client::lookup_username`]
    /// (discoverable by default).
    pub async fn set_username_discoverable(&self, discoverable: bool) -> Result<(), SdkError> {
        self.inner
            .call(
                pb::SetUsernameDiscoverableRequest { discoverable },
                |ch, r| async move {
                    AuthServiceClient::new(ch)
                        .set_username_discoverable(r)
                        .await
                },
            )
            .await?;
        Ok(())
    }

    /// How many one-time prekeys and KeyPackages the server still holds for this device.
    pub async fn key_counts(&self) -> Result<KeyCounts, SdkError> {
        let counts = self.server_prekey_counts().await?;
        let kps = self.server_key_package_count().await?;
        Ok(KeyCounts {
            one_time_prekeys: counts.one_time_prekeys,
            one_time_kem_prekeys: counts.one_time_kem_prekeys,
            key_packages: kps.one_time_count,
        })
    }

    /// The server's prekey counts for this device.
    pub(crate) async fn server_prekey_counts(&self) -> Result<pb::PreKeyCounts, SdkError> {
        Ok(self
            .inner
            .call(pb::GetPreKeyCountsRequest {}, |ch, r| async move {
                KeyDirectoryServiceClient::new(ch)
                    .get_pre_key_counts(r)
                    .await
            })
            .await?
            .counts
            .unwrap_or_default())
    }

    /// The server's KeyPackage count for this device.
    pub(crate) async fn server_key_package_count(
        &self,
    ) -> Result<pb::GetKeyPackageCountResponse, SdkError> {
        Ok(self
            .inner
            .call(pb::GetKeyPackageCountRequest {}, |ch, r| async move {
                KeyDirectoryServiceClient::new(ch)
                    .get_key_package_count(r)
                    .await
            })
            .await?)
    }
}
