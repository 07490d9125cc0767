//! Service fields of north-south load balancing: `externalIPs`, `loadBalancerSourceRanges`.

use std::net::IpAddr;

use super::super::{ObjectError, invalid};

pub(super) fn external_ips(values: &[String]) -> Result<Vec<IpAddr>, ObjectError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.trim().parse::<IpAddr>().map_err(|e| {
                invalid(
                    format!("spec.externalIPs[{i}]"),
                    format!("`{v}` is not an IP address: {e}"),
                )
            })
        })
        .collect()
}

/// CIDRs such as `192.168.1.0/24`; host bits are cleared, as kube-proxy does.
pub(super) fn source_ranges(values: &[String]) -> Result<Vec<(IpAddr, u8)>, ObjectError> {
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let field = format!("spec.loadBalancerSourceRanges[{i}]");
        let bad = |why: String| invalid(field.clone(), format!("`{v}`: {why}"));
        let (addr, len) = v
            .trim()
            .split_once('/')
            .ok_or_else(|| bad("expected ADDRESS/PREFIX".into()))?;
        let addr: IpAddr = addr.parse().map_err(|e| bad(format!("{e}")))?;
        let len: u8 = len.parse().map_err(|e| bad(format!("prefix: {e}")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(bad(format!("prefix longer than {max}")));
        }
        out.push((mask(addr, len), len));
    }
    Ok(out)
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges_are_masked_and_validated() {
        let r = source_ranges(&["192.168.1.77/24".into(), "fd00::1/64".into()]).unwrap();
        assert_eq!(
            r,
            vec![
                ("192.168.1.0".parse().unwrap(), 24),
                ("fd00::".parse().unwrap(), 64)
            ]
        );
        assert!(source_ranges(&["10.0.0.0/33".into()]).is_err());
        assert!(source_ranges(&["10.0.0.0".into()]).is_err());
        assert!(external_ips(&["nope".into()]).is_err());
        assert_eq!(external_ips(&["192.168.1.5".into()]).unwrap().len(), 1);
    }
}
