//! ferrite's own model of desired state. Sources (`source::dir`, later `source::kube`) produce a
//! [`Snapshot`]; everything downstream (lb, lbipam, l2, policy) reads only these types.

mod service;

pub use service::{
    Endpoint, EndpointPort, EndpointSlice, Protocol, Service, ServiceName, ServicePort,
    ServiceType, SessionAffinity, TargetPort,
};

use std::collections::BTreeMap;

/// Everything the agent should make true, as read from a source at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub services: BTreeMap<ServiceName, Service>,
    /// `EndpointSlices` by (namespace, slice name).
    pub endpoint_slices: BTreeMap<ServiceName, EndpointSlice>,
}
