//! `vault-image`: the image build's signing tool.
//!
//! ```text
//! vault-image keygen --key OUT.key --pub OUT.pem
//! vault-image sign-policy --key K --version V --pcr 11=HEX64 [--pcr …] --out FILE.json
//! vault-image bundle --key K --version V --build N --roothash H --part NAME=PATH … --out FILE.vupd
//! vault-image verify-bundle --pub P FILE      (prints the manifest JSON)
//! vault-image verify-policy --pub P FILE      (prints the policy JSON)
//! ```
//!
//! Errors go to stderr as `vault-image: error [CODE]: message` with exit
//! status 1 (usage errors: clap's status 2). Output files are written to a
//! temporary name in the same directory and renamed into place, so a failed
//! run never leaves a partial file under the requested name.

#![forbid(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vault_image::bundle::{self, write_bundle};
use vault_image::{ImageError, ImagePublicKey, ImageSigningKey, SignedPolicy};

#[derive(Parser)]
#[command(
    name = "vault-image",
    version,
    about = "Sign boot policies and update bundles for the vault appliance"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate an image-signing key (PKCS#8 PEM, mode 0600) and its public key.
    Keygen {
        #[arg(long, value_name = "OUT.key")]
        key: PathBuf,
        #[arg(long = "pub", value_name = "OUT.pem")]
        public: PathBuf,
    },
    /// Sign the PolicyPCR digest of predicted PCR values.
    SignPolicy {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        version: String,
        /// INDEX=HEX64, e.g. 11=<sha256 PCR value>; repeatable.
        #[arg(long = "pcr", required = true, value_parser = parse_pcr)]
        pcrs: Vec<(u8, [u8; 32])>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a signed update bundle.
    Bundle {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        version: String,
        #[arg(long)]
        build: u64,
        #[arg(long)]
        roothash: String,
        /// NAME=PATH; repeatable, in bundle order.
        #[arg(long = "part", required = true, value_parser = parse_part)]
        parts: Vec<(String, PathBuf)>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a bundle completely and print its manifest.
    VerifyBundle {
        #[arg(long = "pub")]
        public: PathBuf,
        file: PathBuf,
    },
    /// Verify a signed policy and print it.
    VerifyPolicy {
        #[arg(long = "pub")]
        public: PathBuf,
        file: PathBuf,
    },
}

fn parse_pcr(s: &str) -> Result<(u8, [u8; 32]), String> {
    let (i, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: want INDEX=HEX64"))?;
    let i: u8 = i.parse().map_err(|_| format!("{i:?} is not a PCR index"))?;
    let mut out = [0u8; 32];
    if v.len() != 64 {
        return Err("PCR value must be 64 hex digits".into());
    }
    hex::decode_to_slice(v.to_ascii_lowercase(), &mut out)
        .map_err(|_| "PCR value must be 64 hex digits".to_string())?;
    Ok((i, out))
}

fn parse_part(s: &str) -> Result<(String, PathBuf), String> {
    let (n, p) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: want NAME=PATH"))?;
    if p.is_empty() {
        return Err(format!("{s:?}: empty path"));
    }
    Ok((n.to_string(), PathBuf::from(p)))
}

fn io_err(context: String) -> impl FnOnce(io::Error) -> ImageError {
    move |source| ImageError::Io { context, source }
}

fn other_io(context: String, msg: &str) -> ImageError {
    ImageError::Io {
        context,
        source: io::Error::other(msg.to_string()),
    }
}

fn read_text(path: &Path) -> Result<String, ImageError> {
    let meta = fs::metadata(path).map_err(io_err(format!("reading {}", path.display())))?;
    if meta.len() > 1 << 20 {
        return Err(other_io(
            format!("reading {}", path.display()),
            "file is larger than 1 MiB",
        ));
    }
    fs::read_to_string(path).map_err(io_err(format!("reading {}", path.display())))
}

fn read_key(path: &Path) -> Result<ImageSigningKey, ImageError> {
    // The PEM text is secret: keep it in a zeroizing buffer.
    let pem = zeroize::Zeroizing::new(read_text(path)?);
    Ok(ImageSigningKey::from_pkcs8_pem(&pem)?)
}

fn read_pub(path: &Path) -> Result<ImagePublicKey, ImageError> {
    Ok(ImagePublicKey::from_pem(&read_text(path)?)?)
}

/// A new file that must not exist yet.
fn create_new(path: &Path, mode: u32) -> Result<File, ImageError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(format!("creating {}", path.display())))
}

/// Writes `out` via a temporary sibling and renames it into place.
fn write_atomically(
    out: &Path,
    f: impl FnOnce(&mut BufWriter<File>) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    let name = out
        .file_name()
        .ok_or_else(|| other_io(format!("writing {}", out.display()), "not a file name"))?
        .to_string_lossy()
        .into_owned();
    let tmp = out.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut w = BufWriter::new(create_new(&tmp, 0o644)?);
        f(&mut w)?;
        let file = w
            .into_inner()
            .map_err(|e| io_err(format!("writing {}", tmp.display()))(e.into_error()))?;
        file.sync_all()
            .map_err(io_err(format!("syncing {}", tmp.display())))?;
        fs::rename(&tmp, out).map_err(io_err(format!("renaming to {}", out.display())))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn run(cli: Cli) -> Result<(), ImageError> {
    match cli.cmd {
        Cmd::Keygen { key, public } => {
            for p in [&key, &public] {
                if p.exists() {
                    return Err(ImageError::Io {
                        context: format!("creating {}", p.display()),
                        source: io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            "file exists, refusing to overwrite",
                        ),
                    });
                }
            }
            let k = ImageSigningKey::generate();
            let pem = k.to_pkcs8_pem();
            let mut f = create_new(&key, 0o600)?;
            f.write_all(pem.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io_err(format!("writing {}", key.display())))?;
            let pk = k.public();
            let mut f = create_new(&public, 0o644)?;
            f.write_all(pk.to_pem().as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io_err(format!("writing {}", public.display())))?;
            println!("{}", pk.key_id());
        }
        Cmd::SignPolicy {
            key,
            version,
            pcrs,
            out,
        } => {
            let k = read_key(&key)?;
            let p = SignedPolicy::sign(&k, &version, &pcrs)?;
            write_atomically(&out, |w| {
                w.write_all(p.to_json().as_bytes())
                    .map_err(io_err(format!("writing {}", out.display())))
            })?;
            println!("{}", hex::encode(p.policy));
        }
        Cmd::Bundle {
            key,
            version,
            build,
            roothash,
            parts,
            out,
        } => {
            let k = read_key(&key)?;
            let mut manifest = None;
            write_atomically(&out, |w| {
                manifest = Some(write_bundle(w, &k, &version, build, &roothash, &parts)?);
                Ok(())
            })?;
            if let Some(m) = manifest {
                println!("{}", manifest_json(&m));
            }
        }
        Cmd::VerifyBundle { public, file } => {
            let pk = read_pub(&public)?;
            let m = bundle::verify_file(&file, &pk)?;
            println!("{}", manifest_json(&m));
        }
        Cmd::VerifyPolicy { public, file } => {
            let pk = read_pub(&public)?;
            let text = read_text(&file)?;
            let p = SignedPolicy::from_json(&text)?;
            p.verify(&pk)?;
            print!("{}", p.to_json());
        }
    }
    Ok(())
}

fn manifest_json(m: &bundle::Manifest) -> String {
    serde_json::to_string_pretty(m).unwrap_or_else(|_| "{}".into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vault-image: error [{}]: {e}", e.code());
            ExitCode::from(1)
        }
    }
}
