//! Minimal client for the agent's API (used by `ferrite status|services`).

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Empty};
use hyper::{Request, body::Bytes};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the agent at {path}: {source} (is `ferrite agent` running? see --api-socket)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("API request {route} to {path}: {source}")]
    Http {
        route: String,
        path: PathBuf,
        source: hyper::Error,
    },
    #[error("API request {route}: HTTP {status}: {body}")]
    Status {
        route: String,
        status: u16,
        body: String,
    },
    #[error("cannot reach the agent at {addr}: {source}")]
    ConnectTcp {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS with the agent at {addr}: {source}")]
    Tls {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("API request {route} to {addr}: {source}")]
    HttpTcp {
        route: String,
        addr: std::net::SocketAddr,
        source: hyper::Error,
    },
    #[error("API request {route} cannot be sent: {message}")]
    Request { route: String, message: String },
    #[error("API response of {route} is not the expected JSON: {source}")]
    Decode {
        route: String,
        source: serde_json::Error,
    },
}

/// One answer of the agent, as it came.
pub struct RawReply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// What can go wrong once connected: hyper's error, or a request that cannot be built.
enum SendError {
    Http(hyper::Error),
    Request(String),
}

/// One GET over an established connection (plain or TLS), the answer as it came.
async fn send<I>(io: I, route: &str, host: &str) -> Result<RawReply, SendError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(SendError::Http)?;
    tokio::spawn(conn);
    let req = Request::get(route)
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| SendError::Request(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(SendError::Http)?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(SendError::Http)?
        .to_bytes();
    Ok(RawReply {
        status,
        content_type,
        body,
    })
}

/// GETs `route` (path and query) from the agent on `socket`, whatever the status.
pub async fn get_raw(socket: &Path, route: &str) -> Result<RawReply, ClientError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.into(),
            source,
        })?;
    send(stream, route, "ferrite").await.map_err(|e| match e {
        SendError::Http(source) => ClientError::Http {
            route: route.into(),
            path: socket.into(),
            source,
        },
        SendError::Request(message) => ClientError::Request {
            route: route.into(),
            message,
        },
    })
}

/// GETs `route` from an agent's TLS listener at `addr` (its certificate must name that IP).
pub async fn get_tls(
    addr: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
    route: &str,
) -> Result<RawReply, ClientError> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::ConnectTcp { addr, source })?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|source| ClientError::Tls { addr, source })?;
    send(tls, route, &addr.ip().to_string())
        .await
        .map_err(|e| match e {
            SendError::Http(source) => ClientError::HttpTcp {
                route: route.into(),
                addr,
                source,
            },
            SendError::Request(message) => ClientError::Request {
                route: route.into(),
                message,
            },
        })
}

/// GETs `route` from the agent on `socket` and decodes the JSON body.
pub async fn get<T: DeserializeOwned>(socket: &Path, route: &str) -> Result<T, ClientError> {
    let reply = get_raw(socket, route).await?;
    if !(200..300).contains(&reply.status) {
        return Err(ClientError::Status {
            route: route.into(),
            status: reply.status,
            body: String::from_utf8_lossy(&reply.body).into_owned(),
        });
    }
    serde_json::from_slice(&reply.body).map_err(|source| ClientError::Decode {
        route: route.into(),
        source,
    })
}
