//! ListSessions page requests: page size and the opaque page token (base64url of the last
//! session id of the previous page).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use guardyn_common::ApiError;

use super::convert;
use crate::session_list::{DEFAULT_PAGE, MAX_PAGE};

/// `page_size`: 0 means the default; above the maximum is INVALID_ARGUMENT.
pub fn page_size(raw: u32) -> Result<usize, ApiError> {
    match usize::try_from(raw) {
        Ok(0) => Ok(DEFAULT_PAGE),
        Ok(n) if n <= MAX_PAGE => Ok(n),
        _ => Err(ApiError::invalid_field(
            "page_size",
            format!("must be at most {MAX_PAGE}"),
        )),
    }
}

/// `page_token`: empty for the first page, else a token this service issued.
pub fn page_token(raw: &str) -> Result<Option<String>, ApiError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let invalid = || ApiError::invalid_field("page_token", "is not a token ListSessions issued");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let sid = String::from_utf8(bytes).map_err(|_| invalid())?;
    convert::session_id(&sid, "page_token").map_err(|_| invalid())?;
    Ok(Some(sid))
}

pub fn encode_page_token(sid: &str) -> String {
    URL_SAFE_NO_PAD.encode(sid)
}
