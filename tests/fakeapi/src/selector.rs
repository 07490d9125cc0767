//! `labelSelector` and `fieldSelector` query parameters, as the API server parses them.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label or field selector (every requirement must hold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
    fields: bool,
}

impl Selector {
    /// A label selector: `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn labels(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part, true)?);
        }
        Ok(Self {
            requirements,
            fields: false,
        })
    }

    /// A field selector: `metadata.name=x,spec.nodeName!=y` (only `=`, `==` and `!=`).
    pub fn fields(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part, false)?);
        }
        Ok(Self {
            requirements,
            fields: true,
        })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let value = |key: &str| -> Option<String> {
                if self.fields {
                    Some(field_value(object, key))
                } else {
                    object
                        .pointer("/metadata/labels")
                        .and_then(|l| l.get(key))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                }
            };
            match r {
                Requirement::Equals(k, v) => value(k).as_deref() == Some(v.as_str()),
                // Kubernetes: `a!=b` also matches objects without the label.
                Requirement::NotEquals(k, v) => value(k).as_deref() != Some(v.as_str()),
                Requirement::In(k, vs) => value(k).is_some_and(|x| vs.contains(&x)),
                Requirement::NotIn(k, vs) => value(k).is_none_or(|x| !vs.contains(&x)),
                Requirement::Exists(k) => value(k).is_some(),
                Requirement::NotExists(k) => value(k).is_none(),
            }
        })
    }
}

/// A field's value as the field selector sees it (strings; unset fields are `""`).
fn field_value(object: &Value, key: &str) -> String {
    let pointer = format!("/{}", key.replace('.', "/"));
    match object.pointer(&pointer) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0_i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str, set_ops: bool) -> Result<Requirement, String> {
    let invalid = || format!("invalid selector requirement `{part}`");
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(
            k.trim().to_owned(),
            v.trim().to_owned(),
        ));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals(
            k.trim().to_owned(),
            v.trim().to_owned(),
        ));
    }
    if !set_ops {
        return Err(invalid());
    }
    let values = |rest: &str| -> Result<Vec<String>, String> {
        let inner = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(invalid)?;
        Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
    };
    if let Some((k, rest)) = part.split_once(" notin ") {
        return Ok(Requirement::NotIn(k.trim().to_owned(), values(rest)?));
    }
    if let Some((k, rest)) = part.split_once(" in ") {
        return Ok(Requirement::In(k.trim().to_owned(), values(rest)?));
    }
    if let Some(k) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(k.trim().to_owned()));
    }
    if part.contains(char::is_whitespace) || part.contains('(') {
        return Err(invalid());
    }
    Ok(Requirement::Exists(part.to_owned()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Selector;

    #[test]
    fn label_selectors_follow_kubernetes_semantics() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let yes = [
            "app=web",
            "app==web",
            "app in (web, api)",
            "tier",
            "!missing",
            "x!=y",
            "app=web,tier notin (back)",
        ];
        for s in yes {
            assert!(Selector::labels(s).unwrap().matches(&obj), "{s}");
        }
        for s in [
            "app=api",
            "missing",
            "!app",
            "app notin (web)",
            "app in (api)",
        ] {
            assert!(!Selector::labels(s).unwrap().matches(&obj), "{s}");
        }
    }

    #[test]
    fn field_selectors_read_dotted_paths() {
        let obj = json!({"metadata": {"name": "p", "namespace": "n"}, "spec": {"nodeName": "a"}});
        assert!(Selector::fields("spec.nodeName=a").unwrap().matches(&obj));
        assert!(
            Selector::fields("metadata.name=p,metadata.namespace=n")
                .unwrap()
                .matches(&obj)
        );
        assert!(!Selector::fields("spec.nodeName=b").unwrap().matches(&obj));
        assert!(Selector::fields("spec.nodeName!=b").unwrap().matches(&obj));
        assert!(Selector::fields("a in (b)").is_err());
    }
}
