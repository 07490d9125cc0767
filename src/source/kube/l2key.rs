//! The cluster's L2 membership key in kube mode: the Secret `ferrite-l2-key` (field `l2.key`, the
//! hex text `ferrite l2 keygen` prints: 32 random bytes) in the agent's namespace, created by the
//! first agent that finds none. Every agent gets it; one that finds it missing creates it with
//! a key of its own; when two race, the API server accepts one create and answers the other
//! 409 Conflict, and the loser reads the winner's Secret, so every node ends with the same key.
//!
//! A Secret made by hand (`kubectl -n kube-system create secret generic ferrite-l2-key
//! --from-literal=l2.key=$(ferrite l2 keygen)`) is used as is. RBAC: `get` is limited to this
//! one name (`resourceNames`); `create` cannot be (the authorizer does not know the name of an
//! object that does not exist yet), see `cli/manifests/addon.rs`.
//!
//! The same get-or-create of one text field serves other cluster-wide secrets
//! ([`SecretField`]): the TCP API's CA ([`super::api_ca`]).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

/// The Secret's name.
pub const SECRET_NAME: &str = "ferrite-l2-key";
/// The field holding the key text (also the file name when the Secret is mounted).
pub const SECRET_FIELD: &str = "l2.key";
/// Longest wait between two attempts while the API server cannot be reached.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// A cluster-wide secret of one text field, made by the first agent that finds none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecretField {
    pub name: &'static str,
    pub field: &'static str,
    /// What it holds, for logs ("L2 membership key").
    pub what: &'static str,
}

/// The L2 membership key.
pub const L2_KEY: SecretField = SecretField {
    name: SECRET_NAME,
    field: SECRET_FIELD,
    what: "L2 membership key",
};

/// Why the secret could not be had (`secret`: namespace/name).
#[derive(Debug, thiserror::Error)]
pub enum L2KeyError {
    #[error("reading Secret {secret}: {source}")]
    Get {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating Secret {secret}: {source}")]
    Create {
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {secret} has no {field:?} field")]
    NoField { secret: String, field: &'static str },
    #[error("Secret {secret}: {field:?} is not UTF-8 text")]
    NotText { secret: String, field: &'static str },
    #[error("Secret {secret} disappeared after a create conflict")]
    Vanished { secret: String },
    #[error("generating the {what}: {why}")]
    Generate { what: &'static str, why: String },
}

/// How this agent came to the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The Secret existed.
    Read,
    /// This agent created it.
    Created,
    /// Another agent created it between this agent's read and its create (409).
    LostRace,
}

impl Origin {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Created => "created",
            Self::LostRace => "created by another agent at the same time",
        }
    }
}

/// The key as the agent's membership sees it: not yet (with why), or the text and where from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyState {
    Pending { error: Option<String> },
    Ready { text: String, from: String },
}

/// Never prints the key.
impl std::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pending { error } => f.debug_struct("Pending").field("error", error).finish(),
            Self::Ready { from, .. } => f.debug_struct("Ready").field("from", from).finish(),
        }
    }
}

fn field_of(secret: &Secret, namespace: &str, which: SecretField) -> Result<String, L2KeyError> {
    let name = || format!("{namespace}/{}", which.name);
    if let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(which.field)) {
        return String::from_utf8(bytes.0.clone()).map_err(|_| L2KeyError::NotText {
            secret: name(),
            field: which.field,
        });
    }
    // `stringData` is write-only on a real server, but an object loaded as is may carry it.
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(which.field))
        .cloned()
        .ok_or_else(|| L2KeyError::NoField {
            secret: name(),
            field: which.field,
        })
}

/// Reads Secret `which`; `None` when it does not exist.
pub async fn read_field(
    api: &Api<Secret>,
    namespace: &str,
    which: SecretField,
) -> Result<Option<String>, L2KeyError> {
    match api.get_opt(which.name).await {
        Ok(Some(secret)) => field_of(&secret, namespace, which).map(Some),
        Ok(None) => Ok(None),
        Err(source) => Err(L2KeyError::Get {
            secret: format!("{namespace}/{}", which.name),
            source,
        }),
    }
}

/// Creates the L2 key Secret holding `text`; on 409 reads the one that won.
#[cfg(test)]
pub async fn create_or_read(
    api: &Api<Secret>,
    namespace: &str,
    text: String,
) -> Result<(String, Origin), L2KeyError> {
    create_field_or_read(api, namespace, L2_KEY, text).await
}

/// Creates Secret `which` holding `text`; on 409 reads the one that won.
pub async fn create_field_or_read(
    api: &Api<Secret>,
    namespace: &str,
    which: SecretField,
    text: String,
) -> Result<(String, Origin), L2KeyError> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(which.name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_owned(),
                "ferrite".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        // It never changes: every node must keep agreeing on it.
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            which.field.to_owned(),
            ByteString(text.clone().into_bytes()),
        )])),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok((text, Origin::Created)),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            match read_field(api, namespace, which).await? {
                Some(winner) => Ok((winner, Origin::LostRace)),
                None => Err(L2KeyError::Vanished {
                    secret: format!("{namespace}/{}", which.name),
                }),
            }
        }
        Err(source) => Err(L2KeyError::Create {
            secret: format!("{namespace}/{}", which.name),
            source,
        }),
    }
}

/// Gets the key, creating the Secret with a new random key when there is none.
#[cfg(test)]
pub async fn get_or_create(
    client: Client,
    namespace: &str,
) -> Result<(String, Origin), L2KeyError> {
    get_or_create_field(client, namespace, L2_KEY, || {
        crate::l2::membership::Key::generate_text().map_err(|e| e.to_string())
    })
    .await
}

/// Gets Secret `which`, creating it with `make`'s text when there is none.
pub async fn get_or_create_field(
    client: Client,
    namespace: &str,
    which: SecretField,
    make: impl FnOnce() -> Result<String, String>,
) -> Result<(String, Origin), L2KeyError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    if let Some(text) = read_field(&api, namespace, which).await? {
        return Ok((text, Origin::Read));
    }
    let text = make().map_err(|why| L2KeyError::Generate {
        what: which.what,
        why,
    })?;
    create_field_or_read(&api, namespace, which, text).await
}

/// Gets (or creates) the key in the background, retrying with backoff until it succeeds; the
/// receiver says where it stands.
pub fn spawn(client: Client, namespace: String) -> watch::Receiver<KeyState> {
    spawn_field(client, namespace, L2_KEY, || {
        crate::l2::membership::Key::generate_text().map_err(|e| e.to_string())
    })
}

/// [`spawn`] for Secret `which`, made with `make`'s text when there is none.
pub fn spawn_field(
    client: Client,
    namespace: String,
    which: SecretField,
    make: fn() -> Result<String, String>,
) -> watch::Receiver<KeyState> {
    let (tx, rx) = watch::channel(KeyState::Pending { error: None });
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(500);
        let secret = format!("{namespace}/{}", which.name);
        loop {
            match get_or_create_field(client.clone(), &namespace, which, make).await {
                Ok((text, origin)) => {
                    info!(%secret, how = origin.as_str(), "{}", which.what);
                    let _ = tx.send(KeyState::Ready {
                        text,
                        from: format!("Secret {secret} ({})", origin.as_str()),
                    });
                    return;
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?delay, "the {} Secret", which.what);
                    let _ = tx.send(KeyState::Pending {
                        error: Some(e.to_string()),
                    });
                }
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = tx.closed() => return,
            }
            delay = (delay * 2).min(MAX_RETRY);
        }
    });
    rx
}

#[cfg(test)]
#[path = "l2key_tests.rs"]
mod tests;
