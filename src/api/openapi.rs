//! `/openapi.json`: OpenAPI 3.0 generated from [`super::routes::ROUTES`] and the Rust types
//! the routes serialise (schemars, the serialisation contract), so the spec cannot drift.

use std::sync::OnceLock;

use bytes::Bytes;
use schemars::generate::{Contract, SchemaSettings};
use serde_json::{Map, Value, json};

use super::routes::{ErrorBody, ROUTES};

/// The document (built once).
#[must_use]
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

pub fn document_bytes() -> Bytes {
    static BYTES: OnceLock<Bytes> = OnceLock::new();
    BYTES
        .get_or_init(|| {
            Bytes::from(serde_json::to_vec_pretty(document()).unwrap_or_else(|e| {
                format!("{{\"error\":\"serializing the spec: {e}\"}}").into_bytes()
            }))
        })
        .clone()
}

fn param(p: &super::routes::Param) -> Value {
    let mut schema = if p.kind == "ip" {
        json!({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]})
    } else {
        json!({"type": p.kind})
    };
    if !p.values.is_empty() {
        schema["enum"] = p.values.iter().map(|v| Value::from(*v)).collect();
    }
    if let Some(pattern) = p.pattern {
        schema["pattern"] = pattern.into();
    }
    if let Some((min, max)) = p.bounds {
        schema["minimum"] = min.into();
        schema["maximum"] = max.into();
    }
    json!({
        "name": p.name,
        "in": "query",
        "required": false,
        "description": p.description,
        "schema": schema,
    })
}

fn build() -> Value {
    let mut generator = SchemaSettings::openapi3()
        .with(|s| s.contract = Contract::Serialize)
        .into_generator();
    let error = generator.subschema_for::<ErrorBody>();
    let mut paths = Map::new();
    for route in ROUTES {
        let schema = (route.schema)(&mut generator);
        let mut content = Map::new();
        for media in route.media.spec_names() {
            content.insert((*media).into(), json!({"schema": schema}));
        }
        let body = json!({"content": content});
        let mut responses = Map::new();
        let mut ok = body.clone();
        ok["description"] = "OK".into();
        responses.insert("200".into(), ok);
        if route.unavailable {
            let mut down = body;
            down["description"] = "Not ready (the body names what is not)".into();
            responses.insert("503".into(), down);
        }
        responses.insert(
            "4XX".into(),
            json!({
                "description": "Bad request: a query parameter it does not take or a bad value, or a method other than GET",
                "content": {"application/json": {"schema": error}},
            }),
        );
        let op_id = route.path.trim_start_matches('/').replace(['/', '.'], "_");
        let mut get = json!({
            "operationId": op_id,
            "summary": route.summary,
            "responses": responses,
        });
        if !route.params.is_empty() {
            get["parameters"] = route.params.iter().map(param).collect();
        }
        paths.insert(route.path.into(), json!({ "get": get }));
    }
    let schemas = generator.take_definitions(true);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "ferrite agent API",
            "version": crate::VERSION,
            "description": "The node agent's local API: on a unix socket (mode 0600) and, with \
                --api-listen, over TLS with client certificates. Unknown paths answer 404 and \
                bad requests 4xx, both with a JSON error body.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every `$ref` in `v` (recursively).
    fn refs(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.insert(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn every_route_is_in_the_spec_and_every_path_is_a_route() {
        let doc = document();
        let spec: BTreeSet<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let served: BTreeSet<&str> = ROUTES.iter().map(|r| r.path).collect();
        assert_eq!(spec, served);
        assert_eq!(served.len(), ROUTES.len(), "a path is routed twice");
        for r in ROUTES {
            let op = &doc["paths"][r.path]["get"];
            for media in r.media.spec_names() {
                assert!(op["responses"]["200"]["content"][*media]["schema"].is_object());
            }
            assert!(op["responses"]["4XX"].is_object(), "{}", r.path);
        }
    }

    #[test]
    fn every_reference_resolves_to_a_component() {
        let doc = document();
        let mut all = BTreeSet::new();
        refs(doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r} is not a component reference"));
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{r} is not defined"
            );
        }
        assert_eq!(doc["openapi"], "3.0.3");
        // OpenAPI 3.0 has no `$schema`, `$defs` nor type arrays.
        let text = doc.to_string();
        assert!(
            !text.contains("$defs") && !text.contains("\"$schema\""),
            "{text}"
        );
    }
}
