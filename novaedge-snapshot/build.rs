//! Generates the protobuf types with the protoc that `protoc-bin-vendored` ships, so a fresh
//! machine needs no system protoc; with the `distribution` feature, also the gRPC service that
//! streams snapshots to agents (a separate proto package, so the plain wire types need no tonic).

const SNAPSHOT: &str = "proto/novaedge/snapshot/v1/snapshot.proto";
const DISTRIBUTION: &str = "proto/novaedge/distribution/v1/distribution.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    rerun_if_changed(SNAPSHOT);
    prost_build::Config::new()
        .protoc_executable(&protoc)
        .compile_protos(&[SNAPSHOT], &["proto"])?;
    if std::env::var_os("CARGO_FEATURE_DISTRIBUTION").is_some() {
        rerun_if_changed(DISTRIBUTION);
        let mut config = tonic_prost_build::Config::new();
        config.protoc_executable(&protoc);
        tonic_prost_build::configure()
            .build_server(true)
            .build_client(true)
            .extern_path(".novaedge.snapshot.v1", "crate::proto")
            .compile_with_config(config, &[DISTRIBUTION], &["proto"])?;
    }
    Ok(())
}

#[allow(
    clippy::print_stdout,
    reason = "build scripts talk to Cargo through stdout"
)]
fn rerun_if_changed(path: &str) {
    println!("cargo:rerun-if-changed={path}");
}
