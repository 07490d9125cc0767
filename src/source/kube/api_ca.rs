//! The TCP API's CA in kube mode: the Secret `ferrite-api-ca` (field `ca.pem`: the CA
//! certificate then its PKCS#8 key, [`crate::api::certs::CaPem::to_bundle`]) in the agent's
//! namespace, made by the first agent that finds none, exactly as the L2 key is
//! ([`super::l2key`]: a create race is settled by the API server's 409). Each agent issues its
//! own server certificate from it at start; `ferrite api client-cert` issues operators'.
//! RBAC: `get` of this one name, `create` of secrets (see `cli/manifests/addon.rs`).

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::sync::watch;

use super::l2key::{self, KeyState, L2KeyError, SecretField};
use crate::api::certs::{self, CaPem};

/// The Secret's name.
pub const SECRET_NAME: &str = "ferrite-api-ca";

/// The CA's Secret.
pub const API_CA: SecretField = SecretField {
    name: SECRET_NAME,
    field: "ca.pem",
    what: "API CA",
};

fn make() -> Result<String, String> {
    certs::generate_ca()
        .map(|ca| ca.to_bundle())
        .map_err(|e| e.to_string())
}

/// Gets (or creates) the CA in the background, retrying until it succeeds.
pub fn spawn(client: Client, namespace: String) -> watch::Receiver<KeyState> {
    l2key::spawn_field(client, namespace, API_CA, make)
}

/// Why the CA could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ApiCaError {
    #[error(transparent)]
    Secret(#[from] L2KeyError),
    #[error(
        "Secret {namespace}/{SECRET_NAME} does not exist yet: an agent with --api-listen creates it"
    )]
    Missing { namespace: String },
    #[error("Secret {namespace}/{SECRET_NAME}: {source}")]
    Invalid {
        namespace: String,
        #[source]
        source: certs::CertError,
    },
}

/// Reads the CA (`ferrite api client-cert`); never creates it.
pub async fn read(client: Client, namespace: &str) -> Result<CaPem, ApiCaError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let text = l2key::read_field(&api, namespace, API_CA)
        .await?
        .ok_or_else(|| ApiCaError::Missing {
            namespace: namespace.to_owned(),
        })?;
    CaPem::from_bundle(&text).map_err(|source| ApiCaError::Invalid {
        namespace: namespace.to_owned(),
        source,
    })
}
