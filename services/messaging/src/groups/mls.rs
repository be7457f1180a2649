//! What the delivery service reads from MLS messages, through the crypto crate's stateless
//! parser.

use guardyn_crypto::mls::{ContentKind, MessageKind, ParsedMessage, parse_message};
use sha2::{Digest as _, Sha256};

use crate::error::MessagingError;

/// Parse `bytes` (request field `field`) and check Guardyn's wire-format policy, the group id
/// and the expected wire format / content type.
pub(crate) fn parse(
    field: &str,
    bytes: &[u8],
    group_id: &[u8],
    kind: MessageKind,
    content: Option<ContentKind>,
) -> Result<ParsedMessage, MessagingError> {
    let parsed = parse_message(bytes).map_err(|e| MessagingError::mls(field, e))?;
    parsed
        .check_guardyn_policy()
        .map_err(|e| MessagingError::mls(field, e))?;
    if parsed.kind != kind || (content.is_some() && parsed.content != content) {
        return Err(MessagingError::mls(
            field,
            format!(
                "expected {kind:?} {content:?}, got {:?} {:?}",
                parsed.kind, parsed.content
            ),
        ));
    }
    if parsed.group_id.as_deref().is_some_and(|g| g != group_id) {
        return Err(MessagingError::mls(field, "belongs to another group"));
    }
    Ok(parsed)
}

/// RFC 9420 §5.2 ProposalRef of a PublicMessage proposal sent by a member:
/// `RefHash("MLS 1.0 Proposal Reference", AuthenticatedContent)`, where AuthenticatedContent
/// is the MLSMessage without its leading version (2 bytes) and trailing membership tag
/// (a 32-byte MAC with its 1-byte length for the SHA-256 ciphersuites Guardyn allows).
pub(crate) fn proposal_ref(mls_message: &[u8]) -> Option<Vec<u8>> {
    let end = mls_message.len().checked_sub(33)?;
    let content = mls_message.get(2..end)?;
    if mls_message.get(end) != Some(&32) {
        return None;
    }
    let mut input = Vec::with_capacity(content.len() + 64);
    put_varint_bytes(&mut input, b"MLS 1.0 Proposal Reference");
    put_varint_bytes(&mut input, content);
    Some(Sha256::digest(&input).to_vec())
}

/// `opaque<V>` with the MLS variable-length integer prefix (RFC 9420 §2.1.2).
fn put_varint_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.extend_from_slice(&((n as u16) | 0x4000).to_be_bytes());
    } else {
        out.extend_from_slice(&((n as u32) | 0x8000_0000).to_be_bytes());
    }
    out.extend_from_slice(b);
}
