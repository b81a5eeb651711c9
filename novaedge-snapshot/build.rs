//! Generates the protobuf types with the protoc that `protoc-bin-vendored` ships, so a fresh
//! machine needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/novaedge/snapshot/v1/snapshot.proto";
    println!("cargo:rerun-if-changed={proto}");
    prost_build::Config::new()
        .protoc_executable(protoc_bin_vendored::protoc_bin_path()?)
        .compile_protos(&[proto], &["proto"])?;
    Ok(())
}
