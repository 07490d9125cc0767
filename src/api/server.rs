//! HTTP/1.1 servers (hyper): the unix socket (mode 0600), the optional TCP listener with TLS
//! and client certificates, and the optional plain `/metrics` port for Prometheus.

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{Either, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tracing::{debug, info};

use super::SharedState;
use super::routes::{Reply, ReplyBody, RouteSet, dispatch};
use super::tls::{TcpConfig, TlsError, server_config};

/// A TLS handshake that takes longer than this is dropped (a client that never speaks).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{op} API socket {path}: {source}")]
    Socket {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{op} {addr}: {source}")]
    Tcp {
        op: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the API's TLS listener: {0}")]
    Tls(#[from] TlsError),
    #[error("the API's certificate from Secret ferrite-api-ca: {0}")]
    NodeCert(String),
    #[error("writing the API's certificate {path}: {source}")]
    CertFile {
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
        tokio::spawn(connection(stream, state.clone(), RouteSet::All));
    }
}

fn tcp_listener(addr: std::net::SocketAddr) -> Result<TcpListener, ApiError> {
    let err = |op| move |source| ApiError::Tcp { op, addr, source };
    let std = std::net::TcpListener::bind(addr).map_err(err("binding"))?;
    std.set_nonblocking(true).map_err(err("configuring"))?;
    TcpListener::from_std(std).map_err(err("registering"))
}

/// `--api-listen`: every route, over TLS with a client certificate signed by the client CA.
/// Connections that do not complete such a handshake (plain TCP, no or a foreign certificate)
/// are closed without an answer.
pub async fn serve_tls(cfg: TcpConfig, state: SharedState) -> Result<(), ApiError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&cfg)?);
    let listener = tcp_listener(cfg.listen)?;
    info!(addr = %cfg.listen, client_ca = %cfg.client_ca.display(), "API listening (TLS, client certificates required)");
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "accepting an API connection");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => connection(tls, state, RouteSet::All).await,
                Ok(Err(e)) => info!(%peer, error = %e, "API connection refused (TLS)"),
                Err(_) => info!(%peer, "API connection refused (no TLS handshake in time)"),
            }
        });
    }
}

/// `--metrics-listen`: `/metrics` in plain HTTP for Prometheus (Cilium's agent does the same
/// on :9962); every other path answers 404.
pub async fn serve_metrics(addr: std::net::SocketAddr, state: SharedState) -> Result<(), ApiError> {
    let listener = tcp_listener(addr)?;
    info!(%addr, "metrics listening");
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, state.clone(), RouteSet::Metrics));
            }
            Err(e) => debug!(error = %e, "accepting a metrics connection"),
        }
    }
}

async fn connection<S>(io: S, state: SharedState, set: RouteSet)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move {
            let accept = req
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let reply = dispatch(
                set,
                req.method(),
                req.uri().path(),
                req.uri().query(),
                accept,
                &state,
            );
            Ok::<_, Infallible>(response(reply))
        }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await
    {
        debug!(error = %e, "API connection ended with an error");
    }
}

/// A whole body, or the flow stream's.
type Body = Either<Full<bytes::Bytes>, super::stream::FlowStream>;

fn response(reply: Reply) -> Response<Body> {
    let body = match reply.body {
        ReplyBody::Full(b) => Either::Left(Full::new(b)),
        ReplyBody::Stream(s) => Either::Right(*s),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = reply.status;
    let headers = resp.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(reply.content_type),
    );
    if reply.status == hyper::StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET"),
        );
    }
    resp
}
