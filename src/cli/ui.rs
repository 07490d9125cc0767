//! `ferrite ui`: the agent's web page on a loopback TCP port for a browser, which cannot speak
//! to a unix socket — what `cilium hubble ui` does with a port-forward. Every GET is passed to
//! the agent's socket as it came (path and query) and answered with the agent's status, type
//! and body; nothing else is served.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use argh::FromArgs;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::api::client;

/// Serve the agent's web page on a loopback port (open http://ADDR/ui in a browser).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "ui")]
pub struct UiCmd {
    /// loopback address and port to listen on (default 127.0.0.1:12000)
    #[argh(option, default = "SocketAddr::from(([127, 0, 0, 1], 12000))")]
    pub listen: SocketAddr,
    /// the agent's API socket
    #[argh(option, default = "super::default_api_socket()")]
    pub api_socket: PathBuf,
}

/// Whether `addr` may be listened on: the page has no authentication of its own (the socket's
/// file mode is the agent's), so only this machine may reach it.
fn check_listen(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "--listen {addr}: only a loopback address (127.0.0.1, ::1); for remote access use \
             the agent's TLS listener (--api-listen) with client certificates"
        ))
    }
}

fn reply(status: StatusCode, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": message }).to_string();
    reply(status, "application/json", Bytes::from(body))
}

async fn forward(socket: &std::path::Path, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET");
    }
    let route = match req.uri().path() {
        "/" => "/ui".to_owned(),
        _ => req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), ToString::to_string),
    };
    match client::get_raw(socket, &route).await {
        Ok(r) => reply(
            StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY),
            r.content_type
                .as_deref()
                .unwrap_or("application/octet-stream"),
            r.body,
        ),
        Err(e) => error(StatusCode::BAD_GATEWAY, &e.to_string()),
    }
}

async fn serve(cmd: &UiCmd) -> Result<(), String> {
    let listener = TcpListener::bind(cmd.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", cmd.listen))?;
    let socket = Arc::new(cmd.api_socket.clone());
    eprintln!(
        "ferrite ui: http://{}/ui (agent at {})",
        cmd.listen,
        cmd.api_socket.display()
    );
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|e| format!("accepting on {}: {e}", cmd.listen))?;
        let socket = socket.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let socket = socket.clone();
                async move { Ok::<_, Infallible>(forward(&socket, &req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "ui connection ended with an error");
            }
        });
    }
}

pub fn run(cmd: &UiCmd) -> i32 {
    if let Err(e) = check_listen(cmd.listen) {
        eprintln!("error: {e}");
        return 2;
    }
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    match rt.block_on(serve(cmd)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_listened_on() {
        assert!(check_listen("127.0.0.1:12000".parse().unwrap()).is_ok());
        assert!(check_listen("[::1]:12000".parse().unwrap()).is_ok());
        let e = check_listen("0.0.0.0:12000".parse().unwrap()).unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        assert!(check_listen("192.168.1.5:80".parse().unwrap()).is_err());
    }
}
