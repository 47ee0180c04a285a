//! `vaultctl`: the operator, writer and PAM command line for vaultd.
//!
//! Everything talks to the daemon over mutual TLS (`init` over the pinned
//! first-boot identity), except the offline steps: `audit verify`, `recover
//! share`, `breakglass open`. It links neither the daemon nor the store: the
//! local ceremonies (`vaultd init`, `vaultd recover`) belong to the daemon's
//! binary on the appliance. Output is
//! human text by default and the server's JSON with `--json`. Secret values
//! are never taken from the command line (other users can read argv): `secret
//! put` reads the value from a file or standard input.
//!
//! Exit codes: 0 success, 1 the server refused (the error code is printed),
//! 2 usage or local error (bad files, cannot connect).
//!
//! Layout: `cli.rs` the global options and the top-level commands; `cmd/`
//! one module per command group (its subcommands, arguments and handlers)
//! and in `cmd/mod.rs` the one dispatch; `util.rs` what they share
//! (requests, the server's errors, output, local files). This file only
//! parses, runs and maps the outcome to the exit code.

#![forbid(unsafe_code)]

mod cli;
mod cmd;
mod util;

use std::process::ExitCode;

use clap::Parser as _;

use crate::util::ServerError;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vaultctl: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(cmd::run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(ServerError(0, _, msg))) => {
            eprintln!("vaultctl: {msg}");
            ExitCode::from(1)
        }
        Ok(Err(ServerError(status, code, msg))) => {
            eprintln!("vaultctl: server refused ({status} {code}): {msg}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("vaultctl: {e:#}");
            ExitCode::from(2)
        }
    }
}
