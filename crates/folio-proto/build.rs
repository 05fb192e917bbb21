//! Generates Rust from `../../proto` with protox, so no `protoc` is needed on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto");
    let files = [
        "folio/api/v1/proposals.proto",
        "folio/api/v1/clients.proto",
        "folio/api/v1/templates.proto",
        "folio/api/v1/admin.proto",
        "folio/events/v1/change_event.proto",
        "folio/jobs/v1/render_pdf.proto",
        "folio/jobs/v1/notify.proto",
        "folio/jobs/v1/invitation.proto",
    ];
    let fds = protox::compile(files, ["../../proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("folio_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::FolioCodec")
        .compile_fds(fds)?;
    Ok(())
}
