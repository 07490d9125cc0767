//! Validity conditions: objects the source rejects get `ferrite.dev/Valid: False` with the
//! reason, ferrite's own kinds also get `True` when valid; written only by the lease holder, by
//! server-side apply under a field manager of its own (so the agent's other status writes and
//! these never remove each other's fields).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{
    cache::{Validity, object_path},
    status::StatusWriter,
    watch::{Conditions, Key, Kind, VALID_CONDITION, WrittenCondition},
};

/// The field manager of validity conditions.
pub const FIELD_MANAGER: &str = "ferrite-validation";
const RETRY: Duration = Duration::from_secs(5);

/// The condition an object should carry, `None` for none.
fn wanted(kind: &Kind, validity: &Validity) -> Option<WrittenCondition> {
    match (&validity.error, kind.conditions) {
        (Some(error), Conditions::WhenInvalid | Conditions::Always) => Some(WrittenCondition {
            status: "False".into(),
            message: error.clone(),
        }),
        (None, Conditions::Always) => Some(WrittenCondition {
            status: "True".into(),
            message: "accepted by ferrite".into(),
        }),
        _ => None,
    }
}

fn condition_json(condition: &WrittenCondition, generation: Option<i64>) -> Value {
    let mut c = json!({
        "type": VALID_CONDITION,
        "status": condition.status,
        "reason": if condition.status == "True" { "Valid" } else { "Invalid" },
        "message": condition.message,
        "lastTransitionTime": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    });
    if let Some(generation) = generation {
        c["observedGeneration"] = json!(generation);
    }
    c
}

/// Runs until `objects` closes: whenever the objects, or leadership, change, writes the
/// conditions that differ from what the objects carry.
pub async fn run(
    writer: StatusWriter,
    kinds: Vec<Kind>,
    mut objects: watch::Receiver<Arc<Vec<Validity>>>,
    mut leading: watch::Receiver<bool>,
) {
    // What was written and not yet seen back through the watch (so it is not written twice).
    let mut pending: BTreeMap<(usize, Key), Option<WrittenCondition>> = BTreeMap::new();
    let mut failed = false;
    loop {
        if *leading.borrow_and_update() {
            let current = objects.borrow_and_update().clone();
            failed = false;
            pending
                .retain(|(kind, key), _| current.iter().any(|v| v.kind == *kind && v.key == *key));
            for validity in current.iter() {
                let kind = &kinds[validity.kind];
                let want = wanted(kind, validity);
                let id = (validity.kind, validity.key.clone());
                if want == validity.current {
                    pending.remove(&id);
                    continue;
                }
                if pending.get(&id) == Some(&want) {
                    continue;
                }
                let (namespace, name) = &validity.key;
                let status = want
                    .as_ref()
                    .map(|c| json!({"conditions": [condition_json(c, validity.generation)]}));
                let ns = (!namespace.is_empty()).then_some(namespace.as_str());
                let path = object_path(kind, namespace, name);
                match writer.apply(&kind.resource, ns, name, status).await {
                    Ok(()) => {
                        match &want {
                            Some(c) if c.status == "False" => {
                                info!(object = %path, reason = %c.message, "marked invalid");
                            }
                            Some(_) => info!(object = %path, "marked valid"),
                            None => info!(object = %path, "validity condition removed"),
                        }
                        pending.insert(id, want);
                    }
                    Err(error) => {
                        warn!(object = %path, error = %error, "writing the validity condition failed");
                        failed = true;
                    }
                }
            }
        } else {
            pending.clear();
        }
        tokio::select! {
            changed = objects.changed() => if changed.is_err() { return },
            changed = leading.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RETRY), if failed => {}
        }
    }
}
