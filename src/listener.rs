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
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use glommio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

use crate::admission::Refusal;
use crate::metrics::Refused;
use crate::shard::{SessionGuard, ShardContext};
use sshr_protocol::msg::disconnect;

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

/// Binds `per_address` SO_REUSEPORT sockets to each address. Returns the addresses
/// actually bound (port 0 replaced by the port the kernel chose) and, for each of the
/// `per_address` shards, its socket for every address.
pub(crate) fn bind_all(
    listen: &[SocketAddr],
    per_address: usize,
) -> Result<(Vec<SocketAddr>, Vec<Vec<Socket>>), BindError> {
    let mut bound = Vec::with_capacity(listen.len());
    let mut per_shard: Vec<Vec<Socket>> = (0..per_address).map(|_| Vec::new()).collect();
    for &requested in listen {
        let first = bind_reuseport(requested).map_err(|source| BindError {
            addr: requested,
            source,
        })?;
        let actual = first
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(requested);
        bound.push(actual);
        per_shard[0].push(first);
        for sockets in per_shard.iter_mut().skip(1) {
            let socket = bind_reuseport(actual).map_err(|source| BindError {
                addr: actual,
                source,
            })?;
            sockets.push(socket);
        }
    }
    Ok((bound, per_shard))
}

/// A listening TCP socket with SO_REUSEADDR and SO_REUSEPORT. IPv6 sockets are IPv6
/// only, so `[::]:22` and `0.0.0.0:22` can both be listed without conflict.
pub(crate) fn bind_reuseport(addr: SocketAddr) -> io::Result<Socket> {
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
/// listening socket), starting one session task per connection.
pub(crate) async fn accept_loop(listener: TcpListener, ctx: Rc<ShardContext>) {
    let local = listener.local_addr().ok();
    let mut refusals = RefusalLog::default();
    let refusing = Rc::new(Cell::new(0));
    let mut random = EarlyDropDice::new();
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: the connection stays queued; back off instead
                // of spinning on the error.
                tracing::warn!(shard = ctx.index, listen = ?local, error = %e, "accept failed");
                crate::shard::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = match stream.peer_addr() {
            Ok(peer) => peer,
            // Reset before we looked at it: nothing to serve.
            Err(_) => continue,
        };
        let config = ctx.config();
        let limit = config.limits.max_sessions_per_shard;
        let refusal = if ctx.live_sessions() >= limit {
            Some(Refused::SessionLimit)
        } else {
            match ctx
                .admission
                .admit(peer.ip(), &config, Instant::now(), random.roll())
            {
                Ok(()) => None,
                Err(Refusal::Penalised(_)) => Some(Refused::Penalty),
                Err(Refusal::Startups) => Some(Refused::Startups),
            }
        };
        if let Some(reason) = refusal {
            ctx.metrics.session_refused(reason);
            refusals.refused(ctx.index, peer, reason);
            refuse(stream, &ctx, &refusing, reason);
            continue;
        }
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let guard = SessionGuard::new(&ctx);
        let session_ctx = ctx.clone();
        glommio::spawn_local(async move {
            let _guard = guard;
            let session = crate::session::serve(stream, peer, session_ctx);
            // One misbehaving session must not take the other sessions of its shard
            // down with it. The guard still runs on unwind.
            if let Err(panic) = std::panic::AssertUnwindSafe(session).catch_unwind().await {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(%peer, panic = %what, "session task panicked");
            }
        })
        .detach();
    }
}

/// Refused connections being told why at once, per shard, beyond which they are just
/// closed: an overload must not turn into a pile of refusal tasks.
const MAX_REFUSING: usize = 64;
/// How long a refused connection is kept to read what the client sends meanwhile.
const REFUSE_LINGER: Duration = Duration::from_secs(2);

/// What a refused client is told.
fn refusal_message(reason: Refused) -> (u32, &'static str) {
    match reason {
        Refused::Penalty => (
            disconnect::TOO_MANY_CONNECTIONS,
            "sshr: too many failed or abandoned logins from your address, try again later",
        ),
        Refused::Startups => (
            disconnect::TOO_MANY_CONNECTIONS,
            "sshr: too many logins in progress on this proxy, try again later",
        ),
        Refused::SessionLimit => (
            disconnect::TOO_MANY_CONNECTIONS,
            "sshr: too many sessions on this proxy, try again later",
        ),
    }
}

/// Tell a refused client why, in one line: our identification line and a plaintext
/// DISCONNECT, which SSH allows before key exchange (OpenSSH prints "Received disconnect
/// from ...: too many sessions ..."). No key exchange, no crypto: this runs when the shard
/// is busiest or under a flood. The connection then reads until the client hangs up (at
/// most [`REFUSE_LINGER`]): closing with the client's identification line unread would
/// reset the connection, and the client would lose the reason.
fn refuse(
    mut stream: glommio::net::TcpStream,
    ctx: &ShardContext,
    refusing: &Rc<Cell<usize>>,
    reason: Refused,
) {
    if refusing.get() >= MAX_REFUSING {
        return;
    }
    let mut t = sshr_protocol::transport::Transport::server(
        crate::session::transport_config(&ctx.config()),
        ctx.host_keys.clone(),
        crate::session::seed(),
        Instant::now(),
    );
    let (code, message) = refusal_message(reason);
    t.disconnect(code, message);
    let out = t.transmit().to_vec();
    refusing.set(refusing.get() + 1);
    let refusing = refusing.clone();
    glommio::spawn_local(async move {
        let _ = glommio::timer::timeout(REFUSE_LINGER, async {
            use futures_lite::{AsyncReadExt, AsyncWriteExt};
            if stream.write_all(&out).await.is_ok() {
                let _ = stream.shutdown(std::net::Shutdown::Write).await;
                let mut sink = [0u8; 512];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            }
            Ok(())
        })
        .await;
        refusing.set(refusing.get() - 1);
    })
    .detach();
}

/// Logs refusals at most once a second so an overload does not also flood the log.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    fn refused(&mut self, shard: usize, peer: SocketAddr, reason: Refused) {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => self.suppressed += 1,
            _ => {
                let why = match reason {
                    Refused::SessionLimit => "max_sessions_per_shard reached",
                    Refused::Penalty => "source address penalised ([penalties])",
                    Refused::Startups => "too many unauthenticated connections (max_startups)",
                };
                tracing::warn!(
                    shard,
                    %peer,
                    also_refused = self.suppressed,
                    "refusing connection: {why}"
                );
                self.last = Some(now);
                self.suppressed = 0;
            }
        }
    }
}

/// Dice for early drop: uniform in `0..100`, a xorshift seeded once per accept loop (no
/// system call per connection; nothing secret depends on it).
struct EarlyDropDice(u64);

impl EarlyDropDice {
    fn new() -> Self {
        EarlyDropDice(rand_core::RngCore::next_u64(&mut rand_core::OsRng) | 1)
    }

    fn roll(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % 100) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_gets_a_socket_on_the_same_port() {
        let listen: Vec<SocketAddr> =
            vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
        let (bound, per_shard) = bind_all(&listen, 3).unwrap();
        assert_eq!(bound.len(), 2);
        assert_ne!(bound[0].port(), 0, "port 0 resolved");
        assert_eq!(per_shard.len(), 3);
        for sockets in &per_shard {
            assert_eq!(sockets.len(), 2);
            for (socket, want) in sockets.iter().zip(&bound) {
                assert_eq!(socket.local_addr().unwrap().as_socket(), Some(*want));
                assert!(socket.reuse_port().unwrap());
            }
        }
        // A plain (non-REUSEPORT) socket cannot take the port from under us.
        assert!(std::net::TcpListener::bind(bound[0]).is_err());
    }

    #[test]
    fn bind_errors_name_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind_all(&[addr], 1).unwrap_err();
        assert_eq!(err.addr, addr);
        assert!(err.to_string().contains(&addr.to_string()));
    }
}
