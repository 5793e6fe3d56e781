//! The qrlogin contract, generated from `proto/qrlogin/**.proto`.
//!
//! - [`auth::v1`]: the `AuthService` gRPC API (client and server).
//! - [`events::v1`]: `StoredSession`, the value of the session bucket, and
//!   `LoginEvent`, its public part, which NATS republishes on the
//!   per-session subject `<prefix>.<session_id>` after every write.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC reflection.

/// Encoded `FileDescriptorSet` of every qrlogin `.proto` file.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/qrlogin_descriptor.bin"));

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
