//! Is the DaemonSet that runs this agent being deleted? Asked once, when the agent is told to
//! stop. `kubectl delete` of the addon deletes the DaemonSet and then its pods: the one stop
//! after which nothing of ferrite may stay on the node (`ferrite uninstall`'s steps). Every other
//! stop — a rolling upgrade, a deleted pod the DaemonSet recreates, a node shutting down, an API
//! server that does not answer — keeps the datapath, so no connection drops.

use std::time::Duration;

use kube::{
    Api, Client,
    core::{ApiResource, DynamicObject, GroupVersionKind},
};

use super::config::{ClientOptions, client, own_namespace};

/// What the API server said about the DaemonSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerState {
    /// It exists and is not being deleted: it will run a new agent here.
    Present,
    /// It has a `deletionTimestamp` (foreground or orphan deletion in progress).
    Deleting,
    /// 404: deleted (background propagation deletes the pods after the DaemonSet).
    Gone,
}

/// What the stopping agent does with the datapath.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Termination {
    /// Leave everything pinned and attached; the next agent adopts it.
    Keep(String),
    /// Take everything out (the addon was deleted).
    Uninstall(String),
}

/// The decision, from the lookup's outcome (pure). Any doubt keeps the datapath: removing it
/// under a running cluster drops every connection, keeping it after a delete only leaves
/// programs a `ferrite uninstall` takes out.
#[must_use]
pub fn decide(daemonset: &str, lookup: Result<OwnerState, String>) -> Termination {
    match lookup {
        Ok(OwnerState::Present) => Termination::Keep(format!(
            "DaemonSet {daemonset} still exists (restart or upgrade)"
        )),
        Ok(OwnerState::Deleting) => {
            Termination::Uninstall(format!("DaemonSet {daemonset} is being deleted"))
        }
        Ok(OwnerState::Gone) => {
            Termination::Uninstall(format!("DaemonSet {daemonset} was deleted"))
        }
        Err(e) => Termination::Keep(format!(
            "could not tell whether DaemonSet {daemonset} was deleted ({e})"
        )),
    }
}

fn daemonsets() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps", "v1", "DaemonSet"),
        "daemonsets",
    )
}

/// `GET` of the DaemonSet `name` in `namespace`.
pub async fn owner_state(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<OwnerState, String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &daemonsets());
    match api.get_opt(name).await {
        Ok(None) => Ok(OwnerState::Gone),
        Ok(Some(ds)) if ds.metadata.deletion_timestamp.is_some() => Ok(OwnerState::Deleting),
        Ok(Some(_)) => Ok(OwnerState::Present),
        Err(e) => Err(e.to_string()),
    }
}

/// Connects, looks the DaemonSet `name` up in the agent's own namespace and decides, all within
/// `limit` (the pod's grace period is short).
pub async fn termination(options: ClientOptions, name: &str, limit: Duration) -> Termination {
    let namespace = own_namespace();
    let qualified = format!("{namespace}/{name}");
    let lookup = async {
        let (client, _) = client(options).await.map_err(|e| e.to_string())?;
        owner_state(client, &namespace, name).await
    };
    let outcome = tokio::time::timeout(limit, lookup)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")));
    decide(&qualified, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_deleted_or_deleting_daemonset_uninstalls() {
        let ds = "kube-system/ferrite";
        assert!(matches!(
            decide(ds, Ok(OwnerState::Present)),
            Termination::Keep(_)
        ));
        assert_eq!(
            decide(ds, Ok(OwnerState::Gone)),
            Termination::Uninstall("DaemonSet kube-system/ferrite was deleted".into())
        );
        assert!(matches!(
            decide(ds, Ok(OwnerState::Deleting)),
            Termination::Uninstall(_)
        ));
        let Termination::Keep(why) = decide(ds, Err("403 Forbidden".into())) else {
            panic!("an error must keep the datapath");
        };
        assert!(why.contains("403 Forbidden"), "{why}");
    }
}
