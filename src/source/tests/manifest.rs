use std::path::Path;

use super::{parse, parse_err, parse_ok, services, slices};
use crate::{
    model::ServiceName,
    source::manifest::{ParseError, parse_manifest},
    source::objects::Object,
};

const SERVICE_A: &str = "apiVersion: v1
kind: Service
metadata: {name: a}
spec: {clusterIP: 10.43.0.1, ports: [{port: 80}]}
";

#[test]
fn multi_document_file_with_empty_documents() {
    let text = format!(
        "# leading comment
---
{SERVICE_A}---
---
# only a comment
---
apiVersion: v1
kind: Service
metadata: {{name: b, namespace: x}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: a-1, labels: {{kubernetes.io/service-name: a}}}}
addressType: IPv4
endpoints: [{{addresses: [10.42.0.1]}}]
---
"
    );
    let objects = parse_ok(&text);
    let names: Vec<_> = objects
        .iter()
        .map(|o| (o.kind(), o.name().to_string()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("Service", "default/a".into()),
            ("Service", "x/b".into()),
            ("EndpointSlice", "default/a-1".into())
        ]
    );
}

#[test]
fn empty_file_has_no_objects() {
    assert!(parse_ok("").is_empty());
    assert!(parse_ok("# nothing here\n").is_empty());
    assert!(parse_ok("---\n").is_empty());
}

#[test]
fn list_kind_items_are_read() {
    let text = "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: c}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: a-1, labels: {kubernetes.io/service-name: a}}
  addressType: IPv4
";
    let objects = parse_ok(text);
    assert_eq!(services(&objects).len(), 1);
    assert_eq!(slices(&objects).len(), 1);
    assert!(parse_ok("apiVersion: v1\nkind: List\nitems: []\n").is_empty());
    assert!(parse_ok("apiVersion: v1\nkind: List\n").is_empty());
}

#[test]
fn typed_lists_fill_in_item_kind_and_api_version() {
    // As `kubectl get --raw /api/v1/services` returns them: items without kind/apiVersion.
    let text = "apiVersion: v1
kind: ServiceList
metadata: {resourceVersion: '42'}
items:
- metadata: {name: a, namespace: x}
  spec: {clusterIP: 10.43.0.1}
- metadata: {name: b}
";
    let objects = parse_ok(text);
    let names: Vec<_> = services(&objects).iter().map(|s| s.name.clone()).collect();
    assert_eq!(
        names,
        vec![ServiceName::new("x", "a"), ServiceName::new("default", "b")]
    );
}

#[test]
fn list_item_errors_name_the_item() {
    let text = "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: ok}
- apiVersion: v1
  kind: Service
  metadata: {name: bad, namespace: ns}
  spec: {clusterIP: nope}
";
    let error = parse_err(text);
    assert!(
        error.contains("document 1, items[1] (Service ns/bad): spec.clusterIP"),
        "{error}"
    );
    let error = parse_err(
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: List, items: []}\n",
    );
    assert!(error.contains("a List inside a List"), "{error}");
    let error = parse_err("apiVersion: v1\nkind: List\nitems: 5\n");
    assert!(error.contains("items: must be a list"), "{error}");
}

#[test]
fn json_files_single_object_and_list() {
    let path = Path::new("svc.json");
    let objects = parse_manifest(
        path,
        r#"{
  "apiVersion": "v1",
  "kind": "Service",
  "metadata": {"name": "j"},
  "spec": {"clusterIPs": ["10.43.0.9"], "ports": [{"port": 443, "targetPort": "https"}]}
}"#,
    )
    .expect("valid JSON");
    assert_eq!(services(&objects)[0].name, ServiceName::new("default", "j"));
    let objects = parse_manifest(
        path,
        "\u{feff}{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[
\t{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"x\"}},
\t{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"y\"}}]}",
    )
    .expect("valid JSON list with a BOM and tabs");
    assert_eq!(services(&objects).len(), 2);
    let error = parse_manifest(path, "{\"apiVersion\": ").expect_err("truncated JSON");
    assert!(
        matches!(error, ParseError::Json { document: 1, .. }),
        "{error}"
    );
}

#[test]
fn unknown_kinds_are_ignored() {
    let text = "apiVersion: v1
kind: ConfigMap
metadata: {name: c}
data: {a: b}
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: knative}
spec: {template: {}}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
";
    let kinds: Vec<&str> = parse_ok(text)
        .iter()
        .map(super::super::objects::Object::kind)
        .collect();
    assert_eq!(kinds, ["Node"], "only the Node is read");
}

#[test]
fn unknown_api_version_of_a_known_kind_is_an_error() {
    let error = parse_err("apiVersion: v2\nkind: Service\nmetadata: {name: a}\n");
    assert!(
        error.contains("apiVersion `v2` is not supported for Service; use `v1`"),
        "{error}"
    );
    let error = parse_err(
        "apiVersion: discovery.k8s.io/v1beta1
kind: EndpointSlice
metadata: {name: s}
addressType: IPv4
",
    );
    assert!(
        error.contains("apiVersion `discovery.k8s.io/v1beta1` is not supported"),
        "{error}"
    );
}

#[test]
fn one_invalid_document_rejects_the_whole_file() {
    let text = format!(
        "{SERVICE_A}---
apiVersion: v1
kind: Service
metadata: {{name: b, namespace: ns}}
spec:
  ports: [{{port: 80, protocol: QUIC}}]
"
    );
    let error = parse(&text).expect_err("the second document is invalid");
    let ParseError::Object { path, object, .. } = &error else {
        panic!("object error: {error}")
    };
    assert_eq!(path, Path::new("test.yaml"));
    assert_eq!(object.document, 2);
    assert_eq!(object.item, None);
    assert_eq!(object.kind.as_deref(), Some("Service"));
    assert_eq!(object.name.as_deref(), Some("ns/b"));
    assert_eq!(
        error.to_string(),
        "test.yaml: document 2 (Service ns/b): \
         spec.ports[0].protocol: unknown protocol `QUIC` (expected TCP, UDP or SCTP)"
    );
    assert_eq!(
        error.message(),
        "document 2 (Service ns/b): spec.ports[0].protocol: unknown protocol `QUIC` \
         (expected TCP, UDP or SCTP)"
    );
}

#[test]
fn yaml_syntax_errors_name_the_document() {
    let text = format!("{SERVICE_A}---\nkind: Service\n  bad: [indent\n");
    let error = parse(&text).expect_err("invalid YAML");
    assert!(
        matches!(error, ParseError::Yaml { document: 2, .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .starts_with("test.yaml: document 2: invalid YAML"),
        "{error}"
    );
}

#[test]
fn documents_must_be_typed_objects() {
    let error = parse_err("just a string\n");
    assert!(error.contains("document 1: not an object"), "{error}");
    let error = parse_err("kind: Service\nmetadata: {name: a}\n");
    assert!(error.contains("apiVersion is required"), "{error}");
    let error = parse_err("apiVersion: v1\nmetadata: {name: a}\n");
    assert!(error.contains("(a): kind is required"), "{error}");
    let error = parse_err("apiVersion: v1\nkind: [Service]\n");
    assert!(error.contains("kind: must be a string"), "{error}");
}

#[test]
fn yaml_anchors_and_merge_keys() {
    let text = "apiVersion: v1
kind: Service
metadata: {name: a}
spec:
  ports:
  - &http {name: http, port: 80, targetPort: 8080}
  - <<: *http
    name: alt
    port: 8000
";
    let objects = parse_ok(text);
    let ports = &services(&objects)[0].ports;
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[1].name, "alt");
    assert_eq!(ports[1].port, 8000);
    assert_eq!(ports[1].target_port, crate::model::TargetPort::Number(8080));
}

#[test]
fn unrelated_fields_do_not_matter() {
    // Real `kubectl get -o yaml` output carries status, managedFields, numeric labels, etc.
    let text = "apiVersion: v1
kind: Service
metadata:
  name: a
  labels: {version: 2}
  annotations: {x: y}
  managedFields: [{manager: kubectl}]
  uid: 1234
spec:
  clusterIP: 10.43.0.1
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  selector: {app: a}
  ports: [{port: 80, nodePort: 30080, appProtocol: http}]
status: {loadBalancer: {}}
";
    assert_eq!(services(&parse_ok(text)).len(), 1);
}

#[test]
fn deeply_nested_flow_collections_are_rejected_at_once_with_their_line() {
    let text = format!("{SERVICE_A}---\nspec: {}\n", "[".repeat(100_000));
    let started = std::time::Instant::now();
    let error = parse(&text).expect_err("too deep");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let ParseError::TooDeep { line, .. } = &error else {
        panic!("too deep: {error}")
    };
    assert_eq!(*line, SERVICE_A.lines().count() + 2);
    assert!(
        error.to_string().starts_with("test.yaml: line ")
            && error.to_string().contains("nest deeper than 64 levels"),
        "{error}"
    );
    // Closed, but still too deep.
    let closed = format!("a: {}{}\n", "{b: ".repeat(65), "}".repeat(65));
    assert!(matches!(
        parse(&closed),
        Err(ParseError::TooDeep { line: 1, .. })
    ));
}

#[test]
fn brackets_that_are_text_do_not_count_as_nesting() {
    let many = "[".repeat(500);
    let text = format!(
        "# {many}
apiVersion: v1
kind: Service
metadata:
  name: a
  namespace: ns
  annotations:
    plain: x{many}
    single: '{many}''s'
    double: \"{many}\\\"\"
    block: |
      {many}
      {{{many}
    folded: >-
      {many}
  managedFields: [[[[[[[[[[{{deep: [ok]}}]]]]]]]]]]
spec: {{}}
"
    );
    let objects = parse(&text).unwrap_or_else(|error| panic!("{error}"));
    let [Object::Service(service)] = objects.as_slice() else {
        panic!("one service: {objects:?}")
    };
    assert_eq!(service.annotations["plain"], format!("x{many}"));
    assert_eq!(service.annotations["block"], format!("{many}\n{{{many}\n"));
}
