//! `ferrite.dev/v1alpha1 L2AnnouncementPolicy` (and Cilium's `cilium.io/v2alpha1
//! CiliumL2AnnouncementPolicy`, same fields) → [`model::L2Policy`]. Strict: a field that cannot be
//! used rejects the policy (the kube source reports that as a condition on it).

use serde_json::Value;
use smol_str::SmolStr;

use super::{ObjectError, ObjectMeta, decode_field, invalid, missing, selector, take};
use crate::model;

pub(super) const FERRITE_VERSION: &str = "ferrite.dev/v1alpha1";
pub(super) const CILIUM_VERSIONS: &[&str] = &["cilium.io/v2alpha1", "cilium.io/v2"];

pub(super) fn decode(mut value: Value) -> Result<model::L2Policy, ObjectError> {
    let metadata: ObjectMeta = decode_field(take(&mut value, "metadata"), "metadata")?;
    let name = match metadata.name.as_deref() {
        None | Some("") => return Err(missing("metadata.name")),
        Some(name) => SmolStr::new(name),
    };
    let spec = match take(&mut value, "spec") {
        Value::Object(spec) => spec,
        Value::Null => serde_json::Map::new(),
        _ => return Err(invalid("spec", "must be a mapping")),
    };
    let flag = |key: &str| match spec.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(invalid(
            format!("spec.{key}"),
            format!("`{other}` is not true or false"),
        )),
    };
    let mut interfaces = Vec::new();
    match spec.get("interfaces") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (index, entry) in list.iter().enumerate() {
                match entry {
                    Value::String(text) if !text.is_empty() => interfaces.push(SmolStr::new(text)),
                    other => {
                        return Err(invalid(
                            format!("spec.interfaces[{index}]"),
                            format!("`{other}` is not an interface name pattern"),
                        ));
                    }
                }
            }
        }
        Some(_) => return Err(invalid("spec.interfaces", "must be a list of strings")),
    }
    Ok(model::L2Policy {
        name,
        service_selector: selector::optional(spec.get("serviceSelector"), "spec.serviceSelector")?,
        node_selector: selector::optional(spec.get("nodeSelector"), "spec.nodeSelector")?,
        interfaces,
        external_ips: flag("externalIPs")?,
        load_balancer_ips: flag("loadBalancerIPs")?,
    })
}
