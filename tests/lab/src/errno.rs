//! Short, stable names for socket errors (`ECONNREFUSED`, `timeout`, ...) used as JSON keys.

use std::io;

/// The symbolic name of an errno value, `E<n>` for ones not listed.
#[must_use]
pub fn errno_name(code: i32) -> String {
    let name = match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::EPIPE => "EPIPE",
        libc::ENOBUFS => "ENOBUFS",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENETRESET => "ENETRESET",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::EISCONN => "EISCONN",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EINPROGRESS => "EINPROGRESS",
        libc::EALREADY => "EALREADY",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTO => "EPROTO",
        _ => return format!("E{code}"),
    };
    name.to_owned()
}

/// The key a failure is grouped under: the errno name (`ETIMEDOUT` is the kernel giving up on
/// a connect), `timeout` for our own timeouts (`EAGAIN` from `SO_RCVTIMEO`, std's
/// `connect_timeout`), `eof` for an empty reply.
#[must_use]
pub fn error_kind(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) if code == libc::EAGAIN || code == libc::EWOULDBLOCK => "timeout".into(),
        Some(code) => errno_name(code),
        None if matches!(
            err.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ) =>
        {
            "timeout".into()
        }
        None if err.kind() == io::ErrorKind::UnexpectedEof => "eof".into(),
        None => format!("{:?}", err.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(errno_name(libc::ECONNREFUSED), "ECONNREFUSED");
        assert_eq!(errno_name(9999), "E9999");
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(error_kind(&refused), "ECONNREFUSED");
        let again = io::Error::from_raw_os_error(libc::EAGAIN);
        assert_eq!(error_kind(&again), "timeout");
        let timed = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
        assert_eq!(error_kind(&timed), "timeout");
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "no reply");
        assert_eq!(error_kind(&eof), "eof");
    }
}
