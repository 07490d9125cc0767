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
    #[error("API response of {route} is not the expected JSON: {source}")]
    Decode {
        route: String,
        source: serde_json::Error,
    },
}

/// GETs `route` from the agent on `socket` and decodes the JSON body.
pub async fn get<T: DeserializeOwned>(socket: &Path, route: &str) -> Result<T, ClientError> {
    let http = |source| ClientError::Http {
        route: route.into(),
        path: socket.into(),
        source,
    };
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.into(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(conn);
    let req = Request::get(route)
        .header(hyper::header::HOST, "ferrite")
        .body(Empty::<Bytes>::new())
        .expect("static request parts are valid");
    let resp = sender.send_request(req).await.map_err(http)?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(http)?.to_bytes();
    if !status.is_success() {
        return Err(ClientError::Status {
            route: route.into(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
        route: route.into(),
        source,
    })
}
