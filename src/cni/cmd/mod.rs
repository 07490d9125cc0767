//! One module per CNI command (ADD, DEL, CHECK, GC, STATUS); VERSION needs no config.

pub mod add;
pub mod check;
pub mod del;
pub mod gc;
pub mod status;

use serde_json::{Value, json};

use super::env::{Attachment, CniEnv, EnvError};
use super::version::{LATEST, SUPPORTED};

/// The attachment of ADD/DEL/CHECK (the environment parser guarantees it for those).
fn attachment(env: &CniEnv) -> Result<&Attachment, EnvError> {
    env.attachment.as_ref().ok_or(EnvError::Missing {
        command: env.command,
        missing: vec!["CNI_CONTAINERID", "CNI_IFNAME"],
    })
}

/// VERSION's answer: the version asked about (or the newest) and every one supported.
#[must_use]
pub fn version(requested: Option<&str>) -> Value {
    json!({
        "cniVersion": requested.filter(|v| !v.is_empty()).unwrap_or(LATEST.as_str()),
        "supportedVersions": SUPPORTED.map(super::version::CniVersion::as_str),
    })
}
