//! Golden tests of the `vaultctl` binary that need no appliance: the help
//! of every command, usage errors, local errors and the offline commands,
//! each a case in `tests/cmd/<group>/<case>.toml` with its expected
//! `.stdout` and `.stderr` beside it (`status.code` in the `.toml`, success
//! if absent). The cases run in this crate's directory with an empty
//! environment (`env.inherit = false`), so `VAULT_*` variables of the shell
//! cannot leak into the help text or the connection.
//!
//! After an intended change of output, regenerate and review the diff:
//!
//! ```text
//! TRYCMD=overwrite cargo test -p vaultctl --test cli_tests
//! ```
//!
//! `[..]` in an expected file matches any text within a line (used for the
//! elapsed time of `audit verify --json`), `...` on its own line any lines.
//! A new case needs empty `.stdout` and `.stderr` files before `overwrite`
//! fills them.
//!
//! The output of commands that talk to a running appliance is checked
//! against `tests/golden/vaultctl/` by `tests/tests/vaultctl_golden.rs`.

#[test]
fn cli_tests() {
    trycmd::TestCases::new()
        .register_bin(
            "vaultctl",
            std::path::Path::new(env!("CARGO_BIN_EXE_vaultctl")),
        )
        .case("tests/cmd/*/*.toml");
}
