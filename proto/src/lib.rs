//! The qrlogin contract, generated from `proto/qrlogin/**.proto`.
//!
//! - [`auth::v1`]: the `AuthService` gRPC API (client and server).
//! - [`events::v1`]: `StoredSession`, the value of the session bucket, and
//!   `LoginEvent`, its public part, which NATS republishes on the
//!   per-session subject `<prefix>.<session_id>` after every write.
//! - [`watch::v1`]: the `LoginWatch` gRPC stream that edges serve to native
//!   and backend clients (client and server).
//! - [`qr`]: the rotating QR payload (epochs, tags, parsing), shared by
//!   auth (which checks a scanned payload) and edges (which show it).
//! - [`codec`]: the watch stream's codec, prost with small buffers.
//! - [`FILE_DESCRIPTOR_SET`], [`WATCH_FILE_DESCRIPTOR_SET`]: the encoded
//!   descriptors for gRPC reflection, one per service, so that each lists
//!   only what it serves.

/// Encoded `FileDescriptorSet` of what the auth service serves
/// (`auth.proto`, `events.proto` and their imports).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/qrlogin_descriptor.bin"));

/// Encoded `FileDescriptorSet` of what an edge's gRPC port serves
/// (`watch.proto`, `events.proto` and their imports).
pub const WATCH_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/qrlogin_watch_descriptor.bin"));

pub mod codec;
pub mod qr;

pub mod events {
    pub mod v1 {
        tonic::include_proto!("qrlogin.events.v1");
    }
}

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("qrlogin.auth.v1");
    }
}

pub mod watch {
    pub mod v1 {
        tonic::include_proto!("qrlogin.watch.v1");
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    fn services(set: &[u8]) -> Vec<String> {
        let fds = FileDescriptorSet::decode(set).expect("descriptor set decodes");
        fds.file
            .iter()
            .flat_map(|f| {
                f.service
                    .iter()
                    .map(move |s| format!("{}.{}", f.package(), s.name()))
            })
            .collect()
    }

    #[test]
    fn each_descriptor_set_lists_only_its_own_service() {
        assert_eq!(
            services(super::FILE_DESCRIPTOR_SET),
            ["qrlogin.auth.v1.AuthService"]
        );
        assert_eq!(
            services(super::WATCH_FILE_DESCRIPTOR_SET),
            ["qrlogin.watch.v1.LoginWatch"]
        );
    }

    #[test]
    fn watch_set_carries_its_imports_for_reflection() {
        let fds = FileDescriptorSet::decode(super::WATCH_FILE_DESCRIPTOR_SET).unwrap();
        let names: Vec<&str> = fds.file.iter().map(|f| f.name()).collect();
        for needed in [
            "qrlogin/watch/v1/watch.proto",
            "qrlogin/events/v1/events.proto",
            "google/protobuf/timestamp.proto",
        ] {
            assert!(names.contains(&needed), "{needed} missing from {names:?}");
        }
    }

    #[test]
    fn since_is_optional_so_zero_differs_from_unset() {
        let req = super::watch::v1::WatchLoginSessionRequest {
            session_id: "q3Zb0Xz2kT9yLw1sJm5HAA".into(),
            since: Some(0),
        };
        let back =
            super::watch::v1::WatchLoginSessionRequest::decode(req.encode_to_vec().as_slice())
                .unwrap();
        assert_eq!(back.since, Some(0));
    }
}
