//! The sysctls a node routing pods needs, set when they differ and logged once each.

use std::path::Path;

use tracing::{info, warn};

/// `(path under /proc/sys, wanted value, why)`; `rp_filter` is only relaxed from strict (1) to
/// loose (2): strict drops pod traffic arriving over VXLAN when the reverse route leaves
/// another way, loose keeps spoofing protection for addresses with no route at all.
fn wanted(v4: bool, v6: bool, vxlan: bool) -> Vec<(&'static str, &'static str, &'static str)> {
    let mut out = Vec::new();
    if v4 {
        out.push(("net/ipv4/ip_forward", "1", "pods on other nodes are routed"));
    }
    if v6 {
        out.push((
            "net/ipv6/conf/all/forwarding",
            "1",
            "IPv6 pods on other nodes are routed",
        ));
    }
    if vxlan {
        out.push((
            "net/ipv4/conf/ferrite.vxlan/rp_filter",
            "0",
            "pod traffic from VXLAN may return another way",
        ));
    }
    out
}

/// Sets what `wanted` lists; returns the paths it changed.
pub fn ensure(v4: bool, v6: bool, vxlan: bool) -> Vec<String> {
    let mut changed = Vec::new();
    for (key, value, why) in wanted(v4, v6, vxlan) {
        let path = Path::new("/proc/sys").join(key);
        match std::fs::read_to_string(&path) {
            Ok(v) if v.trim() == value => {}
            Ok(old) => match std::fs::write(&path, value) {
                Ok(()) => {
                    info!(
                        sysctl = key,
                        old = old.trim(),
                        new = value,
                        why,
                        "sysctl set"
                    );
                    changed.push(key.to_string());
                }
                Err(e) => warn!(sysctl = key, error = %e, why, "cannot set sysctl"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(sysctl = key, error = %e, "cannot read sysctl"),
        }
    }
    let all = Path::new("/proc/sys/net/ipv4/conf/all/rp_filter");
    if (v4 || vxlan) && std::fs::read_to_string(all).is_ok_and(|v| v.trim() == "1") {
        match std::fs::write(all, "2") {
            Ok(()) => {
                info!(
                    sysctl = "net/ipv4/conf/all/rp_filter",
                    old = "1",
                    new = "2",
                    why = "strict reverse-path filtering drops routed pod traffic",
                    "sysctl set"
                );
                changed.push("net/ipv4/conf/all/rp_filter".into());
            }
            Err(e) => warn!(error = %e, "cannot relax net.ipv4.conf.all.rp_filter"),
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_what_the_cluster_uses_is_asked_for() {
        assert!(super::wanted(false, false, false).is_empty());
        let keys: Vec<_> = super::wanted(true, true, true)
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        assert_eq!(
            keys,
            [
                "net/ipv4/ip_forward",
                "net/ipv6/conf/all/forwarding",
                "net/ipv4/conf/ferrite.vxlan/rp_filter"
            ]
        );
    }
}
