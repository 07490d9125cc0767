//! The Kubernetes kinds ferrite reads from manifests, decoded with serde types private to
//! `source` and converted to `model` types.
//!
//! Adding a kind is one arm in [`decode`] (plus its module and an [`Object`] variant).

mod cluster;
mod endpoint_slice;
mod l2_policy;
mod network_policy;
mod node;
mod pool;
mod selector;
mod service;
mod timestamp;

use std::collections::BTreeMap;

use serde::{Deserialize, de::DeserializeOwned};
use serde_json::Value;
use smol_str::SmolStr;

use crate::model::{self, Protocol, ServiceName};

/// One object read from a manifest, already in ferrite's model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    Service(model::Service),
    EndpointSlice(model::EndpointSlice),
    /// A `LoadBalancerIPPool` (or Cilium's `CiliumLoadBalancerIPPool`); cluster-scoped, so its
    /// key has an empty namespace.
    Pool(ServiceName, model::IpPool),
    /// Cluster-scoped like pools: the key has an empty namespace.
    Node(ServiceName, Box<model::Node>),
    Namespace(ServiceName, Box<model::Namespace>),
    Pod(Box<model::Pod>),
    NetworkPolicy(Box<model::NetworkPolicy>),
    L2Policy(ServiceName, Box<model::L2Policy>),
}

/// Identity of an object across files: its kind and namespace/name.
pub type ObjectKey = (&'static str, ServiceName);

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Service(_) => "Service",
            Self::EndpointSlice(_) => "EndpointSlice",
            Self::Pool(..) => "LoadBalancerIPPool",
            Self::Node(..) => "Node",
            Self::Namespace(..) => "Namespace",
            Self::Pod(_) => "Pod",
            Self::NetworkPolicy(_) => "NetworkPolicy",
            Self::L2Policy(..) => "L2AnnouncementPolicy",
        }
    }

    pub fn name(&self) -> &ServiceName {
        match self {
            Self::Service(service) => &service.name,
            Self::EndpointSlice(slice) => &slice.name,
            Self::Pool(key, _)
            | Self::Node(key, _)
            | Self::Namespace(key, _)
            | Self::L2Policy(key, _) => key,
            Self::Pod(pod) => &pod.name,
            Self::NetworkPolicy(policy) => &policy.name,
        }
    }

    pub fn key(&self) -> ObjectKey {
        (self.kind(), self.name().clone())
    }

    /// Adds the object to `snapshot`, replacing one of the same kind and name.
    pub fn insert_into(self, snapshot: &mut model::Snapshot) {
        match self {
            Self::Service(service) => {
                snapshot.services.insert(service.name.clone(), service);
            }
            Self::EndpointSlice(slice) => {
                snapshot.endpoint_slices.insert(slice.name.clone(), slice);
            }
            Self::Pool(_, pool) => {
                snapshot.pools.insert(pool.name.clone(), pool);
            }
            Self::Node(_, node) => {
                snapshot.nodes.insert(node.name.clone(), *node);
            }
            Self::Namespace(_, namespace) => {
                snapshot
                    .namespaces
                    .insert(namespace.name.clone(), *namespace);
            }
            Self::Pod(pod) => {
                snapshot.pods.insert(pod.name.clone(), *pod);
            }
            Self::NetworkPolicy(policy) => {
                snapshot
                    .network_policies
                    .insert(policy.name.clone(), *policy);
            }
            Self::L2Policy(_, policy) => {
                snapshot.l2_policies.insert(policy.name.clone(), *policy);
            }
        }
    }
}

/// What became of one manifest object.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "short-lived: each decoded object moves straight into its file's or watcher's list"
)]
pub enum Decoded {
    Object(Object),
    /// Valid, but nothing ferrite reads here; the reason is logged at debug level.
    Ignored(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("not an object (expected a mapping with apiVersion, kind and metadata)")]
    NotAMapping,
    #[error("{field} is required")]
    Missing { field: String },
    #[error("apiVersion `{api_version}` is not supported for {kind}; use `{supported}`")]
    UnsupportedVersion {
        api_version: String,
        kind: &'static str,
        supported: &'static str,
    },
    #[error("a List inside a List is not supported")]
    NestedList,
    #[error("{field}: {source}")]
    Decode {
        field: String,
        source: serde_json::Error,
    },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

/// Decodes one object of any kind (`apiVersion`/`kind` already read from it).
///
/// Kinds are matched by API group and kind: a known kind under an unknown version of its group is
/// an error, the same kind name in another group (e.g. a Knative `Service`) is a different kind
/// and is ignored like every kind ferrite does not read.
pub fn decode(api_version: &str, kind: &str, value: Value) -> Result<Decoded, ObjectError> {
    let group = api_version.split_once('/').map_or("", |(group, _)| group);
    match (group, kind) {
        ("", "Service") => require_version(api_version, "Service", "v1")
            .and_then(|()| service::decode(value))
            .map(|service| Decoded::Object(Object::Service(service))),
        ("discovery.k8s.io", "EndpointSlice") => {
            require_version(api_version, "EndpointSlice", "discovery.k8s.io/v1")
                .and_then(|()| endpoint_slice::decode(value))
        }
        ("ferrite.dev", "LoadBalancerIPPool") | ("cilium.io", "CiliumLoadBalancerIPPool") => {
            pool::decode(api_version, kind, value)
        }
        ("", "Node") => require_version(api_version, "Node", "v1")
            .and_then(|()| node::decode(value))
            .map(|node| {
                Decoded::Object(Object::Node(
                    ServiceName::new("", node.name.clone()),
                    Box::new(node),
                ))
            }),
        ("", "Namespace") => require_version(api_version, "Namespace", "v1")
            .and_then(|()| cluster::namespace(value))
            .map(|ns| {
                Decoded::Object(Object::Namespace(
                    ServiceName::new("", ns.name.clone()),
                    Box::new(ns),
                ))
            }),
        ("", "Pod") => require_version(api_version, "Pod", "v1")
            .and_then(|()| cluster::pod(value))
            .map(|pod| Decoded::Object(Object::Pod(Box::new(pod)))),
        ("networking.k8s.io", "NetworkPolicy") => {
            require_version(api_version, "NetworkPolicy", "networking.k8s.io/v1")
                .and_then(|()| network_policy::decode(value))
                .map(|policy| Decoded::Object(Object::NetworkPolicy(Box::new(policy))))
        }
        ("ferrite.dev", "L2AnnouncementPolicy") | ("cilium.io", "CiliumL2AnnouncementPolicy") => {
            let supported = if kind == "L2AnnouncementPolicy" {
                api_version == l2_policy::FERRITE_VERSION
            } else {
                l2_policy::CILIUM_VERSIONS.contains(&api_version)
            };
            let supported_text = if kind == "L2AnnouncementPolicy" {
                l2_policy::FERRITE_VERSION
            } else {
                l2_policy::CILIUM_VERSIONS[0]
            };
            if !supported {
                return Err(ObjectError::UnsupportedVersion {
                    api_version: api_version.to_owned(),
                    kind: "L2AnnouncementPolicy",
                    supported: supported_text,
                });
            }
            l2_policy::decode(value).map(|policy| {
                Decoded::Object(Object::L2Policy(
                    ServiceName::new("", policy.name.clone()),
                    Box::new(policy),
                ))
            })
        }
        _ => Ok(Decoded::Ignored("kind not read by ferrite")),
    }
}

fn require_version(
    api_version: &str,
    kind: &'static str,
    supported: &'static str,
) -> Result<(), ObjectError> {
    if api_version == supported {
        Ok(())
    } else {
        Err(ObjectError::UnsupportedVersion {
            api_version: api_version.to_owned(),
            kind,
            supported,
        })
    }
}

/// The part of `metadata` ferrite reads. Labels keep raw values so that an unquoted number in an
/// unrelated label does not reject the object.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ObjectMeta {
    name: Option<String>,
    namespace: Option<String>,
    labels: Option<BTreeMap<String, Value>>,
    annotations: Option<BTreeMap<String, Value>>,
    creation_timestamp: Option<String>,
}

impl ObjectMeta {
    /// `namespace/name`, with Kubernetes' default namespace.
    fn object_name(&self) -> Result<ServiceName, ObjectError> {
        let name = match self.name.as_deref() {
            None | Some("") => return Err(missing("metadata.name")),
            Some(name) => name,
        };
        Ok(ServiceName::new(self.namespace(), name))
    }

    fn namespace(&self) -> SmolStr {
        match self.namespace.as_deref() {
            None | Some("") => SmolStr::new_static("default"),
            Some(namespace) => SmolStr::new(namespace),
        }
    }

    fn label(&self, key: &str) -> Option<&Value> {
        self.labels.as_ref()?.get(key)
    }

    /// `creationTimestamp` in Unix seconds (`None` when unset).
    fn created_unix(&self) -> Result<Option<i64>, ObjectError> {
        match self.creation_timestamp.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => timestamp::unix_seconds(text).map(Some).ok_or_else(|| {
                invalid(
                    "metadata.creationTimestamp",
                    format!("`{text}` is not an RFC 3339 timestamp"),
                )
            }),
        }
    }

    /// Labels or annotations as strings: numbers and booleans written unquoted become their
    /// text; other values are an error naming `field`.
    fn string_map(
        map: Option<&BTreeMap<String, Value>>,
        field: &str,
    ) -> Result<BTreeMap<SmolStr, SmolStr>, ObjectError> {
        let mut out = BTreeMap::new();
        for (key, value) in map.into_iter().flatten() {
            let text = match value {
                Value::String(text) => SmolStr::new(text),
                Value::Number(number) => SmolStr::new(number.to_string()),
                Value::Bool(flag) => SmolStr::new(flag.to_string()),
                Value::Null => SmolStr::default(),
                _ => return Err(invalid(format!("{field}[{key}]"), "must be a string")),
            };
            out.insert(SmolStr::new(key), text);
        }
        Ok(out)
    }
}

/// Moves `key` out of a mapping (`Null` when absent).
fn take(value: &mut Value, key: &str) -> Value {
    value.get_mut(key).map(Value::take).unwrap_or_default()
}

/// Decodes `value` (`Null` decodes as the type's default, for optional sections).
fn decode_field<T: DeserializeOwned + Default>(
    value: Value,
    field: &str,
) -> Result<T, ObjectError> {
    if value.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(value).map_err(|source| ObjectError::Decode {
        field: field.to_owned(),
        source,
    })
}

fn missing(field: impl Into<String>) -> ObjectError {
    ObjectError::Missing {
        field: field.into(),
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ObjectError {
    ObjectError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// `protocol` of a port: TCP when unset.
fn protocol(value: Option<&str>, field: &str) -> Result<Protocol, ObjectError> {
    match value {
        None | Some("TCP") => Ok(Protocol::Tcp),
        Some("UDP") => Ok(Protocol::Udp),
        Some("SCTP") => Ok(Protocol::Sctp),
        Some(other) => Err(invalid(
            field,
            format!("unknown protocol `{other}` (expected TCP, UDP or SCTP)"),
        )),
    }
}

/// `protocol` of a Service or `EndpointSlice` port: TCP when unset; `None` for SCTP, which is
/// valid Kubernetes but not load-balanced by ferrite (the port is skipped, not the object).
fn port_protocol(value: Option<&str>, field: &str) -> Result<Option<Protocol>, ObjectError> {
    match value {
        Some("SCTP") => Ok(None),
        None | Some("TCP" | "UDP") => protocol(value, field).map(Some),
        Some(other) => Err(invalid(
            field,
            format!("unknown protocol `{other}` (expected TCP, UDP or SCTP)"),
        )),
    }
}

/// A port number in 1..=65535.
fn port_number(value: i64, field: &str) -> Result<u16, ObjectError> {
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(invalid(
            field,
            format!("{value} is not a port number (1-65535)"),
        )),
    }
}
