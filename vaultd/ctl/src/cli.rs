//! The command line: global options and the top-level commands. Each
//! command group's subcommands, and each command's arguments, are defined
//! in its module under `cmd/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::cmd::{
    audit, breakglass, cert, checkout, custodian, governance, grant, init, keyring, lease, recover,
    requests, secret, update,
};

#[derive(Parser)]
#[command(
    name = "vaultctl",
    version,
    about = "Command-line tool for the vaultd appliance"
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Print the server's JSON instead of human text.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress display (progress is shown only on a terminal, on
    /// stderr, and never with --json).
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Args)]
pub struct ConnArgs {
    /// Appliance address.
    #[arg(
        long,
        env = "VAULT_ADDR",
        default_value = "https://127.0.0.1:8443",
        global = true
    )]
    pub addr: String,
    /// CA certificate that signed the appliance's server certificate.
    #[arg(long, env = "VAULT_CACERT", global = true)]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, env = "VAULT_CERT", global = true)]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, env = "VAULT_KEY", global = true)]
    pub key: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the first-boot ceremony of a flashed appliance remotely, over its
    /// one-time TLS identity (the admin key is generated here and never
    /// leaves). The local ceremony is `vaultd init`, on the appliance.
    Init(init::InitArgs),
    /// Seal status.
    Status,
    /// Check this machine's connection to the appliance and say in plain
    /// words what is wrong: CA, certificate and key (issuer, validity,
    /// role), address and TLS, registration, seal status, clock skew.
    /// Exit 0 when every check passes, 1 when one fails.
    Doctor,
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell) on stdout.
    Completions { shell: clap_complete::Shell },
    /// Write man pages (vaultctl.1 and one per subcommand) to a directory.
    Man {
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
    },
    /// Appliance image updates (admin).
    #[command(subcommand)]
    Update(update::UpdateCmd),
    /// Retry unsealing (admin).
    Unseal,
    /// Certificates: issue and revoke (admin), renew your own (every role).
    #[command(subcommand)]
    Cert(cert::CertCmd),
    /// Secrets: write (writer), metadata and list; destroy old versions, delete (admin).
    #[command(subcommand)]
    Secret(secret::SecretCmd),
    /// Check a secret out (pam). Prints the value.
    Checkout(checkout::CheckoutArgs),
    /// Check a checkout back in (pam).
    Checkin { checkout_id: String },
    /// Leases: list (admin, auditor; pam: its own), renew (pam, its own),
    /// revoke (admin, with a reason).
    #[command(subcommand, visible_alias = "checkouts")]
    Lease(lease::LeaseCmd),
    /// Access grants: which paths each PAM server may check out (default
    /// deny). add (admin; a governance request after genesis), remove
    /// (admin, immediate), list.
    #[command(subcommand)]
    Grant(grant::GrantCmd),
    /// Rotation of secrets on their targets (admin): set (a governance
    /// request after genesis), show, now, remove.
    #[command(subcommand)]
    Rotation(crate::cmd::rotation::RotationCmd),
    /// Keyring (admin).
    #[command(subcommand)]
    Keyring(keyring::KeyringCmd),
    /// The audit log (auditor): export, verify offline, inspect.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Custodians and their YubiKeys (enrol: admin).
    #[command(subcommand)]
    Custodian(custodian::CustodianCmd),
    /// Set the approvals a secret's checkouts need (admin), e.g.
    /// `--approvals security:2,dba:1`; `--approvals none` removes them. A
    /// path ending with `/` sets them for every secret under that prefix,
    /// also those written later.
    Policy(custodian::PolicyArgs),
    /// The custodian quorum over the control plane: genesis, rule, recovery
    /// bundle (admin proposes and applies; custodians approve).
    #[command(subcommand)]
    Governance(governance::GovernanceCmd),
    /// Approval and break-glass requests.
    #[command(subcommand)]
    Requests(requests::RequestsCmd),
    /// Approve (or with --deny, deny) a request with your YubiKey (custodian).
    Approve(requests::ApproveArgs),
    /// Collect an approved checkout request (pam): prints the value.
    Collect { id: String },
    /// Break-glass secrets (sealed tier): request and open locally (pam).
    #[command(subcommand)]
    Breakglass(breakglass::BreakglassCmd),
    /// A custodian's part of restoring the root key on a new box with k
    /// YubiKeys; the operator runs `vaultd recover begin|finish` on the box.
    #[command(subcommand)]
    Recover(recover::RecoverCmd),
}
