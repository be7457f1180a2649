//! Trace context carried by events and jobs, so a subscriber's or consumer's work joins the
//! trace of the request that published it.
//!
//! `publish` and `enqueue` capture the calling span's context (through the global text-map
//! propagator: W3C `traceparent`/`tracestate` as `guardyn_common::telemetry` installs it) in
//! every backend; NATS carries it in message headers, the in-process bus next to the payload
//! (and in the stored job entry). Without an OpenTelemetry layer nothing is captured.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The propagation fields (`traceparent`, `tracestate`) of the span that published an event or
/// enqueued a job; empty when none was recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceContext {
    fields: Vec<(String, String)>,
}

/// Longest field name or value kept; the W3C fields are far shorter (`tracestate` ≤ 512).
const MAX_FIELD: usize = 1024;

impl TraceContext {
    /// The context of the current span.
    pub fn current() -> Self {
        let cx = tracing::Span::current().context();
        let mut out = Self::default();
        if cx.span().span_context().is_valid() {
            opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut out));
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The fields, as the propagator wrote them.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Keep the propagator's fields out of `(name, value)` pairs (NATS headers).
    pub(crate) fn from_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        let wanted: Vec<String> = opentelemetry::global::get_text_map_propagator(|p| {
            p.fields().map(str::to_owned).collect()
        });
        let mut out = Self::default();
        for (k, v) in pairs {
            if wanted.iter().any(|w| w.eq_ignore_ascii_case(k)) {
                out.set(&k.to_ascii_lowercase(), v.to_owned());
            }
        }
        out
    }

    /// Make `span` (not yet entered) a child of the publishing span. Does nothing when the
    /// context is empty, so the span keeps its local parent.
    pub fn set_parent_of(&self, span: &tracing::Span) {
        if self.is_empty() {
            return;
        }
        let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(self));
        if cx.span().span_context().is_valid() {
            // Fails only without an OpenTelemetry layer, when there is no trace to join.
            let _ = span.set_parent(cx);
        }
    }

    /// `[count u8] ([len u16 BE] name [len u16 BE] value)*`, for stored job entries.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        // `set` keeps every field within MAX_FIELD, so each length fits its u16.
        let fields: Vec<(&String, &String, u16, u16)> = self
            .fields
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    k,
                    v,
                    u16::try_from(k.len()).ok()?,
                    u16::try_from(v.len()).ok()?,
                ))
            })
            .take(usize::from(u8::MAX))
            .collect();
        out.push(u8::try_from(fields.len()).unwrap_or(u8::MAX));
        for (k, v, k_len, v_len) in fields {
            out.extend_from_slice(&k_len.to_be_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&v_len.to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
    }

    /// Reads what [`TraceContext::encode_into`] wrote; returns the context and the rest of
    /// `bytes`, or `None` when it is malformed.
    pub(crate) fn decode_from(bytes: &[u8]) -> Option<(Self, &[u8])> {
        let (&count, mut rest) = bytes.split_first()?;
        let mut out = Self::default();
        for _ in 0..count {
            let mut pair = [String::new(), String::new()];
            for s in &mut pair {
                let (len, tail) = rest.split_first_chunk::<2>()?;
                let len = usize::from(u16::from_be_bytes(*len));
                let (text, tail) = (tail.get(..len)?, tail.get(len..)?);
                *s = std::str::from_utf8(text).ok()?.to_owned();
                rest = tail;
            }
            let [k, v] = pair;
            out.set(&k, v);
        }
        Some((out, rest))
    }
}

impl Injector for TraceContext {
    fn set(&mut self, key: &str, value: String) {
        if key.len() > MAX_FIELD || value.len() > MAX_FIELD {
            return;
        }
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some(field) => field.1 = value,
            None => self.fields.push((key.to_owned(), value)),
        }
    }
}

impl Extractor for TraceContext {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.fields.iter().map(|(k, _)| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn stored_form_round_trips_and_rejects_truncation() {
        let mut cx = TraceContext::default();
        cx.set(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        );
        cx.set("tracestate", "guardyn=1".into());
        let mut bytes = Vec::new();
        cx.encode_into(&mut bytes);
        bytes.extend_from_slice(b"payload");
        let (back, rest) = TraceContext::decode_from(&bytes).unwrap();
        assert_eq!(back, cx);
        assert_eq!(rest, b"payload");
        let cut = bytes.len() - b"payload".len() - 3;
        assert!(TraceContext::decode_from(&bytes[..cut]).is_none());
    }
}
