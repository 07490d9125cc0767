//! Readiness of each subsystem, published in the API status (`subsystems`) for `/readyz`,
//! `/healthz`, `ferrite status [--check]` and CNI STATUS. Every part of the agent reports its own
//! state with [`Readiness::set`]; the agent is ready when every reported subsystem is.

use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::api::{SharedState, Subsystem};

/// Names of the subsystems this module's callers report (others add their own names).
pub const DATAPATH: &str = "datapath";
pub const SOURCE: &str = "source";
pub const NORTH_SOUTH: &str = "north-south";
pub const CNI: &str = "cni";
/// The L2 responder and membership (see [`super::subsystems`]).
pub const L2: &str = "l2";
/// The pod network's routes (see [`super::subsystems`]).
pub const ROUTING: &str = "routing";

/// A handle on the shared status for setting subsystem states.
#[derive(Clone)]
pub struct Readiness(SharedState);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Readiness {
    #[must_use]
    pub fn new(shared: SharedState) -> Self {
        Self(shared)
    }

    /// Records `name`'s state; `error` (if any) becomes its last error. Changes are logged.
    pub fn set(&self, name: &str, ready: bool, detail: impl Into<String>, error: Option<String>) {
        let detail = detail.into();
        let mut guard = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let list = &mut guard.status.subsystems;
        let entry = if let Some(i) = list.iter().position(|s| s.name == name) {
            &mut list[i]
        } else {
            list.push(Subsystem {
                name: name.to_owned(),
                ..Subsystem::default()
            });
            list.last_mut().expect("just pushed")
        };
        // A state reported again every round is logged (and its error time-stamped) once.
        let new_error = error.is_some() && (error != entry.last_error || entry.ready);
        let changed = entry.ready != ready || entry.detail != detail || new_error;
        entry.ready = ready;
        entry.detail = detail;
        if let Some(e) = error
            && new_error
        {
            entry.last_error = Some(e);
            entry.last_error_at_unix_ms = Some(now_ms());
        }
        if changed {
            if ready {
                info!(subsystem = name, detail = %entry.detail, "ready");
            } else {
                warn!(subsystem = name, detail = %entry.detail,
                      last_error = entry.last_error.as_deref().unwrap_or(""), "not ready");
            }
        }
        if name == DATAPATH {
            guard.status.datapath.ready = ready;
        }
    }

    /// Whether `name` is reported ready now.
    #[must_use]
    pub fn is_ready(&self, name: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .status
            .subsystems
            .iter()
            .any(|s| s.name == name && s.ready)
    }
}
