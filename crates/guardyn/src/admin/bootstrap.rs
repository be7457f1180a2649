//! `guardyn admin bootstrap`: the first owner's enrolment code, issued on the server host.

#![allow(clippy::print_stdout)]

use std::path::Path;

use anyhow::Context as _;
use guardyn_admin::users_bootstrap;
use guardyn_common::clock::{Clock as _, SystemClock};

use crate::config::Config;

/// Issue a code into the data directory of the configured server and print it once.
pub fn bootstrap(config: Option<&Path>) -> anyhow::Result<()> {
    let config: Config =
        guardyn_common::config::load(config).context("loading the server configuration")?;
    let issued = users_bootstrap::issue(&config.storage.data_dir, SystemClock.now_ms())
        .context("issuing the enrolment code")?;
    let minutes = users_bootstrap::LIFETIME_MS / 60_000;
    println!("{}", issued.code);
    println!(
        "one-time owner enrolment code, valid {minutes} minutes: sign in as the future owner and \
         run `guardyn admin claim-owner` against a server that reads {}",
        issued.path.display()
    );
    Ok(())
}
