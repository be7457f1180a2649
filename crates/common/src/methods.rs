//! The gRPC methods a Guardyn process can serve, read once from the compiled descriptor sets
//! (Guardyn's public and internal protos, health, and both reflection versions).

use std::sync::LazyLock;

use prost::Message as _;

/// One method: its HTTP/2 path and whether either side streams.
#[derive(Debug)]
pub(crate) struct Method {
    pub path: String,
    pub streaming: bool,
}

static METHODS: LazyLock<Vec<Method>> = LazyLock::new(|| {
    let mut out = Vec::new();
    for bytes in [
        guardyn_proto::FILE_DESCRIPTOR_SET,
        guardyn_proto::INTERNAL_FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(bytes) else {
            continue;
        };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let name = service.name.unwrap_or_default();
                for method in service.method {
                    out.push(Method {
                        path: format!("/{package}.{name}/{}", method.name.unwrap_or_default()),
                        streaming: method.server_streaming.unwrap_or(false)
                            || method.client_streaming.unwrap_or(false),
                    });
                }
            }
        }
    }
    out
});

/// Every method, in descriptor order.
pub(crate) fn all() -> &'static [Method] {
    &METHODS
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    #[test]
    fn the_served_methods_are_known_with_their_shape() {
        let find = |p: &str| super::all().iter().find(|m| m.path == p);
        let listen = find("/guardyn.messaging.v1.MessagingService/Listen").unwrap();
        assert!(listen.streaming);
        assert!(!find("/grpc.health.v1.Health/Check").unwrap().streaming);
        assert!(find("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo").is_some());
        assert!(find("/guardyn.messaging.v1.MessagingService/Nope").is_none());
    }
}
