//! Unit and property tests of LB IPAM (pure: no root, no IO besides the store's temp files).

mod cases;
mod props;
mod sharing;

use std::{collections::BTreeMap, net::IpAddr};

use smol_str::SmolStr;

use super::{Allocation, allocate};
use crate::model::{
    IpBlock, IpPool, IpamReason, Protocol, Service, ServiceName, ServicePort, ServiceType,
    TargetPort,
};

/// A pool with blocks written as `CIDR` or `START-STOP`.
fn pool(name: &str, blocks: &[&str]) -> IpPool {
    IpPool {
        name: SmolStr::new(name),
        blocks: blocks.iter().map(|b| block(b)).collect(),
        ..IpPool::default()
    }
}

fn block(text: &str) -> IpBlock {
    match text.split_once('-') {
        Some((start, stop)) => IpBlock::parse(None, Some(start), Some(stop)),
        None => IpBlock::parse(Some(text), None, None),
    }
    .unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// A LoadBalancer service `default/NAME` with TCP port 80.
fn lb(name: &str) -> Service {
    Service {
        name: ServiceName::new("default", name),
        service_type: ServiceType::LoadBalancer,
        ports: vec![port(Protocol::Tcp, 80)],
        ..Service::default()
    }
}

fn port(protocol: Protocol, port: u16) -> ServicePort {
    ServicePort {
        name: SmolStr::new(format!("p{port}{protocol}")),
        protocol,
        port,
        target_port: TargetPort::Number(port),
        node_port: None,
    }
}

fn with_annotation(mut service: Service, key: &str, value: &str) -> Service {
    service
        .annotations
        .insert(SmolStr::new(key), SmolStr::new(value));
    service
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn run(pools: &[IpPool], services: &[Service]) -> Allocation {
    allocate(pools, services, &BTreeMap::new())
}

/// The addresses of `default/NAME`, as strings.
fn ips_of(allocation: &Allocation, name: &str) -> Vec<String> {
    allocation.services[&ServiceName::new("default", name)]
        .addresses
        .iter()
        .map(|a| a.ip.to_string())
        .collect()
}

fn reason_of(allocation: &Allocation, name: &str) -> IpamReason {
    allocation.services[&ServiceName::new("default", name)].reason
}

fn message_of(allocation: &Allocation, name: &str) -> String {
    allocation.services[&ServiceName::new("default", name)]
        .message
        .clone()
}
