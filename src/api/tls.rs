//! The TCP listener's TLS: rustls (ring) with a server certificate and a client CA; every
//! client must present a certificate that CA signed (no anonymous TLS, no plain TCP).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// `--api-listen` with its certificate files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    pub listen: std::net::SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {what} from {path}: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no {what}")]
    Empty { what: &'static str, path: PathBuf },
    #[error("the client CA {path}: {source}")]
    Ca {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("the client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("the server certificate {cert} with the key {key}: {source}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        what,
        path: path.into(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.into(),
        });
    }
    Ok(certs)
}

/// The server configuration for `cfg`: TLS 1.2/1.3 with ring, client certificates required.
pub fn server_config(cfg: &TcpConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certs("client CA certificates", &cfg.client_ca)? {
        roots.add(ca).map_err(|source| TlsError::Ca {
            path: cfg.client_ca.clone(),
            source,
        })?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let chain = certs("server certificates", &cfg.cert)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|source| TlsError::Pem {
        what: "a private key",
        path: cfg.key.clone(),
        source,
    })?;
    let config_err = |source| TlsError::Config {
        cert: cfg.cert.clone(),
        key: cfg.key.clone(),
        source,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(config_err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client's certificate files (`ferrite observe --all-nodes`): its own certificate and key,
/// and the CA that signed the agents' server certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// The client configuration for `files`: the agents' certificates must chain to `ca` and name
/// the address dialled; this client presents its own certificate.
pub fn client_config(files: &ClientFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certs("server CA certificates", &files.ca)? {
        roots.add(ca).map_err(|source| TlsError::Ca {
            path: files.ca.clone(),
            source,
        })?;
    }
    let chain = certs("client certificates", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Pem {
        what: "a private key",
        path: files.key.clone(),
        source,
    })?;
    let config_err = |source| TlsError::Config {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(config_err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
