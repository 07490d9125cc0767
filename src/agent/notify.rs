//! sd_notify: tells systemd (`Type=notify`) the agent is ready, by sending `READY=1` to the
//! unix datagram socket named in `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket).
//! Without `NOTIFY_SOCKET` (the DaemonSet, a shell) it does nothing.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use tracing::{debug, warn};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The address `$NOTIFY_SOCKET` names.
fn address(value: &OsStr) -> std::io::Result<SocketAddr> {
    let bytes = value.as_bytes();
    match bytes.split_first() {
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        Some((b'/', _)) => SocketAddr::from_pathname(value),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "expected an absolute path or @abstract name",
        )),
    }
}

/// Sends `state` (e.g. `READY=1`) to `$NOTIFY_SOCKET`, if set. Returns whether it was sent.
pub fn notify(state: &str) -> bool {
    send(std::env::var_os(NOTIFY_SOCKET).as_deref(), state)
}

fn send(socket: Option<&OsStr>, state: &str) -> bool {
    let Some(value) = socket else {
        return false;
    };
    let sent = address(value).and_then(|addr| {
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), &addr)
    });
    match sent {
        Ok(_) => {
            debug!(socket = ?value, state, "sd_notify");
            true
        }
        Err(e) => {
            warn!(socket = ?value, error = %e, "sd_notify {state} failed");
            false
        }
    }
}

/// `READY=1` with a status line for `systemctl status`.
pub const READY: &str = "READY=1\nSTATUS=datapath in place, first snapshot applied";

/// Tells systemd the agent is ready (datapath in place, first snapshot applied).
pub fn ready() -> bool {
    notify(READY)
}

/// Sends `READY=1` after the first applied snapshot, once.
#[derive(Debug, Default)]
pub struct ReadyOnce(bool);

impl ReadyOnce {
    /// Called after every applied snapshot (systemd's `Type=notify` readiness).
    pub fn applied(&mut self) {
        if !std::mem::replace(&mut self.0, true) {
            ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::linux::net::SocketAddrExt;

    use super::*;

    #[test]
    fn ready_reaches_a_real_notify_socket() {
        let dir = std::env::temp_dir().join(format!("ferrite-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("notify.sock");
        let listener = UnixDatagram::bind(&path).expect("bind notify socket");
        listener
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        assert!(send(Some(path.as_os_str()), READY));
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).expect("datagram");
        let text = std::str::from_utf8(&buf[..n]).expect("utf8");
        assert!(text.lines().any(|l| l == "READY=1"), "{text:?}");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!send(None, READY), "nothing is sent without NOTIFY_SOCKET");
        assert!(
            !send(Some(path.as_os_str()), READY),
            "a socket nobody listens on is an error, not a success"
        );
    }

    #[test]
    fn abstract_and_path_addresses_parse_and_garbage_does_not() {
        let a = address(OsStr::new("@ferrite/notify")).expect("abstract");
        assert_eq!(a.as_abstract_name(), Some(&b"ferrite/notify"[..]));
        let p = address(OsStr::new("/run/systemd/notify")).expect("path");
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        assert!(address(OsStr::new("relative")).is_err());
        assert!(address(OsStr::new("")).is_err());
    }
}
