//! Generates the gRPC client and server for `proto/echo.proto`.
//!
//! protoc comes from `protoc-bin-vendored` so the build needs no system
//! protoc. Its path is handed to prost through `Config::protoc_executable`
//! rather than the `PROTOC` environment variable, which would need
//! `std::env::set_var`.

const PROTO: &str = "proto/echo.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_with_config(config, &[PROTO], &["proto"])?;
    rerun_if_changed(PROTO);
    Ok(())
}

// tonic-prost-build 0.14 does not pass its `emit_rerun_if_changed` setting on
// to prost, so without this line Cargo would rerun the script whenever any
// file of the package changes.
#[allow(
    clippy::print_stdout,
    reason = "build scripts talk to Cargo through stdout"
)]
fn rerun_if_changed(path: &str) {
    println!("cargo:rerun-if-changed={path}");
}
