//! The `vaultd` binary: `serve` (default), `init`, `check-config`.

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
        default_value = "/etc/vaultd/vaultd.toml"
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
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
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

fn init_logging(cfg: Option<&Config>) {
    use tracing_subscriber::EnvFilter;
    let level = cfg
        .and_then(|c| c.log.level.clone())
        .unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let json = cfg.and_then(|c| c.log.format.as_deref()) == Some("json");
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
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
        Cmd::CheckConfig => {
            println!("configuration OK: {}", cli.config.display());
            ExitCode::SUCCESS
        }
        Cmd::Init {
            out,
            admin_name,
            json,
        } => match vaultd::init::initialize(&config, &out, &admin_name) {
            Ok(r) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "appliance_id": r.appliance_id,
                            "seal_mode": r.seal_mode,
                            "ca_cert": r.ca_cert,
                            "admin_cert": r.admin_cert,
                            "admin_key": r.admin_key,
                            "admin_fingerprint": r.admin_fingerprint,
                        })
                    );
                } else {
                    println!("vault initialised");
                    println!("  appliance id : {}", r.appliance_id);
                    println!("  seal mode    : {}", r.seal_mode);
                    println!("  CA           : {}", r.ca_cert.display());
                    println!("  admin cert   : {}", r.admin_cert.display());
                    println!("  admin key    : {}", r.admin_key.display());
                    println!("  admin sha256 : {}", r.admin_fingerprint);
                }
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
