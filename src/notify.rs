//! The systemd notification protocol (sd_notify(3)), for `Type=notify` units: `READY=1`
//! once the shards accept, `STOPPING=1` when draining starts, and after an in-place
//! upgrade `MAINPID=` naming the new process, so that systemd follows it instead of
//! treating the old process's exit as the service's end (the default `NotifyAccess=main`
//! accepts this from the old main process).
//!
//! Without `NOTIFY_SOCKET` in the environment every call does nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (newline-separated `KEY=value` lines) to the service manager, if any.
/// Failures are logged: the service manager's view is not worth stopping for.
pub(crate) fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        if let Err(e) = notify_to(&path, state) {
            tracing::warn!(error = %e, state, "cannot notify the service manager (NOTIFY_SOCKET)");
        }
    }
}

/// Sends `state` to the socket `path` (`@name`: in the abstract namespace).
fn notify_to(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(path),
    };
    UnixDatagram::unbound()?
        .send_to_addr(state.as_bytes(), &addr?)
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        super::notify_to(path.as_os_str(), "READY=1\nMAINPID=42").unwrap();
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nMAINPID=42");
    }
}
