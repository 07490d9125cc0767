//! Status writes by server-side apply, with retries: the API the rest of the agent uses to report
//! on services, pools and policies.

use std::time::Duration;

use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
    core::{ApiResource, DynamicObject, GroupVersionKind},
};
use serde_json::{Value, json};
use tracing::{debug, warn};

use super::backoff::ExpBackoff;

/// The field manager of the agent's status writes (one for every agent of the cluster, so a new
/// Lease holder's applies replace, and can remove, what the previous holder wrote).
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
    #[error("reading {object} failed: {source}")]
    Get { object: String, source: kube::Error },
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

fn gvk(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// `v1 Service`.
pub fn service_resource() -> ApiResource {
    gvk("", "v1", "Service", "services")
}

/// `ferrite.dev/v1alpha1 LoadBalancerIPPool`.
pub fn pool_resource() -> ApiResource {
    gvk(
        "ferrite.dev",
        "v1alpha1",
        "LoadBalancerIPPool",
        "loadbalancerippools",
    )
}

fn describe(resource: &ApiResource, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{} {ns}/{name}", resource.kind),
        None => format!("{} {name}", resource.kind),
    }
}

impl StatusWriter {
    pub fn new(client: Client, field_manager: impl Into<String>) -> Self {
        Self {
            client,
            manager: field_manager.into(),
        }
    }

    /// The field manager.
    pub fn manager(&self) -> &str {
        &self.manager
    }

    /// `status` of a `v1 Service` (e.g. `{"loadBalancer": {"ingress": [...]}, "conditions":
    /// [...]}`; `None` removes every status field this manager owns). Returns the object as the
    /// server has it after the write.
    pub async fn apply_service_status(
        &self,
        namespace: &str,
        name: &str,
        status: Option<Value>,
    ) -> Result<Value, StatusError> {
        self.apply_object(&service_resource(), Some(namespace), name, status)
            .await
    }

    /// `status` of a `LoadBalancerIPPool` (`{"conditions": [...]}`; `None` as for services).
    /// Returns the object after the write.
    pub async fn apply_pool_status(
        &self,
        name: &str,
        status: Option<Value>,
    ) -> Result<Value, StatusError> {
        self.apply_object(&pool_resource(), None, name, status)
            .await
    }

    /// The object (`managedFields` included), `None` when it does not exist. Not retried: the
    /// caller reads again when it next needs to.
    pub async fn get(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, StatusError> {
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        };
        match api.get_opt(name).await {
            Ok(object) => Ok(object.map(|o| serde_json::to_value(o).unwrap_or(Value::Null))),
            Err(source) => Err(StatusError::Get {
                object: describe(resource, namespace, name),
                source,
            }),
        }
    }

    /// Every object of `resource` (`managedFields` included), in one request.
    pub async fn list(&self, resource: &ApiResource) -> Result<Vec<Value>, StatusError> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), resource);
        match api.list(&ListParams::default()).await {
            Ok(list) => Ok(list
                .items
                .into_iter()
                .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
                .collect()),
            Err(source) => Err(StatusError::Get {
                object: format!("every {}", resource.kind),
                source,
            }),
        }
    }

    /// `status` of an `L2AnnouncementPolicy` (`{"conditions": [...]}`).
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "for the L2 policy status reporter, not wired yet")
    )]
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
        self.apply_object(resource, namespace, name, status)
            .await
            .map(drop)
    }

    /// [`apply`](Self::apply), returning the object as the server has it after the write.
    pub async fn apply_object(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        status: Option<Value>,
    ) -> Result<Value, StatusError> {
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
        let object = describe(resource, namespace, name);
        let mut delays = ExpBackoff::new(Duration::from_millis(100), Duration::from_secs(3));
        let mut attempt = 0;
        loop {
            attempt += 1;
            match api.patch_status(name, &params, &Patch::Apply(&body)).await {
                Ok(written) => {
                    debug!(%object, manager = %self.manager, "status applied");
                    return Ok(serde_json::to_value(written).unwrap_or(Value::Null));
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
