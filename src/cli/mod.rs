//! The command line (argh). `ferrite` is also the CNI plugin when `CNI_COMMAND` is set.

mod agent;
mod api_cert;
mod cni;
mod doctor;
mod l2;
mod l2flags;
mod l2member;
mod manifests;
mod observe;
mod observe_all;
mod output;
mod policy;
mod pools;
mod query;
mod routes;
mod status;
mod status_report;
mod ui;
mod uninstall;

use std::path::PathBuf;

use argh::FromArgs;

pub use output::OutputFormat;

/// ferrite: networking for small k3s clusters in one binary.
#[derive(FromArgs, Debug)]
pub struct Cli {
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Version(VersionCmd),
    Agent(agent::AgentCmd),
    Api(api_cert::ApiCmd),
    Status(status::StatusCmd),
    Services(query::ServicesCmd),
    Pools(pools::PoolsCmd),
    Routes(routes::RoutesCmd),
    Policy(policy::PolicyCmd),
    Observe(observe::ObserveCmd),
    Ui(ui::UiCmd),
    L2(l2::L2Cmd),
    L2Member(l2member::L2MemberCmd),
    Cni(cni::CniCmd),
    Doctor(doctor::DoctorCmd),
    Manifests(manifests::ManifestsCmd),
    Uninstall(uninstall::UninstallCmd),
}

/// Print the version.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "version")]
pub struct VersionCmd {
    /// output format: table (default) or json
    #[argh(option, short = 'o', default = "OutputFormat::Table")]
    pub output: OutputFormat,
}

/// The single-threaded runtime the client commands block on.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))
}

pub fn default_api_socket() -> PathBuf {
    PathBuf::from(crate::api::DEFAULT_SOCKET)
}

/// The agent's default `--bpf-root` (also what `ferrite uninstall` cleans by default).
pub fn default_bpf_root() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/ferrite")
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Version(v) => {
            match v.output {
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::json!({"version": crate::VERSION, "arch": std::env::consts::ARCH})
                ),
                OutputFormat::Table => {
                    println!("ferrite {} ({})", crate::VERSION, std::env::consts::ARCH);
                }
            }
            0
        }
        Command::Agent(a) => agent::run(a),
        Command::Api(c) => api_cert::run(&c),
        Command::Status(s) => status::status(&s),
        Command::Services(s) => query::services(&s),
        Command::Pools(p) => pools::run(&p),
        Command::Routes(r) => routes::run(&r),
        Command::Policy(p) => policy::run(&p),
        Command::Observe(o) => observe::run(&o),
        Command::Ui(u) => ui::run(&u),
        Command::L2(c) => l2::run(&c),
        Command::L2Member(c) => l2member::run(&c),
        Command::Cni(c) => cni::run(c),
        Command::Doctor(d) => doctor::run(&d),
        Command::Manifests(m) => manifests::run(&m),
        Command::Uninstall(u) => uninstall::run(u),
    }
}
