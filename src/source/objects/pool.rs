//! `ferrite.dev/v1alpha1 LoadBalancerIPPool` (and, for migration, Cilium's
//! `cilium.io/v2alpha1|v2 CiliumLoadBalancerIPPool`, same fields) → [`model::IpPool`].
//!
//! Lenient on purpose: only a missing name rejects the object. Every other field that cannot be
//! used becomes a [`PoolProblem`] on the pool, so one bad pool never rejects its file and the
//! problem shows up as the pool's `InvalidSpec` condition.

use serde_json::{Map, Value};
use smol_str::SmolStr;

use super::{Decoded, Object, ObjectError, ObjectMeta, decode_field, missing, take};
use crate::model::{self, IpBlock, LabelRequirement, LabelSelector, PoolProblem, ServiceName};

const FERRITE_VERSIONS: &[&str] = &["ferrite.dev/v1alpha1"];
/// Cilium moved the kind from v2alpha1 to v2; both carry the same spec.
const CILIUM_VERSIONS: &[&str] = &["cilium.io/v2alpha1", "cilium.io/v2"];

pub(super) fn decode(api_version: &str, kind: &str, mut value: Value) -> Result<Decoded, ObjectError> {
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
    match spec.get("serviceSelector") {
        None | Some(Value::Null) => {}
        Some(Value::Object(selector)) => {
            pool.service_selector = Some(label_selector(selector, problems));
        }
        // The pool makes no new allocations while it has a problem; what it already handed out
        // stays (a selector that did not parse cannot take addresses away).
        Some(_) => problems.push("spec.serviceSelector", "must be a mapping"),
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
        Some(Value::Number(number)) => {
            match number.as_i64().and_then(|n| i32::try_from(n).ok()) {
                Some(priority) => pool.priority = priority,
                None => problems.push("spec.priority", format!("{number} is not a 32-bit integer")),
            }
        }
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

/// `matchLabels` + `matchExpressions`; unusable terms are recorded and left out.
fn label_selector(selector: &Map<String, Value>, problems: &mut Problems) -> LabelSelector {
    const FIELD: &str = "spec.serviceSelector";
    let mut out = LabelSelector::default();
    match selector.get("matchLabels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => {
            for (key, value) in labels {
                let value = match value {
                    Value::String(text) => SmolStr::new(text),
                    Value::Number(number) => SmolStr::new(number.to_string()),
                    Value::Bool(flag) => SmolStr::new(flag.to_string()),
                    other => {
                        problems.push(
                            format!("{FIELD}.matchLabels[{key}]"),
                            format!("`{other}` is not a label value"),
                        );
                        continue;
                    }
                };
                if key.is_empty() {
                    problems.push(format!("{FIELD}.matchLabels"), "empty label key");
                    continue;
                }
                out.match_labels.insert(SmolStr::new(key), value);
            }
        }
        Some(_) => problems.push(format!("{FIELD}.matchLabels"), "must be a mapping"),
    }
    match selector.get("matchExpressions") {
        None | Some(Value::Null) => {}
        Some(Value::Array(expressions)) => {
            for (index, expression) in expressions.iter().enumerate() {
                let at = format!("{FIELD}.matchExpressions[{index}]");
                match requirement(expression) {
                    Ok(requirement) => out.match_expressions.push(requirement),
                    Err(message) => problems.push(at, message),
                }
            }
        }
        Some(_) => problems.push(format!("{FIELD}.matchExpressions"), "must be a list"),
    }
    out
}

fn requirement(expression: &Value) -> Result<LabelRequirement, String> {
    let Value::Object(fields) = expression else {
        return Err("must be a mapping with key, operator and values".into());
    };
    let string = |key: &str| match fields.get(key) {
        Some(Value::String(text)) => Ok(text.as_str()),
        None | Some(Value::Null) => Err(format!("{key} is required")),
        Some(other) => Err(format!("{key}: `{other}` is not a string")),
    };
    let values: Vec<String> = match fields.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => values
            .iter()
            .map(|value| match value {
                Value::String(text) => Ok(text.clone()),
                Value::Number(number) => Ok(number.to_string()),
                Value::Bool(flag) => Ok(flag.to_string()),
                other => Err(format!("values: `{other}` is not a label value")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("values must be a list".into()),
    };
    LabelRequirement::new(string("key")?, string("operator")?, values)
        .map_err(|error| error.to_string())
}
