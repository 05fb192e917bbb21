//! The wire: gRPC services, the change-event envelope carried on NATS, and job payloads.
//! Re-exports `tonic` and `prost` so every crate speaks the same versions.

pub use prost;
pub use prost_types;
pub use tonic;

pub mod codec;

/// Encoded `FileDescriptorSet` of every Folio proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/folio_descriptor.bin"));

/// Every gRPC method path (`/package.Service/Method`) of the Folio protos: a closed set, so
/// metrics can label by method without letting a caller mint series with made-up names.
pub fn method_paths() -> Vec<String> {
    methods_of(FILE_DESCRIPTOR_SET)
}

/// The method paths of an encoded `FileDescriptorSet` (e.g. tonic-health's).
pub fn methods_of(file_descriptor_set: &[u8]) -> Vec<String> {
    let set: prost_types::FileDescriptorSet =
        prost::Message::decode(file_descriptor_set).expect("an embedded descriptor set decodes");
    let mut paths = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                paths.push(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
            }
        }
    }
    paths
}

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

#[cfg(test)]
mod tests {
    #[test]
    fn method_paths_name_every_rpc_of_the_api() {
        let paths = super::method_paths();
        assert!(paths.contains(&"/folio.api.v1.ProposalService/GetProposal".to_owned()), "{paths:?}");
        assert!(paths.iter().all(|p| p.starts_with("/folio.")));
    }
}

pub mod jobs {
    pub mod v1 {
        tonic::include_proto!("folio.jobs.v1");
    }
}
