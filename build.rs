//! Compiles every `.proto` under `proto/` (`meter.v1`, and the part of
//! Envoy's rate limit protocol meterd serves) into types, servers and
//! clients, and writes the encoded descriptor set that
//! server reflection serves.
//!
//! `protox` parses the protos in pure Rust, so no `protoc` is needed.
//!
//! Two passes over the same descriptors: servers decode requests with
//! `crate::codec::RequestCodec` (a request that does not decode is the
//! caller's fault: INVALID_ARGUMENT), clients keep prost's codec (a reply
//! that does not decode is not). The client pass refers to the messages of
//! the first pass through `extern_path`, so each message is one type.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use prost::Message;

const PROTO_ROOT: &str = "proto";

/// Every protobuf package under `proto/`, and the module of `src/lib.rs` that holds it.
const PACKAGES: &[(&str, &str)] = &[
    ("meter.v1", "crate::v1"),
    (
        "envoy.service.ratelimit.v3",
        "crate::envoy::service::ratelimit::v3",
    ),
    (
        "envoy.extensions.common.ratelimit.v3",
        "crate::envoy::extensions::common::ratelimit::v3",
    ),
    ("envoy.config.core.v3", "crate::envoy::config::core::v3"),
    ("envoy.type.v3", "crate::envoy::r#type::v3"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let mut files = Vec::new();
    find_protos(Path::new(PROTO_ROOT), &mut files)?;
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [PROTO_ROOT])?;
    let ours: Vec<String> = files
        .iter()
        .filter_map(|f| f.strip_prefix(PROTO_ROOT).ok())
        .map(|f| f.to_string_lossy().trim_start_matches('/').to_owned())
        .collect();
    for file in descriptors
        .file
        .iter()
        .filter(|f| ours.iter().any(|o| o == f.name()))
    {
        let package = file.package();
        if !PACKAGES.iter().any(|(known, _)| *known == package) {
            return Err(format!(
                "{} declares package {package:?}, which build.rs does not map to a module; add it to PACKAGES and to src/lib.rs",
                file.name()
            )
            .into());
        }
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("meter_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .codec_path("crate::codec::RequestCodec")
        .compile_fds(descriptors.clone())?;
    let client_dir = out_dir.join("client");
    fs::create_dir_all(&client_dir)?;
    let mut clients = tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .out_dir(&client_dir);
    for (package, module) in PACKAGES {
        clients = clients.extern_path(format!(".{package}"), *module);
    }
    clients.compile_fds(descriptors)?;
    Ok(())
}

/// Every `.proto` file under `dir`, recursively.
fn find_protos(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            find_protos(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            found.push(path);
        }
    }
    Ok(())
}
