//! Compiles the `.proto` files with protox (pure Rust, no system `protoc`) and
//! writes the encoded descriptor set next to the generated code so the auth
//! service can serve gRPC reflection from it.
use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "qrlogin/events/v1/events.proto",
    "qrlogin/auth/v1/auth.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR not set")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    std::fs::write(out_dir.join("qrlogin_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
