//! `/v1/pools`: LoadBalancer IP pools with their counts and conditions, and what LB IPAM decided
//! for each LoadBalancer service.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

use crate::lbipam::Allocation;
use crate::model::{Condition, IpPool};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct PoolsView {
    pub pools: Vec<PoolView>,
    /// Every LoadBalancer service ferrite allocates for.
    pub services: Vec<LbServiceView>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct PoolView {
    pub name: String,
    /// `CIDR` or `START-STOP`, as parsed.
    pub blocks: Vec<String>,
    pub priority: i32,
    pub disabled: bool,
    pub allow_first_last_ips: bool,
    pub total: u128,
    pub used: u128,
    pub available: u128,
    pub conditions: Vec<ConditionView>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub condition_type: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct LbServiceView {
    pub service: String,
    /// Allocated addresses (IPv4 first).
    pub addresses: Vec<String>,
    /// The pool of each address, in the same order.
    pub pools: Vec<String>,
    pub satisfied: bool,
    /// The `ferrite.dev/IPAMRequestSatisfied` reason (`satisfied`, `out_of_ips`, ...).
    pub reason: String,
    pub message: String,
}

impl From<&Condition> for ConditionView {
    fn from(condition: &Condition) -> Self {
        Self {
            condition_type: condition.condition_type.to_owned(),
            status: condition.status.as_str().to_owned(),
            reason: condition.reason.to_string(),
            message: condition.message.clone(),
        }
    }
}

impl PoolsView {
    /// The view of `allocation`, with the blocks and settings of `pools`.
    pub fn new(pools: &BTreeMap<SmolStr, IpPool>, allocation: &Allocation) -> Self {
        let pools = allocation
            .pools
            .iter()
            .map(|(name, status)| {
                let pool = pools.get(name);
                PoolView {
                    name: name.to_string(),
                    blocks: pool
                        .map(|p| p.blocks.iter().map(ToString::to_string).collect())
                        .unwrap_or_default(),
                    priority: pool.map_or(0, |p| p.priority),
                    disabled: status.disabled,
                    allow_first_last_ips: pool.is_some_and(|p| p.allow_first_last_ips),
                    total: status.total,
                    used: status.used,
                    available: status.available,
                    conditions: status
                        .conditions()
                        .iter()
                        .map(ConditionView::from)
                        .collect(),
                }
            })
            .collect();
        let services = allocation
            .services
            .values()
            .map(|status| LbServiceView {
                service: status.service.to_string(),
                addresses: status.addresses.iter().map(|a| a.ip.to_string()).collect(),
                pools: status
                    .addresses
                    .iter()
                    .map(|a| a.pool.to_string())
                    .collect(),
                satisfied: status.condition().status == crate::model::ConditionStatus::True,
                reason: status.reason.as_str().to_owned(),
                message: status.message.clone(),
            })
            .collect();
        Self { pools, services }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IpBlock, ServiceName};

    #[test]
    fn view_shows_blocks_counts_conditions_and_services() {
        let pool = IpPool {
            name: "lan".into(),
            blocks: vec![IpBlock::parse(Some("10.0.0.0/30"), None, None).unwrap()],
            ..IpPool::default()
        };
        let service = crate::model::Service {
            name: ServiceName::new("ns", "web"),
            service_type: crate::model::ServiceType::LoadBalancer,
            ..crate::model::Service::default()
        };
        let allocation = crate::lbipam::allocate([&pool], [&service], &BTreeMap::new());
        let pools = BTreeMap::from([(pool.name.clone(), pool)]);
        let view = PoolsView::new(&pools, &allocation);
        assert_eq!(view.pools[0].blocks, ["10.0.0.0/30"]);
        assert_eq!(
            (
                view.pools[0].total,
                view.pools[0].used,
                view.pools[0].available
            ),
            (2, 1, 1)
        );
        let types: Vec<_> = view.pools[0]
            .conditions
            .iter()
            .map(|c| c.condition_type.as_str())
            .collect();
        assert!(types.contains(&"ferrite.dev/PoolConflict"), "{types:?}");
        assert_eq!(view.services[0].service, "ns/web");
        assert_eq!(view.services[0].addresses, ["10.0.0.1"]);
        assert_eq!(view.services[0].reason, "satisfied");
        assert!(view.services[0].satisfied);
        let json = serde_json::to_string(&view).unwrap();
        let back: PoolsView = serde_json::from_str(&json).unwrap();
        assert_eq!(back, view, "the CLI reads what the API writes");
    }
}
