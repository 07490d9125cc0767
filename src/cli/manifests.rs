//! `ferrite manifests`: manifests generated from ferrite's own types.

use argh::FromArgs;
use tracing::error;

use crate::source::kube::crd;

/// Print manifests generated from ferrite's types.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "manifests")]
pub struct ManifestsCmd {
    #[argh(subcommand)]
    what: What,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum What {
    Crds(CrdsCmd),
}

/// The CustomResourceDefinitions (LoadBalancerIPPool, L2AnnouncementPolicy) as YAML.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "crds")]
struct CrdsCmd {}

pub fn run(cmd: &ManifestsCmd) -> i32 {
    match cmd.what {
        What::Crds(CrdsCmd {}) => match crd::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                0
            }
            Err(e) => {
                error!(error = %e, "serializing the CRDs");
                1
            }
        },
    }
}
