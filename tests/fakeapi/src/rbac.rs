//! Optional RBAC, as the real server's RBAC authorizer decides it for the one user the fake server
//! knows (the holder of its token): the grants are the rules of the `ClusterRole`s and `Role`s
//! that the bindings of a manifest point at, so a test can give the server a generated manifest
//! and see whether a client stays inside it.
//!
//! What is checked: the verb (`get`/`list`/`watch`/`create`/`update`/`patch`/`delete`/
//! `deletecollection` from the method and `watch=`), the API group, the resource (`plural` or
//! `plural/subresource`), `resourceNames` (which, as in Kubernetes, never match `list`, `watch`,
//! `create` or `deletecollection`), and the namespace (a `RoleBinding` grants only in its own
//! namespace; a `ClusterRoleBinding` everywhere). `*` matches any group, resource or verb.
//! Non-resource paths (`/version`, `/healthz`) are allowed, as `system:discovery` allows them to
//! every authenticated user. A denied request gets `403 Forbidden` with the real server's message.

use std::{
    collections::BTreeMap,
    sync::{Mutex, PoisonError},
};

use serde::Deserialize;
use serde_json::Value;

use crate::{error::ApiError, resources::Target};

/// The user the fake server reports in `Forbidden` messages.
const USER: &str = "fakeapi-token-holder";

#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    #[error("YAML document {document}: {message}")]
    Yaml { document: usize, message: String },
    #[error("{binding} refers to {kind} {name}, which the manifest does not define")]
    MissingRole {
        binding: String,
        kind: String,
        name: String,
    },
}

/// One RBAC `PolicyRule` (resource rules only).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
}

/// A rule and where it applies: `None` everywhere (`ClusterRoleBinding`), else one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub namespace: Option<String>,
    pub rule: PolicyRule,
}

/// The grants of the server's only user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub grants: Vec<Grant>,
}

/// One authorization decision, for tests to inspect.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Decision {
    pub verb: String,
    pub group: String,
    /// `plural` or `plural/subresource`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub allowed: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleRef {
    kind: String,
    name: String,
}

impl Rules {
    /// The grants of the bindings in a multi-document manifest (other kinds are ignored).
    pub fn from_manifest(text: &str) -> Result<Self, RbacError> {
        let mut defined: BTreeMap<(String, String, String), Vec<PolicyRule>> = BTreeMap::new();
        let mut bindings = Vec::new();
        for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let yaml = |e: &dyn std::fmt::Display| RbacError::Yaml {
                document: index + 1,
                message: e.to_string(),
            };
            let value = Value::deserialize(document).map_err(|e| yaml(&e))?;
            let kind = value["kind"].as_str().unwrap_or_default().to_owned();
            let name = value.pointer("/metadata/name").and_then(Value::as_str);
            let namespace = value
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            match kind.as_str() {
                "ClusterRole" | "Role" => {
                    let rules: Vec<PolicyRule> =
                        serde_json::from_value(value["rules"].clone()).map_err(|e| yaml(&e))?;
                    let ns = if kind == "Role" {
                        namespace
                    } else {
                        String::new()
                    };
                    defined.insert((kind, ns, name.unwrap_or_default().to_owned()), rules);
                }
                "ClusterRoleBinding" | "RoleBinding" => {
                    let role: RoleRef =
                        serde_json::from_value(value["roleRef"].clone()).map_err(|e| yaml(&e))?;
                    let scope = (kind == "RoleBinding").then_some(namespace);
                    bindings.push((format!("{kind} {}", name.unwrap_or_default()), scope, role));
                }
                _ => {}
            }
        }
        let mut grants = Vec::new();
        for (binding, scope, role) in bindings {
            let role_ns = if role.kind == "Role" {
                scope.clone().unwrap_or_default()
            } else {
                String::new()
            };
            let rules = defined
                .get(&(role.kind.clone(), role_ns, role.name.clone()))
                .ok_or(RbacError::MissingRole {
                    binding,
                    kind: role.kind,
                    name: role.name,
                })?;
            grants.extend(rules.iter().map(|rule| Grant {
                namespace: scope.clone(),
                rule: rule.clone(),
            }));
        }
        Ok(Self { grants })
    }

    /// Whether the grants allow `verb` on `resource` (`plural` or `plural/sub`) of `group`, in
    /// `namespace` (`None`: cluster-scoped or all namespaces), on the object `name`.
    #[must_use]
    pub fn allows(
        &self,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> bool {
        let any = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
        self.grants.iter().any(|g| {
            let rule = &g.rule;
            g.namespace
                .as_deref()
                .is_none_or(|ns| namespace == Some(ns))
                && any(&rule.verbs, verb)
                && any(&rule.api_groups, group)
                && any(&rule.resources, resource)
                && (rule.resource_names.is_empty()
                    || (!matches!(verb, "list" | "watch" | "create" | "deletecollection")
                        && name.is_some_and(|n| rule.resource_names.iter().any(|r| r == n))))
        })
    }
}

/// The enforcing side: the rules and every decision taken.
#[derive(Debug)]
pub struct Rbac {
    rules: Rules,
    decisions: Mutex<Vec<Decision>>,
}

fn verb(method: &str, target: &Target, query: &str) -> &'static str {
    let watch = query
        .split('&')
        .any(|pair| pair == "watch=true" || pair == "watch=1");
    match (method, target.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

impl Rbac {
    #[must_use]
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            decisions: Mutex::new(Vec::new()),
        }
    }

    /// Decides one resource request (and records the decision).
    pub fn authorize(&self, method: &str, target: &Target, query: &str) -> Result<(), ApiError> {
        let verb = verb(method, target, query);
        let resource = match &target.subresource {
            Some(sub) => format!("{}/{sub}", target.resource.plural),
            None => target.resource.plural.to_owned(),
        };
        // A namespace object's name is its namespace, as the real server's request info says.
        let namespace = if target.resource.plural == "namespaces" {
            target.name.clone()
        } else {
            target.namespace.clone()
        };
        let group = target.resource.group;
        let allowed = self.rules.allows(
            verb,
            group,
            &resource,
            namespace.as_deref(),
            target.name.as_deref(),
        );
        self.decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Decision {
                verb: verb.to_owned(),
                group: group.to_owned(),
                resource: resource.clone(),
                namespace: namespace.clone(),
                name: target.name.clone(),
                allowed,
            });
        if allowed {
            return Ok(());
        }
        let object = match &target.name {
            Some(name) => format!("{} \"{name}\"", target.resource.plural),
            None => target.resource.plural.to_owned(),
        };
        let scope = match &namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_owned(),
        };
        Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "{object} is forbidden: User \"{USER}\" cannot {verb} resource \"{resource}\" in \
                 API group \"{group}\" {scope}"
            ),
        ))
    }

    pub fn decisions(&self) -> Vec<Decision> {
        self.decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::Rules;

    const MANIFEST: &str = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules:
- {apiGroups: [''], resources: [services], verbs: [list, watch]}
- {apiGroups: [''], resources: [services/status], verbs: [patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reader}
subjects: [{kind: ServiceAccount, name: x, namespace: sys}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: lease, namespace: sys}
rules:
- {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [create]}
- {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, update], resourceNames: [mine]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: lease, namespace: sys}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: lease}
subjects: [{kind: ServiceAccount, name: x, namespace: sys}]
";

    #[test]
    fn bindings_grant_their_roles_rules_in_their_scope() {
        let rules = Rules::from_manifest(MANIFEST).expect("rules");
        assert!(rules.allows("watch", "", "services", None, None));
        assert!(rules.allows("list", "", "services", Some("a"), None));
        assert!(!rules.allows("get", "", "services", Some("a"), Some("web")));
        assert!(rules.allows("patch", "", "services/status", Some("a"), Some("web")));
        assert!(!rules.allows("patch", "", "services", Some("a"), Some("web")));
        assert!(!rules.allows("list", "discovery.k8s.io", "services", None, None));
        // The Role only in its namespace, names only for verbs on one object.
        let leases = "coordination.k8s.io";
        assert!(rules.allows("create", leases, "leases", Some("sys"), None));
        assert!(!rules.allows("create", leases, "leases", Some("other"), None));
        assert!(rules.allows("update", leases, "leases", Some("sys"), Some("mine")));
        assert!(!rules.allows("update", leases, "leases", Some("sys"), Some("theirs")));
        assert!(!rules.allows("list", leases, "leases", Some("sys"), None));
    }

    #[test]
    fn a_binding_to_an_undefined_role_is_an_error() {
        let text = MANIFEST.replace("kind: Role, name: lease", "kind: Role, name: nope");
        assert!(Rules::from_manifest(&text).is_err());
    }
}
