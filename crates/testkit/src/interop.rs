//! Scripts that drive a test server with the official libsignal client (npm
//! `@signalapp/libsignal-client`, test-only: it is AGPL and never part of the product).
//!
//! The node project lives in `crates/testkit/interop/libsignal`; `.ci/run` installs it with
//! `npm ci`. Without its packages the tests fail in CI (`CI=true`) and are skipped with a
//! notice elsewhere.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

/// The interop project directory, or `None` (after a notice) when its packages are missing
/// outside CI. Panics in CI when they are missing.
pub fn libsignal_project() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/libsignal");
    if dir
        .join("node_modules/@signalapp/libsignal-client")
        .is_dir()
    {
        return Some(dir);
    }
    let msg = format!(
        "libsignal interop tests need `npm ci --prefix {}`",
        dir.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
    eprintln!("NOTICE: skipping: {msg}");
    None
}

/// Run `node <script> <addr>` from the interop project; returns stdout when the script
/// succeeded and printed `OK`.
pub async fn run_script(
    project: PathBuf,
    script: &str,
    addr: std::net::SocketAddr,
) -> anyhow::Result<String> {
    let script = project.join(script);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(&script)
            .arg(addr.to_string())
            .output()
    })
    .await?
    .context("running node")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success() && stdout.contains("OK"),
        "script failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    Ok(stdout)
}
