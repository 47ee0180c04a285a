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
//! Exit codes (stable; docs/QUICKSTART.md): 0 success, 1 refused (the
//! server refused, or nothing was done), 2 usage or local error, 3 the
//! appliance is unreachable, 4 it is sealed, 5 an integrity failure (stored
//! data on the appliance, or an audit log that does not verify), 6 the
//! appliance is unavailable (any other 5xx). With `--json`, a failure is
//! also one JSON object on stderr: `{"error": {"code", "message",
//! "status"}, "schema_version"}` ([`exit::Failure`]).
//!
//! Layout: `cli.rs` the global options and the top-level commands; `cmd/`
//! one module per command group (its subcommands, arguments and handlers)
//! and in `cmd/mod.rs` the one dispatch; `util.rs` what they share
//! (requests, the server's errors, output, local files). This file only
//! parses, runs and maps the outcome to the exit code.

#![forbid(unsafe_code)]

mod cli;
mod cmd;
mod exit;
mod util;

use std::process::ExitCode;

use clap::Parser as _;

use crate::exit::Failure;

fn main() -> ExitCode {
    let json = std::env::args_os().any(|a| a == "--json");
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        // Help and version are not failures; usage errors are exit 2, and
        // JSON under --json.
        Err(e) if !json || !e.use_stderr() => e.exit(),
        Err(e) => return Failure::usage(e.to_string()).report(true),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return Failure::local(&e.into()).report(json),
    };
    match rt.block_on(cmd::run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(refusal)) => Failure::server(refusal).report(json),
        Err(e) => Failure::local(&e).report(json),
    }
}
