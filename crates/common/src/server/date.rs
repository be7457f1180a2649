//! The `date` response header, sent as a never-indexed HPACK literal.
//!
//! hyper adds `date` to every HTTP/2 response that lacks one, as an ordinary header. Its value
//! changes every second, so each connection's HPACK table fills with old dates, and h2's encoder
//! walks the chain of same-name entries comparing values before inserting the new one (5,700
//! instructions of a 98,000-instruction heartbeat, and a cache miss per entry). A sensitive
//! value is sent as a literal and never enters the table; hyper keeps a `date` already set.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

thread_local! {
    // Formatting the date costs more than the rest of this layer; a worker formats it once per
    // second it answers in.
    static CURRENT: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
}

/// The current time as an HTTP date, marked sensitive.
pub(super) fn header_value() -> Option<HeaderValue> {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    CURRENT.with(|cell| {
        let mut cached = cell.borrow_mut();
        if let Some((at, value)) = cached.as_ref()
            && *at == secs
        {
            return Some(value.clone());
        }
        let mut value = HeaderValue::from_str(&httpdate::fmt_http_date(now)).ok()?;
        value.set_sensitive(true);
        *cached = Some((secs, value.clone()));
        Some(value)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_date_is_now_and_never_indexed() {
        let value = header_value().unwrap();
        assert!(value.is_sensitive());
        let parsed = httpdate::parse_http_date(value.to_str().unwrap()).unwrap();
        let skew = SystemTime::now()
            .duration_since(parsed)
            .unwrap_or_else(|e| e.duration());
        assert!(skew.as_secs() <= 2, "{value:?}");
    }
}
