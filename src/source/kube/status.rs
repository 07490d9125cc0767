//! Status writes by server-side apply, with retries: the API the rest of the agent uses to report
//! on services, pools and policies.

use std::time::Duration;

use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    core::{ApiResource, DynamicObject, GroupVersionKind},
};
use serde_json::{Value, json};
use tracing::{debug, warn};

use super::backoff::ExpBackoff;

/// The field manager of the agent's status writes.
#[allow(dead_code, reason = "used by the typed helpers, which the agent wires")]
pub const FIELD_MANAGER: &str = "ferrite";
/// How many times a write is tried before its error is returned.
const ATTEMPTS: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("applying the status of {object} failed after {attempts} attempt(s): {source}")]
    Apply {
        object: String,
        attempts: usize,
        source: kube::Error,
    },
}

/// Writes `status` of services and of ferrite's CRDs by server-side apply, as one field manager.
/// Each call applies the complete status this manager wants on the object: fields it applied
/// before and leaves out now are removed, other managers' fields are untouched. Conflicts (409),
/// throttling (429), server errors and connection failures are retried with backoff.
#[derive(Clone)]
pub struct StatusWriter {
    client: Client,
    manager: String,
}

#[allow(dead_code, reason = "used by the typed helpers, which the agent wires")]
fn gvk(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

#[allow(
    dead_code,
    reason = "API for the agent's status reporters (LB IPAM, L2), wired by the agent"
)]
impl StatusWriter {
    pub fn new(client: Client, field_manager: impl Into<String>) -> Self {
        Self {
            client,
            manager: field_manager.into(),
        }
    }

    /// `status` of a `v1 Service` (e.g. `{"loadBalancer": {"ingress": [...]}, "conditions": [...]}`).
    pub async fn apply_service_status(
        &self,
        namespace: &str,
        name: &str,
        status: Value,
    ) -> Result<(), StatusError> {
        let resource = gvk("", "v1", "Service", "services");
        self.apply(&resource, Some(namespace), name, Some(status))
            .await
    }

    /// `status` of a `LoadBalancerIPPool` (`{"conditions": [...]}`).
    pub async fn apply_pool_status(&self, name: &str, status: Value) -> Result<(), StatusError> {
        let resource = gvk(
            "ferrite.dev",
            "v1alpha1",
            "LoadBalancerIPPool",
            "loadbalancerippools",
        );
        self.apply(&resource, None, name, Some(status)).await
    }

    /// `status` of an `L2AnnouncementPolicy` (`{"conditions": [...]}`).
    pub async fn apply_policy_status(&self, name: &str, status: Value) -> Result<(), StatusError> {
        let resource = gvk(
            "ferrite.dev",
            "v1alpha1",
            "L2AnnouncementPolicy",
            "l2announcementpolicies",
        );
        self.apply(&resource, None, name, Some(status)).await
    }

    /// Applies `status` (or, with `None`, gives up every status field this manager owns).
    pub async fn apply(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        status: Option<Value>,
    ) -> Result<(), StatusError> {
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        };
        let mut body = json!({
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "metadata": {"name": name},
        });
        if let Some(ns) = namespace {
            body["metadata"]["namespace"] = Value::String(ns.to_owned());
        }
        if let Some(status) = status {
            body["status"] = status;
        }
        let params = PatchParams::apply(&self.manager).force();
        let object = match namespace {
            Some(ns) => format!("{} {ns}/{name}", resource.kind),
            None => format!("{} {name}", resource.kind),
        };
        let mut delays = ExpBackoff::new(Duration::from_millis(100), Duration::from_secs(3));
        let mut attempt = 0;
        loop {
            attempt += 1;
            match api.patch_status(name, &params, &Patch::Apply(&body)).await {
                Ok(_) => {
                    debug!(%object, manager = %self.manager, "status applied");
                    return Ok(());
                }
                Err(error) if attempt < ATTEMPTS && retryable(&error) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(1));
                    warn!(%object, attempt, error = %error, retry_in_ms = delay.as_millis(),
                          "status write failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(source) => {
                    return Err(StatusError::Apply {
                        object,
                        attempts: attempt,
                        source,
                    });
                }
            }
        }
    }
}

/// Conflicts, throttling, server errors and transport failures are worth another try; a missing
/// object or an invalid request is not.
fn retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => matches!(status.code, 409 | 429 | 500 | 502 | 503 | 504),
        kube::Error::SerdeError(_) | kube::Error::BuildRequest(_) => false,
        _ => true,
    }
}
