//! One manifest file's text → ferrite objects. Pure: no IO besides debug logs.
//!
//! A file holds YAML documents separated by `---` (or, for `*.json`, one or more JSON values).
//! Each document is one object, or a `List` (`kind: List`, `kind: ServiceList`, ...) whose `items`
//! are objects. A file is atomic: the first invalid document rejects all of it.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_json::Value;
use tracing::debug;

use super::objects::{self, Decoded, Object, ObjectError};
use super::yaml_depth;

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{}: document {document}: invalid YAML: {source}", path.display())]
    Yaml {
        path: PathBuf,
        document: usize,
        source: serde_yaml_ng::Error,
    },
    #[error("{}: document {document}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        document: usize,
        source: serde_json::Error,
    },
    #[error("{}: line {line}: {}", path.display(), too_deep_message())]
    TooDeep { path: PathBuf, line: usize },
    #[error("{}: {object}: {source}", path.display())]
    Object {
        path: PathBuf,
        object: Box<ObjectRef>,
        source: ObjectError,
    },
}

impl ParseError {
    /// The error without the file name, for reports that already show it.
    pub fn message(&self) -> String {
        match self {
            Self::Yaml {
                document, source, ..
            } => {
                format!("document {document}: invalid YAML: {source}")
            }
            Self::Json {
                document, source, ..
            } => {
                format!("document {document}: invalid JSON: {source}")
            }
            Self::TooDeep { line, .. } => format!("line {line}: {}", too_deep_message()),
            Self::Object { object, source, .. } => format!("{object}: {source}"),
        }
    }
}

fn too_deep_message() -> String {
    format!(
        "flow collections (`[`, `{{`) nest deeper than {} levels; the file is not parsed",
        yaml_depth::MAX_FLOW_DEPTH
    )
}

/// Where an object sits in its file, and what it is when that is known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectRef {
    /// 1-based position of the document in the file.
    pub document: usize,
    /// 0-based index in a List's `items`.
    pub item: Option<usize>,
    pub kind: Option<String>,
    /// `name`, or `namespace/name` when the namespace is written.
    pub name: Option<String>,
}

impl ObjectRef {
    fn of(document: usize, item: Option<usize>, value: &Value) -> Self {
        let text = |pointer: &str| {
            value
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let name = text("/metadata/name").map(|name| match text("/metadata/namespace") {
            Some(namespace) if !namespace.is_empty() => format!("{namespace}/{name}"),
            _ => name,
        });
        Self {
            document,
            item,
            kind: text("/kind"),
            name,
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(item) = self.item {
            write!(f, ", items[{item}]")?;
        }
        match (&self.kind, &self.name) {
            (Some(kind), Some(name)) => write!(f, " ({kind} {name})"),
            (Some(kind), None) => write!(f, " ({kind})"),
            (None, Some(name)) => write!(f, " ({name})"),
            (None, None) => Ok(()),
        }
    }
}

/// Parses one file. `*.json` files are read as JSON, everything else as YAML.
pub fn parse_manifest(path: &Path, text: &str) -> Result<Vec<Object>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut file = FileParser {
        path,
        objects: Vec::new(),
    };
    let is_json = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    if is_json {
        let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        for (index, document) in stream.enumerate() {
            let document_number = index + 1;
            let value = document.map_err(|source| ParseError::Json {
                path: path.to_owned(),
                document: document_number,
                source,
            })?;
            file.document(document_number, value)?;
        }
    } else {
        if let Some(line) = yaml_depth::too_deep(text) {
            return Err(ParseError::TooDeep {
                path: path.to_owned(),
                line,
            });
        }
        let may_merge = text.contains("<<");
        for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let document_number = index + 1;
            let value = yaml_document(document, may_merge).map_err(|source| ParseError::Yaml {
                path: path.to_owned(),
                document: document_number,
                source,
            })?;
            file.document(document_number, value)?;
        }
    }
    Ok(file.objects)
}

/// Reads one YAML document. Merge keys (`<<: *anchor`) are applied when the file may use them
/// (that path builds an intermediate YAML tree, so it is taken only when needed).
fn yaml_document(
    document: serde_yaml_ng::Deserializer<'_>,
    may_merge: bool,
) -> Result<Value, serde_yaml_ng::Error> {
    if may_merge {
        let mut yaml = serde_yaml_ng::Value::deserialize(document)?;
        yaml.apply_merge()?;
        serde_yaml_ng::from_value(yaml)
    } else {
        Value::deserialize(document)
    }
}

struct FileParser<'a> {
    path: &'a Path,
    objects: Vec<Object>,
}

impl FileParser<'_> {
    fn document(&mut self, document: usize, mut value: Value) -> Result<(), ParseError> {
        if value.is_null() {
            // An empty document (`---` at the end, comments only).
            return Ok(());
        }
        // `Some(item kind)` for a list: `None` for a generic `List` (items carry their own kind),
        // `Some("Service")` for a `ServiceList`.
        let list_kind = match (
            value.get("kind").and_then(Value::as_str),
            value.get("items"),
        ) {
            (Some("List"), _) => Some(None),
            (Some(kind), Some(_)) => kind.strip_suffix("List").map(|item| Some(item.to_owned())),
            _ => None,
        };
        let Some(item_kind) = list_kind else {
            return self.object(document, None, value);
        };
        let api_version = value.get("apiVersion").cloned();
        let items = match value.get_mut("items").map(Value::take) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(_) => {
                return Err(self.object_error(
                    ObjectRef::of(document, None, &value),
                    ObjectError::Invalid {
                        field: "items".into(),
                        message: "must be a list".into(),
                    },
                ));
            }
        };
        for (index, mut item) in items.into_iter().enumerate() {
            // Typed lists (`ServiceList`, as the API returns them) omit kind/apiVersion on items.
            if let (Some(kind), Value::Object(fields)) = (&item_kind, &mut item) {
                fields
                    .entry("kind")
                    .or_insert_with(|| Value::String(kind.clone()));
                if let Some(api_version) = &api_version {
                    fields
                        .entry("apiVersion")
                        .or_insert_with(|| api_version.clone());
                }
            }
            let nested = item
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|kind| kind == "List");
            if nested {
                let at = ObjectRef::of(document, Some(index), &item);
                return Err(self.object_error(at, ObjectError::NestedList));
            }
            self.object(document, Some(index), item)?;
        }
        Ok(())
    }

    fn object(
        &mut self,
        document: usize,
        item: Option<usize>,
        value: Value,
    ) -> Result<(), ParseError> {
        let at = ObjectRef::of(document, item, &value);
        if !value.is_object() {
            return Err(self.object_error(at, ObjectError::NotAMapping));
        }
        let (api_version, kind) = match type_meta(&value) {
            Ok(type_meta) => type_meta,
            Err(error) => return Err(self.object_error(at, error)),
        };
        match objects::decode(&api_version, &kind, value) {
            Ok(Decoded::Object(object)) => {
                self.objects.push(object);
                Ok(())
            }
            Ok(Decoded::Ignored(reason)) => {
                debug!(
                    file = %self.path.display(),
                    object = %at,
                    api_version,
                    reason,
                    "ignoring object"
                );
                Ok(())
            }
            Err(error) => Err(self.object_error(at, error)),
        }
    }

    fn object_error(&self, object: ObjectRef, source: ObjectError) -> ParseError {
        ParseError::Object {
            path: self.path.to_owned(),
            object: Box::new(object),
            source,
        }
    }
}

/// `apiVersion` and `kind`, both required strings.
fn type_meta(value: &Value) -> Result<(String, String), ObjectError> {
    let field = |name: &'static str| match value.get(name) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
        None | Some(Value::Null | Value::String(_)) => Err(ObjectError::Missing {
            field: name.to_owned(),
        }),
        Some(_) => Err(ObjectError::Invalid {
            field: name.to_owned(),
            message: "must be a string".into(),
        }),
    };
    Ok((field("apiVersion")?, field("kind")?))
}
