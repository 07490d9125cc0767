//! `ferrite.dev/v1alpha1 LoadBalancerIPPool` (and, for migration, Cilium's
//! `cilium.io/v2alpha1|v2 CiliumLoadBalancerIPPool`, same fields) → [`model::IpPool`].
//!
//! Lenient on purpose: only a missing name rejects the object. Every other field that cannot be
//! used becomes a [`PoolProblem`] on the pool, so one bad pool never rejects its file and the
//! problem shows up as the pool's `InvalidSpec` condition.

use serde_json::{Map, Value};
use smol_str::SmolStr;

use super::{Decoded, Object, ObjectError, ObjectMeta, decode_field, missing, selector, take};
use crate::model::{self, IpBlock, PoolProblem, ServiceName};

const FERRITE_VERSIONS: &[&str] = &["ferrite.dev/v1alpha1"];
/// Cilium moved the kind from v2alpha1 to v2; both carry the same spec.
const CILIUM_VERSIONS: &[&str] = &["cilium.io/v2alpha1", "cilium.io/v2"];

pub(super) fn decode(
    api_version: &str,
    kind: &str,
    mut value: Value,
) -> Result<Decoded, ObjectError> {
    let (versions, kind_name) = if kind == "LoadBalancerIPPool" {
        (FERRITE_VERSIONS, "LoadBalancerIPPool")
    } else {
        (CILIUM_VERSIONS, "CiliumLoadBalancerIPPool")
    };
    if !versions.contains(&api_version) {
        return Err(ObjectError::UnsupportedVersion {
            api_version: api_version.to_owned(),
            kind: kind_name,
            supported: versions[0],
        });
    }
    let metadata: ObjectMeta = decode_field(take(&mut value, "metadata"), "metadata")?;
    let name = match metadata.name.as_deref() {
        None | Some("") => return Err(missing("metadata.name")),
        Some(name) => SmolStr::new(name),
    };
    let mut problems = Problems::default();
    let created_unix = metadata.created_unix().unwrap_or_else(|error| {
        problems.push("metadata.creationTimestamp", error.to_string());
        None
    });
    let mut pool = model::IpPool {
        name: name.clone(),
        created_unix,
        ..model::IpPool::default()
    };
    match take(&mut value, "spec") {
        Value::Object(spec) => read_spec(&spec, &mut pool, &mut problems),
        Value::Null => problems.push("spec", "is required (with at least one block)"),
        _ => problems.push("spec", "must be a mapping"),
    }
    pool.problems = problems.0;
    Ok(Decoded::Object(Object::Pool(
        ServiceName::new("", name),
        pool,
    )))
}

#[derive(Default)]
struct Problems(Vec<PoolProblem>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(PoolProblem {
            field: field.into(),
            message: message.into(),
        });
    }
}

fn read_spec(spec: &Map<String, Value>, pool: &mut model::IpPool, problems: &mut Problems) {
    // `cidrs` is the field Cilium had before `blocks` (same entries); both are read.
    for field in ["blocks", "cidrs"] {
        match spec.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Array(entries)) => {
                for (index, entry) in entries.iter().enumerate() {
                    let at = format!("spec.{field}[{index}]");
                    match block(entry) {
                        Ok(block) => pool.blocks.push(block),
                        Err(message) => problems.push(at, message),
                    }
                }
            }
            Some(_) => problems.push(format!("spec.{field}"), "must be a list"),
        }
    }
    let block_problems = problems
        .0
        .iter()
        .any(|p| p.field.starts_with("spec.blocks") || p.field.starts_with("spec.cidrs"));
    if pool.blocks.is_empty() && !block_problems {
        problems.push("spec.blocks", "no blocks: the pool has no addresses");
    }
    // A selector that does not parse leaves the pool without one; such a pool makes no new
    // allocations, and what it already handed out stays.
    match selector::optional(spec.get("serviceSelector"), "spec.serviceSelector") {
        Ok(selector) => pool.service_selector = selector,
        Err(ObjectError::Invalid { field, message }) => problems.push(field, message),
        Err(ObjectError::Missing { field }) => problems.push(field, "is required"),
        Err(other) => problems.push("spec.serviceSelector", other.to_string()),
    }
    match spec.get("allowFirstLastIPs") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) if text == "Yes" => pool.allow_first_last_ips = true,
        Some(Value::String(text)) if text == "No" => pool.allow_first_last_ips = false,
        Some(Value::Bool(flag)) => pool.allow_first_last_ips = *flag,
        Some(other) => problems.push(
            "spec.allowFirstLastIPs",
            format!("`{other}` is not Yes or No"),
        ),
    }
    match spec.get("disabled") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(flag)) => pool.disabled = *flag,
        Some(other) => problems.push("spec.disabled", format!("`{other}` is not true or false")),
    }
    match spec.get("priority") {
        None | Some(Value::Null) => {}
        Some(Value::Number(number)) => match number.as_i64().and_then(|n| i32::try_from(n).ok()) {
            Some(priority) => pool.priority = priority,
            None => problems.push("spec.priority", format!("{number} is not a 32-bit integer")),
        },
        Some(other) => problems.push("spec.priority", format!("`{other}` is not an integer")),
    }
}

/// One block: `{cidr}` or `{start, stop}`.
fn block(entry: &Value) -> Result<IpBlock, String> {
    let Value::Object(fields) = entry else {
        return Err("must be a mapping with cidr, or start and stop".into());
    };
    let text = |key: &str| -> Result<Option<&str>, String> {
        match fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.as_str())),
            Some(other) => Err(format!("{key}: `{other}` is not a string")),
        }
    };
    IpBlock::parse(text("cidr")?, text("start")?, text("stop")?).map_err(|error| error.to_string())
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
