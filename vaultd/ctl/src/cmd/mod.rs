//! One module per command group; [`run`] sends each command to its handler.

pub mod audit;
pub mod breakglass;
pub mod cert;
pub mod checkout;
pub mod custodian;
pub mod doctor;
pub mod governance;
pub mod grant;
pub mod init;
pub mod keyring;
pub mod lease;
pub mod recover;
pub mod requests;
pub mod rotation;
pub mod secret;
pub mod sys;
pub mod update;

use crate::cli::{Cli, Cmd};
use crate::util::Outcome;
use audit::AuditCmd;
use breakglass::BreakglassCmd;
use cert::CertCmd;
use custodian::CustodianCmd;
use keyring::KeyringCmd;
use lease::LeaseCmd;
use recover::RecoverCmd;
use requests::RequestsCmd;
use secret::SecretCmd;
use update::UpdateCmd;

/// `man --out-dir DIR`: vaultctl.1, and vaultctl-SUB.1 (and
/// vaultctl-SUB-SUBSUB.1) for every subcommand.
fn man(out_dir: &std::path::Path) -> Outcome {
    use anyhow::Context as _;
    std::fs::create_dir_all(out_dir).with_context(|| out_dir.display().to_string())?;
    let cmd = <Cli as clap::CommandFactory>::command();
    let mut written = 0;
    fn walk(
        cmd: &clap::Command,
        words: Vec<String>,
        dir: &std::path::Path,
        n: &mut usize,
    ) -> anyhow::Result<()> {
        let (file_name, bin_name) = (words.join("-"), words.join(" "));
        let mut buf = Vec::new();
        clap_mangen::Man::new(
            cmd.clone()
                .display_name(file_name.clone())
                .bin_name(bin_name),
        )
        .render(&mut buf)?;
        let file = dir.join(format!("{file_name}.1"));
        std::fs::write(&file, buf).with_context(|| file.display().to_string())?;
        *n += 1;
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut w = words.clone();
            w.push(sub.get_name().to_owned());
            walk(sub, w, dir, n)?;
        }
        Ok(())
    }
    walk(&cmd, vec!["vaultctl".into()], out_dir, &mut written)?;
    println!("{written} man pages written to {}", out_dir.display());
    Ok(Ok(()))
}

/// Runs one command: `Err` is a local or usage error, `Ok(Err)` a refusal.
pub async fn run(cli: Cli) -> Outcome {
    let j = cli.json;
    crate::util::set_quiet(cli.quiet);
    crate::util::set_json(j);
    let c = &cli.conn;
    match cli.cmd {
        Cmd::Init(a) => init::init(c, j, a).await,
        Cmd::Status => sys::status(c, j).await,
        Cmd::Doctor => doctor::doctor(c, j).await,
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "vaultctl", &mut std::io::stdout());
            Ok(Ok(()))
        }
        Cmd::Man { out_dir } => man(&out_dir),
        Cmd::Unseal => sys::unseal(c, j).await,
        Cmd::Update(UpdateCmd::Apply { bundle }) => update::apply(c, j, &bundle).await,
        Cmd::Update(UpdateCmd::Status) => update::status(c, j).await,
        Cmd::Cert(CertCmd::Issue(a)) => cert::issue(c, j, a).await,
        Cmd::Cert(CertCmd::List) => cert::list(c, j).await,
        Cmd::Cert(CertCmd::Revoke(a)) => cert::revoke(c, j, &a).await,
        Cmd::Cert(CertCmd::Renew(a)) => cert::renew(c, j, a).await,
        Cmd::Cert(CertCmd::Server(a)) => cert::server(c, j, a).await,
        Cmd::Secret(SecretCmd::Put(a)) => secret::put(c, j, a).await,
        Cmd::Secret(SecretCmd::Get { path }) => secret::get(c, j, &path).await,
        Cmd::Secret(SecretCmd::List { prefix }) => secret::list(c, j, &prefix).await,
        Cmd::Secret(SecretCmd::DestroyVersion {
            path,
            versions,
            reason,
        }) => secret::destroy(c, j, &path, Some(&versions), reason.as_deref()).await,
        Cmd::Secret(SecretCmd::Delete { path, reason }) => {
            secret::destroy(c, j, &path, None, reason.as_deref()).await
        }
        Cmd::Checkout(a) => checkout::checkout(c, j, a).await,
        Cmd::Checkin { checkout_id } => checkout::checkin(c, j, &checkout_id).await,
        Cmd::Lease(LeaseCmd::List(a)) => lease::list(c, j, a).await,
        Cmd::Lease(LeaseCmd::Renew { checkout_id, ttl }) => {
            lease::renew(c, j, &checkout_id, ttl).await
        }
        Cmd::Lease(LeaseCmd::Revoke {
            checkout_id,
            reason,
        }) => lease::revoke(c, j, &checkout_id, &reason).await,
        Cmd::Lease(LeaseCmd::Record(a)) => lease::record(c, j, a).await,
        Cmd::Grant(g) => grant::run(c, j, g).await,
        Cmd::Rotation(r) => rotation::run(c, j, r).await,
        Cmd::Keyring(KeyringCmd::Rotate) => keyring::rotate(c, j).await,
        Cmd::Keyring(KeyringCmd::Status) => keyring::status(c, j).await,
        Cmd::Audit(AuditCmd::Export { out }) => audit::export(c, j, &out).await,
        Cmd::Audit(AuditCmd::Verify(a)) => audit::verify(j, a),
        Cmd::Audit(AuditCmd::VerifyRecording(a)) => audit::verify_recording(j, a),
        Cmd::Audit(AuditCmd::Tail { n }) => audit::tail(c, j, n).await,
        Cmd::Audit(AuditCmd::Show { index, audit_key }) => {
            audit::show(c, j, index, audit_key.as_deref()).await
        }
        Cmd::Audit(AuditCmd::Hash { value_file }) => audit::hash(c, j, value_file.as_deref()).await,
        Cmd::Audit(AuditCmd::PublicKey) => audit::public_key(c, j).await,
        Cmd::Custodian(CustodianCmd::Enroll(a)) => custodian::enroll(c, j, a).await,
        Cmd::Custodian(CustodianCmd::List) => custodian::list(c, j).await,
        Cmd::Custodian(CustodianCmd::Remove { name, reason }) => {
            custodian::remove(c, j, &name, reason.as_deref()).await
        }
        Cmd::Custodian(CustodianCmd::Groups {
            name,
            groups,
            reason,
        }) => custodian::groups(c, j, &name, &groups, reason.as_deref()).await,
        Cmd::Policy(a) => custodian::policy(c, j, a).await,
        Cmd::Governance(g) => governance::run(c, j, g).await,
        Cmd::Requests(RequestsCmd::List { status }) => requests::list(c, j, &status).await,
        Cmd::Requests(RequestsCmd::Show { id }) => requests::show(c, j, &id).await,
        Cmd::Approve(a) => requests::approve(c, j, a).await,
        Cmd::Collect { id } => requests::collect(c, j, &id).await,
        Cmd::Breakglass(BreakglassCmd::Request(a)) => breakglass::request(c, j, a).await,
        Cmd::Breakglass(BreakglassCmd::Open(a)) => breakglass::open(c, a).await,
        Cmd::Recover(RecoverCmd::Share(a)) => recover::share(j, a),
    }
}
