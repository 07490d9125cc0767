//! Parts of the agent whose open failed: retried on every maintenance tick while everything
//! else serves.

use std::sync::Arc;

use tracing::{error, info};

use super::reconcile::Reconciler;
use super::{AgentConfig, l2, northsouth, open_host, readiness};

/// Parts of the agent whose open failed (their error), retried on every maintenance tick.
#[derive(Default)]
pub(super) struct LateParts {
    pub(super) host: Option<String>,
    pub(super) l2: Option<String>,
    l2_tried: bool,
}

impl LateParts {
    /// Opens the north-south part again if it failed; true when it is in now.
    pub(super) fn retry_host(
        &mut self,
        cfg: &AgentConfig,
        rec: &mut Reconciler,
        watch: &mut Option<northsouth::DeviceWatch>,
    ) -> bool {
        if self.host.is_none() {
            return false;
        }
        match open_host(cfg) {
            Ok((Some(host), w)) => {
                info!("north-south datapath loaded");
                rec.set_host(host);
                *watch = w;
                self.host = None;
                true
            }
            Ok((None, _)) => {
                self.host = None;
                false
            }
            Err(e) => {
                self.host = Some(e.to_string());
                false
            }
        }
    }

    /// Opens the L2 responder if it is not open (first call, or a failed open); true when it
    /// opened now.
    pub(super) fn retry_l2(
        &mut self,
        cfg: &AgentConfig,
        l2: &l2::L2Config,
        metrics: &Arc<crate::metrics::Metrics>,
        rec: &mut Reconciler,
    ) -> bool {
        if rec.l2.is_some() || (self.l2_tried && self.l2.is_none()) {
            return false;
        }
        let first = !self.l2_tried;
        self.l2_tried = true;
        match l2::L2Part::open(&cfg.datapath, &cfg.node_name, l2.clone(), metrics.clone()) {
            Ok(part) => {
                if !first {
                    info!("L2 responder loaded");
                }
                rec.l2 = Some(part);
                self.l2 = None;
                true
            }
            Err(e) => {
                if first {
                    error!(error = %e, "L2 announcements unavailable; retrying every second");
                }
                self.l2 = Some(e.to_string());
                false
            }
        }
    }

    /// The L2 responder's problem as (detail, error): it failed to load, or it is not attached
    /// on some interfaces (reported by `subsystems::report` as the `l2` readiness).
    pub(super) fn l2_problem(&self, rec: &Reconciler) -> Option<(String, String)> {
        if let Some(e) = &self.l2 {
            return Some((
                "the L2 responder failed to load (retrying)".into(),
                e.clone(),
            ));
        }
        let failed = rec.l2.as_ref()?.attach_failures();
        if failed.is_empty() {
            return None;
        }
        let names: Vec<&str> = failed.iter().map(|(i, _)| i.as_str()).collect();
        let why: Vec<String> = failed.iter().map(|(i, e)| format!("{i}: {e}")).collect();
        Some((
            format!(
                "responder not attached on {} (retrying; not eligible there meanwhile)",
                names.join(", ")
            ),
            why.join("; "),
        ))
    }

    /// Readiness of the parts that failed to open.
    pub(super) fn report(&self, ready: &readiness::Readiness) {
        if let Some(e) = &self.host {
            ready.set(
                readiness::NORTH_SOUTH,
                false,
                "the north-south programs failed to load (retrying)",
                Some(e.clone()),
            );
        }
    }
}
