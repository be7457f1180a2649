//! The tower layer that authenticates every call before a handler runs.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::context::{AuthContext, TokenScope};
use super::credential::{CREDENTIAL_PREFIX, CredentialHook, invalid_credential};
use super::token::TokenVerifier;
use crate::error::{ApiError, Reason};

/// Extract the bearer token from request headers.
fn bearer(headers: &http::HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthenticated("malformed authorization header"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthenticated("authorization must be `Bearer <token>`"))?;
    Ok(Some(token.trim()))
}

/// A limited token ([`TokenScope`]) reaches only the methods of its scope (public ones need no
/// token, so they stay open to it).
fn in_scope(ctx: AuthContext, path: &str, public: bool) -> Result<AuthContext, ApiError> {
    if public || ctx.scope.allows(path) {
        return Ok(ctx);
    }
    if let TokenScope::Credential(_) = ctx.scope {
        return Err(ApiError::permission_denied(
            "the credential's scopes do not admit this method",
        ));
    }
    Err(ApiError::new(
        Reason::MfaEnrollmentRequired,
        "the policy requires a second factor: enroll TOTP, then sign in again",
    ))
}

/// The client's address as tonic recorded it for the connection (plain TCP or TLS).
fn remote_ip<B>(req: &http::Request<B>) -> Option<IpAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let ext = req.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
        .map(|a| a.ip())
}

/// Which gRPC methods can be called without a token. Everything else requires one.
#[derive(Clone, Debug, Default)]
pub struct PublicMethods {
    // Looked up on every call; the keys are fixed at start-up, so no HashDoS to resist.
    paths: HashSet<String, foldhash::fast::RandomState>,
    services: HashSet<String, foldhash::fast::RandomState>,
}

impl PublicMethods {
    pub fn new() -> Self {
        Self::default()
    }

    /// One public method, as `/package.Service/Method`.
    pub fn method(mut self, path: impl Into<String>) -> Self {
        self.paths.insert(path.into());
        self
    }

    /// A whole public service (health, reflection), as `package.Service`.
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.services.insert(name.into());
        self
    }

    pub fn extend(&mut self, other: &PublicMethods) {
        self.paths.extend(other.paths.iter().cloned());
        self.services.extend(other.services.iter().cloned());
    }

    fn is_public(&self, path: &str) -> bool {
        if self.paths.contains(path) {
            return true;
        }
        let service = path.trim_start_matches('/').split('/').next().unwrap_or("");
        self.services.contains(service)
    }
}

/// Tower layer: verifies the bearer token of every non-public call and inserts the
/// [`AuthContext`] into the request extensions. A present but invalid token is refused even on
/// public methods, so a client learns its token is bad at once.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    verifier: TokenVerifier,
    public: Arc<PublicMethods>,
    credentials: CredentialHook,
}

impl AuthLayer {
    pub fn new(verifier: TokenVerifier, public: PublicMethods) -> Self {
        Self {
            verifier,
            public: Arc::new(public),
            credentials: CredentialHook::default(),
        }
    }

    /// Verify `gdc_` credentials with whatever verifier `hook` holds at call time.
    pub fn with_credentials(mut self, hook: CredentialHook) -> Self {
        self.credentials = hook;
        self
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
            public: self.public.clone(),
            credentials: self.credentials.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    verifier: TokenVerifier,
    public: Arc<PublicMethods>,
    credentials: CredentialHook,
}

type Ready<RB, E> = futures::future::Ready<Result<http::Response<RB>, E>>;

impl<S, B, RB> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = futures::future::Either<
        futures::future::Either<S::Future, Ready<RB, S::Error>>,
        futures::future::BoxFuture<'static, Result<http::Response<RB>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        use futures::future::Either;
        let path = req.uri().path();
        let public = self.public.is_public(path);
        let credential = match bearer(req.headers()) {
            Ok(Some(token)) if token.starts_with(CREDENTIAL_PREFIX) => Some(token.to_owned()),
            _ => None,
        };
        if let Some(credential) = credential {
            return Either::Right(self.call_with_credential(req, credential, public));
        }
        let outcome = match bearer(req.headers()) {
            Ok(Some(token)) => self
                .verifier
                .verify(token)
                .and_then(|ctx| in_scope(ctx, path, public))
                .map(Some),
            Ok(None) if public => Ok(None),
            Ok(None) => Err(ApiError::unauthenticated("missing bearer token")),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(ctx) => {
                if let Some(ctx) = ctx {
                    tracing::Span::current().record("account", ctx.account_id.to_string());
                    req.extensions_mut().insert(ctx);
                }
                Either::Left(Either::Left(self.inner.call(req)))
            }
            Err(err) => {
                let status: tonic::Status = err.into();
                Either::Left(Either::Right(futures::future::ready(
                    Ok(status.into_http()),
                )))
            }
        }
    }
}

impl<S> AuthService<S> {
    /// Verification of a credential is asynchronous (a storage read where its hash is), so
    /// the call moves into a future with its own clone of the inner service (the one that was
    /// polled ready goes with it, as tower requires).
    fn call_with_credential<B, RB>(
        &mut self,
        mut req: http::Request<B>,
        credential: String,
        public: bool,
    ) -> futures::future::BoxFuture<'static, Result<http::Response<RB>, S::Error>>
    where
        S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: Send + 'static,
        RB: Default + Send + 'static,
    {
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let verifier = self.credentials.get();
        let path = req.uri().path().to_owned();
        let remote = remote_ip(&req);
        Box::pin(async move {
            let outcome = match verifier {
                Some(v) => v
                    .verify(&credential, &path, remote)
                    .await
                    .and_then(|ctx| in_scope(ctx, &path, public)),
                None => Err(invalid_credential()),
            };
            match outcome {
                Ok(ctx) => {
                    tracing::Span::current().record("account", ctx.account_id.to_string());
                    req.extensions_mut().insert(ctx);
                    inner.call(req).await
                }
                Err(err) => Ok(tonic::Status::from(err).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;
    use crate::auth::RevocationList;
    use crate::auth::config::TokenConfig;
    use crate::auth::context::AuthContext;
    use crate::auth::token::{TokenGrant, TokenSigner};

    fn grant() -> TokenGrant {
        TokenGrant {
            account_id: "00000000-0000-4000-8000-000000000001".into(),
            device_id: 2,
            session_id: "sess-1".into(),
            roles: vec!["user".into()],
            ttl: Duration::from_secs(900),
        }
    }

    #[tokio::test]
    async fn the_layer_refuses_missing_and_bad_tokens_and_hands_over_the_caller() {
        use tower::ServiceExt as _;
        let cfg = TokenConfig::default();
        let signer = TokenSigner::generate("k1", &cfg);
        let verifier = TokenVerifier::new(&cfg, RevocationList::new());
        verifier.add_keys([signer.verification_key()]);
        let inner = tower::service_fn(|req: http::Request<()>| async move {
            let who = req
                .extensions()
                .get::<AuthContext>()
                .map(|c| format!("{}/{}", c.account_id, c.device_id))
                .unwrap_or_else(|| "anonymous".into());
            Ok::<_, std::convert::Infallible>(http::Response::new(who))
        });
        let svc =
            AuthLayer::new(verifier, PublicMethods::new().method("/a.Auth/Login")).layer(inner);
        let call = |path: &str, auth: Option<String>| {
            let mut req = http::Request::post(path);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            svc.clone().oneshot(req.body(()).unwrap())
        };
        let code = |r: &http::Response<String>| {
            r.headers()
                .get("grpc-status")
                .map(|v| v.to_str().unwrap().to_owned())
        };

        let r = call("/a.Auth/Logout", None).await.unwrap();
        assert_eq!(code(&r).as_deref(), Some("16"), "UNAUTHENTICATED");
        let r = call("/a.Auth/Logout", Some("Basic xyz".into()))
            .await
            .unwrap();
        assert_eq!(code(&r).as_deref(), Some("16"));
        let r = call("/a.Auth/Logout", Some("Bearer garbage".into()))
            .await
            .unwrap();
        assert_eq!(code(&r).as_deref(), Some("16"));

        let token = signer.sign(&grant()).unwrap();
        let r = call("/a.Auth/Logout", Some(format!("Bearer {token}")))
            .await
            .unwrap();
        assert_eq!(code(&r), None);
        assert_eq!(r.body(), "00000000-0000-4000-8000-000000000001/2");

        let r = call("/a.Auth/Login", None).await.unwrap();
        assert_eq!(r.body(), "anonymous");
        // A bad token is refused even on a public method.
        let r = call("/a.Auth/Login", Some("Bearer garbage".into()))
            .await
            .unwrap();
        assert_eq!(code(&r).as_deref(), Some("16"));
    }

    #[tokio::test]
    async fn an_enrolment_only_token_reaches_only_the_enrolment_methods() {
        use tower::ServiceExt as _;
        let cfg = TokenConfig::default();
        let signer = TokenSigner::generate("k1", &cfg);
        let verifier = TokenVerifier::new(&cfg, RevocationList::new());
        verifier.add_keys([signer.verification_key()]);
        let inner = tower::service_fn(|req: http::Request<()>| async move {
            let scope = req.extensions().get::<AuthContext>().map(|c| c.scope);
            Ok::<_, std::convert::Infallible>(http::Response::new(format!("{scope:?}")))
        });
        let svc =
            AuthLayer::new(verifier, PublicMethods::new().method("/a.Auth/Login")).layer(inner);
        let token = signer
            .sign_scoped(&grant(), crate::auth::TokenScope::MfaEnrollment)
            .unwrap();
        let call = |path: &str| {
            let req = http::Request::post(path)
                .header("authorization", format!("Bearer {token}"))
                .body(())
                .unwrap();
            svc.clone().oneshot(req)
        };
        let r = call("/guardyn.auth.v1.MfaService/BeginTotpEnrollment")
            .await
            .unwrap();
        assert_eq!(r.body(), "Some(MfaEnrollment)");
        let r = call("/guardyn.auth.v1.DeviceService/ListDevices")
            .await
            .unwrap();
        assert_eq!(
            r.headers().get("grpc-status").unwrap(),
            "9",
            "FAILED_PRECONDITION"
        );
        // Public methods need no token, so a limited one does not close them.
        assert_eq!(
            call("/a.Auth/Login").await.unwrap().body(),
            "Some(MfaEnrollment)"
        );
        // A full token is not limited.
        let full = signer.sign(&grant()).unwrap();
        let req = http::Request::post("/guardyn.auth.v1.DeviceService/ListDevices")
            .header("authorization", format!("Bearer {full}"))
            .body(())
            .unwrap();
        assert_eq!(svc.clone().oneshot(req).await.unwrap().body(), "Some(Full)");
    }

    /// Admits `gdc_good` with the monitoring scope, refuses anything else.
    #[derive(Debug)]
    struct FakeCredentials;

    #[async_trait::async_trait]
    impl crate::auth::CredentialVerifier for FakeCredentials {
        async fn verify(
            &self,
            credential: &str,
            _path: &str,
            _remote: Option<std::net::IpAddr>,
        ) -> Result<AuthContext, ApiError> {
            if credential != "gdc_good" {
                return Err(crate::auth::invalid_credential());
            }
            Ok(AuthContext {
                account_id: crate::ids::AccountId::random(),
                device_id: crate::ids::DeviceId::new(1).unwrap(),
                session_id: "credential:x".into(),
                roles: vec!["auditor".into()],
                expires_at: u64::MAX,
                scope: TokenScope::Credential(
                    [crate::auth::CredentialScope::Monitoring]
                        .into_iter()
                        .collect(),
                ),
            })
        }
    }

    #[tokio::test]
    async fn credentials_go_to_the_installed_verifier_and_reach_only_their_scopes() {
        use tower::ServiceExt as _;
        let verifier = TokenVerifier::new(&TokenConfig::default(), RevocationList::new());
        let hook = CredentialHook::default();
        let inner = tower::service_fn(|req: http::Request<()>| async move {
            let roles = req
                .extensions()
                .get::<AuthContext>()
                .map(|c| c.roles.join(","))
                .unwrap_or_default();
            Ok::<_, std::convert::Infallible>(http::Response::new(roles))
        });
        let svc = AuthLayer::new(verifier, PublicMethods::new())
            .with_credentials(hook.clone())
            .layer(inner);
        let call = |path: &str, credential: &str| {
            let req = http::Request::post(path)
                .header("authorization", format!("Bearer {credential}"))
                .body(())
                .unwrap();
            svc.clone().oneshot(req)
        };
        let status = |r: &http::Response<String>| {
            r.headers()
                .get("grpc-status")
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let monitoring = "/guardyn.admin.v1.MonitoringService/GetMonitoringData";

        // No verifier in this process: refused like a wrong secret.
        let r = call(monitoring, "gdc_good").await.unwrap();
        assert_eq!(status(&r).as_deref(), Some("16"));

        hook.install(std::sync::Arc::new(FakeCredentials));
        let r = call(monitoring, "gdc_good").await.unwrap();
        assert_eq!(status(&r), None);
        assert_eq!(r.body(), "auditor");
        let r = call(
            "/guardyn.admin.v1.AuditService/ListAuditEntries",
            "gdc_good",
        )
        .await
        .unwrap();
        assert_eq!(status(&r).as_deref(), Some("7"), "PERMISSION_DENIED");
        let r = call(monitoring, "gdc_bad").await.unwrap();
        assert_eq!(status(&r).as_deref(), Some("16"));
    }

    #[test]
    fn public_methods_match_paths_and_services() {
        let p = PublicMethods::new()
            .service("grpc.health.v1.Health")
            .method("/guardyn.auth.v1.AuthService/Login");
        assert!(p.is_public("/grpc.health.v1.Health/Check"));
        assert!(p.is_public("/guardyn.auth.v1.AuthService/Login"));
        assert!(!p.is_public("/guardyn.auth.v1.AuthService/Logout"));
    }
}
