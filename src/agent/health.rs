//! `spec.healthCheckNodePort` for externalTrafficPolicy Local services: HTTP 200 with the local
//! endpoint count when this node has ready endpoints, 503 otherwise (kube-proxy's format), so an
//! external load balancer or the L2 announcer knows which nodes can take the traffic.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::model::{ServiceName, ServiceType, Snapshot, TrafficPolicy};

type Counts = Arc<RwLock<BTreeMap<u16, (ServiceName, usize)>>>;

#[derive(Default)]
pub struct HealthServer {
    counts: Counts,
    listeners: BTreeMap<u16, JoinHandle<()>>,
}

/// Health-check port → (service, ready endpoints on `node`), for ETP=Local LoadBalancers.
pub fn desired(snapshot: &Snapshot, node: &str) -> BTreeMap<u16, (ServiceName, usize)> {
    let mut out = BTreeMap::new();
    for svc in snapshot.services.values() {
        let Some(port) = svc.health_check_node_port else {
            continue;
        };
        if svc.service_type != ServiceType::LoadBalancer
            || svc.external_traffic_policy != TrafficPolicy::Local
            || !svc.proxied()
        {
            continue;
        }
        let mut addrs = std::collections::BTreeSet::new();
        for slice in snapshot
            .endpoint_slices
            .values()
            .filter(|s| s.service == svc.name)
        {
            for ep in slice
                .endpoints
                .iter()
                .filter(|e| e.ready && e.node_name.as_deref() == Some(node))
            {
                addrs.extend(ep.addresses.iter().copied());
            }
        }
        out.insert(port, (svc.name.clone(), addrs.len()));
    }
    out
}

impl HealthServer {
    /// Publishes the counts and opens/closes listeners to match.
    pub fn update(&mut self, wanted: BTreeMap<u16, (ServiceName, usize)>) {
        let ports: Vec<u16> = wanted.keys().copied().collect();
        *self
            .counts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = wanted;
        self.listeners.retain(|port, task| {
            let keep = ports.contains(port);
            if !keep {
                task.abort();
                info!(port, "health-check port closed");
            }
            keep
        });
        for port in ports {
            if self.listeners.contains_key(&port) {
                continue;
            }
            let counts = self.counts.clone();
            match std::net::TcpListener::bind(("::", port)).and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            }) {
                Ok(listener) => {
                    info!(port, "health-check port open");
                    self.listeners
                        .insert(port, tokio::spawn(serve(listener, port, counts)));
                }
                Err(e) => warn!(port, error = %e, "cannot open health-check port"),
            }
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, port: u16, counts: Counts) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let counts = counts.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req| {
                let entry = counts
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&port)
                    .cloned();
                async move { Ok::<_, Infallible>(response(entry)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn response(entry: Option<(ServiceName, usize)>) -> Response<Full<Bytes>> {
    let (code, body) = match entry {
        Some((name, n)) => (
            if n > 0 {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            serde_json::json!({
                "service": {"namespace": name.namespace, "name": name.name},
                "localEndpoints": n,
            }),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"localEndpoints": 0}),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}
