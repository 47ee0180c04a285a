//! The `vaultd` binary: `serve` (default), `init`, `recover`, `check-config`,
//! `install-update`. Everything that opens the data file or the seal devices
//! is here, on the appliance; `vaultctl` only talks to the API.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vaultd::config::Config;

/// Hardware-backed vault daemon: root key sealed by TPM 2.0 and/or a PKCS#11
/// HSM, secrets encrypted at rest, checkout over mutual TLS.
#[derive(Parser)]
#[command(name = "vaultd", version)]
struct Cli {
    /// Configuration file (TOML). See docs/CONFIGURATION.md.
    #[arg(
        long,
        short,
        env = "VAULTD_CONFIG",
        default_value = "/etc/vaultd/vaultd.toml",
        global = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Unseal and serve the mTLS API (the default).
    Serve,
    /// Run the init ceremony: generate and seal the root key, create the CA
    /// in the token, issue the server and first admin certificates.
    Init {
        /// Where the first admin's certificate, key and the CA go.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "admin")]
        admin_name: String,
        /// The first admin's CSR (PEM), made off the box (`vaultctl`'s
        /// `key_and_csr`, `openssl req -new`): only the certificate and the
        /// CA are written to --out, and the admin's key never exists here.
        #[arg(long)]
        admin_csr: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Custodian recovery of the root key on a new box, vaultd stopped and
    /// the old data file in place (docs/CUSTODIANS.md). Exit codes: 0 done,
    /// 1 the devices or storage failed, 2 refused (bad input, too few or
    /// invalid answers): nothing was changed.
    #[command(subcommand)]
    Recover(RecoverCmd),
    /// Validate the configuration and exit.
    CheckConfig,
    /// Appliance only, as root (vault-update.service): install the staged
    /// update bundle into the inactive A/B slot, then reboot.
    InstallUpdate {
        /// Do not reboot after installing.
        #[arg(long)]
        no_reboot: bool,
    },
}

#[derive(Subcommand)]
enum RecoverCmd {
    /// Write the request file for the custodians and a one-time key (0600)
    /// from the data file's recovery bundle.
    Begin {
        #[arg(long)]
        reason: String,
        /// The request file for the custodians.
        #[arg(long)]
        out: PathBuf,
        /// The one-time private key (mode 0600); keep it on this box.
        #[arg(long)]
        key_out: PathBuf,
        /// How long custodians have to answer.
        #[arg(long, default_value_t = 24)]
        hours: u32,
        #[arg(long)]
        json: bool,
    },
    /// Check the custodians' answers (`vaultctl recover share`), rebuild the
    /// root key, seal it under this box's devices, make a new CA, audit key
    /// and admin. Every earlier client certificate is revoked.
    Finish {
        #[arg(long)]
        request: PathBuf,
        #[arg(long)]
        one_time_key: PathBuf,
        /// Where the new admin's certificate, key and the new CA go.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "admin")]
        admin_name: String,
        #[arg(long)]
        json: bool,
        /// The custodians' answer files.
        #[arg(required = true)]
        answers: Vec<PathBuf>,
    },
}

/// The result of a ceremony (init, recovery): JSON, or lines for a person.
/// `vaultd init`, with the first admin's key made here or (`--admin-csr`)
/// off the box.
fn init_with(
    config: &Config,
    out: &std::path::Path,
    admin_name: &str,
    admin_csr: Option<&std::path::Path>,
) -> Result<vaultd::init::InitReport, vaultd::init::InitError> {
    use vaultd::init::{initialize_with, FirstAdmin, InitError};
    match admin_csr {
        None => initialize_with(config, FirstAdmin::Generate(out), admin_name),
        Some(p) => {
            let csr = std::fs::read_to_string(p).map_err(|e| InitError::Io(p.to_owned(), e))?;
            let mut r = initialize_with(config, FirstAdmin::CsrTo(out, &csr), admin_name)?;
            // No key was made here.
            r.admin_key = std::path::PathBuf::new();
            Ok(r)
        }
    }
}

fn print_ceremony(json: bool, r: &vaultd::init::InitReport, what: &str, footer: &str) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "appliance_id": r.appliance_id,
                "seal_mode": r.seal_mode,
                "ca_cert": r.ca_cert,
                "admin_cert": r.admin_cert,
                "admin_key": (!r.admin_key.as_os_str().is_empty()).then_some(&r.admin_key),
                "admin_fingerprint": r.admin_fingerprint,
            })
        );
    } else {
        println!("{what}");
        println!("  appliance id : {}", r.appliance_id);
        println!("  seal mode    : {}", r.seal_mode);
        println!("  CA           : {}", r.ca_cert.display());
        println!("  admin cert   : {}", r.admin_cert.display());
        if r.admin_key.as_os_str().is_empty() {
            println!("  admin key    : (made off the box, with the CSR)");
        } else {
            println!("  admin key    : {}", r.admin_key.display());
        }
        println!("  admin sha256 : {}", r.admin_fingerprint);
        print!("{footer}");
    }
}

fn recover(config: &Config, cmd: RecoverCmd) -> ExitCode {
    use vaultd::recover::RecoverError;
    let r = match cmd {
        RecoverCmd::Begin {
            reason,
            out,
            key_out,
            hours,
            json,
        } => vaultd::recover::begin(config, &reason, &out, &key_out, hours).map(|v| {
            if json {
                println!("{v}");
            } else {
                println!(
                    "recovery request {} written to {}: {} of {} must answer with `vaultctl recover share`",
                    v["request_id"].as_str().unwrap_or("?"),
                    out.display(),
                    v["k"],
                    v["custodians"]
                );
                println!(
                    "one-time key {} (SHA-256 of its public key {}: tell the custodians)",
                    key_out.display(),
                    v["one_time_key_sha256"].as_str().unwrap_or("?")
                );
            }
        }),
        RecoverCmd::Finish {
            request,
            one_time_key,
            out,
            admin_name,
            json,
            answers,
        } => vaultd::recover::finish(config, &request, &one_time_key, &out, &admin_name, &answers)
            .map(|r| {
                print_ceremony(
                    json,
                    &r,
                    "appliance recovered: root key sealed under this box, new CA and audit key",
                    "  every earlier client certificate is revoked: issue new ones\n",
                )
            }),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vaultd recover: {e}");
            ExitCode::from(match e {
                RecoverError::Refused(_) => 2,
                _ => 1,
            })
        }
    }
}

/// Libraries whose INFO lines are chatter (tss-esapi logs "Closing context"
/// on every TPM use): WARN and above, unless the filter names them.
const QUIET_TARGETS: &[&str] = &[
    "tss_esapi",
    "cryptoki",
    "hyper",
    "h2",
    "rustls",
    "tokio_rustls",
];

/// The log filter: the configured one (or `RUST_LOG`), with the libraries
/// of [`QUIET_TARGETS`] at WARN unless it names them itself.
fn log_filter(level: &str) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    for t in QUIET_TARGETS {
        if !level.contains(t) {
            if let Ok(d) = format!("{t}=warn").parse() {
                filter = filter.add_directive(d);
            }
        }
    }
    filter
}

fn init_logging(cfg: Option<&Config>) {
    use std::io::IsTerminal as _;
    let level = std::env::var("RUST_LOG").ok().unwrap_or_else(|| {
        cfg.and_then(|c| c.log.level.clone())
            .unwrap_or_else(|| "info".into())
    });
    let json = cfg.and_then(|c| c.log.format.as_deref()) == Some("json");
    // Colour only for a person at a terminal: a file, a pipe or journald
    // gets plain text.
    let b = tracing_subscriber::fmt()
        .with_env_filter(log_filter(&level))
        .with_ansi(!json && std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

/// Raises the soft limit on open files to the hard limit: every pending
/// handshake and connection holds a descriptor, and a soft limit of 1,024
/// (the usual default) is below what the configured limits need.
fn raise_fd_limit(config: &Config) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let l = &config.limits;
    let want = (l.max_connections + l.max_handshakes + 256) as u64;
    let cur = getrlimit(Resource::Nofile);
    let soft = cur.current.unwrap_or(u64::MAX);
    if soft >= want {
        return;
    }
    let hard = cur.maximum;
    let new = Rlimit {
        current: hard,
        maximum: hard,
    };
    match setrlimit(Resource::Nofile, new) {
        Ok(()) if hard.unwrap_or(u64::MAX) >= want => {
            tracing::info!(from = soft, to = ?hard, "raised the open-files limit");
        }
        r => tracing::warn!(
            soft,
            hard = ?hard,
            needed = want,
            error = ?r.err(),
            "the open-files limit is below limits.max_connections + limits.max_handshakes + 256"
        ),
    }
}

fn main() -> ExitCode {
    // libtss2 prints its own ERROR lines for every failed TPM call (e.g. a PCR
    // mismatch) to stderr; our log already reports the cause. Set before any
    // thread exists.
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+none");
    }
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vaultd: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(Some(&config));
    match cli.command.unwrap_or(Cmd::Serve) {
        Cmd::InstallUpdate { no_reboot } => match vaultd::update::install(&config) {
            Ok(r) => {
                println!(
                    "vaultd: update {} installed in slot {} (from {} on slot {}); {} boot tries",
                    r.version,
                    r.slot,
                    r.from_version,
                    r.from_slot,
                    vaultd::update::BOOT_TRIES
                );
                if no_reboot {
                    return ExitCode::SUCCESS;
                }
                match std::process::Command::new("systemctl")
                    .arg("reboot")
                    .status()
                {
                    Ok(s) if s.success() => ExitCode::SUCCESS,
                    Ok(s) => {
                        eprintln!("vaultd install-update: systemctl reboot: {s}");
                        ExitCode::FAILURE
                    }
                    Err(e) => {
                        eprintln!("vaultd install-update: systemctl reboot: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                eprintln!("vaultd install-update: {e} [{}]", e.code());
                ExitCode::FAILURE
            }
        },
        Cmd::Recover(cmd) => recover(&config, cmd),
        Cmd::CheckConfig => {
            println!("configuration OK: {}", cli.config.display());
            ExitCode::SUCCESS
        }
        Cmd::Init {
            out,
            admin_name,
            admin_csr,
            json,
        } => match init_with(&config, &out, &admin_name, admin_csr.as_deref()) {
            Ok(r) => {
                print_ceremony(json, &r, "vault initialised", "");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vaultd init: {e}");
                ExitCode::from(match e {
                    vaultd::init::InitError::AlreadyInitialized(_) => 3,
                    _ => 1,
                })
            }
        },
        Cmd::Serve => {
            raise_fd_limit(&config);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("vaultd: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::bind(config.listen).await {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("vaultd: cannot listen on {}: {e}", config.listen);
                        return ExitCode::FAILURE;
                    }
                };
                match vaultd::serve(config, listener, shutdown_signal()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("vaultd: {e}");
                        ExitCode::from(match e {
                            vaultd::StartError::NotInitialized(_) => 3,
                            _ => 1,
                        })
                    }
                }
            })
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn library_chatter_is_quiet_unless_the_filter_names_it() {
        let f = log_filter("info").to_string();
        for t in super::QUIET_TARGETS {
            assert!(f.contains(&format!("{t}=warn")), "{f}");
        }
        let f = log_filter("info,tss_esapi=debug").to_string();
        assert!(
            f.contains("tss_esapi=debug") && !f.contains("tss_esapi=warn"),
            "{f}"
        );
        // A filter that does not parse falls back to info, still quiet.
        let f = log_filter("vaultd=[[").to_string();
        assert!(f.contains("tss_esapi=warn"), "{f}");
    }
}
