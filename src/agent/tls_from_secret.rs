//! The TCP API's certificates from the cluster's CA (kube mode, `--api-listen` without
//! certificate files): wait for Secret `ferrite-api-ca` ([`crate::source::kube::api_ca`], made
//! by the first agent that finds none), issue this node's server certificate (the node name and
//! the addresses it is dialled at), and write it, its key (0600) and the CA to the listener's
//! paths under the state dir, where `--api-tls-*` files would otherwise be. Issued anew at
//! every start; clients trust the CA, so nothing else changes.

use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::Path;

use tokio::sync::watch;
use tracing::info;

use crate::api::certs::{self, CaPem, Usage};
use crate::api::{ApiError, TcpConfig};
use crate::source::kube::l2key::KeyState;

fn write(path: &Path, text: &str, mode: u32) -> Result<(), ApiError> {
    certs::write_pem(path, text, mode).map_err(|source| ApiError::CertFile {
        path: path.to_owned(),
        source,
    })
}

/// Waits for the CA, then writes this node's certificate files to `tcp`'s paths.
pub async fn write_node_certs(
    mut ca: watch::Receiver<KeyState>,
    node: &str,
    ips: &[IpAddr],
    tcp: &TcpConfig,
) -> Result<(), ApiError> {
    let (text, from) = loop {
        if let KeyState::Ready { text, from } = &*ca.borrow_and_update() {
            break (text.clone(), from.clone());
        }
        if ca.changed().await.is_err() {
            return Err(ApiError::NodeCert("the API CA task ended".into()));
        }
    };
    let ca = CaPem::from_bundle(&text).map_err(|e| ApiError::NodeCert(e.to_string()))?;
    let issued = certs::issue(&ca, node, ips, Usage::Server)
        .map_err(|e| ApiError::NodeCert(e.to_string()))?;
    if let Some(dir) = tcp.cert.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| ApiError::CertFile {
                path: dir.to_owned(),
                source,
            })?;
    }
    write(&tcp.client_ca, &ca.cert, 0o644)?;
    write(&tcp.cert, &issued.cert, 0o644)?;
    write(&tcp.key, &issued.key, 0o600)?;
    info!(%from, node, ips = ?ips, cert = %tcp.cert.display(), "API certificate issued from the cluster CA");
    Ok(())
}
