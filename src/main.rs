//! ferrite: CNI, eBPF service load balancer, LB IP pools and L2 announcements for small k3s
//! clusters, in one static binary.

mod agent;
mod api;
mod cli;
mod cni;
mod datapath;
mod doctor;
mod flows;
mod l2;
mod lb;
mod lbipam;
mod masq;
mod metrics;
mod model;
mod policy;
mod routing;
mod source;
mod uninstall;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FERRITE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() {
    // The same binary is the CNI plugin: runtimes exec it with CNI_COMMAND set.
    if std::env::var_os("CNI_COMMAND").is_some() {
        std::process::exit(cni::main());
    }
    init_tracing();
    let cli: cli::Cli = argh::from_env();
    std::process::exit(cli::run(cli));
}
