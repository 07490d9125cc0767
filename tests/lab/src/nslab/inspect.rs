//! Reading what the agents did: pinned map dumps and health-check bodies.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::NsLabError;
use crate::cmd;

/// Entries of a pinned BPF map (`bpftool -j map dump pinned PATH`): the JSON of each key →
/// the JSON of its value (`formatted` when bpftool has BTF for it). Keys compare exactly, so
/// two dumps can be diffed whatever the map's layout.
pub fn map_entries(pinned: &Path) -> Result<BTreeMap<String, String>, NsLabError> {
    let out = cmd::run(
        Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned"])
            .arg(pinned),
    )?;
    let dump: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| NsLabError::Other(format!("bpftool output is not JSON: {e}")))?;
    let Value::Array(items) = dump else {
        return Err(NsLabError::Other(format!(
            "bpftool dump of {} is not a list",
            pinned.display()
        )));
    };
    let mut entries = BTreeMap::new();
    for item in items {
        let show = item.get("formatted").unwrap_or(&item);
        let value = show
            .get("value")
            .or_else(|| show.get("values"))
            .map(Value::to_string)
            .unwrap_or_default();
        let key = show
            .get("key")
            .or_else(|| item.get("key"))
            .map_or_else(|| item.to_string(), Value::to_string);
        entries.insert(key, value);
    }
    Ok(entries)
}

/// The local endpoint count a health-check node port reports: kube-proxy's JSON
/// (`{"service": {...}, "localEndpoints": N, ...}`, the key anywhere in the document), or a
/// body that is just a number.
#[must_use]
pub fn local_endpoints(body: &str) -> Option<u64> {
    fn find(v: &Value) -> Option<u64> {
        match v {
            Value::Object(map) => map
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("localEndpoints") || *k == "local_endpoints")
                .and_then(|(_, v)| v.as_u64())
                .or_else(|| map.values().find_map(find)),
            Value::Array(items) => items.iter().find_map(find),
            _ => None,
        }
    }
    match serde_json::from_str::<Value>(body.trim()) {
        Ok(Value::Number(n)) => n.as_u64(),
        Ok(v) => find(&v),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_check_bodies() {
        assert_eq!(
            local_endpoints(
                r#"{"service": {"namespace": "test", "name": "local"}, "localEndpoints": 2, "serviceProxyHealthy": true}"#
            ),
            Some(2)
        );
        assert_eq!(local_endpoints(r#"{"local_endpoints": 0}"#), Some(0));
        assert_eq!(
            local_endpoints(r#"{"status": {"localEndpoints": 1}}"#),
            Some(1)
        );
        assert_eq!(local_endpoints("3\n"), Some(3));
        assert_eq!(local_endpoints("ok"), None);
        assert_eq!(local_endpoints(r#"{"healthy": true}"#), None);
    }
}
