//! `ferrite api client-cert`: a client certificate for the agents' TCP API, issued from the
//! cluster's CA in Secret `ferrite-api-ca` (kube mode), read with the kubeconfig `kubectl`
//! would use. Writes `ca.crt`, `client.crt` and `client.key` (0600) for
//! `ferrite observe --all-nodes --tls-ca --tls-cert --tls-key` or curl.

use std::path::{Path, PathBuf};

use argh::FromArgs;

use crate::api::certs::{self, Usage};
use crate::source::kube::{ClientOptions, api_ca, config};

/// The agents' TCP API.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "api")]
pub struct ApiCmd {
    #[argh(subcommand)]
    pub sub: ApiSub,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum ApiSub {
    ClientCert(ClientCertCmd),
}

/// Issue a client certificate from the cluster's API CA (Secret ferrite-api-ca, which the
/// first agent with --api-listen creates): writes ca.crt, client.crt and client.key to --out.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "client-cert")]
pub struct ClientCertCmd {
    /// folder for ca.crt, client.crt and client.key (created; existing files are replaced)
    #[argh(option)]
    pub out: PathBuf,
    /// the certificate's name (default: operator)
    #[argh(option, default = "String::from(\"operator\")")]
    pub name: String,
    /// the agents' namespace (default: kube-system, or this pod's)
    #[argh(option)]
    pub namespace: Option<String>,
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> Result<(), String> {
    let path = dir.join(name);
    certs::write_pem(&path, text, mode).map_err(|e| format!("writing {}: {e}", path.display()))
}

async fn issue(cmd: &ClientCertCmd) -> Result<(), String> {
    let namespace = cmd.namespace.clone().unwrap_or_else(config::own_namespace);
    let (client, _) = config::client(ClientOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let ca = api_ca::read(client, &namespace)
        .await
        .map_err(|e| e.to_string())?;
    let issued = certs::issue(&ca, &cmd.name, &[], Usage::Client).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&cmd.out)
        .map_err(|e| format!("creating {}: {e}", cmd.out.display()))?;
    write(&cmd.out, "ca.crt", &ca.cert, 0o644)?;
    write(&cmd.out, "client.crt", &issued.cert, 0o644)?;
    write(&cmd.out, "client.key", &issued.key, 0o600)
}

pub fn run(cmd: &ApiCmd) -> i32 {
    let ApiSub::ClientCert(c) = &cmd.sub;
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    match rt.block_on(issue(c)) {
        Ok(()) => {
            println!(
                "wrote {0}/ca.crt, {0}/client.crt and {0}/client.key (client {1:?})",
                c.out.display(),
                c.name
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
