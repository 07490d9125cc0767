//! Field paths and sets, as server-side apply tracks ownership (`managedFields`), plus JSON merge
//! patch (RFC 7386) and the apply merge.
//!
//! Lists are merged the way Kubernetes' schemas declare them for the kinds ferrite writes: a list
//! whose items all have a string `type` (conditions, node addresses) is a map keyed by `type`; one
//! whose items all have a string `name` (ports, containers) is keyed by `name`; any other list is
//! atomic.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// One step of a field path: a map field, or a keyed list item (`{"type":"Ready"}`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    Field(String),
    Key(String),
}

pub type FieldPath = Vec<Step>;
pub type FieldSet = BTreeSet<FieldPath>;

/// Fields the server owns: never part of a manager's set.
fn system_field(path: &[Step]) -> bool {
    let field = |i: usize| match path.get(i) {
        Some(Step::Field(f)) => Some(f.as_str()),
        _ => None,
    };
    match (field(0), field(1)) {
        (Some("apiVersion" | "kind"), None) => true,
        (Some("metadata"), Some(f)) => matches!(
            f,
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "managedFields"
                | "selfLink"
        ),
        _ => false,
    }
}

/// The key of a list field: `conditions` is always a map keyed by `type` (also when empty, so
/// that applying no conditions leaves other managers' conditions alone).
fn list_key_of(field: Option<&str>, items: &[Value]) -> Option<&'static str> {
    if field == Some("conditions") {
        return Some("type");
    }
    list_key(items)
}

fn list_key(items: &[Value]) -> Option<&'static str> {
    if items.is_empty() {
        return None;
    }
    ["type", "name"].into_iter().find(|key| {
        items
            .iter()
            .all(|i| i.get(*key).is_some_and(Value::is_string))
    })
}

fn item_step(item: &Value, key: &str) -> Step {
    let mut map = Map::new();
    map.insert(
        key.to_owned(),
        item.get(key).cloned().unwrap_or(Value::Null),
    );
    Step::Key(Value::Object(map).to_string())
}

/// The leaf fields of `value` (and the item markers of keyed lists).
pub fn field_set(value: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    collect(value, &mut Vec::new(), &mut out);
    out.retain(|p| !p.is_empty() && !system_field(p));
    out
}

fn collect(value: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                prefix.push(Step::Field(k.clone()));
                collect(v, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            let field = match prefix.last() {
                Some(Step::Field(f)) => Some(f.as_str()),
                _ => None,
            };
            if let Some(key) = list_key_of(field, items) {
                for item in items {
                    prefix.push(item_step(item, key));
                    out.insert(prefix.clone());
                    collect(item, prefix, out);
                    prefix.pop();
                }
            } else {
                out.insert(prefix.clone());
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The value at `path`, if any.
pub fn get<'a>(value: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut at = value;
    for step in path {
        at = match step {
            Step::Field(f) => at.get(f)?,
            Step::Key(k) => find_item(at.as_array()?, k)?,
        };
    }
    Some(at)
}

fn find_item<'a>(items: &'a [Value], key: &str) -> Option<&'a Value> {
    let key: Map<String, Value> = serde_json::from_str(key).ok()?;
    items
        .iter()
        .find(|i| key.iter().all(|(k, v)| i.get(k) == Some(v)))
}

/// Removes the field or list item at `path` (nothing if it is absent).
pub fn remove(value: &mut Value, path: &[Step]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut at = value;
    for step in parent_path {
        let next = match step {
            Step::Field(f) => at.get_mut(f),
            Step::Key(k) => {
                let key: Option<Map<String, Value>> = serde_json::from_str(k).ok();
                match (at.as_array_mut(), key) {
                    (Some(items), Some(key)) => items
                        .iter_mut()
                        .find(|i| key.iter().all(|(kk, v)| i.get(kk) == Some(v))),
                    _ => None,
                }
            }
        };
        let Some(next) = next else { return };
        at = next;
    }
    match last {
        Step::Field(f) => {
            if let Some(map) = at.as_object_mut() {
                map.remove(f);
            }
        }
        Step::Key(k) => {
            let key: Option<Map<String, Value>> = serde_json::from_str(k).ok();
            if let (Some(items), Some(key)) = (at.as_array_mut(), key) {
                items.retain(|i| !key.iter().all(|(kk, v)| i.get(kk) == Some(v)));
            }
        }
    }
}

/// Paths whose value differs between `old` and `new` (changed, added or removed leaves).
pub fn changed_fields(old: &Value, new: &Value) -> FieldSet {
    let mut all = field_set(old);
    all.extend(field_set(new));
    all.retain(|p| get(old, p) != get(new, p));
    all
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else { return };
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Merges an applied configuration into `target`: maps merge, keyed lists merge item by item,
/// everything else is replaced.
pub fn apply_merge(target: &mut Value, applied: &Value) {
    merge_field(target, applied, None);
}

fn merge_field(target: &mut Value, applied: &Value, field: Option<&str>) {
    match (target, applied) {
        (Value::Object(map), Value::Object(applied)) => {
            for (k, v) in applied {
                match map.get_mut(k) {
                    Some(existing) => merge_field(existing, v, Some(k)),
                    None => {
                        map.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(items), Value::Array(applied)) => {
            let key = list_key_of(field, applied)
                .filter(|k| items.is_empty() || list_key_of(field, items) == Some(*k));
            let Some(key) = key else {
                items.clone_from(applied);
                return;
            };
            for item in applied {
                match items.iter_mut().find(|i| i.get(key) == item.get(key)) {
                    Some(existing) => merge_field(existing, item, None),
                    None => items.push(item.clone()),
                }
            }
        }
        (target, applied) => *target = applied.clone(),
    }
}

/// `fieldsV1` JSON for a set: `{"f:status":{"f:conditions":{"k:{\"type\":\"X\"}":{".":{}}}}}`.
pub fn fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        insert_path(&mut root, path);
    }
    Value::Object(root)
}

fn insert_path(at: &mut Map<String, Value>, path: &[Step]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let name = match first {
        Step::Field(f) => format!("f:{f}"),
        Step::Key(k) => format!("k:{k}"),
    };
    let entry = at.entry(name).or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(next) = entry {
        if rest.is_empty() && matches!(first, Step::Key(_)) {
            next.insert(".".into(), Value::Object(Map::new()));
        }
        insert_path(next, rest);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn conditions_are_keyed_by_type_and_merge() {
        let mut obj = json!({"status": {"conditions": [
            {"type": "A", "status": "True"}, {"type": "B", "status": "False"}]}});
        apply_merge(
            &mut obj,
            &json!({"status": {"conditions": [
            {"type": "B", "status": "True"}, {"type": "C", "status": "True"}]}}),
        );
        let types: Vec<_> = obj["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{}={}",
                    c["type"].as_str().unwrap(),
                    c["status"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(types, ["A=True", "B=True", "C=True"]);
        let set = field_set(&json!({"status": {"conditions": [{"type": "B", "status": "True"}]}}));
        let item = vec![
            Step::Field("status".into()),
            Step::Field("conditions".into()),
            Step::Key(r#"{"type":"B"}"#.into()),
        ];
        assert!(set.contains(&item));
        remove(&mut obj, &item);
        assert_eq!(obj["status"]["conditions"].as_array().unwrap().len(), 2);
        assert_eq!(
            fields_v1(&set)["f:status"]["f:conditions"][r#"k:{"type":"B"}"#]["."],
            json!({})
        );
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut obj = json!({"a": {"b": 1, "c": 2}, "d": [1, 2]});
        merge_patch(&mut obj, &json!({"a": {"b": null, "e": 3}, "d": [3]}));
        assert_eq!(obj, json!({"a": {"c": 2, "e": 3}, "d": [3]}));
    }

    #[test]
    fn changed_fields_name_only_differences() {
        let old =
            json!({"metadata": {"resourceVersion": "1", "labels": {"a": "1"}}, "spec": {"x": 1}});
        let new =
            json!({"metadata": {"resourceVersion": "2", "labels": {"a": "2"}}, "spec": {"x": 1}});
        let changed = changed_fields(&old, &new);
        assert_eq!(changed.len(), 1, "{changed:?}");
    }
}
