//! LoadBalancer IP pools (`LoadBalancerIPPool`, Cilium's `CiliumLoadBalancerIPPool`) and the IPAM
//! results the agent reports on pools and services, as plain values.
//!
//! Sources build an [`IpPool`] leniently: every field that cannot be used is recorded as a
//! [`PoolProblem`] on the pool (shown as a condition), and the rest of the manifest keeps working.
//! The parsing helpers ([`IpBlock::parse`], [`LabelRequirement::new`]) are shared by every source
//! so that a pool means the same thing whether it comes from a folder or from the API server.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use ipnet::IpNet;
use serde::Serialize;
use smol_str::SmolStr;

use super::ServiceName;

/// Synthetic label every service carries for pool selectors (as in Cilium).
pub const SERVICE_NAMESPACE_LABEL: &str = "io.kubernetes.service.namespace";
/// Synthetic label every service carries for pool selectors (as in Cilium).
pub const SERVICE_NAME_LABEL: &str = "io.kubernetes.service.name";

/// The service condition that says whether its LoadBalancer IPs could be allocated.
pub const IPAM_REQUEST_SATISFIED: &str = "ferrite.dev/IPAMRequestSatisfied";
/// Pool condition: how many addresses the pool has (the count is the message).
pub const POOL_IPS_TOTAL: &str = "ferrite.dev/IPsTotal";
/// Pool condition: how many addresses are still free.
pub const POOL_IPS_AVAILABLE: &str = "ferrite.dev/IPsAvailable";
/// Pool condition: how many addresses are allocated.
pub const POOL_IPS_USED: &str = "ferrite.dev/IPsUsed";
/// Pool condition: the pool overlaps an older pool and is not used.
pub const POOL_CONFLICT: &str = "ferrite.dev/PoolConflict";
/// Pool condition: part of the pool's spec is invalid; the pool makes no new allocations.
pub const POOL_INVALID_SPEC: &str = "ferrite.dev/InvalidSpec";

/// One pool of LoadBalancer addresses (cluster-scoped).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IpPool {
    pub name: SmolStr,
    /// `metadata.creationTimestamp` in Unix seconds; decides which of two overlapping pools wins.
    /// Unset (most folder manifests) sorts before any timestamp.
    pub created_unix: Option<i64>,
    /// The blocks that parsed, in spec order (the others are in `problems`).
    pub blocks: Vec<IpBlock>,
    /// `serviceSelector`; `None` selects every service. Requirements that did not parse are left
    /// out and recorded in `problems` (such a pool makes no new allocations).
    pub service_selector: Option<LabelSelector>,
    /// `allowFirstLastIPs: Yes`: the network and broadcast addresses of CIDR blocks are usable.
    pub allow_first_last_ips: bool,
    /// `disabled: true`: existing allocations stay, no new ones are made.
    pub disabled: bool,
    /// Pools are tried in ascending priority (then creation, then name).
    pub priority: i32,
    /// Everything in the spec that could not be used.
    pub problems: Vec<PoolProblem>,
}

impl IpPool {
    /// Whether the pool may hand out addresses it has not handed out before.
    pub fn accepts_new(&self) -> bool {
        !self.disabled && self.problems.is_empty()
    }
}

/// A part of a pool's spec that could not be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolProblem {
    /// Where, e.g. `spec.blocks[1]` or `spec.serviceSelector.matchExpressions[0]`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for PoolProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// One entry of `spec.blocks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum IpBlock {
    /// `{cidr}`. Host bits are cleared (`10.0.0.7/24` is `10.0.0.0/24`).
    Cidr(#[serde(serialize_with = "serialize_display")] IpNet),
    /// `{start, stop}`, both included, same family, `start <= stop`.
    Range { start: IpAddr, stop: IpAddr },
}

fn serialize_display<T: fmt::Display, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Why a block cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("`{0}` is not a CIDR (expected e.g. 192.168.1.240/28 or fd00:1::/120)")]
    BadCidr(String),
    #[error("{field} `{value}` is not an IP address")]
    BadAddress { field: &'static str, value: String },
    #[error("start {start} is after stop {stop}")]
    StartAfterStop { start: IpAddr, stop: IpAddr },
    #[error("start {start} and stop {stop} are of different IP families")]
    MixedFamilies { start: IpAddr, stop: IpAddr },
    #[error("set either cidr or start/stop, not both")]
    CidrAndRange,
    #[error("stop is set without start")]
    StopWithoutStart,
    #[error("a block needs cidr or start (and optionally stop)")]
    Empty,
}

impl IpBlock {
    /// A block from the strings of a manifest: `cidr`, or `start` with an optional `stop` (a
    /// lone `start` is one address, as in Cilium).
    pub fn parse(
        cidr: Option<&str>,
        start: Option<&str>,
        stop: Option<&str>,
    ) -> Result<Self, BlockError> {
        fn nonempty(s: Option<&str>) -> Option<&str> {
            s.map(str::trim).filter(|s| !s.is_empty())
        }
        let address = |field: &'static str, value: &str| {
            value.parse::<IpAddr>().map_err(|_| BlockError::BadAddress {
                field,
                value: value.to_owned(),
            })
        };
        match (nonempty(cidr), nonempty(start), nonempty(stop)) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(BlockError::CidrAndRange),
            (Some(cidr), None, None) => cidr
                .parse::<IpNet>()
                .map(|net| Self::Cidr(net.trunc()))
                .map_err(|_| BlockError::BadCidr(cidr.to_owned())),
            (None, Some(start), stop) => {
                let start = address("start", start)?;
                let stop = stop.map_or(Ok(start), |stop| address("stop", stop))?;
                if start.is_ipv4() != stop.is_ipv4() {
                    return Err(BlockError::MixedFamilies { start, stop });
                }
                if start > stop {
                    return Err(BlockError::StartAfterStop { start, stop });
                }
                Ok(Self::Range { start, stop })
            }
            (None, None, Some(_)) => Err(BlockError::StopWithoutStart),
            (None, None, None) => Err(BlockError::Empty),
        }
    }

    pub fn family(&self) -> IpFamily {
        let v4 = match self {
            Self::Cidr(net) => net.addr().is_ipv4(),
            Self::Range { start, .. } => start.is_ipv4(),
        };
        if v4 { IpFamily::V4 } else { IpFamily::V6 }
    }

    /// First and last address of the block, reserved addresses included.
    pub fn bounds(&self) -> (IpAddr, IpAddr) {
        match *self {
            Self::Cidr(net) => (net.network(), net.broadcast()),
            Self::Range { start, stop } => (start, stop),
        }
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cidr(net) => write!(f, "{net}"),
            Self::Range { start, stop } if start == stop => write!(f, "{start}"),
            Self::Range { start, stop } => write!(f, "{start}-{stop}"),
        }
    }
}

/// An IP family, as in `spec.ipFamilies`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum IpFamily {
    #[serde(rename = "IPv4")]
    V4,
    #[serde(rename = "IPv6")]
    V6,
}

impl IpFamily {
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() { Self::V4 } else { Self::V6 }
    }

    pub fn other(self) -> Self {
        match self {
            Self::V4 => Self::V6,
            Self::V6 => Self::V4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, ANDed). An empty selector
/// selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<SmolStr, SmolStr>,
    pub match_expressions: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// Whether a set of labels (looked up by `label`) satisfies every term.
    pub fn matches<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| label(key) == Some(value.as_str()))
            && self.match_expressions.iter().all(|req| {
                let value = label(&req.key);
                match req.operator {
                    SelectorOperator::In => value.is_some_and(|v| req.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !req.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LabelRequirement {
    pub key: SmolStr,
    pub operator: SelectorOperator,
    pub values: BTreeSet<SmolStr>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("key is empty")]
    EmptyKey,
    #[error("unknown operator `{0}` (expected In, NotIn, Exists or DoesNotExist)")]
    UnknownOperator(String),
    #[error("operator {0} needs at least one value")]
    NoValues(&'static str),
    #[error("operator {0} takes no values")]
    UnexpectedValues(&'static str),
}

impl LabelRequirement {
    /// A requirement from a manifest's strings, validated as the API server does.
    pub fn new(key: &str, operator: &str, values: Vec<String>) -> Result<Self, SelectorError> {
        if key.is_empty() {
            return Err(SelectorError::EmptyKey);
        }
        let (operator, name, needs_values) = match operator {
            "In" => (SelectorOperator::In, "In", true),
            "NotIn" => (SelectorOperator::NotIn, "NotIn", true),
            "Exists" => (SelectorOperator::Exists, "Exists", false),
            "DoesNotExist" => (SelectorOperator::DoesNotExist, "DoesNotExist", false),
            other => return Err(SelectorError::UnknownOperator(other.to_owned())),
        };
        match (needs_values, values.is_empty()) {
            (true, true) => return Err(SelectorError::NoValues(name)),
            (false, false) => return Err(SelectorError::UnexpectedValues(name)),
            _ => {}
        }
        Ok(Self {
            key: SmolStr::new(key),
            operator,
            values: values.into_iter().map(SmolStr::from).collect(),
        })
    }
}

/// `True`/`False`/`Unknown`, as in Kubernetes conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// A status condition (type, status, reason, message), ready for a status writer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[expect(
        clippy::struct_field_names,
        reason = "`type` is a keyword; `condition_type` is what Kubernetes clients call it"
    )]
    #[serde(rename = "type")]
    pub condition_type: &'static str,
    pub status: ConditionStatus,
    pub reason: SmolStr,
    pub message: String,
}

/// The `reason` of a service's [`IPAM_REQUEST_SATISFIED`] condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IpamReason {
    /// Every address the service needs is allocated.
    Satisfied,
    /// No enabled, valid pool has addresses of the wanted family (or holds the requested one).
    NoPool,
    /// Pools of the family exist but none selects the service.
    PoolSelectorMismatch,
    /// The pools that select the service have no free address left.
    OutOfIps,
    /// A requested address is used by a service that may not share it.
    AlreadyAllocated,
    /// The sharing key matches but ports collide or externalTrafficPolicy differs.
    SharingConflict,
    /// The request itself cannot be satisfied (unparsable or contradictory addresses, a
    /// reserved address, conflicting annotations).
    InvalidRequest,
}

impl IpamReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Satisfied => "satisfied",
            Self::NoPool => "no_pool",
            Self::PoolSelectorMismatch => "pool_selector_mismatch",
            Self::OutOfIps => "out_of_ips",
            Self::AlreadyAllocated => "already_allocated",
            Self::SharingConflict => "sharing_conflict",
            Self::InvalidRequest => "invalid_request",
        }
    }
}

impl fmt::Display for IpamReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One LoadBalancer address held by a service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct AllocatedIp {
    pub ip: IpAddr,
    pub pool: SmolStr,
}

/// What IPAM decided for one LoadBalancer service (only services ferrite handles have one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceIpamStatus {
    pub service: ServiceName,
    /// The addresses the service holds: its `status.loadBalancer.ingress` and its frontends.
    /// IPv4 first. May be non-empty when `reason` is not `Satisfied` (a dual-stack service that
    /// keeps its IPv4 address while no IPv6 one is free).
    pub addresses: Vec<AllocatedIp>,
    pub reason: IpamReason,
    pub message: String,
}

impl ServiceIpamStatus {
    /// `status.loadBalancer.ingress[].ip`.
    pub fn ingress(&self) -> Vec<IpAddr> {
        self.addresses.iter().map(|a| a.ip).collect()
    }

    pub fn condition(&self) -> Condition {
        Condition {
            condition_type: IPAM_REQUEST_SATISFIED,
            status: if self.reason == IpamReason::Satisfied {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            reason: SmolStr::new_static(self.reason.as_str()),
            message: self.message.clone(),
        }
    }
}

/// What IPAM reports on one pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolStatus {
    pub name: SmolStr,
    /// Usable addresses (reserved first/last addresses excluded); saturates at `u128::MAX`.
    pub total: u128,
    pub used: u128,
    pub available: u128,
    /// The older pool this one overlaps (then it is not used at all).
    pub conflict: Option<String>,
    pub problems: Vec<PoolProblem>,
    pub disabled: bool,
}

impl PoolStatus {
    /// The pool's status conditions (counts as messages, as Cilium reports them).
    pub fn conditions(&self) -> Vec<Condition> {
        let count = |condition_type, n: u128| Condition {
            condition_type,
            status: ConditionStatus::Unknown,
            reason: SmolStr::new_static("noreason"),
            message: n.to_string(),
        };
        let mut conditions = vec![
            count(POOL_IPS_TOTAL, self.total),
            count(POOL_IPS_AVAILABLE, self.available),
            count(POOL_IPS_USED, self.used),
        ];
        conditions.push(match &self.conflict {
            Some(message) => Condition {
                condition_type: POOL_CONFLICT,
                status: ConditionStatus::True,
                reason: SmolStr::new_static("overlapping_blocks"),
                message: message.clone(),
            },
            None => Condition {
                condition_type: POOL_CONFLICT,
                status: ConditionStatus::False,
                reason: SmolStr::new_static("no_conflict"),
                message: String::new(),
            },
        });
        conditions.push(if self.problems.is_empty() {
            Condition {
                condition_type: POOL_INVALID_SPEC,
                status: ConditionStatus::False,
                reason: SmolStr::new_static("valid"),
                message: String::new(),
            }
        } else {
            Condition {
                condition_type: POOL_INVALID_SPEC,
                status: ConditionStatus::True,
                reason: SmolStr::new_static("invalid_spec"),
                message: self
                    .problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            }
        });
        conditions
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
