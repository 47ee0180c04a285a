//! One module per command group; [`run`] sends each command to its handler.

pub mod audit;
pub mod breakglass;
pub mod cert;
pub mod checkout;
pub mod custodian;
pub mod governance;
pub mod init;
pub mod keyring;
pub mod lease;
pub mod recover;
pub mod requests;
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

/// Runs one command: `Err` is a local or usage error, `Ok(Err)` a refusal.
pub async fn run(cli: Cli) -> Outcome {
    let j = cli.json;
    crate::util::set_quiet(cli.quiet);
    let c = &cli.conn;
    match cli.cmd {
        Cmd::Init(a) => init::init(c, j, a).await,
        Cmd::Status => sys::status(c, j).await,
        Cmd::Unseal => sys::unseal(c, j).await,
        Cmd::Update(UpdateCmd::Apply { bundle }) => update::apply(c, j, &bundle).await,
        Cmd::Update(UpdateCmd::Status) => update::status(c, j).await,
        Cmd::Cert(CertCmd::Issue(a)) => cert::issue(c, j, a).await,
        Cmd::Cert(CertCmd::List) => cert::list(c, j).await,
        Cmd::Cert(CertCmd::Revoke(a)) => cert::revoke(c, j, &a).await,
        Cmd::Secret(SecretCmd::Put(a)) => secret::put(c, j, a).await,
        Cmd::Secret(SecretCmd::Get { path }) => secret::get(c, j, &path).await,
        Cmd::Secret(SecretCmd::List { prefix }) => secret::list(c, j, &prefix).await,
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
        Cmd::Keyring(KeyringCmd::Rotate) => keyring::rotate(c, j).await,
        Cmd::Keyring(KeyringCmd::Status) => keyring::status(c, j).await,
        Cmd::Audit(AuditCmd::Export { out }) => audit::export(c, j, &out).await,
        Cmd::Audit(AuditCmd::Verify(a)) => audit::verify(j, a),
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
