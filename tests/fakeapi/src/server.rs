//! HTTPS serving: token auth, routing of API paths to the store, watch streams, injected faults.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Frame, Incoming},
    header,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::mpsc, sync::watch};
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::{
    error::ApiError,
    resources::{Target, parse_path},
    selector::Selector,
    store::{Query, Store, Write},
};

type Body = BoxBody<Bytes, Infallible>;

const MAX_BODY: usize = 8 << 20;

/// A request answered with an error instead of being served (see `FakeApi::fail_next`).
#[derive(Clone, Debug)]
pub struct Fault {
    /// `None` matches every method.
    pub method: Option<String>,
    /// Matches when the request path contains it.
    pub path_contains: String,
    pub code: u16,
    /// How many matching requests fail.
    pub count: u32,
}

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub status: u16,
    /// Who sent it: the name given to [`crate::FakeApi::client_kubeconfig`], empty for the
    /// default token (and for unauthenticated requests).
    pub client: String,
}

/// State shared by every connection.
pub struct Shared {
    pub store: Mutex<Store>,
    pub token: String,
    /// Named clients: (token, name).
    pub clients: Mutex<Vec<(String, String)>>,
    pub faults: Mutex<Vec<Fault>>,
    pub requests: Mutex<Vec<RequestRecord>>,
    pub rbac: Option<crate::rbac::Rbac>,
}

impl Shared {
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client a bearer token belongs to: `Some("")` for the default token, `Some(name)` for
    /// a named client, `None` when the token is unknown.
    fn client_of<B>(&self, req: &Request<B>) -> Option<String> {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))?;
        if token == self.token {
            return Some(String::new());
        }
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(t, _)| t == token)
            .map(|(_, name)| name.clone())
    }
}

/// Accepts connections until `shutdown` becomes true; then every connection (and so every
/// watch) is dropped at once, as when a server process dies.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let Ok((tcp, peer)) = accepted else { continue };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let conn = async {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    debug!(%peer, "TLS handshake failed");
                    return;
                };
                let service = service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(handle(req, &shared).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            };
            tokio::select! {
                () = conn => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(value.to_string()))
        .unwrap_or_else(|_| Response::new(full("")))
}

fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.code, &error.status())
}

async fn handle(req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let client = shared.client_of(&req).unwrap_or_default();
    let response = route(req, shared, &method, &path, &query, &content_type).await;
    shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(RequestRecord {
            method: method.to_string(),
            path,
            query,
            content_type,
            status: response.status().as_u16(),
            client,
        });
    response
}

async fn route(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &str,
    content_type: &str,
) -> Response<Body> {
    if shared.client_of(&req).is_none() {
        return error_response(&ApiError::new(401, "Unauthorized", "Unauthorized"));
    }
    if let Some(code) = take_fault(shared, method, path) {
        let reason = match code {
            409 => "Conflict",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            _ => "Unknown",
        };
        return error_response(&ApiError::new(code, reason, "injected by the test"));
    }
    match path {
        "/version" => {
            return json_response(
                200,
                &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fakeapi",
                        "platform": "linux/amd64"}),
            );
        }
        "/healthz" | "/livez" | "/readyz" => {
            return Response::new(full("ok"));
        }
        _ => {}
    }
    let Ok(target) = parse_path(path) else {
        return error_response(&ApiError::no_resource());
    };
    if let Some(rbac) = &shared.rbac
        && let Err(e) = rbac.authorize(method.as_str(), &target, query)
    {
        return error_response(&e);
    }
    if !shared.store().served(target.resource) {
        return error_response(&ApiError::no_resource());
    }
    let params = Params::parse(query);
    let body = if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        match read_body(req, content_type).await {
            Ok(body) => Some(body),
            Err(e) => return error_response(&e),
        }
    } else {
        None
    };
    match serve_target(shared, method, &target, &params, body, content_type) {
        Ok(Served::Json(code, value)) => json_response(code, &value),
        Ok(Served::Watch(id, rx)) => watch_response(shared, id, rx, params.timeout_seconds),
        Err(e) => error_response(&e),
    }
}

fn take_fault(shared: &Shared, method: &Method, path: &str) -> Option<u16> {
    let mut faults = shared.faults.lock().unwrap_or_else(PoisonError::into_inner);
    let fault = faults.iter_mut().find(|f| {
        f.count > 0
            && f.method
                .as_ref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
            && path.contains(&f.path_contains)
    })?;
    fault.count -= 1;
    let code = fault.code;
    faults.retain(|f| f.count > 0);
    Some(code)
}

async fn read_body(req: Request<Incoming>, content_type: &str) -> Result<Value, ApiError> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?
        .to_bytes();
    let text = std::str::from_utf8(&bytes).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if content_type.contains("yaml") {
        serde_yaml_ng::from_str(text).map_err(|e| ApiError::bad_request(e.to_string()))
    } else {
        serde_json::from_str(text).map_err(|e| ApiError::bad_request(e.to_string()))
    }
}

/// Query parameters the server reads.
#[derive(Debug, Default)]
struct Params {
    watch: bool,
    resource_version: Option<String>,
    label_selector: String,
    field_selector: String,
    limit: Option<usize>,
    continue_token: Option<String>,
    timeout_seconds: Option<u64>,
    bookmarks: bool,
    field_manager: Option<String>,
    force: bool,
}

impl Params {
    fn parse(query: &str) -> Self {
        let mut p = Self::default();
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match k {
                "watch" => p.watch = v == "true" || v == "1",
                "resourceVersion" => p.resource_version = Some(v),
                "labelSelector" => p.label_selector = v,
                "fieldSelector" => p.field_selector = v,
                "limit" => p.limit = v.parse().ok().filter(|l| *l > 0),
                "continue" => p.continue_token = Some(v).filter(|c| !c.is_empty()),
                "timeoutSeconds" => p.timeout_seconds = v.parse().ok(),
                "allowWatchBookmarks" => p.bookmarks = v == "true",
                "fieldManager" => p.field_manager = Some(v),
                "force" => p.force = v == "true",
                _ => {}
            }
        }
        p
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(b) = hex {
                    out.push(b);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

enum Served {
    Json(u16, Value),
    Watch(u64, mpsc::UnboundedReceiver<Bytes>),
}

fn serve_target(
    shared: &Shared,
    method: &Method,
    target: &Target,
    params: &Params,
    body: Option<Value>,
    content_type: &str,
) -> Result<Served, ApiError> {
    let resource = target.resource;
    let ns = target.namespace.clone().unwrap_or_default();
    let sub = target.subresource.as_deref().unwrap_or_default();
    let manager = params
        .field_manager
        .clone()
        .unwrap_or_else(|| "unknown".into());
    let mut store = shared.store();
    match (method, target.name.as_deref()) {
        (&Method::GET, None) => {
            let query = Query {
                resource,
                namespace: target.namespace.clone(),
                labels: Selector::labels(&params.label_selector).map_err(ApiError::bad_request)?,
                fields: Selector::fields(&params.field_selector).map_err(ApiError::bad_request)?,
            };
            if params.watch {
                let rv = match params.resource_version.as_deref() {
                    None | Some("") => None,
                    Some(text) => Some(text.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion `{text}`"))
                    })?),
                };
                let (id, rx) = store.watch(query, rv, params.bookmarks);
                Ok(Served::Watch(id, rx))
            } else {
                store
                    .list(&query, params.limit, params.continue_token.as_deref())
                    .map(|v| Served::Json(200, v))
            }
        }
        (&Method::GET, Some(name)) => store.get(resource, &ns, name).map(|v| Served::Json(200, v)),
        (&Method::POST, None) => {
            let body = body.unwrap_or_default();
            let v = store.write(resource, &ns, None, "", &manager, Write::Create(body))?;
            Ok(Served::Json(201, v))
        }
        (&Method::PUT, Some(name)) => {
            let body = body.unwrap_or_default();
            let v = store.write(
                resource,
                &ns,
                Some(name),
                sub,
                &manager,
                Write::Update(body),
            )?;
            Ok(Served::Json(200, v))
        }
        (&Method::PATCH, Some(name)) => {
            let body = body.unwrap_or_default();
            let write = if content_type.starts_with("application/apply-patch") {
                if params.field_manager.is_none() {
                    return Err(ApiError::bad_request(
                        "PATCH, application/apply-patch+yaml requires fieldManager",
                    ));
                }
                Write::Apply {
                    config: body,
                    force: params.force,
                }
            } else if content_type.starts_with("application/merge-patch+json")
                || content_type.starts_with("application/strategic-merge-patch+json")
            {
                Write::MergePatch(body)
            } else {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format: {content_type}"),
                ));
            };
            let existed = store.get(resource, &ns, name).is_ok();
            let v = store.write(resource, &ns, Some(name), sub, &manager, write)?;
            Ok(Served::Json(if existed { 200 } else { 201 }, v))
        }
        (&Method::DELETE, Some(name)) => store
            .delete(resource, &ns, name)
            .map(|v| Served::Json(200, v)),
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not allowed here"),
        )),
    }
}

fn watch_response(
    shared: &Arc<Shared>,
    id: u64,
    rx: mpsc::UnboundedReceiver<Bytes>,
    timeout_seconds: Option<u64>,
) -> Response<Body> {
    if let Some(seconds) = timeout_seconds.filter(|s| *s > 0) {
        let shared = Arc::downgrade(shared);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            if let Some(shared) = shared.upgrade() {
                shared.store().close_watch(id);
            }
        });
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed(WatchBody { rx }))
        .unwrap_or_else(|_| Response::new(full("")))
}

/// The chunked body of a watch: one JSON event per line, until the store drops the watch.
struct WatchBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
}

impl hyper::body::Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|line| line.map(|l| Ok(Frame::data(l))))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            super::percent_decode("spec.nodeName%3Dnode-1"),
            "spec.nodeName=node-1"
        );
        assert_eq!(super::percent_decode("a+in+%28x%2Cy%29"), "a in (x,y)");
        assert_eq!(super::percent_decode("100%"), "100%");
    }
}
