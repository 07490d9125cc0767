//! HTTP/1.1 server on a unix socket (hyper).

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tracing::{debug, info};

use super::SharedState;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{op} API socket {path}: {source}")]
    Socket {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Binds `path` (replacing a stale socket, mode 0600) and serves until the task is dropped.
pub async fn serve(path: &Path, state: SharedState) -> Result<(), ApiError> {
    let err = |op| {
        move |source| ApiError::Socket {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err("creating the directory of"))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => debug!(path = %path.display(), "removed stale API socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("removing stale")(e)),
    }
    let listener = UnixListener::bind(path).map_err(err("binding"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(err("setting mode 0600 on"))?;
    info!(path = %path.display(), "API listening");
    loop {
        let (stream, _) = listener.accept().await.map_err(err("accepting on"))?;
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&req, &state)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!(error = %e, "API connection ended with an error");
            }
        });
    }
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec_pretty(body).unwrap_or_else(|e| {
        format!("{{\"error\":\"serializing the response: {e}\"}}").into_bytes()
    });
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn route(req: &Request<Incoming>, state: &SharedState) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "only GET"}),
        );
    }
    let guard = state
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match req.uri().path() {
        "/v1/status" => json(StatusCode::OK, &guard.current_status()),
        "/v1/l2" => json(StatusCode::OK, &guard.l2),
        "/v1/services" => json(StatusCode::OK, &guard.services),
        "/v1/pools" => json(StatusCode::OK, &guard.pools),
        "/v1/routes" => json(
            StatusCode::OK,
            &*guard
                .routes
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ),
        // Both report every subsystem; 503 names those not ready (CNI STATUS shows it).
        "/healthz" | "/readyz" => {
            let st = &guard.status;
            let not_ready: Vec<&crate::api::Subsystem> = st.not_ready();
            let ready = st.datapath.ready && not_ready.is_empty();
            let code = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let failing: Vec<String> = not_ready
                .iter()
                .map(|s| format!("{}: {}", s.name, s.detail))
                .collect();
            json(
                code,
                &serde_json::json!({
                    "ready": ready,
                    "not_ready": failing,
                    "subsystems": st.subsystems,
                }),
            )
        }
        other => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": format!("no route {other}")}),
        ),
    }
}
