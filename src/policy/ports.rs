//! A rule's `ports` as LPM blocks of the policy key: `(protocol, (first port, prefix bits))`.
//! `None` protocol: every protocol; `None` block: every port of the protocol. A range
//! `port..=endPort` becomes the fewest aligned power-of-two blocks that cover it exactly.

use std::collections::BTreeSet;

use crate::model::{Pod, PolicyPort, PolicyPortNumber as PortNumber};

pub type Block = (Option<u8>, Option<(u16, u32)>);

/// The aligned blocks covering `lo..=hi`, as (first port, prefix bits of the 16).
#[must_use]
pub fn range(lo: u16, hi: u16) -> Vec<(u16, u32)> {
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    let mut out = Vec::new();
    while lo <= hi {
        let mut size = 1_u32;
        while lo % (size * 2) == 0 && lo + size * 2 - 1 <= hi && size < 65_536 {
            size *= 2;
        }
        out.push((
            u16::try_from(lo).unwrap_or(u16::MAX),
            16 - size.trailing_zeros(),
        ));
        lo += size;
    }
    out
}

/// Every block of `ports`, named ports resolved on `targets`.
#[must_use]
pub fn blocks(ports: &[PolicyPort], targets: &[&Pod]) -> BTreeSet<Block> {
    let mut out = BTreeSet::new();
    if ports.is_empty() {
        out.insert((None, None));
        return out;
    }
    for p in ports {
        let proto = p.protocol.number();
        match &p.port {
            None => {
                out.insert((Some(proto), None));
            }
            Some(PortNumber::Number(n)) => {
                let hi = p.end_port.filter(|e| e >= n).unwrap_or(*n);
                for b in range(*n, hi) {
                    out.insert((Some(proto), Some(b)));
                }
            }
            Some(PortNumber::Name(name)) => {
                for pod in targets {
                    for np in &pod.named_ports {
                        if np.name == *name && np.protocol == p.protocol {
                            out.insert((Some(proto), Some((np.port, 16))));
                        }
                    }
                }
            }
        }
    }
    out
}

/// `TCP/80`, `UDP/*`, `TCP/8000-8080`, `TCP/serve-80`.
#[must_use]
pub fn describe(ports: &[PolicyPort]) -> Vec<String> {
    ports
        .iter()
        .map(|p| {
            let what = match (&p.port, p.end_port) {
                (None, _) => "*".to_owned(),
                (Some(PortNumber::Number(n)), Some(e)) => format!("{n}-{e}"),
                (Some(PortNumber::Number(n)), None) => n.to_string(),
                (Some(PortNumber::Name(name)), _) => name.to_string(),
            };
            format!("{}/{what}", p.protocol.as_str())
        })
        .collect()
}
