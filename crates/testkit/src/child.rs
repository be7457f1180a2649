//! A server in a child process, for tests that must kill it for real (`kill -9` durability).
//!
//! The child is the current test binary re-run with one ignored test selected; that test
//! starts a [`crate::TestServer`] on the data directory it is given and prints one line
//! `CHILD <word> <word>...` (its address, tokens...), then waits forever.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// Start `test` (an ignored test of the current binary) with `dir_var` = `dir`; returns the
/// child (killed on drop) and the words of its `CHILD` line.
pub async fn spawn(test: &str, dir_var: &str, dir: &Path) -> anyhow::Result<(Child, Vec<String>)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--exact", test, "--ignored", "--nocapture"])
        .env(dir_var, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting the child test process")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match lines.next_line().await? {
                Some(l) if l.starts_with("CHILD ") => return anyhow::Ok(l),
                Some(_) => {}
                None => anyhow::bail!("the child exited before printing its CHILD line"),
            }
        }
    })
    .await
    .context("waiting for the child server")??;
    let words = line.split(' ').skip(1).map(str::to_owned).collect();
    Ok((child, words))
}
