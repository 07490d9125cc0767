//! CNI ADD/DEL counts and latencies. The plugin is a separate process the container runtime
//! runs for each command, so it reports each ADD and DEL to the agent in one unix datagram
//! (JSON [`CniEvent`]) on a socket beside the API socket. Sending never blocks and never fails
//! the command: with no agent listening the event is lost, like any counter of a process that
//! is not running.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::Metrics;

pub const ADD: &str = "ADD";
pub const DEL: &str = "DEL";
pub const SUCCESS: &str = "success";
pub const FAILURE: &str = "failure";

/// The event socket's file name, in the API socket's directory.
const SOCKET_NAME: &str = "cni-events.sock";

/// One CNI command the plugin ran.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CniEvent {
    /// `ADD` or `DEL`.
    pub command: String,
    pub ok: bool,
    pub duration_us: u64,
}

impl CniEvent {
    #[must_use]
    pub fn duration_secs(&self) -> f64 {
        Duration::from_micros(self.duration_us).as_secs_f64()
    }

    /// Only ADD and DEL are counted; anything else is not a plugin's event.
    fn parse(bytes: &[u8]) -> Option<Self> {
        let e: Self = serde_json::from_slice(bytes).ok()?;
        (e.command == ADD || e.command == DEL).then_some(e)
    }
}

/// Where the agent whose API socket is `api_socket` listens for CNI events.
#[must_use]
pub fn socket_path(api_socket: &Path) -> PathBuf {
    api_socket
        .parent()
        .unwrap_or_else(|| Path::new("/"))
        .join(SOCKET_NAME)
}

/// The plugin's side: one datagram, non-blocking, errors only logged.
pub fn report(api_socket: &Path, event: &CniEvent) {
    let path = socket_path(api_socket);
    let sent = std::os::unix::net::UnixDatagram::unbound().and_then(|s| {
        s.set_nonblocking(true)?;
        let bytes = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        s.send_to(&bytes, &path)
    });
    if let Err(e) = sent {
        debug!(path = %path.display(), error = %e, "CNI event not delivered to the agent");
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{op} the CNI event socket {path}: {source}")]
pub struct EventSocketError {
    op: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

/// The agent's side: binds the socket (mode 0600, replacing a stale one) and counts every
/// event into `metrics` until the task is dropped.
pub fn listen(
    api_socket: &Path,
    metrics: Arc<Metrics>,
) -> Result<tokio::task::JoinHandle<()>, EventSocketError> {
    let path = socket_path(api_socket);
    let err = |op| {
        let path = path.clone();
        move |source| EventSocketError { op, path, source }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err("creating the directory of"))?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("removing the stale")(e)),
    }
    let socket = tokio::net::UnixDatagram::bind(&path).map_err(err("binding"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(err("setting mode 0600 on"))?;
    info!(path = %path.display(), "listening for CNI events");
    Ok(tokio::spawn(async move {
        let mut buf = vec![0u8; 1024];
        loop {
            match socket.recv(&mut buf).await {
                Ok(n) => match CniEvent::parse(&buf[..n]) {
                    Some(e) => metrics.cni_event(&e),
                    None => metrics.cni_event_malformed(),
                },
                Err(e) => {
                    debug!(error = %e, "receiving a CNI event");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_add_and_del_events_parse() {
        let add = CniEvent {
            command: ADD.into(),
            ok: true,
            duration_us: 1500,
        };
        let bytes = serde_json::to_vec(&add).unwrap();
        assert_eq!(CniEvent::parse(&bytes), Some(add));
        assert!(CniEvent::parse(br#"{"command":"CHECK","ok":true,"duration_us":1}"#).is_none());
        assert!(CniEvent::parse(b"garbage").is_none());
        assert_eq!(
            socket_path(Path::new("/run/ferrite/ferrite.sock")),
            Path::new("/run/ferrite/cni-events.sock")
        );
    }

    #[tokio::test]
    async fn events_sent_by_a_plugin_are_counted() {
        let dir = std::env::temp_dir().join(format!("ferrite-cni-ev-{}", std::process::id()));
        let api = dir.join("ferrite.sock");
        let metrics = Arc::new(Metrics::new());
        let task = listen(&api, metrics.clone()).unwrap();
        let mode = std::fs::metadata(socket_path(&api))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        report(
            &api,
            &CniEvent {
                command: DEL.into(),
                ok: false,
                duration_us: 2000,
            },
        );
        let want = "ferrite_cni_operations_total{command=\"DEL\",outcome=\"failure\"} 1";
        let mut text = String::new();
        for _ in 0..100 {
            text = metrics.encode(&super::super::Scrape::default());
            if text.contains(want) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(text.contains(want), "{text}");
        assert!(
            text.contains("ferrite_cni_operation_duration_seconds_count{command=\"DEL\"} 1"),
            "{text}"
        );
    }
}
