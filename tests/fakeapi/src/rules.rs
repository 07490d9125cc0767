//! Rules every write follows: names, optimistic concurrency, the status subresource split, and
//! what `generation` tracks.

use serde_json::Value;

use crate::{error::ApiError, resources::Resource};

/// Everything but metadata and status (what `generation` tracks).
pub fn spec_of(value: &Value) -> Value {
    let mut v = value.clone();
    if let Value::Object(map) = &mut v {
        map.remove("metadata");
        map.remove("status");
    }
    v
}

/// Optimistic concurrency: a write naming a resourceVersion must name the current one.
pub fn check_version(
    body: &Value,
    current: &Value,
    resource: &Resource,
    name: &str,
) -> Result<(), ApiError> {
    let wanted = body
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    let have = current
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    match wanted {
        Some(w) if !w.is_empty() && Some(w) != have => {
            Err(ApiError::conflict(resource.plural, name))
        }
        _ => Ok(()),
    }
}

/// A write to the main resource keeps the old status, a write to `/status` keeps everything else
/// (for kinds with a status subresource).
pub fn restrict(resource: &Resource, subresource: &str, value: &mut Value, keep: &Value) {
    if !resource.status {
        return;
    }
    let Value::Object(map) = value else { return };
    if subresource == "status" {
        let status = map.remove("status");
        let mut kept = keep.clone();
        if let Value::Object(kept_map) = &mut kept {
            match status {
                Some(status) => {
                    kept_map.insert("status".into(), status);
                }
                None => {
                    kept_map.remove("status");
                }
            }
            if let Some(meta) = map.get("metadata") {
                kept_map.entry("metadata").or_insert_with(|| meta.clone());
            }
        }
        *value = kept;
    } else {
        match keep.get("status") {
            Some(status) => {
                map.insert("status".into(), status.clone());
            }
            None => {
                map.remove("status");
            }
        }
    }
}
