//! One reconcile: snapshot → frontends → plan against the mirrored map state → writes.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, error, info};

use crate::api::{ApplyReport, ServiceView, SharedState};
use crate::datapath::SockLb;
use crate::lb::{self, Frontend, LbState};
use crate::model::Snapshot;

pub struct Reconciler {
    sock: SockLb,
    state: LbState,
    shared: SharedState,
    generation: u64,
}

impl Reconciler {
    pub fn new(sock: SockLb, state: LbState, shared: SharedState) -> Self {
        Self {
            sock,
            state,
            shared,
            generation: 0,
        }
    }

    pub fn reconcile(&mut self, snapshot: &Snapshot) {
        let started = Instant::now();
        let frontends = lb::frontends(snapshot);
        let plan = lb::plan(&frontends, &self.state);
        let result = self.sock.maps.apply(&plan, &mut self.state);
        let duration = started.elapsed();
        self.generation += 1;
        let error = match result {
            Ok(()) => {
                if plan.is_empty() {
                    debug!(generation = self.generation, "maps already up to date");
                } else {
                    info!(
                        generation = self.generation,
                        ops = plan.op_count(),
                        frontends = frontends.len(),
                        duration_us = duration.as_micros(),
                        "maps updated"
                    );
                }
                None
            }
            Err(e) => {
                error!(error = %e, "writing the maps failed; will retry on the next change");
                Some(e.to_string())
            }
        };
        let report = ApplyReport {
            generation: self.generation,
            at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            duration_us: u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
            ops: plan.op_count(),
            services: snapshot.services.len(),
            frontends: frontends.len(),
            backends: self.state.backends.len(),
            error,
        };
        let views = frontends.iter().map(view).collect();
        let mut guard = self
            .shared
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.status.last_apply = Some(report);
        guard.services = views;
    }
}

fn view(fe: &Frontend) -> ServiceView {
    ServiceView {
        service: fe.service.to_string(),
        port_name: fe.port_name.to_string(),
        frontend: std::net::SocketAddr::new(fe.addr, fe.port).to_string(),
        protocol: format!("{:?}", fe.protocol).to_uppercase(),
        backends: fe.backends.iter().map(ToString::to_string).collect(),
        affinity_timeout_seconds: fe.affinity_timeout,
    }
}
