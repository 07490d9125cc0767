//! Which services LB IPAM handles, and what each one asks for: specific addresses or one address
//! per IP family, its sharing key, and the port/protocol pairs that decide whether it may share.

use std::{collections::BTreeSet, net::IpAddr};

use smol_str::SmolStr;

use crate::model::{IpFamily, IpFamilyPolicy, Protocol, Service, ServiceType, TrafficPolicy};

/// The `loadBalancerClass` ferrite answers for (besides an unset class).
pub const LB_CLASS: &str = "ferrite.dev/l2";

/// Annotations that request specific addresses (comma-separated), ferrite's first, then the ones
/// of Cilium and MetalLB for migration.
pub const IPS_ANNOTATIONS: [&str; 4] = [
    "ferrite.dev/ips",
    "lbipam.cilium.io/ips",
    "metallb.io/loadBalancerIPs",
    "metallb.universe.tf/loadBalancerIPs",
];

/// Annotations naming a sharing key, ferrite's first.
pub const SHARING_ANNOTATIONS: [&str; 4] = [
    "ferrite.dev/sharing-key",
    "lbipam.cilium.io/sharing-key",
    "metallb.io/allow-shared-ip",
    "metallb.universe.tf/allow-shared-ip",
];

/// Whether LB IPAM allocates for `service`: type LoadBalancer with no class or ferrite's.
pub fn handles(service: &Service) -> bool {
    service.service_type == ServiceType::LoadBalancer
        && service
            .load_balancer_class
            .as_deref()
            .is_none_or(|class| class == LB_CLASS)
}

/// What a service wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// Exactly these addresses (sorted, distinct).
    Addresses(Vec<IpAddr>),
    /// One address of each family, in preference order; with `require_all` every family must be
    /// served, else one is enough (PreferDualStack).
    Families {
        families: Vec<IpFamily>,
        require_all: bool,
    },
}

/// One service's request, as the allocator uses it.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub service: &'a Service,
    pub want: Want,
    pub sharing_key: Option<SmolStr>,
    pub ports: BTreeSet<(Protocol, u16)>,
}

/// Why two services may not share an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShareDenied {
    /// Not both have the same sharing key.
    NoCommonKey,
    PolicyDiffers,
    PortCollision(Protocol, u16),
}

impl<'a> Request<'a> {
    /// The request of a service LB IPAM [`handles`]; `Err` holds the `invalid_request` message.
    pub fn new(service: &'a Service) -> Result<Self, String> {
        Ok(Self {
            service,
            want: want(service)?,
            sharing_key: first_consistent(service, &SHARING_ANNOTATIONS, None)?,
            ports: service.ports.iter().map(|p| (p.protocol, p.port)).collect(),
        })
    }

    /// Whether this service and `other` may hold the same address.
    pub fn may_share(&self, other: &Request<'_>) -> Result<(), ShareDenied> {
        match (&self.sharing_key, &other.sharing_key) {
            (Some(a), Some(b)) if a == b => {}
            _ => return Err(ShareDenied::NoCommonKey),
        }
        if self.service.external_traffic_policy != other.service.external_traffic_policy {
            return Err(ShareDenied::PolicyDiffers);
        }
        match self.ports.intersection(&other.ports).next() {
            Some(&(protocol, port)) => Err(ShareDenied::PortCollision(protocol, port)),
            None => Ok(()),
        }
    }

    pub fn traffic_policy(&self) -> TrafficPolicy {
        self.service.external_traffic_policy
    }
}

/// The one value the given annotations agree on (with `extra` as one more source, for
/// `spec.loadBalancerIP`); an error when two of them disagree.
fn first_consistent(
    service: &Service,
    annotations: &[&str],
    extra: Option<(&str, &str)>,
) -> Result<Option<SmolStr>, String> {
    let mut found: Option<(&str, &str)> = None;
    let sources = annotations
        .iter()
        .filter_map(|key| {
            service
                .annotations
                .get(*key)
                .map(|value| (*key, value.trim()))
        })
        .chain(extra)
        .filter(|(_, value)| !value.is_empty());
    for (source, value) in sources {
        match found {
            None => found = Some((source, value)),
            Some((first, seen)) if normalize(seen) != normalize(value) => {
                return Err(format!(
                    "{first} ({seen}) and {source} ({value}) disagree; set only one"
                ));
            }
            Some(_) => {}
        }
    }
    Ok(found.map(|(_, value)| SmolStr::new(value)))
}

/// A comma-separated list compared as a set (so `a, b` and `b,a` agree).
fn normalize(value: &str) -> BTreeSet<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

fn want(service: &Service) -> Result<Want, String> {
    let spec_ip = service
        .load_balancer_ip
        .as_deref()
        .map(|ip| ("spec.loadBalancerIP", ip));
    if let Some(list) = first_consistent(service, &IPS_ANNOTATIONS, spec_ip)? {
        let mut addresses = Vec::new();
        for text in normalize(&list) {
            let ip: IpAddr = text
                .parse()
                .map_err(|_| format!("requested address `{text}` is not an IP address"))?;
            if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
                return Err(format!(
                    "requested address {ip} cannot be a LoadBalancer IP"
                ));
            }
            addresses.push(ip);
        }
        addresses.sort_unstable();
        addresses.dedup();
        if !addresses.is_empty() {
            return Ok(Want::Addresses(addresses));
        }
    }
    let mut families = service.ip_families.clone();
    if families.is_empty() {
        for ip in &service.cluster_ips {
            let family = IpFamily::of(*ip);
            if !families.contains(&family) {
                families.push(family);
            }
        }
    }
    let first = families.first().copied().unwrap_or(IpFamily::V4);
    Ok(match service.ip_family_policy {
        IpFamilyPolicy::SingleStack => Want::Families {
            families: vec![first],
            require_all: true,
        },
        IpFamilyPolicy::PreferDualStack | IpFamilyPolicy::RequireDualStack => Want::Families {
            families: vec![first, first.other()],
            require_all: service.ip_family_policy == IpFamilyPolicy::RequireDualStack,
        },
    })
}
