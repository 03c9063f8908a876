//! Compiles `proto/ckpt/v1/*.proto` with protox (pure Rust, no system `protoc`) and writes the
//! descriptor set that server reflection serves.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/ckpt/v1/checkpoint.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }

    let fds = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("ckpt_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .bytes(".ckpt.v1")
        .type_attribute(".", "#[allow(clippy::all)]")
        .client_mod_attribute(".", "#[allow(clippy::all, clippy::clone_on_ref_ptr)]")
        .server_mod_attribute(".", "#[allow(clippy::all, clippy::clone_on_ref_ptr)]")
        .compile_fds(fds)?;
    Ok(())
}
