//! The wire: gRPC services, the change-event envelope carried on NATS, and job payloads.
//! Re-exports `tonic` and `prost` so every crate speaks the same versions.

pub use prost;
pub use prost_types;
pub use tonic;

/// Encoded `FileDescriptorSet` of every Folio proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/folio_descriptor.bin"));

pub mod api {
    pub mod v1 {
        tonic::include_proto!("folio.api.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("folio.events.v1");
    }
}

pub mod jobs {
    pub mod v1 {
        tonic::include_proto!("folio.jobs.v1");
    }
}
