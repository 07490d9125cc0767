//! Certificates for the TCP API when kube mode keeps its CA in a Secret
//! ([`crate::source::kube::api_ca`]): a CA made once for the cluster, and from it a server
//! certificate per agent (its node name and addresses as SANs, so `observe --all-nodes`
//! verifies each node by the address it dials) and client certificates for operators
//! (`ferrite api client-cert`). ECDSA P-256, signed with ring through rcgen.

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The CA's subject: every certificate issued names it as issuer.
const CA_NAME: &str = "ferrite API CA";
/// Years a CA stays valid (it is never rotated by the agent).
const CA_YEARS: i32 = 10;
/// Years an issued certificate stays valid (agents issue theirs at every start).
const LEAF_YEARS: i32 = 2;

/// The CA as PEM text: certificate and PKCS#8 private key.
#[derive(Clone, PartialEq, Eq)]
pub struct CaPem {
    pub cert: String,
    pub key: String,
}

/// Where the key starts in a bundle ([`CaPem::to_bundle`]).
const KEY_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";

impl CaPem {
    /// The certificate then the key, one text (the Secret's field).
    #[must_use]
    pub fn to_bundle(&self) -> String {
        format!("{}{}", self.cert, self.key)
    }

    /// A bundle back into its halves.
    pub fn from_bundle(text: &str) -> Result<Self, CertError> {
        let at = text.find(KEY_BEGIN).ok_or(CertError::Bundle)?;
        let (cert, key) = text.split_at(at);
        if !cert.contains("-----BEGIN CERTIFICATE-----") {
            return Err(CertError::Bundle);
        }
        KeyPair::from_pem(key).map_err(CertError::CaKey)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
        })
    }
}

/// Never prints the key.
impl std::fmt::Debug for CaPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaPem").finish_non_exhaustive()
    }
}

/// A certificate issued by the CA, with its key (PEM).
#[derive(Clone)]
pub struct Issued {
    pub cert: String,
    pub key: String,
}

/// What an issued certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// An agent's TCP API listener.
    Server,
    /// An operator's client (`ferrite observe --all-nodes`, curl).
    Client,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating a key pair: {0}")]
    Key(#[source] rcgen::Error),
    #[error("the CA key: {0}")]
    CaKey(#[source] rcgen::Error),
    #[error("the CA text holds no PEM certificate followed by a PEM private key")]
    Bundle,
    #[error("certificate for {name:?}: {source}")]
    Sign {
        name: String,
        #[source]
        source: rcgen::Error,
    },
}

/// The current year, for validity periods (a day's precision is plenty).
fn this_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let years = secs / 31_556_952;
    1970 + i32::try_from(years).unwrap_or(0)
}

/// The CA's parameters: the same subject every time, so a CA read back from its Secret
/// issues certificates naming the subject its own certificate has.
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let year = this_year();
    p.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    p.not_after = rcgen::date_time_ymd(year + CA_YEARS, 1, 1);
    p
}

/// A new CA.
pub fn generate_ca() -> Result<CaPem, CertError> {
    let key = KeyPair::generate().map_err(CertError::Key)?;
    let cert = ca_params()
        .self_signed(&key)
        .map_err(|source| CertError::Sign {
            name: CA_NAME.into(),
            source,
        })?;
    Ok(CaPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A certificate for `name` (the subject and a DNS SAN) and `ips` (IP SANs), signed by `ca`.
pub fn issue(ca: &CaPem, name: &str, ips: &[IpAddr], usage: Usage) -> Result<Issued, CertError> {
    let sign = |source| CertError::Sign {
        name: name.to_owned(),
        source,
    };
    let ca_key = KeyPair::from_pem(&ca.key).map_err(CertError::CaKey)?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let mut p = CertificateParams::new(vec![name.to_owned()]).map_err(sign)?;
    for ip in ips {
        let san = SanType::IpAddress(*ip);
        if !p.subject_alt_names.contains(&san) {
            p.subject_alt_names.push(san);
        }
    }
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![match usage {
        Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    let year = this_year();
    p.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    p.not_after = rcgen::date_time_ymd(year + LEAF_YEARS, 1, 1);
    let key = KeyPair::generate().map_err(CertError::Key)?;
    let cert = p.signed_by(&key, &issuer).map_err(sign)?;
    Ok(Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Writes PEM `text` to `path` with `mode` (0600 for keys): aside first, then renamed, so a
/// reader never sees half a key.
pub fn write_pem(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("new");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
#[path = "certs_tests.rs"]
mod tests;
