//! Compiles the `.proto` files with protox (pure Rust, no system `protoc`) and
//! writes encoded descriptor sets next to the generated code so each service
//! can serve gRPC reflection of what it serves: the auth service's set
//! (`auth` + `events`) and the edge's watch set (`watch` + `events`).
use prost::Message;
use std::path::{Path, PathBuf};

const EVENTS: &str = "qrlogin/events/v1/events.proto";
const AUTH: &str = "qrlogin/auth/v1/auth.proto";
const WATCH: &str = "qrlogin/watch/v1/watch.proto";

fn write_set(
    out_dir: &Path,
    name: &str,
    protos: &[&str],
) -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(protos, ["."])?;
    std::fs::write(out_dir.join(name), fds.encode_to_vec())?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR not set")?);
    let all = [EVENTS, AUTH, WATCH];
    for proto in all {
        println!("cargo:rerun-if-changed={proto}");
    }
    write_set(&out_dir, "qrlogin_descriptor.bin", &[EVENTS, AUTH])?;
    write_set(&out_dir, "qrlogin_watch_descriptor.bin", &[EVENTS, WATCH])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(protox::compile([EVENTS, AUTH], ["."])?)?;
    // The watch stream with small per-call buffers (src/codec.rs): an edge
    // holds thousands of idle watch streams, each with its own encoder.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .codec_path("crate::codec::LeanCodec")
        .extern_path(".qrlogin.events.v1", "crate::events::v1")
        .compile_fds(protox::compile([WATCH], ["."])?)?;
    Ok(())
}
