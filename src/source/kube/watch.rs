//! One watcher per kind: list + watch with backoff (kube-runtime), each object decoded at once
//! with the `dir:` source's decoders into model objects (the raw object, managed fields and all,
//! is not kept), sent to the aggregator as updates.

use std::{collections::BTreeMap, time::Duration};

use futures_util::StreamExt;
use kube::{
    Api, Client,
    core::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{WatchStreamExt, utils::ResetTimerBackoff, watcher},
};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::debug;

use super::backoff::ExpBackoff;
use crate::source::objects::{self, Decoded, Object};

/// The condition type ferrite's source writes on objects it rejects.
pub const VALID_CONDITION: &str = "ferrite.dev/Valid";

/// A kind the source watches.
#[derive(Clone, Debug)]
pub struct Kind {
    pub resource: ApiResource,
    /// A field selector (this node's pods).
    pub fields: Option<String>,
    /// The kind may be absent or forbidden (a CRD not installed, a kubeconfig without the right):
    /// the source then runs without it instead of waiting for it.
    pub optional: bool,
    /// Whether the source reports validity as a status condition on these objects: `Always`
    /// for ferrite's own kinds, `WhenInvalid` for services.
    pub conditions: Conditions,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conditions {
    Never,
    WhenInvalid,
    Always,
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// Everything the source watches.
pub fn kinds() -> Vec<Kind> {
    use Conditions::{Always, Never, WhenInvalid};
    let kind = |group, version, name, plural, optional, conditions| Kind {
        resource: resource(group, version, name, plural),
        fields: None,
        optional,
        conditions,
    };
    vec![
        kind("", "v1", "Service", "services", false, WhenInvalid),
        kind(
            "discovery.k8s.io",
            "v1",
            "EndpointSlice",
            "endpointslices",
            false,
            Never,
        ),
        kind("", "v1", "Node", "nodes", true, Never),
        kind("", "v1", "Namespace", "namespaces", true, Never),
        // Every node's pods: NetworkPolicy needs the identity of every pod address.
        kind("", "v1", "Pod", "pods", true, Never),
        kind(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
            Never,
        ),
        kind(
            "ferrite.dev",
            "v1alpha1",
            "LoadBalancerIPPool",
            "loadbalancerippools",
            true,
            Never,
        ),
        kind(
            "ferrite.dev",
            "v1alpha1",
            "L2AnnouncementPolicy",
            "l2announcementpolicies",
            true,
            Always,
        ),
    ]
}

/// `(namespace, name)`; the namespace is empty for cluster-scoped kinds.
pub type Key = (String, String);

/// The condition ferrite's source last wrote on an object, as read back from the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenCondition {
    pub status: String,
    pub message: String,
}

/// One object as the aggregator keeps it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// `Ok(None)`: valid but not used (e.g. an FQDN `EndpointSlice`).
    pub decoded: Result<Option<Object>, String>,
    pub generation: Option<i64>,
    /// The `ferrite.dev/Valid` condition currently on the object.
    pub condition: Option<WrittenCondition>,
}

/// What a watcher tells the aggregator.
#[derive(Debug)]
pub enum Update {
    /// A complete (re)list: replaces every object of the kind.
    Listed {
        kind: usize,
        objects: BTreeMap<Key, Entry>,
    },
    Applied {
        kind: usize,
        key: Key,
        entry: Box<Entry>,
    },
    Deleted {
        kind: usize,
        key: Key,
    },
    /// The watch failed; it is retried with backoff. `absent` is set for 404/403 on the list
    /// (the kind is not installed or not allowed).
    Failed {
        kind: usize,
        message: String,
        absent: bool,
    },
}

/// Decodes one object like the `dir:` source would decode it from a file.
pub fn decode(kind: &Kind, mut object: DynamicObject) -> (Key, Entry) {
    object.metadata.managed_fields = None;
    let key = (
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone().unwrap_or_default(),
    );
    let generation = object.metadata.generation;
    let condition = object
        .data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|conditions| {
            conditions
                .iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(VALID_CONDITION))
        })
        .map(|c| {
            let text = |k: &str| {
                c.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            WrittenCondition {
                status: text("status"),
                message: text("message"),
            }
        });
    let api_version = kind.resource.api_version.clone();
    let kind_name = kind.resource.kind.clone();
    let decoded = match serde_json::to_value(&object) {
        Ok(mut value) => {
            value["apiVersion"] = Value::String(api_version.clone());
            value["kind"] = Value::String(kind_name.clone());
            match objects::decode(&api_version, &kind_name, value) {
                Ok(Decoded::Object(object)) => Ok(Some(object)),
                Ok(Decoded::Ignored(reason)) => {
                    debug!(kind = %kind_name, object = ?key, reason, "ignoring object");
                    Ok(None)
                }
                Err(error) => Err(error.to_string()),
            }
        }
        Err(error) => Err(format!("cannot read the object: {error}")),
    };
    (
        key,
        Entry {
            decoded,
            generation,
            condition,
        },
    )
}

/// Watches one kind until `updates` is closed.
pub async fn run(client: Client, index: usize, kind: Kind, updates: mpsc::UnboundedSender<Update>) {
    let api: Api<DynamicObject> = Api::all_with(client, &kind.resource);
    let mut config = watcher::Config::default();
    if let Some(fields) = &kind.fields {
        config = config.fields(fields);
    }
    let backoff = ResetTimerBackoff::new(
        ExpBackoff::new(Duration::from_millis(250), Duration::from_secs(10)),
        Duration::from_mins(1),
    );
    let mut stream = watcher(api, config).backoff(backoff).boxed();
    let mut listing: Option<BTreeMap<Key, Entry>> = None;
    while let Some(event) = stream.next().await {
        let update = match event {
            Ok(watcher::Event::Init) => {
                listing = Some(BTreeMap::new());
                continue;
            }
            Ok(watcher::Event::InitApply(object)) => {
                let (key, entry) = decode(&kind, object);
                listing.get_or_insert_default().insert(key, entry);
                continue;
            }
            Ok(watcher::Event::InitDone) => Update::Listed {
                kind: index,
                objects: listing.take().unwrap_or_default(),
            },
            Ok(watcher::Event::Apply(object)) => {
                let (key, entry) = decode(&kind, object);
                Update::Applied {
                    kind: index,
                    key,
                    entry: Box::new(entry),
                }
            }
            Ok(watcher::Event::Delete(object)) => {
                let (key, _) = decode(&kind, object);
                Update::Deleted { kind: index, key }
            }
            Err(error) => {
                let absent = matches!(
                    &error,
                    watcher::Error::InitialListFailed(kube::Error::Api(status))
                        if status.code == 404 || status.code == 403
                );
                Update::Failed {
                    kind: index,
                    message: error_text(&error),
                    absent,
                }
            }
        };
        if updates.send(update).is_err() {
            return;
        }
    }
}

/// A watcher error with its cause (kube's messages name the step, the cause says why).
fn error_text(error: &watcher::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
