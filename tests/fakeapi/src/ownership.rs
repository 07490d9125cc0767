//! Field ownership per manager (`managedFields`): what updates take over and what server-side
//! apply checks, removes and merges.

use serde_json::Value;

use crate::{
    error::ApiError,
    fields::{self, FieldSet},
    resources::Resource,
    time::now_rfc3339,
};

/// One manager's fields of an object.
#[derive(Clone, Debug)]
pub struct Managed {
    pub manager: String,
    pub operation: &'static str,
    pub subresource: String,
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
}

/// Ownership after an update (PUT or merge patch): changed fields move to `manager`.
pub fn record_update(
    managers: &mut Vec<Managed>,
    old: &Value,
    new: &Value,
    manager: &str,
    subresource: &str,
    resource: &Resource,
) {
    let changed = fields::changed_fields(old, new);
    if changed.is_empty() {
        return;
    }
    for m in managers.iter_mut() {
        m.fields.retain(|p| !changed.contains(p));
    }
    let gone: FieldSet = changed
        .iter()
        .filter(|p| fields::get(new, p).is_none())
        .cloned()
        .collect();
    let owned: FieldSet = changed.difference(&gone).cloned().collect();
    entry(managers, manager, "Update", subresource, resource)
        .fields
        .extend(owned);
    managers.retain(|m| !m.fields.is_empty());
}

fn entry<'a>(
    managers: &'a mut Vec<Managed>,
    manager: &str,
    operation: &'static str,
    subresource: &str,
    resource: &Resource,
) -> &'a mut Managed {
    let at = managers.iter().position(|m| {
        m.manager == manager && m.operation == operation && m.subresource == subresource
    });
    let index = at.unwrap_or_else(|| {
        managers.push(Managed {
            manager: manager.to_owned(),
            operation,
            subresource: subresource.to_owned(),
            api_version: resource.api_version(),
            time: String::new(),
            fields: FieldSet::new(),
        });
        managers.len() - 1
    });
    let m = &mut managers[index];
    m.time = now_rfc3339();
    m
}

/// Server-side apply: conflicts with other managers' differing fields (409 unless forced),
/// removal of fields this manager applied before and no longer does, then the merge.
pub fn apply(
    value: &mut Value,
    managers: &mut Vec<Managed>,
    config: &Value,
    manager: &str,
    subresource: &str,
    force: bool,
    resource: &Resource,
) -> Result<(), ApiError> {
    let applied = fields::field_set(config);
    let mut conflicts = Vec::new();
    for m in managers.iter() {
        if m.manager == manager && m.operation == "Apply" {
            continue;
        }
        for path in &m.fields {
            let overlaps = applied.iter().any(|p| p.starts_with(path));
            if overlaps && fields::get(value, path) != fields::get(config, path) {
                conflicts.push(format!(
                    "conflict with \"{}\": {}",
                    m.manager,
                    describe(path)
                ));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict(s): {}",
                conflicts.len(),
                conflicts.join("; ")
            ),
        ));
    }
    for m in managers.iter_mut() {
        if !(m.manager == manager && m.operation == "Apply") {
            m.fields
                .retain(|p| !applied.iter().any(|a| a.starts_with(p)));
        }
    }
    let previous = managers
        .iter()
        .find(|m| m.manager == manager && m.operation == "Apply" && m.subresource == subresource)
        .map(|m| m.fields.clone())
        .unwrap_or_default();
    for path in previous.difference(&applied) {
        let others_own = managers.iter().any(|m| {
            !(m.manager == manager && m.operation == "Apply")
                && m.fields.iter().any(|p| p.starts_with(path))
        });
        if !others_own {
            fields::remove(value, path);
        }
    }
    fields::apply_merge(value, config);
    entry(managers, manager, "Apply", subresource, resource).fields = applied;
    managers.retain(|m| !m.fields.is_empty());
    Ok(())
}

fn describe(path: &[fields::Step]) -> String {
    path.iter()
        .map(|s| match s {
            fields::Step::Field(f) => format!(".{f}"),
            fields::Step::Key(k) => format!("[{k}]"),
        })
        .collect()
}
