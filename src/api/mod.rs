//! The local API: JSON over HTTP/1.1 on a unix socket (mode 0600). The agent publishes views of
//! its model and applied state into [`ApiState`]; the CLI reads them with [`client`].

pub mod client;
mod server;
mod types;

pub use server::{ApiError, serve};
pub use types::{ApplyReport, DatapathStatus, ServiceView, SourceErrorView, Status};

use std::sync::{Arc, RwLock};

/// What the API serves; written by the agent after each reconcile.
#[derive(Debug, Default)]
pub struct ApiState {
    pub status: Status,
    pub services: Vec<ServiceView>,
}

pub type SharedState = Arc<RwLock<ApiState>>;

pub const DEFAULT_SOCKET: &str = "/run/ferrite/ferrite.sock";
