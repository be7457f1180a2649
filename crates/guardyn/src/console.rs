//! The web admin console's static files (`admin.console_dir`, built from `web/admin`) on
//! `admin.console_listen`. The page itself talks gRPC-web to the public listener, so this
//! server only hands out files: GET/HEAD, names restricted to `[A-Za-z0-9._-]` segments (no
//! escape from the directory, no hidden files), a content type from a fixed table, and a
//! Content-Security-Policy that lets the page load only its own scripts and call only the API.
//! With `admin.console_tls_cert_path`/`console_tls_key_path` it is served over HTTPS (HTTP/1.1
//! only), the files followed on disk like the public listener's (`tls_reload`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use guardyn_common::tls_reload::{self, ServerTlsFiles, TlsLoadError};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

/// What the console server needs from the configuration.
#[derive(Clone, Debug)]
pub struct Console {
    pub dir: PathBuf,
    /// `admin.console_api_url`; empty: derived per request from the Host header.
    pub api_url: String,
    /// `server.port`, for the derived API URL.
    pub api_port: u16,
    /// `server.tls.enabled`, for the derived API URL's scheme.
    pub api_tls: bool,
}

/// The console's HTTPS identity: certificate chain and key files, checked for changes every
/// `reload`.
#[derive(Clone, Debug)]
pub struct ConsoleTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub reload: Duration,
}

/// Serve the console on `listener` (in the background) until `shutdown`, over HTTPS when `tls`
/// is given. Fails only when the TLS files do not load at start (a later change that does not
/// load keeps the previous identity).
pub fn serve(
    listener: TcpListener,
    console: Console,
    tls: Option<ConsoleTls>,
    shutdown: CancellationToken,
) -> Result<(), TlsLoadError> {
    let Some(tls) = tls else {
        spawn_plain(listener, console, shutdown);
        return Ok(());
    };
    let files = ServerTlsFiles {
        cert: tls.cert,
        key: tls.key,
        client_ca: None,
        crl: None,
        alpn: vec![b"http/1.1".to_vec()],
    };
    let config = tls_reload::server_config("admin.console_tls", files, tls.reload)?;
    tokio::spawn(async move {
        // Handshakes that fail are logged and dropped by `incoming`.
        let mut incoming = tls_reload::incoming(config, listener);
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = incoming.next() => next,
            };
            match next {
                Some(Ok(stream)) => connection(stream, console.clone()),
                Some(Err(_)) => continue,
                None => return,
            }
        }
    });
    Ok(())
}

fn spawn_plain(listener: TcpListener, console: Console, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else { continue };
            connection(stream, console.clone());
        }
    });
}

/// Answer the requests of one connection, plain or TLS.
fn connection<S>(io: S, console: Console)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use hyper::server::conn::http1;

    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let console = console.clone();
        async move { Ok::<_, std::convert::Infallible>(console.respond(&req).await) }
    });
    tokio::spawn(async move {
        if let Err(e) = http1::Builder::new()
            .serve_connection(TokioIo::new(io), service)
            .await
        {
            tracing::debug!(error = %e, "console connection failed");
        }
    });
}

impl Console {
    async fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return self.plain(req, StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        let api = self.api_url(req);
        let path = req.uri().path();
        if path == "/config.json" {
            let body = serde_json::json!({ "api": api }).to_string();
            return self.file(req, "application/json", Bytes::from(body));
        }
        let Some(relative) = safe_relative(path) else {
            return self.plain(req, StatusCode::NOT_FOUND, "not found\n");
        };
        let full = self.dir.join(&relative);
        match tokio::fs::read(&full).await {
            Ok(body) => self.file(req, content_type(&relative), Bytes::from(body)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.plain(req, StatusCode::NOT_FOUND, "not found\n")
            }
            Err(e) => {
                tracing::warn!(path = %full.display(), error = %e, "console file unreadable");
                self.plain(req, StatusCode::NOT_FOUND, "not found\n")
            }
        }
    }

    fn api_url<B>(&self, req: &Request<B>) -> String {
        if !self.api_url.is_empty() {
            return self.api_url.trim_end_matches('/').to_owned();
        }
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .map(|a| a.host().to_owned())
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        let scheme = if self.api_tls { "https" } else { "http" };
        format!("{scheme}://{host}:{}", self.api_port)
    }

    fn file<B>(&self, req: &Request<B>, kind: &'static str, body: Bytes) -> Response<Full<Bytes>> {
        self.response(req, StatusCode::OK, kind, body)
    }

    fn plain<B>(
        &self,
        req: &Request<B>,
        status: StatusCode,
        text: &'static str,
    ) -> Response<Full<Bytes>> {
        self.response(
            req,
            status,
            "text/plain; charset=utf-8",
            Bytes::from_static(text.as_bytes()),
        )
    }

    fn response<B>(
        &self,
        req: &Request<B>,
        status: StatusCode,
        kind: &'static str,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        let csp = csp(&self.api_url(req));
        let len = body.len();
        let body = if req.method() == Method::HEAD {
            Bytes::new()
        } else {
            body
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        // A policy that does not parse as a header value (it cannot: the URL is validated)
        // would leave the page without one, so fall back to the strictest.
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static("default-src 'none'")),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

/// The page runs only its own script and style, and connects only to itself and the API.
fn csp(api_url: &str) -> String {
    let api_origin = api_url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| Some(format!("{}://{}", u.scheme_str()?, u.authority()?)))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' {api_origin}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// The file a request path names inside the console directory, or `None` for anything that
/// could leave it or reach a hidden file: only `[A-Za-z0-9._-]` segments not starting with a
/// dot (so no `..`, no percent-encoding, no backslashes). `/` and a trailing `/` mean
/// `index.html`.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let trimmed = path.strip_prefix('/')?;
    let mut out = PathBuf::new();
    let segments: Vec<&str> = trimmed.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if segment.is_empty() && last {
            out.push("index.html");
            break;
        }
        let valid = !segment.is_empty()
            && segment.len() <= 128
            && !segment.starts_with('.')
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid || i >= 8 {
            return None;
        }
        out.push(segment);
    }
    Some(out)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") | Some("map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_plain_names_inside_the_directory_are_served() {
        assert_eq!(safe_relative("/"), Some(PathBuf::from("index.html")));
        assert_eq!(safe_relative("/app.js"), Some(PathBuf::from("app.js")));
        assert_eq!(
            safe_relative("/assets/app-1.css"),
            Some(PathBuf::from("assets/app-1.css"))
        );
        for bad in [
            "/../etc/passwd",
            "/assets/../../x",
            "/%2e%2e/x",
            "/.env",
            "/a//b",
            "/a\\..\\b",
            "relative",
            "/a b",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn files_carry_their_type_and_the_policy_and_nothing_else_is_served() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<!doctype html>").unwrap();
        std::fs::write(dir.path().join("app.js"), "1").unwrap();
        std::fs::write(dir.path().with_extension("secret"), "s").unwrap();
        let console = Console {
            dir: dir.path().to_owned(),
            api_url: "https://api.example:8443/".into(),
            api_port: 1,
            api_tls: false,
        };
        let get = |path: &str| Request::get(path).body(()).unwrap();

        let index = console.respond(&get("/")).await;
        assert_eq!(index.status(), StatusCode::OK);
        assert_eq!(
            index.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let policy = index.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(
            policy.contains("connect-src 'self' https://api.example:8443;"),
            "{policy}"
        );
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert_eq!(index.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");

        let js = console.respond(&get("/app.js")).await;
        assert_eq!(
            js.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );

        let name = dir.path().file_name().unwrap().to_str().unwrap().to_owned();
        let escape = console.respond(&get(&format!("/../{name}.secret"))).await;
        assert_eq!(escape.status(), StatusCode::NOT_FOUND);
        let post = Request::post("/").body(()).unwrap();
        assert_eq!(
            console.respond(&post).await.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn without_an_api_url_the_page_calls_the_public_port_on_its_own_host() {
        let console = Console {
            dir: PathBuf::from("/nonexistent"),
            api_url: String::new(),
            api_port: 50051,
            api_tls: true,
        };
        let req = Request::get("/config.json")
            .header(header::HOST, "console.example:50080")
            .body(())
            .unwrap();
        let response = console.respond(&req).await;
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], br#"{"api":"https://console.example:50051"}"#);
    }
}
