//! Listening sockets and the per-shard accept loop.
//!
//! Every shard has its own listening socket for each `listen` address, all bound to the
//! same address with SO_REUSEPORT, so the kernel spreads new connections over the shards
//! and no connection ever moves between threads. The sockets are built with socket2 on
//! the main thread before any shard starts: bind errors ("address in use") are reported
//! at startup, and port 0 resolves to one port shared by every shard.
//!
//! Sockets may also be handed to the process at start ([`ListenFds`]): by systemd
//! (socket activation) or by the sshr this process replaces (an in-place upgrade). A
//! handed socket serves the configured listener of its address, with the
//! configuration's kind. Each socket is accepted on by exactly one shard: with more
//! shards than handed sockets, more are bound beside them where the kernel allows, and
//! otherwise a shard serves several sockets of an address while another serves none.
//! Never do two shards share one socket: glommio's accept briefly toggles O_NONBLOCK on
//! the socket's open file description, which two threads doing so at once could leave
//! in the wrong state.
//!
//! Every listening socket is non-blocking (ours and handed ones alike): between an
//! upgrade's two processes, which share each socket's file description, glommio's
//! toggling then always restores O_NONBLOCK and never leaves an accept that blocks the
//! shard's thread.
//!
//! Every listening socket also has TCP_NODELAY and TCP keepalive set
//! ([`connection_options`]), which Linux copies to each connection it accepts: the
//! client legs need no system calls of their own for them.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, FromRawFd, IntoRawFd};
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

/// One listening address and its sockets, all bound to it with SO_REUSEPORT.
pub(crate) struct BoundAddress {
    /// The address as configured (port 0 stays 0): what a reload compares.
    pub requested: SocketAddr,
    /// The address actually bound.
    pub actual: SocketAddr,
    pub kind: ListenerKind,
    pub sockets: Vec<Socket>,
}

/// Binds `per_address` SO_REUSEPORT sockets to each address, or takes the sockets
/// `inherited` holds for it (see [`ListenFds`]); sockets it holds for no address stay
/// there. Returns every address with the address actually bound (port 0 replaced by the
/// port the kernel chose) and its sockets.
pub(crate) fn bind_all(
    listen: &[(SocketAddr, ListenerKind)],
    per_address: usize,
    inherited: &mut ListenFds,
) -> Result<Vec<BoundAddress>, BindError> {
    listen
        .iter()
        .map(|&(requested, kind)| bind_address(requested, kind, per_address, inherited))
        .collect()
}

/// Binds `count` sockets to `requested`, or takes the inherited ones for it. When fewer
/// were inherited than `count`, more are bound beside them if the kernel lets us (it
/// does not after a privilege drop, for another user's socket or a port below 1024):
/// then some shards serve several sockets and others none of this address, which is
/// slower but loses nothing.
pub(crate) fn bind_address(
    requested: SocketAddr,
    kind: ListenerKind,
    count: usize,
    inherited: &mut ListenFds,
) -> Result<BoundAddress, BindError> {
    let mut sockets = inherited.take(requested, kind);
    let actual = match sockets.first() {
        Some(socket) => socket.addr,
        None => {
            let first = bind_reuseport(requested).map_err(|source| BindError {
                addr: requested,
                source,
            })?;
            let actual = first
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .unwrap_or(requested);
            sockets.push(InheritedSocket {
                socket: first,
                addr: actual,
                name: String::new(),
            });
            actual
        }
    };
    let inherited_count = sockets.len();
    let mut sockets: Vec<Socket> = sockets.into_iter().map(|s| s.socket).collect();
    while sockets.len() < count {
        match bind_reuseport(actual) {
            Ok(socket) => sockets.push(socket),
            Err(source) if inherited_count > 0 => {
                tracing::debug!(addr = %actual, error = %source, "cannot bind beside the inherited sockets: shards share them");
                break;
            }
            Err(source) => {
                return Err(BindError {
                    addr: actual,
                    source,
                })
            }
        }
    }
    Ok(BoundAddress {
        requested,
        actual,
        kind,
        sockets,
    })
}

// ---------------------------------------------------------------------------------------
// Sockets handed to us at start: systemd socket activation, or the process we replace.

/// The systemd socket activation variables (sd_listen_fds(3)): the first handed fd is 3.
const LISTEN_FDS_START: i32 = 3;
/// Set by an upgrading sshr instead of `LISTEN_PID` (which only the child could set
/// after fork): the handed sockets are ours if our parent has this pid.
pub const UPGRADE_PARENT_VAR: &str = "SSHR_UPGRADE_PARENT";
/// The fd to which an upgraded process writes its pid once it accepts, then closes.
pub const UPGRADE_READY_VAR: &str = "SSHR_UPGRADE_READY_FD";
/// More handed fds than this is a broken environment, not a configuration.
const MAX_LISTEN_FDS: usize = 4096;

/// A listening socket handed to us, with its `LISTEN_FDNAMES` name.
pub(crate) struct InheritedSocket {
    socket: Socket,
    addr: SocketAddr,
    name: String,
}

/// The listening sockets handed to this process at start, and where to report
/// readiness to the process that handed them.
///
/// A socket serves the configured listener whose address it is bound to, or whose
/// `handoff_name` it carries (so a `127.0.0.1:0` listener keeps its port across an
/// upgrade); its kind is the configuration's. Sockets no listener claims are closed
/// when this is dropped.
#[derive(Default)]
pub struct ListenFds {
    sockets: Vec<InheritedSocket>,
    ready: Option<std::fs::File>,
}

impl ListenFds {
    /// Reads `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES` (and sshr's own upgrade
    /// variables), takes the fds and removes the variables, so that no child process
    /// (hooks, command providers, a later upgrade) inherits them. Fds meant for another
    /// process (`LISTEN_PID` not ours) are left alone. An fd that is not a listening
    /// TCP socket is an error. Call before any thread starts.
    pub fn from_env() -> Result<ListenFds, String> {
        let var = |name: &str| std::env::var(name).ok();
        let count = var("LISTEN_FDS");
        let listen_pid = var("LISTEN_PID");
        let names = var("LISTEN_FDNAMES");
        let parent = var(UPGRADE_PARENT_VAR);
        let ready = var(UPGRADE_READY_VAR);
        for name in [
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            UPGRADE_PARENT_VAR,
            UPGRADE_READY_VAR,
        ] {
            std::env::remove_var(name);
        }
        let Some(count) = count else {
            return Ok(ListenFds::default());
        };
        let ours = match (&listen_pid, &parent) {
            (Some(pid), _) => pid.parse::<u32>().ok() == Some(std::process::id()),
            (None, Some(pid)) => {
                pid.parse::<u32>().ok() == Some(std::os::unix::process::parent_id())
            }
            (None, None) => false,
        };
        if !ours {
            tracing::warn!("LISTEN_FDS is set for another process (LISTEN_PID): ignored");
            return Ok(ListenFds::default());
        }
        let count: usize = count
            .parse()
            .ok()
            .filter(|&n| n <= MAX_LISTEN_FDS)
            .ok_or_else(|| format!("LISTEN_FDS={count:?} is not a number of fds"))?;
        let names: Vec<&str> = names
            .as_deref()
            .map_or(Vec::new(), |n| n.split(':').collect());
        let mut sockets = Vec::with_capacity(count);
        for i in 0..count {
            let fd = LISTEN_FDS_START + i as i32;
            let socket = adopt_listening_socket(fd)?;
            let addr = match socket.local_addr().ok().and_then(|a| a.as_socket()) {
                Some(addr) => addr,
                None => return Err(format!("LISTEN_FDS: fd {fd} is not a TCP/IP socket")),
            };
            sockets.push(InheritedSocket {
                socket,
                addr,
                name: names.get(i).copied().unwrap_or("").to_owned(),
            });
        }
        let ready = match ready {
            Some(fd) => {
                let fd: i32 = fd
                    .parse()
                    .ok()
                    .filter(|&fd| fd > 2 && fd_is_open(fd))
                    .ok_or_else(|| format!("{UPGRADE_READY_VAR}={fd:?} is not an open fd"))?;
                // SAFETY: the fd is open and handed to us alone; we own it from here.
                let file = unsafe { std::fs::File::from_raw_fd(fd) };
                set_cloexec(fd);
                Some(file)
            }
            None => None,
        };
        tracing::info!(sockets = sockets.len(), "listening sockets handed to us");
        Ok(ListenFds { sockets, ready })
    }

    /// The handed sockets for `requested`, taken out.
    fn take(&mut self, requested: SocketAddr, kind: ListenerKind) -> Vec<InheritedSocket> {
        let name = handoff_name(requested, kind);
        let (mine, rest) = std::mem::take(&mut self.sockets)
            .into_iter()
            .partition(|s| s.addr == requested || s.name == name);
        self.sockets = rest;
        mine
    }

    /// Whether these sockets came from an sshr that is upgrading to us.
    pub(crate) fn is_upgrade(&self) -> bool {
        self.ready.is_some()
    }

    /// Tells the process that handed the sockets that we accept on them: it may stop.
    pub(crate) fn report_ready(&mut self) {
        use std::io::Write;
        if let Some(mut ready) = self.ready.take() {
            if let Err(e) = writeln!(ready, "{}", std::process::id()) {
                tracing::warn!(error = %e, "cannot tell the previous process that we are ready");
            }
        }
    }

    /// Closes the handed sockets that no listener took (their addresses were removed
    /// from the configuration).
    pub(crate) fn close_unclaimed(&mut self) {
        for s in self.sockets.drain(..) {
            tracing::info!(addr = %s.addr, name = %s.name, "handed socket not in the configuration: closed");
        }
    }
}

/// The `LISTEN_FDNAMES` name an upgrading sshr gives a socket of listener `requested`
/// (as configured): its kind and address. systemd separates names with `:`, so the
/// address's colons become `_`.
pub(crate) fn handoff_name(requested: SocketAddr, kind: ListenerKind) -> String {
    let kind = match kind {
        ListenerKind::Ssh => "ssh",
        ListenerKind::ProxyProtocol => "proxy",
    };
    format!("{kind}={}", requested.to_string().replace(':', "_"))
}

fn fd_is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

fn set_cloexec(fd: i32) {
    // SAFETY: F_SETFD on a descriptor we own.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

/// Takes `fd` as a listening TCP socket (SO_ACCEPTCONN), closed on exec and
/// non-blocking (see the module documentation).
fn adopt_listening_socket(fd: i32) -> Result<Socket, String> {
    if !fd_is_open(fd) {
        return Err(format!("LISTEN_FDS: fd {fd} is not open"));
    }
    // SAFETY: the fd is open and was handed to us; we own it from here.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    match (socket.is_listener(), socket.r#type()) {
        (Ok(true), Ok(t)) if t == Type::STREAM => {}
        _ => {
            // Not ours to close: it is not what we were told it is.
            let _ = socket.into_raw_fd();
            return Err(format!("LISTEN_FDS: fd {fd} is not a listening TCP socket"));
        }
    }
    (socket.set_cloexec(true))
        .and_then(|()| socket.set_nonblocking(true))
        .and_then(|()| connection_options(&socket))
        .map_err(|e| format!("LISTEN_FDS: fd {fd}: {e}"))?;
    Ok(socket)
}

/// The options of every client connection, set on its listening socket, from which the
/// kernel copies them to each accepted connection: TCP_NODELAY (the proxy writes whole
/// packets; Nagle would only delay interactive sessions) and TCP keepalive
/// ([`crate::io::net::keepalive`]).
fn connection_options(socket: &Socket) -> io::Result<()> {
    socket.set_nodelay(true)?;
    crate::io::net::keepalive(socket.as_fd())
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
    socket.set_nonblocking(true)?;
    connection_options(&socket)?;
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
        let bound = bind_all(&listen, 3, &mut ListenFds::default()).unwrap();
        assert_eq!(bound.len(), 2);
        assert_ne!(bound[0].actual.port(), 0, "port 0 resolved");
        for (address, (requested, kind)) in bound.iter().zip(&listen) {
            assert_eq!(address.requested, *requested);
            assert_eq!(address.kind, *kind);
            assert_eq!(address.sockets.len(), 3);
            for socket in &address.sockets {
                assert_eq!(
                    socket.local_addr().unwrap().as_socket(),
                    Some(address.actual)
                );
                assert!(socket.reuse_port().unwrap());
            }
        }
        // A plain (non-REUSEPORT) socket cannot take the port from under us.
        assert!(std::net::TcpListener::bind(bound[0].actual).is_err());
    }

    #[test]
    fn accepted_connections_have_the_connection_options() {
        use crate::io::net::{TCP_KEEPALIVE_INTERVAL, TCP_KEEPALIVE_RETRIES, TCP_KEEPALIVE_TIME};
        let socket = bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let listener = std::net::TcpListener::from(socket);
        let _client = std::net::TcpStream::connect(addr).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        // Nothing was set on the accepted connection itself.
        let sock = socket2::SockRef::from(&accepted);
        assert!(sock.nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.keepalive_time().unwrap(), TCP_KEEPALIVE_TIME);
        assert_eq!(sock.keepalive_interval().unwrap(), TCP_KEEPALIVE_INTERVAL);
        assert_eq!(sock.keepalive_retries().unwrap(), TCP_KEEPALIVE_RETRIES);
    }

    #[test]
    fn handed_sockets_serve_their_address_and_name() {
        let by_addr = bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = by_addr.local_addr().unwrap().as_socket().unwrap();
        let by_name = bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        let named_addr = by_name.local_addr().unwrap().as_socket().unwrap();
        let unclaimed = bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        let port0: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut fds = ListenFds {
            sockets: vec![
                InheritedSocket {
                    socket: by_addr,
                    addr,
                    name: "unknown".into(),
                },
                InheritedSocket {
                    socket: by_name,
                    addr: named_addr,
                    name: handoff_name(port0, ListenerKind::ProxyProtocol),
                },
                InheritedSocket {
                    socket: unclaimed,
                    addr: "127.0.0.1:1".parse().unwrap(),
                    name: String::new(),
                },
            ],
            ready: None,
        };
        let bound = bind_all(
            &[
                (addr, ListenerKind::Ssh),
                (port0, ListenerKind::ProxyProtocol),
            ],
            2,
            &mut fds,
        )
        .unwrap();
        assert_eq!(bound[0].actual, addr);
        assert_eq!(bound[1].actual, named_addr, "port 0 keeps the handed port");
        // One more bound beside each handed socket, for the second shard.
        assert_eq!(bound[0].sockets.len(), 2);
        assert_eq!(
            bound[1].sockets[1].local_addr().unwrap().as_socket(),
            Some(named_addr)
        );
        assert_eq!(fds.sockets.len(), 1, "the unclaimed socket stays");
        assert!(!handoff_name("[::1]:22".parse().unwrap(), ListenerKind::Ssh).contains(':'));
    }

    #[test]
    fn bind_errors_name_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind_all(&[(addr, ListenerKind::Ssh)], 1, &mut ListenFds::default())
            .err()
            .unwrap();
        assert_eq!(err.addr, addr);
        assert!(err.to_string().contains(&addr.to_string()));
    }
}
