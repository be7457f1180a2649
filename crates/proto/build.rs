//! Compiles every `.proto` file under `<workspace>/proto` with protox (pure
//! Rust, no `protoc`) and generates prost messages plus tonic clients and
//! servers. The encoded descriptor set is written next to the generated code
//! for gRPC server reflection.

use std::{
    env, fs, io,
    path::{Path, PathBuf},
};

use prost::Message as _;

/// Messages whose fields hold secrets (passwords, tokens, codes, keys) or
/// ciphertext bodies. prost's derived `Debug` is suppressed for them (and
/// their oneofs); `src/redact.rs` implements a redacting `Debug` instead.
const REDACTED: &[&str] = &[
    ".guardyn.auth.v1.Tokens",
    ".guardyn.auth.v1.RegisterRequest",
    ".guardyn.auth.v1.LoginRequest",
    ".guardyn.auth.v1.MfaChallenge",
    ".guardyn.auth.v1.CompleteMfaLoginRequest",
    ".guardyn.auth.v1.RefreshSessionRequest",
    ".guardyn.auth.v1.ChangePasswordRequest",
    ".guardyn.auth.v1.DeleteAccountRequest",
    ".guardyn.auth.v1.StepUpRequest",
    ".guardyn.auth.v1.RequestLinkResponse",
    ".guardyn.auth.v1.ApproveLinkRequest",
    ".guardyn.auth.v1.LinkDeviceRequest",
    ".guardyn.auth.v1.BeginTotpEnrollmentResponse",
    ".guardyn.auth.v1.ConfirmTotpEnrollmentRequest",
    ".guardyn.auth.v1.ConfirmTotpEnrollmentResponse",
    ".guardyn.auth.v1.DisableTotpRequest",
    ".guardyn.auth.v1.RegenerateRecoveryCodesRequest",
    ".guardyn.auth.v1.RegenerateRecoveryCodesResponse",
    ".guardyn.messaging.v1.Envelope",
    ".guardyn.messaging.v1.DeliveredEnvelope",
    ".guardyn.messaging.v1.SendCommitRequest",
    ".guardyn.messaging.v1.SendProposalRequest",
    ".guardyn.messaging.v1.SendGroupMessageRequest",
    ".guardyn.messaging.v1.LeaveGroupRequest",
    ".guardyn.media.v1.UploadChunkRequest",
    ".guardyn.media.v1.DownloadResponse",
    ".guardyn.notification.v1.RegisterPushTokenRequest",
    ".guardyn.notification.v1.WebPushKeys",
    ".guardyn.admin.v1.ClaimOwnerRequest",
    ".guardyn.admin.v1.IssueCredentialResponse",
    ".guardyn.admin.v1.RotateCredentialResponse",
    ".guardyn.internal.v1.VerifyCredentialRequest",
];

/// Packages of the internal mesh contract (`proto/guardyn/internal`).
const INTERNAL_PACKAGE_PREFIX: &str = "guardyn.internal.";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let proto_root = proto_root.canonicalize().map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("proto root {}: {err}", proto_root.display()),
        )
    })?;

    let mut files = Vec::new();
    collect_protos(&proto_root, &mut files)?;
    // Deterministic order keeps the descriptor set (and so the build) stable.
    files.sort();

    // Neither protox nor tonic-prost-build emits rerun-if-changed for files
    // outside the crate, so do it here. Directories are watched too so that
    // added or removed files trigger a rebuild.
    println!("cargo:rerun-if-changed=build.rs");
    emit_rerun_for_dirs(&proto_root)?;
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let fds = protox::compile(&files, [&proto_root])?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // `compile_fds` ignores `file_descriptor_set_path`, so write it ourselves. The internal
    // mesh contract gets its own set, so public reflection and the public contract's checks
    // never see it (no public file imports an internal one).
    let mut public_set = fds.clone();
    public_set
        .file
        .retain(|f| !f.package().starts_with(INTERNAL_PACKAGE_PREFIX));
    let mut internal_set = fds.clone();
    internal_set
        .file
        .retain(|f| f.package().starts_with(INTERNAL_PACKAGE_PREFIX));
    fs::write(
        out_dir.join("guardyn_descriptor.bin"),
        public_set.encode_to_vec(),
    )?;
    fs::write(
        out_dir.join("guardyn_internal_descriptor.bin"),
        internal_set.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Clients stay generic over any tower service; this crate does not
        // enable tonic's `transport` feature, so no `connect` constructors.
        .build_transport(false)
        // `codec.rs`: prost's codec with a smaller per-stream encode buffer.
        .codec_path("crate::codec::LeanCodec")
        .skip_debug(REDACTED.iter().copied())
        .compile_fds_with_config(fds, prost_config())?;
    Ok(())
}

/// prost settings: `prost::Name` on every message, so messages can travel as `Any` (status
/// details such as `DeviceMismatch`) with their canonical type URL.
fn prost_config() -> prost_build::Config {
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    config.type_name_domain(["."], "type.googleapis.com");
    config
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn emit_rerun_for_dirs(dir: &Path) -> io::Result<()> {
    println!("cargo:rerun-if-changed={}", dir.display());
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            emit_rerun_for_dirs(&path)?;
        }
    }
    Ok(())
}
