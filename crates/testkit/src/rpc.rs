//! Request and status helpers every service's API tests use.

/// `msg` with `authorization: Bearer <token>`.
pub fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    let value = format!("Bearer {token}")
        .parse()
        .unwrap_or_else(|e| panic!("token is not a header value: {e}"));
    r.metadata_mut().insert("authorization", value);
    r
}

/// `google.rpc.Status`, to reach the details a `tonic::Status` carries.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// Decode the typed `guardyn.common.v1.<name>` detail (DeviceMismatch, OffsetMismatch...) of
/// a status; panics when it is absent.
pub fn detail<M: prost::Message + Default>(status: &tonic::Status, name: &str) -> M {
    use prost::Message as _;
    let s = RpcStatus::decode(status.details())
        .unwrap_or_else(|e| panic!("status details are not a google.rpc.Status: {e}"));
    let any = s
        .details
        .iter()
        .find(|a| a.type_url.ends_with(&format!("/guardyn.common.v1.{name}")))
        .unwrap_or_else(|| panic!("no {name} detail"));
    M::decode(any.value.as_slice()).unwrap_or_else(|e| panic!("bad {name} detail: {e}"))
}
