//! Loopback fakes of the push providers, for the sender tests and the service's end-to-end
//! tests. Each serves HTTP/1.1 and h2c (HTTP/2 with prior knowledge) on 127.0.0.1, checks what
//! the real provider checks (signatures with the public key, required headers), records every
//! request, and answers authenticated requests from a script (`[503, 200]`, `[410]`), then with
//! the provider's success status. A request that fails a check gets the provider's own error
//! answer and does not consume the script.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use guardyn_common::clock::Clock;
use http::{HeaderMap, Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use p256::ecdsa::signature::Verifier;
use serde_json::{Value, json};

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The verified JWT claims, or why the request was refused.
    pub auth: Result<Value, String>,
    /// When the request arrived.
    pub at: std::time::Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn json(mut self, body: Value) -> Self {
        self.body = body.to_string();
        self.headers
            .push(("content-type".into(), "application/json".into()));
        self
    }
}

struct State {
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Reply>>,
    success: Reply,
}

impl State {
    fn next(&self) -> Reply {
        self.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.success.clone())
    }
}

type Handler = dyn Fn(&mut Recorded, &State) -> Reply + Send + Sync;

/// The server under every fake; stops when dropped.
pub struct FakeServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    async fn start(success: Reply, handler: Arc<Handler>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            success,
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                let handler = handler.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handle(req, &state, &*handler).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:PORT`, the fake's origin.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers for the next authenticated requests, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// How many requests went to paths starting with `prefix`, and when the last arrived
    /// (without copying them).
    pub fn count_to(&self, prefix: &str) -> (usize, Option<std::time::Instant>) {
        let requests = self.state.requests.lock().unwrap();
        let mut matching = requests.iter().filter(|r| r.path.starts_with(prefix));
        let count = matching.clone().count();
        (count, matching.next_back().map(|r| r.at))
    }

    /// Requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }
}

async fn handle(req: Request<Incoming>, state: &State, handler: &Handler) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut recorded = Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        version: parts.version,
        headers: parts.headers,
        body,
        auth: Err("not checked".into()),
        at: std::time::Instant::now(),
    };
    let reply = handler(&mut recorded, state);
    state.requests.lock().unwrap().push(recorded);
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name, value);
    }
    response.body(Full::new(Bytes::from(reply.body))).unwrap()
}

/// Verifies an ES256 JWT with a P-256 public key (SEC1) directly on p256, not through the
/// library the senders sign with. Returns (header, claims).
fn verify_es256(token: &str, public: &[u8]) -> Result<(Value, Value), String> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWS compact token".into());
    };
    let decode = |p: &str| B64.decode(p).map_err(|e| format!("base64: {e}"));
    let header: Value = serde_json::from_slice(&decode(h)?).map_err(|e| e.to_string())?;
    if header["alg"] != "ES256" {
        return Err(format!("alg is {}", header["alg"]));
    }
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(public).map_err(|e| e.to_string())?;
    let signature = p256::ecdsa::Signature::from_slice(&decode(s)?).map_err(|e| e.to_string())?;
    key.verify(format!("{h}.{c}").as_bytes(), &signature)
        .map_err(|_| "bad signature".to_string())?;
    let claims: Value = serde_json::from_slice(&decode(c)?).map_err(|e| e.to_string())?;
    Ok((header, claims))
}

fn now_secs(clock: &dyn Clock) -> i64 {
    (clock.now_ms() / 1000) as i64
}

/// APNs (`POST /3/device/<token>`, provider-token authentication).
pub struct FakeApns {
    pub server: FakeServer,
}

impl FakeApns {
    pub async fn start(
        clock: Arc<dyn Clock>,
        public_key: Vec<u8>,
        key_id: &str,
        team_id: &str,
        topic: &str,
    ) -> Self {
        let (key_id, team_id, topic) = (key_id.to_owned(), team_id.to_owned(), topic.to_owned());
        let apns_error =
            |status: u16, reason: &str| Reply::status(status).json(json!({ "reason": reason }));
        let handler = move |r: &mut Recorded, state: &State| {
            if r.method != "POST" || !r.path.starts_with("/3/device/") {
                return apns_error(404, "BadPath");
            }
            let token = r
                .header("authorization")
                .and_then(|v| v.strip_prefix("bearer "))
                .unwrap_or_default()
                .to_owned();
            let verdict = verify_es256(&token, &public_key).and_then(|(header, claims)| {
                if header["kid"] != key_id.as_str() {
                    return Err(format!("kid {}", header["kid"]));
                }
                if claims["iss"] != team_id.as_str() {
                    return Err(format!("iss {}", claims["iss"]));
                }
                Ok(claims)
            });
            let claims = match verdict {
                Ok(claims) => claims,
                Err(e) => {
                    r.auth = Err(e);
                    return apns_error(403, "InvalidProviderToken");
                }
            };
            let age = now_secs(&*clock) - claims["iat"].as_i64().unwrap_or(0);
            r.auth = Ok(claims);
            if age > 3600 {
                r.auth = Err(format!("provider token is {age} s old"));
                return apns_error(403, "ExpiredProviderToken");
            }
            if r.header("apns-topic") != Some(topic.as_str()) {
                return apns_error(400, "DeviceTokenNotForTopic");
            }
            let priority = match r.header("apns-push-type") {
                Some("alert") => "10",
                Some("background") => "5",
                _ => return apns_error(400, "InvalidPushType"),
            };
            if r.header("apns-priority") != Some(priority) {
                return apns_error(400, "BadPriority");
            }
            if r.header("apns-expiration")
                .and_then(|v| v.parse::<u64>().ok())
                .is_none()
            {
                return apns_error(400, "BadExpirationDate");
            }
            state.next()
        };
        let server = FakeServer::start(Reply::status(200), Arc::new(handler)).await;
        Self { server }
    }
}

/// Google's OAuth2 token endpoint (`POST /token`, JWT-bearer grant) and FCM HTTP v1
/// (`POST /v1/projects/<project>/messages:send`) on one server.
pub struct FakeFcm {
    pub server: FakeServer,
    issued: Arc<Mutex<Vec<String>>>,
    revoked: Arc<Mutex<HashSet<String>>>,
    expires_in: Arc<AtomicU64>,
    client_email: Arc<Mutex<String>>,
}

impl FakeFcm {
    pub async fn start(
        clock: Arc<dyn Clock>,
        public_pem: &[u8],
        client_email: &str,
        project: &str,
    ) -> Self {
        let key = DecodingKey::from_rsa_pem(public_pem).unwrap();
        let issued = Arc::new(Mutex::new(Vec::<String>::new()));
        let revoked = Arc::new(Mutex::new(HashSet::<String>::new()));
        let expires_in = Arc::new(AtomicU64::new(3600));
        let origin = Arc::new(Mutex::new(String::new()));
        let send_path = format!("/v1/projects/{project}/messages:send");
        let client_email = Arc::new(Mutex::new(client_email.to_owned()));
        let (issued2, revoked2, expires2, origin2, email2) = (
            issued.clone(),
            revoked.clone(),
            expires_in.clone(),
            origin.clone(),
            client_email.clone(),
        );
        let handler = move |r: &mut Recorded, state: &State| {
            let token_uri = format!("{}/token", origin2.lock().unwrap());
            if r.path == "/token" {
                let form = parse_form(&r.body);
                let grant = form
                    .iter()
                    .find(|(k, _)| k == "grant_type")
                    .map(|(_, v)| v.as_str());
                if grant != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
                    r.auth = Err(format!("grant_type {grant:?}"));
                    return Reply::status(400).json(json!({"error": "unsupported_grant_type"}));
                }
                let assertion = form
                    .iter()
                    .find(|(k, _)| k == "assertion")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let mut validation = Validation::new(Algorithm::RS256);
                validation.set_audience(&[&token_uri]);
                validation.set_issuer(&[&*email2.lock().unwrap()]);
                validation.validate_exp = false;
                validation.required_spec_claims = ["exp", "iat", "aud", "iss"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                let verdict = jsonwebtoken::decode::<Value>(&assertion, &key, &validation)
                    .map_err(|e| e.to_string())
                    .and_then(|data| {
                        let c = data.claims;
                        let (iat, exp) = (
                            c["iat"].as_i64().unwrap_or(0),
                            c["exp"].as_i64().unwrap_or(0),
                        );
                        let now = now_secs(&*clock);
                        if c["scope"] != "https://www.googleapis.com/auth/firebase.messaging" {
                            Err(format!("scope {}", c["scope"]))
                        } else if exp - iat > 3600 || exp <= now || iat > now + 60 {
                            Err(format!("iat {iat} exp {exp} now {now}"))
                        } else {
                            Ok(c)
                        }
                    });
                let ok = verdict.is_ok();
                r.auth = verdict;
                if !ok {
                    return Reply::status(400).json(json!({"error": "invalid_grant"}));
                }
                let mut issued = issued2.lock().unwrap();
                let token = format!("fake-access-{}", issued.len() + 1);
                issued.push(token.clone());
                return Reply::status(200).json(json!({
                    "access_token": token,
                    "expires_in": expires2.load(Ordering::SeqCst),
                    "token_type": "Bearer",
                }));
            }
            if r.method != "POST" || r.path != send_path {
                return Reply::status(404)
                    .json(json!({"error": {"code": 404, "status": "NOT_FOUND"}}));
            }
            let bearer = r
                .header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default()
                .to_owned();
            let known = issued2.lock().unwrap().contains(&bearer)
                && !revoked2.lock().unwrap().contains(&bearer);
            if !known {
                r.auth = Err(format!("unknown access token {bearer:?}"));
                return Reply::status(401)
                    .json(json!({"error": {"code": 401, "status": "UNAUTHENTICATED"}}));
            }
            r.auth = Ok(json!({ "access_token": bearer }));
            if r.json()["message"]["token"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                return Reply::status(400)
                    .json(json!({"error": {"code": 400, "status": "INVALID_ARGUMENT"}}));
            }
            state.next()
        };
        let server = FakeServer::start(
            Reply::status(200).json(json!({"name": format!("projects/{project}/messages/1")})),
            Arc::new(handler),
        )
        .await;
        *origin.lock().unwrap() = server.url();
        Self {
            server,
            issued,
            revoked,
            expires_in,
            client_email,
        }
    }

    pub fn token_uri(&self) -> String {
        format!("{}/token", self.server.url())
    }

    /// Access tokens issued so far.
    pub fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }

    /// Every token issued so far stops working (FCM answers 401).
    pub fn revoke_all(&self) {
        let issued = self.issued();
        self.revoked.lock().unwrap().extend(issued);
    }

    pub fn set_expires_in(&self, secs: u64) {
        self.expires_in.store(secs, Ordering::SeqCst);
    }

    /// The service account the token endpoint accepts assertions from.
    pub fn set_client_email(&self, email: &str) {
        *self.client_email.lock().unwrap() = email.to_owned();
    }
}

fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                    out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// A Web Push service (RFC 8030) checking VAPID (RFC 8292) for `vapid_public`.
pub struct FakeWebPush {
    pub server: FakeServer,
}

impl FakeWebPush {
    pub async fn start(clock: Arc<dyn Clock>, vapid_public: Vec<u8>) -> Self {
        let origin = Arc::new(Mutex::new(String::new()));
        let origin2 = origin.clone();
        let handler = move |r: &mut Recorded, state: &State| {
            if r.method != "POST" || !r.path.starts_with("/push/") {
                return Reply::status(404);
            }
            let header = r.header("authorization").unwrap_or_default().to_owned();
            let verdict = vapid(&header, &vapid_public).and_then(|claims| {
                let now = now_secs(&*clock);
                let exp = claims["exp"].as_i64().unwrap_or(0);
                let sub = claims["sub"].as_str().unwrap_or_default();
                if claims["aud"] != origin2.lock().unwrap().as_str() {
                    Err(format!("aud {}", claims["aud"]))
                } else if exp <= now || exp > now + 24 * 3600 {
                    Err(format!("exp {exp} now {now}"))
                } else if !(sub.starts_with("mailto:") || sub.starts_with("https:")) {
                    Err(format!("sub {sub}"))
                } else {
                    Ok(claims)
                }
            });
            let ok = verdict.is_ok();
            r.auth = verdict;
            if !ok {
                return Reply::status(401);
            }
            if r.header("content-encoding") != Some("aes128gcm")
                || r.header("ttl")
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_none()
                || !matches!(
                    r.header("urgency"),
                    Some("very-low" | "low" | "normal" | "high")
                )
            {
                return Reply::status(400);
            }
            state.next()
        };
        let server = FakeServer::start(Reply::status(201), Arc::new(handler)).await;
        *origin.lock().unwrap() = server.url();
        Self { server }
    }

    /// A subscription endpoint on this service.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}/push/{path}", self.server.url())
    }
}

/// Checks `vapid t=<jwt>, k=<key>`: `k` is the expected application server key and signs `t`.
fn vapid(header: &str, expected: &[u8]) -> Result<Value, String> {
    let params = header
        .strip_prefix("vapid ")
        .ok_or("not a vapid authorization")?;
    let mut t = None;
    let mut k = None;
    for param in params.split(',') {
        match param.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.to_owned()),
            Some(("k", v)) => k = Some(v.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(k)) = (t, k) else {
        return Err("t or k missing".into());
    };
    let k = B64.decode(k).map_err(|e| format!("k: {e}"))?;
    if k != expected {
        return Err("k is not the application server key".into());
    }
    verify_es256(&t, &k).map(|(_, claims)| claims)
}
