//! Listening sockets and the per-shard accept loop.
//!
//! Every shard has its own listening socket for each `listen` address, all bound to the
//! same address with SO_REUSEPORT, so the kernel spreads new connections over the shards
//! and no connection ever moves between threads. The sockets are built with socket2 on
//! the main thread before any shard starts: bind errors ("address in use") are reported
//! at startup, and port 0 resolves to one port shared by every shard.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, Socket, Type};

pub(crate) use crate::core::values::ListenerKind;

/// Pending connections the kernel queues per listening socket before the shard accepts
/// them (capped by net.core.somaxconn).
const BACKLOG: i32 = 4096;

/// A listening address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// What [`bind_all`] returns: the bound addresses, and each shard's sockets.
type Bound = (
    Vec<(SocketAddr, ListenerKind)>,
    Vec<Vec<(Socket, ListenerKind)>>,
);

/// Binds `per_address` SO_REUSEPORT sockets to each address. Returns the addresses
/// actually bound (port 0 replaced by the port the kernel chose) and, for each of the
/// `per_address` shards, its socket for every address.
pub(crate) fn bind_all(
    listen: &[(SocketAddr, ListenerKind)],
    per_address: usize,
) -> Result<Bound, BindError> {
    let mut bound = Vec::with_capacity(listen.len());
    let mut per_shard: Vec<Vec<_>> = (0..per_address).map(|_| Vec::new()).collect();
    for &(requested, kind) in listen {
        let first = bind_reuseport(requested).map_err(|source| BindError {
            addr: requested,
            source,
        })?;
        let actual = first
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(requested);
        bound.push((actual, kind));
        per_shard[0].push((first, kind));
        for sockets in per_shard.iter_mut().skip(1) {
            let socket = bind_reuseport(actual).map_err(|source| BindError {
                addr: actual,
                source,
            })?;
            sockets.push((socket, kind));
        }
    }
    Ok((bound, per_shard))
}

/// A listening TCP socket with SO_REUSEADDR and SO_REUSEPORT. IPv6 sockets are IPv6
/// only, so `[::]:22` and `0.0.0.0:22` can both be listed without conflict. (Public for
/// `--check-config`, which binds as the listeners do: a port held by a running sshr of
/// the same user, which a restart would share, passes; one held by anything else fails.)
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

/// Wraps a bound socket for the current shard's reactor. Must run on the shard.
pub(crate) fn into_glommio(socket: Socket) -> TcpListener {
    // SAFETY: the fd comes from a socket we own and give up here; glommio takes
    // ownership and closes it when the listener is dropped.
    unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) }
}

/// Accepts connections until the task is dropped (shutdown drops it, which closes the
/// listening socket), handing each one with its peer address to `accepted`.
pub async fn accept_loop(
    listener: TcpListener,
    shard: usize,
    mut accepted: impl FnMut(TcpStream, SocketAddr),
) {
    let local = listener.local_addr().ok();
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: the connection stays queued; back off instead
                // of spinning on the error.
                tracing::warn!(shard, listen = ?local, error = %e, "accept failed");
                crate::rt::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match stream.peer_addr() {
            Ok(peer) => accepted(stream, peer),
            // Reset before we looked at it: nothing to serve.
            Err(_) => continue,
        }
    }
}

/// Connections being told why they are refused at once, per shard, beyond which they
/// are just closed: an overload must not turn into a pile of refusal tasks.
const MAX_REFUSING: usize = 64;
/// How long a refused connection is kept to read what the client sends meanwhile.
const REFUSE_LINGER: Duration = Duration::from_secs(2);

/// Refused connections of one shard being told why.
#[derive(Default)]
pub struct Refusing(Rc<Cell<usize>>);

impl Refusing {
    /// Writes `bytes` (a plaintext refusal) to `stream`, then reads until the client
    /// hangs up, at most [`REFUSE_LINGER`]: closing with the client's identification
    /// line unread would reset the connection, and the client would lose the reason.
    /// Beyond [`MAX_REFUSING`] at once the connection is just closed.
    pub fn tell(&self, mut stream: TcpStream, bytes: impl FnOnce() -> Vec<u8>) {
        if self.0.get() >= MAX_REFUSING {
            return;
        }
        let out = bytes();
        self.0.set(self.0.get() + 1);
        let count = self.0.clone();
        glommio::spawn_local(async move {
            let _ = crate::rt::timeout(REFUSE_LINGER, async {
                use futures_lite::{AsyncReadExt, AsyncWriteExt};
                if stream.write_all(&out).await.is_ok() {
                    let _ = stream.shutdown(std::net::Shutdown::Write).await;
                    let mut sink = [0u8; 512];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                }
            })
            .await;
            count.set(count.get() - 1);
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_gets_a_socket_on_the_same_port() {
        let listen = vec![
            ("127.0.0.1:0".parse().unwrap(), ListenerKind::Ssh),
            ("[::1]:0".parse().unwrap(), ListenerKind::ProxyProtocol),
        ];
        let (bound, per_shard) = bind_all(&listen, 3).unwrap();
        assert_eq!(bound.len(), 2);
        assert_ne!(bound[0].0.port(), 0, "port 0 resolved");
        assert_eq!(per_shard.len(), 3);
        for sockets in &per_shard {
            assert_eq!(sockets.len(), 2);
            for ((socket, kind), (want, want_kind)) in sockets.iter().zip(&bound) {
                assert_eq!(kind, want_kind);
                assert_eq!(socket.local_addr().unwrap().as_socket(), Some(*want));
                assert!(socket.reuse_port().unwrap());
            }
        }
        // A plain (non-REUSEPORT) socket cannot take the port from under us.
        assert!(std::net::TcpListener::bind(bound[0].0).is_err());
    }

    #[test]
    fn bind_errors_name_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind_all(&[(addr, ListenerKind::Ssh)], 1).unwrap_err();
        assert_eq!(err.addr, addr);
        assert!(err.to_string().contains(&addr.to_string()));
    }
}
