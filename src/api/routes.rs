//! Every route of the API in one table: the server dispatches through [`ROUTES`] and
//! `/openapi.json` is generated from it, so a route cannot be served without being in the spec
//! (or documented without being served).

use bytes::Bytes;
use hyper::StatusCode;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::{L2View, NodeView, PoolsView, ServiceView, SharedState, Status, Subsystem};
use crate::routing::task::RoutesView;

/// What a route answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    Json,
    /// The OpenMetrics text exposition.
    OpenMetrics,
    /// The embedded web page.
    Html,
    /// One JSON object a line, written as they happen (the flow stream).
    Ndjson,
}

impl Media {
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::OpenMetrics => crate::metrics::CONTENT_TYPE,
            Self::Html => "text/html; charset=utf-8",
            Self::Ndjson => super::stream::CONTENT_TYPE,
        }
    }

    /// The media types as the spec names them (no parameters): OpenMetrics, or the classic
    /// text format when the request does not accept OpenMetrics.
    #[must_use]
    pub fn spec_names(self) -> &'static [&'static str] {
        match self {
            Self::Json => &["application/json"],
            Self::OpenMetrics => &["application/openmetrics-text", "text/plain"],
            Self::Html => &["text/html"],
            Self::Ndjson => &["application/x-ndjson"],
        }
    }
}

/// One GET route.
pub struct Route {
    pub path: &'static str,
    pub summary: &'static str,
    pub media: Media,
    /// The 200 body's schema (JSON routes), registered with the generator.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// Also answers 503 with the same body (health probes).
    pub unavailable: bool,
    /// The query parameters it takes (none: a query is a 400).
    pub params: &'static [Param],
    /// Answers with the state, the request's `Accept` header and its query string.
    pub handler: fn(&SharedState, Option<&str>, Option<&str>) -> Reply,
}

/// One optional query parameter, as the spec describes it.
pub struct Param {
    pub name: &'static str,
    pub description: &'static str,
    /// JSON schema type: `string`, `integer` or `boolean`; `ip` is a string holding an IPv4
    /// or IPv6 address.
    pub kind: &'static str,
    /// Allowed values (strings), or bounds (integers: min, max) — empty for none.
    pub values: &'static [&'static str],
    pub bounds: Option<(u64, u64)>,
    /// A regular expression the value matches (strings).
    pub pattern: Option<&'static str>,
}

/// A response before it becomes an HTTP one.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: ReplyBody,
}

/// The whole body, or one that is written as it goes (the flow stream).
#[derive(Debug)]
pub enum ReplyBody {
    Full(Bytes),
    Stream(Box<super::stream::FlowStream>),
}

impl From<Bytes> for ReplyBody {
    fn from(b: Bytes) -> Self {
        Self::Full(b)
    }
}

impl Reply {
    #[must_use]
    pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Self {
        let bytes = serde_json::to_vec_pretty(body).unwrap_or_else(|e| {
            format!("{{\"error\":\"serializing the response: {e}\"}}").into_bytes()
        });
        Self {
            status,
            content_type: Media::Json.content_type(),
            body: Bytes::from(bytes).into(),
        }
    }

    #[must_use]
    pub fn error(status: StatusCode, message: impl Into<String>) -> Self {
        Self::json(
            status,
            &ErrorBody {
                error: message.into(),
            },
        )
    }
}

/// The body of every 4xx answer.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct ErrorBody {
    /// What was wrong with the request.
    pub error: String,
}

/// `/healthz` and `/readyz`: 200 when ready, 503 naming what is not.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct Health {
    pub ready: bool,
    /// `name: detail` of every subsystem not ready.
    pub not_ready: Vec<String>,
    pub subsystems: Vec<Subsystem>,
}

fn schema_of<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

fn text_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({"type": "string"})
}

fn read<R>(state: &SharedState, f: impl FnOnce(&super::ApiState) -> R) -> R {
    f(&state
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner))
}

fn status(state: &SharedState, _: Option<&str>, _: Option<&str>) -> Reply {
    Reply::json(
        StatusCode::OK,
        &read(state, super::ApiState::current_status),
    )
}

fn services(state: &SharedState, _: Option<&str>, _: Option<&str>) -> Reply {
    read(state, |s| Reply::json(StatusCode::OK, &s.services))
}

fn pools(state: &SharedState, _: Option<&str>, _: Option<&str>) -> Reply {
    read(state, |s| Reply::json(StatusCode::OK, &s.pools))
}

fn l2(state: &SharedState, _: Option<&str>, _: Option<&str>) -> Reply {
    read(state, |s| Reply::json(StatusCode::OK, &s.l2))
}

fn nodes(state: &SharedState, _: Option<&str>, _: Option<&str>) -> Reply {
    read(state, |s| Reply::json(StatusCode::OK, &s.nodes))
}

fn policy(state: &SharedState, _: Option<&str>, _: Option<&str>) -> Reply {
    read(state, |s| Reply::json(StatusCode::OK, &*s.policy))
}

fn routes(state: &SharedState, _: Option<&str>, _: Option<&str>) -> Reply {
    let routes = read(state, |s| s.routes.clone());
    let view = routes
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Reply::json(StatusCode::OK, &*view)
}

/// Both probes report every subsystem; 503 names those not ready (CNI STATUS shows it).
fn health(state: &SharedState, _: Option<&str>, _: Option<&str>) -> Reply {
    let h = read(state, |s| {
        let st = &s.status;
        let not_ready: Vec<String> = st
            .not_ready()
            .iter()
            .map(|s| format!("{}: {}", s.name, s.detail))
            .collect();
        Health {
            ready: st.datapath.ready && not_ready.is_empty(),
            not_ready,
            subsystems: st.subsystems.clone(),
        }
    });
    let code = if h.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Reply::json(code, &h)
}

/// OpenMetrics, or the classic text format for a scraper that does not accept it.
fn metrics(state: &SharedState, accept: Option<&str>, _: Option<&str>) -> Reply {
    let text = super::scrape::render(state);
    let (content_type, text) = if crate::metrics::accepts_openmetrics(accept) {
        (Media::OpenMetrics.content_type(), text)
    } else {
        (
            crate::metrics::CLASSIC_CONTENT_TYPE,
            crate::metrics::to_classic(&text),
        )
    };
    Reply {
        status: StatusCode::OK,
        content_type,
        body: Bytes::from(text).into(),
    }
}

fn openapi(_: &SharedState, _: Option<&str>, _: Option<&str>) -> Reply {
    Reply {
        status: StatusCode::OK,
        content_type: Media::Json.content_type(),
        body: super::openapi::document_bytes().into(),
    }
}

/// The web page: one file, no external assets, reading the JSON routes above.
fn ui(_: &SharedState, _: Option<&str>, _: Option<&str>) -> Reply {
    Reply {
        status: StatusCode::OK,
        content_type: Media::Html.content_type(),
        body: Bytes::from_static(include_bytes!("ui.html")).into(),
    }
}

fn openapi_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "This document (OpenAPI 3.0)",
        "required": ["openapi", "info", "paths"],
        "properties": {"openapi": {"type": "string"}, "info": {"type": "object"}, "paths": {"type": "object"}}
    })
}

pub const ROUTES: &[Route] = &[
    Route {
        path: "/v1/status",
        summary: "The agent: version, node, source, datapath, last apply, subsystems, masquerade",
        media: Media::Json,
        schema: schema_of::<Status>,
        unavailable: false,
        params: &[],
        handler: status,
    },
    Route {
        path: "/v1/services",
        summary: "Service frontends and their backends as programmed in the datapath",
        media: Media::Json,
        schema: schema_of::<Vec<ServiceView>>,
        unavailable: false,
        params: &[],
        handler: services,
    },
    Route {
        path: "/v1/pools",
        summary: "LoadBalancer IP pools and what LB IPAM allocated to each service",
        media: Media::Json,
        schema: schema_of::<PoolsView>,
        unavailable: false,
        params: &[],
        handler: pools,
    },
    Route {
        path: "/v1/l2",
        summary: "L2 announcements: every address, its owner, membership",
        media: Media::Json,
        schema: schema_of::<L2View>,
        unavailable: false,
        params: &[],
        handler: l2,
    },
    Route {
        path: "/v1/nodes",
        summary: "The cluster's nodes: InternalIPs, PodCIDRs, readiness (what `observe --all-nodes` asks)",
        media: Media::Json,
        schema: schema_of::<Vec<NodeView>>,
        unavailable: false,
        params: &[],
        handler: nodes,
    },
    Route {
        path: "/v1/routes",
        summary: "How every other node's PodCIDRs are reached",
        media: Media::Json,
        schema: schema_of::<RoutesView>,
        unavailable: false,
        params: &[],
        handler: routes,
    },
    Route {
        path: "/v1/policy",
        summary: "NetworkPolicy per local pod: isolation, the policies selecting it, its allow rules",
        media: Media::Json,
        schema: schema_of::<Vec<crate::policy::EndpointReport>>,
        unavailable: false,
        params: &[],
        handler: policy,
    },
    Route {
        path: "/v1/flows",
        summary: "Flow events (what the datapath did to each new flow), newest last, filtered",
        media: Media::Json,
        schema: schema_of::<super::flows::FlowsView>,
        unavailable: false,
        params: super::flows::PARAMS,
        handler: super::flows::handler,
    },
    Route {
        path: "/v1/flows/stream",
        summary: "Flow events as NDJSON (one flow a line), kept open and written as they happen; \
            the filters of /v1/flows; from now on, or the newest `last` first, or after `after`",
        media: Media::Ndjson,
        schema: schema_of::<crate::flows::Flow>,
        unavailable: false,
        params: super::flows::PARAMS,
        handler: super::stream::handler,
    },
    Route {
        path: "/healthz",
        summary: "Liveness: 200 when every subsystem is ready, else 503 naming those that are not",
        media: Media::Json,
        schema: schema_of::<Health>,
        unavailable: true,
        params: &[],
        handler: health,
    },
    Route {
        path: "/readyz",
        summary: "Readiness: 200 when every subsystem is ready, else 503 naming those that are not",
        media: Media::Json,
        schema: schema_of::<Health>,
        unavailable: true,
        params: &[],
        handler: health,
    },
    Route {
        path: "/metrics",
        summary: "Prometheus metrics (OpenMetrics text format)",
        media: Media::OpenMetrics,
        schema: text_schema,
        unavailable: false,
        params: &[],
        handler: metrics,
    },
    Route {
        path: "/ui",
        summary: "The web page: services and backends, LoadBalancer IPs and owners, pools, routes, live flows",
        media: Media::Html,
        schema: text_schema,
        unavailable: false,
        params: &[],
        handler: ui,
    },
    Route {
        path: "/openapi.json",
        summary: "This API's OpenAPI 3.0 description",
        media: Media::Json,
        schema: openapi_schema,
        unavailable: false,
        params: &[],
        handler: openapi,
    },
];

/// Which routes a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteSet {
    /// The API (unix socket, TLS listener).
    All,
    /// `--metrics-listen`: `/metrics` only, for Prometheus.
    Metrics,
}

impl RouteSet {
    fn find(self, path: &str) -> Option<&'static Route> {
        ROUTES
            .iter()
            .find(|r| r.path == path && (self == Self::All || r.media == Media::OpenMetrics))
    }
}

/// The answer to `method path?query` from the routes of `set`.
pub fn dispatch(
    set: RouteSet,
    method: &hyper::Method,
    path: &str,
    query: Option<&str>,
    accept: Option<&str>,
    state: &SharedState,
) -> Reply {
    let Some(route) = set.find(path) else {
        return Reply::error(StatusCode::NOT_FOUND, format!("no route {path}"));
    };
    if *method != hyper::Method::GET {
        return Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} answers only GET, not {method}"),
        );
    }
    let query = query.filter(|q| !q.is_empty());
    if let Some(q) = query.filter(|_| route.params.is_empty()) {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            format!("{path} takes no query parameters (got {q:?})"),
        );
    }
    (route.handler)(state, accept, query)
}
