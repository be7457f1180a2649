use std::fmt;
use std::time::Duration;

/// Event bus configuration. Plain data: the service's config loader maps its file format onto it.
#[derive(Clone, Debug)]
pub struct EventsConfig {
    pub backend: Backend,
    /// A consumed job that is neither acked nor retried within this time is redelivered.
    pub ack_wait: Duration,
    /// Events buffered per live subscriber before the oldest are dropped (see
    /// [`crate::Delivery::Lagged`]).
    pub subscriber_buffer: usize,
    /// Jobs not consumed within this time are discarded.
    pub job_max_age: Duration,
    /// Largest accepted payload in bytes, for events and jobs alike. NATS servers reject
    /// messages above their `max_payload` (1 MiB by default); keep this below it.
    pub max_payload: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            backend: Backend::InProcess,
            ack_wait: Duration::from_secs(30),
            subscriber_buffer: 1024,
            job_max_age: Duration::from_secs(7 * 24 * 3600),
            max_payload: 1_000_000,
        }
    }
}

/// Which implementation [`crate::connect`] builds.
#[derive(Clone, Debug)]
pub enum Backend {
    /// Single node: live events stay in the process, jobs go to the storage append log.
    InProcess,
    /// Multi-node: core NATS for live events, JetStream for jobs.
    Nats(NatsConfig),
}

/// Connection settings for the NATS backend.
#[derive(Clone)]
pub struct NatsConfig {
    /// Server URL(s), comma separated, e.g. `nats://10.0.0.1:4222,nats://10.0.0.2:4222`.
    pub url: String,
    /// Connection name shown by the server's monitoring (`connz`).
    pub client_name: String,
    pub auth: NatsAuth,
    /// Refuse to talk to the server without TLS (`tls://` URLs imply it).
    pub require_tls: bool,
    /// Timeout of the initial connection attempt; once connected, the client reconnects forever.
    pub connect_timeout: Duration,
    /// JetStream stream holding every job queue. Its subjects are `_<stream>.<queue>`.
    pub jobs_stream: String,
    /// JetStream replication factor of the jobs stream (1 for a single server, 3 for a cluster).
    pub replicas: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            client_name: "guardyn".to_owned(),
            auth: NatsAuth::None,
            require_tls: false,
            connect_timeout: Duration::from_secs(5),
            jobs_stream: "GUARDYN_JOBS".to_owned(),
            replicas: 1,
        }
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &redact_url_userinfo(&self.url))
            .field("client_name", &self.client_name)
            .field("auth", &self.auth)
            .field("require_tls", &self.require_tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("jobs_stream", &self.jobs_stream)
            .field("replicas", &self.replicas)
            .finish()
    }
}

/// URLs may carry `user:password@`; never print it.
fn redact_url_userinfo(urls: &str) -> String {
    urls.split(',')
        .map(|url| match (url.find("://"), url.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                format!("{}://<redacted>@{}", &url[..scheme_end], &url[at + 1..])
            }
            (None, Some(at)) => format!("<redacted>@{}", &url[at + 1..]),
            _ => url.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// NATS credentials.
#[derive(Clone, Default)]
pub enum NatsAuth {
    #[default]
    None,
    Token(String),
    UserPassword {
        user: String,
        password: String,
    },
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn debug_output_never_contains_credentials() {
        let config = NatsConfig {
            url: "nats://alice:hunter2@a:4222,tls://b:4222,bob:s3cret@c:4222".to_owned(),
            auth: NatsAuth::UserPassword {
                user: "alice".to_owned(),
                password: "hunter2".to_owned(),
            },
            ..NatsConfig::default()
        };
        let out = format!("{config:?}");
        assert!(!out.contains("hunter2") && !out.contains("s3cret"), "{out}");
        assert!(out.contains("a:4222") && out.contains("tls://b:4222") && out.contains("c:4222"));
        let token = format!("{:?}", NatsAuth::Token("tok-123".to_owned()));
        assert!(!token.contains("tok-123"), "{token}");
    }
}
