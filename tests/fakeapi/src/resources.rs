//! The kinds the fake server serves, and how a request path names them.

/// One served resource type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource {
    /// `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Has a `/status` subresource: the main resource ignores `status`, `/status` changes only it.
    pub status: bool,
    /// Served only while its `CustomResourceDefinition` (`plural.group`) exists, as for a real
    /// server.
    pub custom: bool,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group`: the name of the CRD that defines a custom resource.
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }
}

const fn core(
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
) -> Resource {
    Resource {
        group: "",
        version: "v1",
        plural,
        kind,
        namespaced,
        status,
        custom: false,
    }
}

const fn grouped(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    status: bool,
) -> Resource {
    Resource {
        group,
        version,
        plural,
        kind,
        namespaced,
        status,
        custom: false,
    }
}

const fn custom(plural: &'static str, kind: &'static str) -> Resource {
    Resource {
        group: "ferrite.dev",
        version: "v1alpha1",
        plural,
        kind,
        namespaced: false,
        status: true,
        custom: true,
    }
}

pub const RESOURCES: &[Resource] = &[
    core("services", "Service", true, true),
    core("pods", "Pod", true, true),
    core("nodes", "Node", false, true),
    core("namespaces", "Namespace", false, true),
    core("configmaps", "ConfigMap", true, false),
    core("secrets", "Secret", true, false),
    grouped(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        true,
        false,
    ),
    grouped(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        false,
    ),
    grouped("coordination.k8s.io", "v1", "leases", "Lease", true, false),
    grouped("apps", "v1", "daemonsets", "DaemonSet", true, true),
    grouped(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        true,
    ),
    custom("loadbalancerippools", "LoadBalancerIPPool"),
    custom("l2announcementpolicies", "L2AnnouncementPolicy"),
];

/// The resource of an object, from its `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// What a request path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub resource: &'static Resource,
    /// The namespace in the path (`None` for cluster-wide collections and cluster-scoped kinds).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Why a path addresses nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathError {
    NotFound,
}

/// Parses `/api/v1/...` and `/apis/GROUP/VERSION/...`.
pub fn parse_path(path: &str) -> Result<Target, PathError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(PathError::NotFound),
    };
    let lookup = |plural: &str| by_path(group, version, plural).ok_or(PathError::NotFound);
    let target = |resource: &'static Resource,
                  namespace: Option<&str>,
                  name: Option<&str>,
                  sub: Option<&str>| Target {
        resource,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
        subresource: sub.map(str::to_owned),
    };
    match rest {
        ["namespaces", ns, plural, more @ ..] if lookup(plural).is_ok_and(|r| r.namespaced) => {
            let resource = lookup(plural)?;
            match more {
                [] => Ok(target(resource, Some(ns), None, None)),
                [name] => Ok(target(resource, Some(ns), Some(name), None)),
                [name, sub] => Ok(target(resource, Some(ns), Some(name), Some(sub))),
                _ => Err(PathError::NotFound),
            }
        }
        [plural, more @ ..] => {
            let resource = lookup(plural)?;
            match more {
                [] => Ok(target(resource, None, None, None)),
                [name] if !resource.namespaced => Ok(target(resource, None, Some(name), None)),
                [name, sub] if !resource.namespaced => {
                    Ok(target(resource, None, Some(name), Some(sub)))
                }
                _ => Err(PathError::NotFound),
            }
        }
        [] => Err(PathError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_collections_objects_and_subresources() {
        let t = parse_path("/api/v1/services").unwrap();
        assert_eq!(
            (t.resource.kind, t.namespace, t.name),
            ("Service", None, None)
        );
        let t = parse_path("/api/v1/namespaces/ns1/services/web/status").unwrap();
        assert_eq!(t.namespace.as_deref(), Some("ns1"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = parse_path("/api/v1/namespaces/kube-system").unwrap();
        assert_eq!(
            (t.resource.kind, t.name.as_deref()),
            ("Namespace", Some("kube-system"))
        );
        let t = parse_path("/api/v1/namespaces/kube-system/status").unwrap();
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = parse_path("/apis/ferrite.dev/v1alpha1/loadbalancerippools/a/status").unwrap();
        assert_eq!(t.resource.kind, "LoadBalancerIPPool");
        assert!(parse_path("/apis/ferrite.dev/v1/loadbalancerippools").is_err());
        assert!(
            parse_path("/api/v1/services/web").is_err(),
            "namespaced object needs a namespace"
        );
    }
}
