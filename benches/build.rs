//! Compiles the echo service `ckpt-bench limits` measures gRPC itself with.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/echo.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".ckptbench.echo.v1")
        .type_attribute(".", "#[allow(clippy::all)]")
        .client_mod_attribute(".", "#[allow(clippy::all, clippy::clone_on_ref_ptr)]")
        .server_mod_attribute(".", "#[allow(clippy::all, clippy::clone_on_ref_ptr)]")
        .compile_fds(fds)?;
    Ok(())
}
