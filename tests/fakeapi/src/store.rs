//! The object store: objects by resource/namespace/name, one resourceVersion counter for all
//! (like etcd's revision), the recent event history that watches resume from, and open watches.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value, json};

use crate::watchers::{Event, EventType, Watcher};
use crate::{
    error::ApiError,
    fields,
    ownership::{self, Managed},
    resources::{RESOURCES, Resource},
    rules::{check_version, restrict, spec_of},
    selector::Selector,
    time::now_rfc3339,
};

/// Events kept for resuming watches; older ones are compacted away (a resume from before them
/// gets `410 Gone`).
pub(crate) const HISTORY: usize = 10_000;

type Key = (&'static str, &'static str, String, String);

fn key(resource: &Resource, namespace: &str, name: &str) -> Key {
    (
        resource.group,
        resource.plural,
        namespace.to_owned(),
        name.to_owned(),
    )
}

#[derive(Clone, Debug)]
struct Stored {
    value: Value,
    managers: Vec<Managed>,
}

/// A list or watch request's scope.
#[derive(Clone, Debug)]
pub struct Query {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub labels: Selector,
    pub fields: Selector,
}

/// How a write is made.
#[derive(Clone, Debug)]
pub enum Write {
    /// POST.
    Create(Value),
    /// PUT (optimistic concurrency when the body has `metadata.resourceVersion`).
    Update(Value),
    /// `application/merge-patch+json` (and strategic merge, handled as a merge patch).
    MergePatch(Value),
    /// `application/apply-patch+yaml`.
    Apply { config: Value, force: bool },
}

#[derive(Default)]
pub struct Store {
    pub(crate) rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Stored>,
    pub(crate) history: VecDeque<Event>,
    /// A watch from a resourceVersion older than this gets `410 Gone`.
    pub(crate) compacted: u64,
    pub(crate) watchers: BTreeMap<u64, Watcher>,
    pub(crate) next_watcher: u64,
}

impl Store {
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn open_watches(&self) -> usize {
        self.watchers.len()
    }

    /// Whether `resource` is served now (a custom resource needs its CRD).
    pub fn served(&self, resource: &Resource) -> bool {
        if !resource.custom {
            return true;
        }
        let crd = RESOURCES
            .iter()
            .find(|r| r.plural == "customresourcedefinitions")
            .expect("CRDs are a served resource");
        self.objects
            .contains_key(&key(crd, "", &resource.crd_name()))
    }

    fn render(resource: &Resource, stored: &Stored, type_meta: bool) -> Value {
        let mut value = stored.value.clone();
        if let Value::Object(map) = &mut value {
            if type_meta {
                map.insert("apiVersion".into(), Value::String(resource.api_version()));
                map.insert("kind".into(), Value::String(resource.kind.to_owned()));
            } else {
                map.remove("apiVersion");
                map.remove("kind");
            }
        }
        let managed: Vec<Value> = stored
            .managers
            .iter()
            .map(|m| {
                let mut entry = json!({
                    "manager": m.manager,
                    "operation": m.operation,
                    "apiVersion": m.api_version,
                    "time": m.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields::fields_v1(&m.fields),
                });
                if !m.subresource.is_empty() {
                    entry["subresource"] = Value::String(m.subresource.clone());
                }
                entry
            })
            .collect();
        if !managed.is_empty()
            && let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.insert("managedFields".into(), Value::Array(managed));
        }
        value
    }

    pub fn get(
        &self,
        resource: &'static Resource,
        ns: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.objects
            .get(&key(resource, ns, name))
            .map(|s| Self::render(resource, s, true))
            .ok_or_else(|| ApiError::not_found(resource.plural, name))
    }

    /// A list: items sorted by namespace/name, `limit` per page with a `continue` token.
    pub fn list(
        &self,
        query: &Query,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<Value, ApiError> {
        let resource = query.resource;
        let (list_rv, after) = match continue_token {
            Some(token) => {
                let (rv, after) = decode_continue(token)
                    .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
                if rv < self.compacted {
                    return Err(ApiError::gone(
                        "The provided continue parameter is too old to display a consistent \
                         list result. You can start a new list without the continue parameter.",
                    ));
                }
                (rv, Some(after))
            }
            None => (self.rv, None),
        };
        let mut items = Vec::new();
        let mut next = None;
        for ((group, plural, ns, name), stored) in &self.objects {
            if *group != resource.group || *plural != resource.plural {
                continue;
            }
            if query.namespace.as_ref().is_some_and(|q| q != ns) {
                continue;
            }
            if after
                .as_ref()
                .is_some_and(|(a_ns, a_name)| (ns, name) <= (a_ns, a_name))
            {
                continue;
            }
            let rendered = Self::render(resource, stored, true);
            if !(query.labels.matches(&rendered) && query.fields.matches(&rendered)) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                next = Some(encode_continue(list_rv, &items_last(&items)));
                break;
            }
            // Built-in kinds come without apiVersion/kind in lists, as from a real server.
            let item = if resource.custom {
                rendered
            } else {
                Self::render(resource, stored, false)
            };
            items.push(item);
        }
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if let Some(next) = next {
            metadata["continue"] = Value::String(next);
        }
        Ok(json!({
            "kind": format!("{}List", resource.kind),
            "apiVersion": resource.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// Creates, replaces or patches one object (`subresource` is `"status"` or empty).
    pub fn write(
        &mut self,
        resource: &'static Resource,
        ns: &str,
        name: Option<&str>,
        subresource: &str,
        manager: &str,
        write: Write,
    ) -> Result<Value, ApiError> {
        if !(subresource.is_empty() || subresource == "status" && resource.status) {
            return Err(ApiError::no_resource());
        }
        let name = match (&write, name) {
            (_, Some(name)) => name.to_owned(),
            (Write::Create(body), None) => object_name(body)?,
            _ => return Err(ApiError::new(405, "MethodNotAllowed", "a name is required")),
        };
        if let Some(body_name) = body_of(&write)
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let existing = self.objects.get(&key(resource, ns, &name)).cloned();
        let (mut value, mut managers, old) = match (&write, existing) {
            (Write::Create(_), Some(_)) => {
                return Err(ApiError::already_exists(resource.plural, &name));
            }
            (Write::Create(_) | Write::Apply { .. }, None) if subresource.is_empty() => {
                (self.new_object(resource, ns, &name), Vec::new(), None)
            }
            (_, None) => return Err(ApiError::not_found(resource.plural, &name)),
            (_, Some(stored)) => (stored.value.clone(), stored.managers, Some(stored.value)),
        };
        let before = value.clone();
        match write {
            Write::Create(body) | Write::Update(body) => {
                check_version(&body, &before, resource, &name)?;
                let keep = value.clone();
                value = body;
                restrict(resource, subresource, &mut value, &keep);
                ownership::record_update(
                    &mut managers,
                    &before,
                    &value,
                    manager,
                    subresource,
                    resource,
                );
            }
            Write::MergePatch(patch) => {
                check_version(&patch, &before, resource, &name)?;
                fields::merge_patch(&mut value, &patch);
                let keep = before.clone();
                restrict(resource, subresource, &mut value, &keep);
                ownership::record_update(
                    &mut managers,
                    &before,
                    &value,
                    manager,
                    subresource,
                    resource,
                );
            }
            Write::Apply { mut config, force } => {
                check_version(&config, &before, resource, &name)?;
                let empty = Value::Object(Map::new());
                restrict(resource, subresource, &mut config, &empty);
                ownership::apply(
                    &mut value,
                    &mut managers,
                    &config,
                    manager,
                    subresource,
                    force,
                    resource,
                )?;
            }
        }
        self.finish(resource, ns, &name, value, managers, old, &before)
    }

    /// Creates or replaces a whole object, status included (the test's hand, not an API call).
    pub fn put(&mut self, resource: &'static Resource, value: Value) -> Result<Value, ApiError> {
        let name = object_name(&value)?;
        let ns = if resource.namespaced {
            value
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|ns| !ns.is_empty())
                .unwrap_or("default")
                .to_owned()
        } else {
            String::new()
        };
        let existing = self.objects.get(&key(resource, &ns, &name)).cloned();
        let (base, mut managers, old) = match existing {
            Some(stored) => (stored.value.clone(), stored.managers, Some(stored.value)),
            None => (self.new_object(resource, &ns, &name), Vec::new(), None),
        };
        ownership::record_update(&mut managers, &base, &value, "fakeapi-test", "", resource);
        self.finish(resource, &ns, &name, value, managers, old, &base)
    }

    fn new_object(&mut self, resource: &Resource, ns: &str, name: &str) -> Value {
        self.uid += 1;
        let mut metadata = json!({
            "name": name,
            "uid": format!("00000000-0000-4000-8000-{:012x}", self.uid),
            "creationTimestamp": now_rfc3339(),
            "generation": 1,
        });
        if resource.namespaced {
            metadata["namespace"] = Value::String(ns.to_owned());
        }
        json!({"apiVersion": resource.api_version(), "kind": resource.kind, "metadata": metadata})
    }

    /// Stores a written object: system metadata restored, a new resourceVersion when it changed,
    /// and an event.
    #[expect(
        clippy::too_many_arguments,
        reason = "the written object and where it goes"
    )]
    fn finish(
        &mut self,
        resource: &'static Resource,
        ns: &str,
        name: &str,
        mut value: Value,
        managers: Vec<Managed>,
        old: Option<Value>,
        base: &Value,
    ) -> Result<Value, ApiError> {
        let Value::Object(map) = &mut value else {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        };
        map.insert("apiVersion".into(), Value::String(resource.api_version()));
        map.insert("kind".into(), Value::String(resource.kind.to_owned()));
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(meta) = meta else {
            return Err(ApiError::bad_request("metadata must be an object"));
        };
        meta.remove("managedFields");
        for field in [
            "name",
            "uid",
            "creationTimestamp",
            "generation",
            "resourceVersion",
        ] {
            match base.pointer(&format!("/metadata/{field}")) {
                Some(v) => {
                    meta.insert(field.into(), v.clone());
                }
                None => {
                    meta.remove(field);
                }
            }
        }
        if resource.namespaced {
            meta.insert("namespace".into(), Value::String(ns.to_owned()));
        } else {
            meta.remove("namespace");
        }
        if let Some(old) = &old {
            if old == &value {
                let stored = Stored { value, managers };
                let rendered = Self::render(resource, &stored, true);
                self.objects.insert(key(resource, ns, name), stored);
                return Ok(rendered);
            }
            if spec_of(old) != spec_of(&value) {
                let generation = old.pointer("/metadata/generation").and_then(Value::as_u64);
                value["metadata"]["generation"] = json!(generation.unwrap_or(1) + 1);
            }
        }
        self.rv += 1;
        value["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let stored = Stored {
            value: value.clone(),
            managers,
        };
        let rendered = Self::render(resource, &stored, true);
        self.objects.insert(key(resource, ns, name), stored);
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.emit(Event {
            rv: self.rv,
            resource,
            namespace: ns.to_owned(),
            kind,
            old,
            new: rendered.clone(),
        });
        Ok(rendered)
    }

    pub fn delete(
        &mut self,
        resource: &'static Resource,
        ns: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let stored = self
            .objects
            .remove(&key(resource, ns, name))
            .ok_or_else(|| ApiError::not_found(resource.plural, name))?;
        self.rv += 1;
        let mut rendered = Self::render(resource, &stored, true);
        rendered["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        self.emit(Event {
            rv: self.rv,
            resource,
            namespace: ns.to_owned(),
            kind: EventType::Deleted,
            old: Some(rendered.clone()),
            new: rendered.clone(),
        });
        if resource.plural == "customresourcedefinitions" {
            // The resource is no longer served: its watches end, as on a real server.
            let served: Vec<&'static Resource> = RESOURCES
                .iter()
                .filter(|r| r.custom && r.crd_name() == name)
                .collect();
            self.watchers
                .retain(|_, w| !served.iter().any(|r| std::ptr::eq(*r, w.resource)));
        }
        Ok(rendered)
    }
}

fn items_last(items: &[Value]) -> (String, String) {
    let last = items.last();
    let text = |p: &str| {
        last.and_then(|v| v.pointer(p))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (text("/metadata/namespace"), text("/metadata/name"))
}

fn encode_continue(rv: u64, (ns, name): &(String, String)) -> String {
    let raw = format!("{rv}\n{ns}\n{name}");
    raw.bytes().fold(String::new(), |mut out, b| {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn decode_continue(token: &str) -> Option<(u64, (String, String))> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let mut parts = text.splitn(3, '\n');
    let rv = parts.next()?.parse().ok()?;
    Some((rv, (parts.next()?.to_owned(), parts.next()?.to_owned())))
}

fn body_of(write: &Write) -> &Value {
    match write {
        Write::Create(v) | Write::Update(v) | Write::MergePatch(v) => v,
        Write::Apply { config, .. } => config,
    }
}

fn object_name(body: &Value) -> Result<String, ApiError> {
    match body.pointer("/metadata/name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err(ApiError::invalid(
            "metadata.name: Required value: name is required",
        )),
    }
}
