//! `ferrite agent`'s L2 flags (`--l2-bind`, `--l2-peers`, `--l2-standalone`, `--l2-key-file`,
//! `--l2-reannounce-seconds`, `--l2-claim-hold-ms`) and `HOST_IP` → [`L2Config`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::agent::{KeySource, L2Config, MemberConfig};
use crate::l2::membership::{DEFAULT_PORT, parse_peers};

/// The environment variable the DaemonSet sets from the downward API's `status.hostIP`.
pub const HOST_IP_ENV: &str = "HOST_IP";

/// The raw L2 flags of `ferrite agent`.
#[derive(Clone, Debug, Default)]
pub struct L2Flags<'a> {
    pub bind: Option<&'a str>,
    pub peers: Option<&'a str>,
    pub standalone: bool,
    /// `--l2-key-file` when given.
    pub key_file: Option<PathBuf>,
    /// `--source kube`: without `--l2-key-file` the key is the Secret's.
    pub kube: bool,
    pub reannounce_seconds: Option<u64>,
    pub claim_hold_ms: u64,
}

fn parse_bind(b: &str) -> Result<SocketAddr, String> {
    b.parse::<SocketAddr>()
        .or_else(|_| {
            b.parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, DEFAULT_PORT))
        })
        .map_err(|_| format!("--l2-bind {b:?}: expected IP or IP:PORT"))
}

/// Checks the flags; `host_ip` is `HOST_IP`'s value (empty counts as unset).
pub fn l2_config(flags: &L2Flags<'_>, host_ip: Option<&str>) -> Result<L2Config, String> {
    if flags.standalone && (flags.bind.is_some() || flags.peers.is_some()) {
        return Err(
            "--l2-standalone decides L2 ownership alone: it cannot be combined with --l2-bind \
             or --l2-peers"
                .into(),
        );
    }
    let bind = flags.bind.map(parse_bind).transpose()?;
    let peers = match flags.peers {
        Some(p) => {
            let peers = parse_peers(p).map_err(|e| format!("--l2-peers: {e}"))?;
            if peers.is_empty() {
                return Err(
                    "--l2-peers is empty (leave it out to use the Nodes' InternalIPs)".into(),
                );
            }
            peers
        }
        None => Vec::new(),
    };
    let host_ip = host_ip
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| format!("{HOST_IP_ENV}={s:?} is not an IP address"))
        })
        .transpose()?;
    Ok(L2Config {
        member: MemberConfig {
            bind,
            host_ip,
            peers,
            standalone: flags.standalone,
            key: match (&flags.key_file, flags.kube) {
                (Some(path), _) => KeySource::File(path.clone()),
                (None, true) => KeySource::Secret(None),
                (None, false) => KeySource::File(PathBuf::from(crate::agent::DEFAULT_KEY_FILE)),
            },
        },
        reannounce: flags
            .reannounce_seconds
            .filter(|s| *s > 0)
            .map(Duration::from_secs),
        claim_hold: Duration::from_millis(flags.claim_hold_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> L2Flags<'static> {
        L2Flags {
            claim_hold_ms: 1000,
            ..L2Flags::default()
        }
    }

    #[test]
    fn no_flags_means_membership_on_the_default_port_and_key_file() {
        let c = l2_config(&flags(), None).unwrap();
        assert!(!c.member.standalone);
        assert_eq!(c.member.bind, None);
        assert!(c.member.peers.is_empty());
        assert!(
            matches!(&c.member.key, KeySource::File(p) if p == &PathBuf::from("/etc/ferrite/l2.key")),
            "{:?}",
            c.member.key
        );
        let kube = L2Flags {
            kube: true,
            ..flags()
        };
        let c = l2_config(&kube, None).unwrap();
        assert!(
            matches!(c.member.key, KeySource::Secret(None)),
            "{:?}",
            c.member.key
        );
        let kube_file = L2Flags {
            kube: true,
            key_file: Some(PathBuf::from("/k")),
            ..flags()
        };
        let c = l2_config(&kube_file, None).unwrap();
        assert!(matches!(&c.member.key, KeySource::File(p) if p == &PathBuf::from("/k")));
        let c = l2_config(&flags(), Some("192.168.1.11")).unwrap();
        assert_eq!(c.member.host_ip, Some("192.168.1.11".parse().unwrap()));
        assert_eq!(l2_config(&flags(), Some("")).unwrap().member.host_ip, None);
        assert!(
            l2_config(&flags(), Some("node1"))
                .unwrap_err()
                .contains("HOST_IP")
        );
    }

    #[test]
    fn contradictory_or_malformed_flags_are_errors() {
        let standalone_with_peers = L2Flags {
            standalone: true,
            peers: Some("10.0.0.2"),
            ..flags()
        };
        assert!(
            l2_config(&standalone_with_peers, None)
                .unwrap_err()
                .contains("--l2-standalone")
        );
        let standalone_with_bind = L2Flags {
            standalone: true,
            bind: Some("10.0.0.1"),
            ..flags()
        };
        assert!(l2_config(&standalone_with_bind, None).is_err());
        let empty_peers = L2Flags {
            peers: Some(" , "),
            ..flags()
        };
        assert!(l2_config(&empty_peers, None).unwrap_err().contains("empty"));
        let bad_bind = L2Flags {
            bind: Some("eth0"),
            ..flags()
        };
        assert!(
            l2_config(&bad_bind, None)
                .unwrap_err()
                .contains("--l2-bind")
        );
        let ok = L2Flags {
            bind: Some("10.0.0.1"),
            peers: Some("10.0.0.2,10.0.0.3:7000"),
            ..flags()
        };
        let c = l2_config(&ok, None).unwrap();
        assert_eq!(c.member.bind, Some("10.0.0.1:7946".parse().unwrap()));
        assert_eq!(c.member.peers.len(), 2);
        let standalone = L2Flags {
            standalone: true,
            ..flags()
        };
        assert!(l2_config(&standalone, None).unwrap().member.standalone);
    }
}
