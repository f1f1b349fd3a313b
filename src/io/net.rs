//! Outgoing connections to upstream servers.
//!
//! Name resolution uses the system resolver (`getaddrinfo`), which blocks, so it runs on
//! the shard's blocking thread pool and never on the event loop itself. The connect
//! timeout covers resolution and every address tried.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use glommio::net::TcpStream;
use socket2::SockRef;

use crate::metrics::UpstreamFailure;

/// Why an upstream connection could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("upstream address {addr:?} is not host:port ({reason})")]
    BadAddress { addr: String, reason: &'static str },
    #[error("cannot resolve {addr}: {source}")]
    Resolve { addr: String, source: io::Error },
    #[error("{addr} resolved to no address")]
    NoAddress { addr: String },
    #[error("connecting to {addr} timed out after {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
}

impl ConnectError {
    /// The metrics label of this failure.
    pub fn reason(&self) -> UpstreamFailure {
        match self {
            ConnectError::BadAddress { .. }
            | ConnectError::Resolve { .. }
            | ConnectError::NoAddress { .. } => UpstreamFailure::Resolve,
            ConnectError::Timeout { .. } => UpstreamFailure::Timeout,
            ConnectError::Connect { .. } => UpstreamFailure::Connect,
        }
    }
}

/// Asks the kernel to acknowledge what was just read at once rather than delaying the ACK
/// (`TCP_QUICKACK`; Linux drops back to delayed ACKs by itself, so this follows every read).
///
/// OpenSSH sets TCP_NODELAY only for sessions with a terminal: `ssh host command`, scp and
/// sftp run with Nagle's algorithm, which holds a small packet back until the previous one
/// is acknowledged. Against a receiver that delays its ACK (Linux: 40 ms) each such exchange
/// stalls: `ssh host uname` straight to sshd on loopback waits about 40 ms after NEWKEYS and
/// again after the channel opens. Acknowledging at once on both legs takes those stalls out
/// of every session through the proxy, for the cost of one system call per read.
pub fn quickack(stream: &TcpStream) {
    // SAFETY: the stream owns this descriptor and outlives the borrow, which ends here.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    if let Err(e) = SockRef::from(&fd).set_quickack(true) {
        tracing::trace!(error = %e, "cannot set TCP_QUICKACK");
    }
}

/// TCP keepalive: the first probe after this long without traffic.
pub const TCP_KEEPALIVE_TIME: Duration = Duration::from_secs(60);
/// TCP keepalive: between probes.
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// TCP keepalive: unanswered probes before the kernel drops the connection.
pub const TCP_KEEPALIVE_RETRIES: u32 = 6;

/// Turns TCP keepalive on (`SO_KEEPALIVE`, with [`TCP_KEEPALIVE_TIME`] and friends): a
/// peer whose host vanished, or a NAT or firewall that forgot the connection, ends the
/// session within about two minutes even with SSH keepalives off, and the probes keep
/// such middleboxes from forgetting an idle session in the first place.
///
/// On the listening sockets (`io::listener`) this and TCP_NODELAY are set once: Linux
/// gives every accepted connection its listener's options, which spares each client
/// connection five system calls. Upstream connections get them in [`connect`].
pub fn keepalive(socket: BorrowedFd<'_>) -> io::Result<()> {
    let params = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_TIME)
        .with_interval(TCP_KEEPALIVE_INTERVAL)
        .with_retries(TCP_KEEPALIVE_RETRIES);
    SockRef::from(&socket).set_tcp_keepalive(&params)
}

/// True when nothing has arrived on the socket and the peer has not closed it: a
/// non-blocking peek (`MSG_PEEK | MSG_DONTWAIT`) finds no byte and no end-of-file.
pub fn idle_and_open(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv(2) into one byte of our own stack, on a descriptor the stream owns.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

/// Connects to `addr` (`host:port`, `ip:port` or `[ipv6]:port`) within `timeout`, trying
/// each resolved address in order, and sets TCP_NODELAY (the relay writes whole packets;
/// Nagle would only add latency to interactive sessions) and TCP [`keepalive`].
pub async fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let deadline = Instant::now() + timeout;
    let timed_out = || ConnectError::Timeout {
        addr: addr.to_string(),
        timeout,
    };
    let candidates = resolve(addr, timeout).await?;

    let mut last_error = None;
    for candidate in candidates {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(timed_out());
        }
        match TcpStream::connect_timeout(candidate, remaining).await {
            Ok(stream) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%candidate, error = %e, "cannot set TCP_NODELAY on upstream socket");
                }
                // SAFETY: the stream owns this descriptor and outlives the borrow.
                let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
                if let Err(e) = keepalive(fd) {
                    tracing::debug!(%candidate, error = %e, "cannot set TCP keepalive on upstream socket");
                }
                return Ok(stream);
            }
            Err(e) => {
                let e = io::Error::from(e);
                if e.kind() == io::ErrorKind::TimedOut {
                    return Err(timed_out());
                }
                last_error = Some(ConnectError::Connect {
                    addr: candidate,
                    source: e,
                });
            }
        }
    }
    Err(last_error.unwrap_or_else(|| ConnectError::NoAddress {
        addr: addr.to_string(),
    }))
}

/// The addresses of `addr`; literals without a lookup, names on the blocking pool.
pub async fn resolve(addr: &str, timeout: Duration) -> Result<Vec<SocketAddr>, ConnectError> {
    if let Ok(literal) = addr.parse::<SocketAddr>() {
        return Ok(vec![literal]);
    }
    crate::core::host_port::check_host_port(addr).map_err(|reason| ConnectError::BadAddress {
        addr: addr.to_string(),
        reason,
    })?;
    let owned = addr.to_string();
    let lookup =
        crate::rt::run_blocking(move || owned.to_socket_addrs().map(|it| it.collect::<Vec<_>>()));
    let addrs = crate::rt::timeout(timeout, lookup)
        .await
        .map_err(|_| ConnectError::Timeout {
            addr: addr.to_string(),
            timeout,
        })?
        .map_err(|source| ConnectError::Resolve {
            addr: addr.to_string(),
            source,
        })?;
    if addrs.is_empty() {
        return Err(ConnectError::NoAddress {
            addr: addr.to_string(),
        });
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::on_shard;

    #[test]
    fn connects_to_literals_and_names() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        on_shard(|| async move {
            let stream = connect(&format!("127.0.0.1:{port}"), Duration::from_secs(5))
                .await
                .unwrap();
            assert!(stream.nodelay().unwrap());
            // SAFETY: the stream owns this descriptor and outlives the borrow.
            let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
            let sock = SockRef::from(&fd);
            assert!(sock.keepalive().unwrap());
            assert_eq!(sock.keepalive_time().unwrap(), TCP_KEEPALIVE_TIME);
            assert_eq!(sock.keepalive_interval().unwrap(), TCP_KEEPALIVE_INTERVAL);
            assert_eq!(sock.keepalive_retries().unwrap(), TCP_KEEPALIVE_RETRIES);
            assert_eq!(stream.peer_addr().unwrap().port(), port);
            // A name goes through the resolver on the blocking pool. "localhost" may
            // resolve to ::1 first, where nothing listens: the next address is tried.
            let stream = connect(&format!("localhost:{port}"), Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(stream.peer_addr().unwrap().port(), port);
        });
    }

    #[test]
    fn failures_say_what_failed() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        on_shard(|| async move {
            let err = connect(&format!("127.0.0.1:{port}"), Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(matches!(err, ConnectError::Connect { .. }), "{err}");
            assert_eq!(err.reason(), UpstreamFailure::Connect);

            let err = connect("no-port-here", Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(matches!(err, ConnectError::BadAddress { .. }), "{err}");

            let err = connect("name.invalid:22", Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    ConnectError::Resolve { .. } | ConnectError::Timeout { .. }
                ),
                "{err}"
            );
            assert_ne!(err.reason(), UpstreamFailure::Connect);
        });
    }
}
