//! The top of the daemon: the thread-per-core server. One glommio executor (a *shard*)
//! per worker, each with its own listening sockets, hooks, buffer pool and counters
//! ([`ShardContext`]).
//!
//! A session lives and dies on the shard that accepted it; nothing on the hot path is
//! shared between threads. The main thread only starts the shards, forwards signals and
//! configuration reloads to them over a control socket, and waits for them to finish.
//! Signals, CPU placement and the memlock limit are handled here too.
//!
//! The process's lifecycle:
//!
//! - Start: bind the listeners (or take those handed by systemd or an upgrading sshr,
//!   see [`ListenFds`]), read the keys, open the providers and the metrics endpoint,
//!   then drop root if `user` is set ([`crate::privileges`]), then start the shards.
//! - The main thread keeps a duplicate of every listening socket ([`ListenerSet`]):
//!   a shard that stops accepting does not close a socket that another process or a
//!   later command still needs, and the main thread has them all to hand over.
//! - SIGHUP: reload the configuration. New listen addresses are bound on the main
//!   thread (an error is logged; the running listeners stay) and given to the shards,
//!   removed ones are taken from them ([`ListenerChange`] through [`Shared`], then
//!   [`CTRL_LISTENERS`]). Live sessions are not touched. Connections queued on a removed
//!   address's sockets are reset when they close: that address is going away.
//! - SIGUSR2: in-place upgrade ([`crate::upgrade`]). The new process gets every socket;
//!   once it accepts, this one stops accepting (as at SIGTERM: health draining, sessions
//!   get `limits.shutdown_grace`) and exits when its sessions are over. The sockets stay
//!   open in the new process, so connections queued on them are accepted there. If the
//!   new process fails, this one keeps serving. A second SIGUSR2 meanwhile is ignored.
//! - SIGINT/SIGTERM: stop accepting (the sockets close), drain, exit.
//!
//! An upgrade stops accepting without cancelling pending accepts (a cancelled io_uring
//! accept that the kernel completes in the same instant loses its connection, see
//! [`detach_listeners`]). What remains: an accept still pending on a real socket when
//! the old process ends (its sessions are over) could take a connection in that very
//! instant; closing it at exit resets it. Only glommio could close that one.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::AsyncReadExt;
use glommio::{LocalExecutorPoolBuilder, PoolPlacement, PoolThreadHandles};
use sshr_protocol::hostkey::PrivateKey;

use crate::audit::{self, Audit};
use crate::config::{AuditLog, Config};
use crate::health::Health;
use crate::hooks::HooksFactory;
use crate::io::leg::DISCONNECT_GRACE;
use crate::io::listener::{self, BindError, BoundAddress, ListenFds, ListenerKind};
use crate::keys::{self, KeyFileError};
use crate::metrics::{self, MetricsError};
use crate::notify;
use crate::privileges::{self, Dropped, PrivilegeError};
use crate::providers;
use crate::proxy::admission::Admission;
use crate::proxy::gate;
use crate::proxy::shard::ShardContext;
use crate::rt::{sleep, timeout, Elapsed};
use crate::upgrade;

/// Helper threads per shard for [`run_blocking`]: a slow DNS answer or hook backend must
/// not hold up every other lookup of the shard.
const BLOCKING_THREADS_PER_SHARD: usize = 4;

/// How long the shards may take to start before the server gives up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// The server.

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    Key(#[from] KeyFileError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    #[error(
        "glommio could not create io_uring rings ({reason}): raise the memlock limit \
         (ulimit -l) or run outside a seccomp profile that blocks io_uring"
    )]
    Runtime { reason: String },
    #[error("{0}")]
    Providers(String),
    #[error("`upstream_key` lists no key file")]
    NoUpstreamKey,
    #[error("cannot start worker threads: {0}")]
    Threads(String),
    #[error("shard {index} failed: {reason}")]
    ShardFailed { index: usize, reason: String },
    #[error(transparent)]
    Audit(#[from] audit::OpenError),
}

/// The proxy daemon: configuration plus hooks, run on one shard per worker.
///
/// ```no_run
/// let config = sshr::Config::load("sshr.toml".as_ref())?;
/// sshr::Server::new(config).run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server {
    config: Config,
    hooks: Option<HooksFactory>,
    workers: Option<usize>,
    listen_fds: ListenFds,
}

impl Server {
    /// A server with the default hooks: the static `[[users]]` table of `config`.
    pub fn new(config: Config) -> Self {
        Server {
            config,
            hooks: None,
            workers: None,
            listen_fds: ListenFds::default(),
        }
    }

    /// Listening sockets handed to the process (systemd socket activation, or the sshr
    /// this one replaces; see [`ListenFds::from_env`]): used for the configured
    /// addresses they are bound to instead of binding again.
    pub fn listen_fds(mut self, fds: ListenFds) -> Self {
        self.listen_fds = fds;
        self
    }

    /// Uses these hooks instead of the static user table.
    pub fn hooks(mut self, factory: HooksFactory) -> Self {
        self.hooks = Some(factory);
        self
    }

    /// Overrides `workers` of the configuration (the `--workers` option).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.max(1));
        self
    }

    /// Runs until SIGINT or SIGTERM (graceful: stop accepting, give sessions
    /// `limits.shutdown_grace` to end; a second signal exits at once). SIGHUP reloads
    /// the configuration file, listeners included; SIGUSR2 upgrades in place (see
    /// `src/upgrade.rs`); SIGUSR1 reopens the audit log. Blocks the calling thread.
    pub fn run(self) -> Result<(), ServerError> {
        // Handlers first: the listeners accept (into the kernel's queue) from the bind
        // on, and a SIGHUP or SIGUSR2 sent then must not kill the process (their
        // default action); signals received during the start are handled once it is
        // done.
        let events = mpsc::channel();
        let signals = SignalForwarder::install(events.0.clone())
            .map_err(|e| ServerError::Threads(format!("cannot install signal handlers: {e}")))?;
        let result = self.start_with(events).and_then(RunningServer::wait);
        signals.close();
        result
    }

    /// Starts the shards and returns once every one of them accepts connections. No
    /// signal handling: stop it with [`RunningServer::shutdown`] or a [`ServerHandle`].
    pub fn start(self) -> Result<RunningServer, ServerError> {
        self.start_with(mpsc::channel())
    }

    fn start_with(
        self,
        (events_tx, events_rx): (mpsc::Sender<Event>, mpsc::Receiver<Event>),
    ) -> Result<RunningServer, ServerError> {
        // Before a privilege drop: only root may raise the hard limit.
        raise_memlock_limit();
        let workers = self.workers.unwrap_or_else(|| self.config.worker_count());

        // Keys generated now are removed again if the start fails (`generated` drops).
        let keys = keys::load_server_keys(&self.config.host_keys, &self.config.upstream_keys)?;
        let host_keys: Arc<[PrivateKey]> = keys.host_keys.into();
        let upstream_keys: Arc<[PrivateKey]> = keys.upstream_keys.into();
        // The default hooks give the first; sessions offer the others after it.
        let upstream_key = Arc::new(
            upstream_keys
                .first()
                .cloned()
                .ok_or(ServerError::NoUpstreamKey)?,
        );
        let generated = keys.generated;

        // Health: one per process; the providers of every configuration report to it,
        // and /readyz on the metrics endpoint reads it.
        let health = Health::new();
        let custom_hooks = self.hooks.clone();
        let factory = match self.hooks {
            Some(factory) => factory,
            None => {
                providers::chain::factory(&self.config, upstream_key.clone(), health.providers())
                    .map_err(ServerError::Providers)?
            }
        };

        let mut listen_fds = self.listen_fds;
        if let Some(addr) = self.config.metrics_listen {
            match metrics::install_prometheus(addr, health.clone()) {
                Ok(()) => {
                    tracing::info!(%addr, "metrics endpoint listening (/metrics, /healthz, /readyz)")
                }
                // The process we replace holds the port until it has drained.
                Err(e) if listen_fds.is_upgrade() => {
                    tracing::warn!(error = %e, "metrics endpoint busy: retrying until the previous process exits");
                    retry_metrics_endpoint(addr, health.clone());
                }
                Err(e) => return Err(e.into()),
            }
        }

        // The audit log: one writer for all shards (`src/audit.rs`), opened before the
        // privilege drop.
        let audit = match &self.config.audit_log {
            Some(AuditLog::File(path)) => Some(Audit::open(Some(path))?),
            Some(AuditLog::Stderr) => Some(Audit::open(None)?),
            None => None,
        };

        let bound = listener::bind_all(&self.config.listeners(), workers, &mut listen_fds)?;
        listen_fds.close_unclaimed();

        // Everything root may be needed for is done: listeners bound, keys read,
        // providers, the metrics endpoint and the audit log open, memlock raised.
        if let Some(user) = &self.config.run_as {
            match privileges::drop_to(user)? {
                Dropped::Dropped(account) => tracing::info!(
                    user = %account.name,
                    uid = account.uid,
                    gid = account.gid,
                    "dropped root privileges"
                ),
                Dropped::AlreadyThatUser => tracing::warn!(
                    user = %user,
                    "not started as root: already running as `user`, nothing to drop"
                ),
            }
        }

        let mut listeners = ListenerSet::new(workers);
        let mut changes = ListenerSet::no_changes(workers);
        for address in bound {
            listeners
                .add(address, &mut changes)
                .map_err(|e| ServerError::Threads(format!("cannot duplicate a socket: {e}")))?;
        }
        let metrics_enabled = self.config.metrics_listen.is_some();
        let shared = Arc::new(Shared {
            health,
            upstream_key,
            upstream_keys,
            admission: Admission::new(),
            audit,
            current: Mutex::new(Generation {
                config: Arc::new(self.config),
                hooks: factory,
                host_keys,
            }),
            metrics_enabled,
            listener_changes: Mutex::new(changes),
        });

        let mut controls = Vec::with_capacity(workers);
        let mut setups = Vec::with_capacity(workers);
        for index in 0..workers {
            let (ours, theirs) = UnixStream::pair()
                .map_err(|e| ServerError::Threads(format!("cannot create control socket: {e}")))?;
            controls.push(ours);
            setups.push(ShardSetup {
                index,
                control: theirs,
                shared: shared.clone(),
                events: events_tx.clone(),
            });
        }

        let setups = Arc::new(Mutex::new(setups));

        let placement = placement(workers);
        let handles = LocalExecutorPoolBuilder::new(placement)
            .name("sshr-shard")
            .blocking_thread_pool_placement(PoolPlacement::Unbound(BLOCKING_THREADS_PER_SHARD))
            .on_all_shards(move || {
                let setup = setups.lock().ok().and_then(|mut s| s.pop());
                async move {
                    if let Some(setup) = setup {
                        shard_main(setup).await;
                    }
                }
            })
            .map_err(|e| ServerError::Threads(e.to_string()))?;

        let mut server = RunningServer {
            listeners,
            exe: std::env::current_exe().ok(),
            args: std::env::args_os().skip(1).collect(),
            upgrading: false,
            handed_over: false,
            controls,
            handles: Some(handles),
            events: (events_tx, events_rx),
            shared,
            custom_hooks,
            stopping: false,
        };
        server.wait_until_ready(workers)?;
        server.shared.health.set_listening(true);
        generated.keep();
        if listen_fds.is_upgrade() {
            // The process we replace tells systemd about us (MAINPID), once we are ready.
            listen_fds.report_ready();
        } else {
            notify::notify("READY=1");
        }
        tracing::info!(
            listen = ?server.listeners.addrs(),
            workers,
            "sshr {} accepting connections",
            env!("CARGO_PKG_VERSION")
        );
        Ok(server)
    }
}

/// What every shard reads at start and on reload.
struct Shared {
    health: Arc<Health>,
    /// The first of `upstream_keys`, which the default hooks give.
    upstream_key: Arc<PrivateKey>,
    upstream_keys: Arc<[PrivateKey]>,
    admission: Arc<Admission>,
    audit: Option<Arc<Audit>>,
    current: Mutex<Generation>,
    metrics_enabled: bool,
    /// Per shard, the listening sockets it should start or stop accepting on, taken by
    /// the shard at start and on [`CTRL_LISTENERS`].
    listener_changes: Mutex<Vec<Vec<ListenerChange>>>,
}

/// A change to the listening sockets of one shard.
enum ListenerChange {
    /// Accept on this socket (the main thread keeps a duplicate, under the same id).
    Add {
        id: u64,
        socket: socket2::Socket,
        kind: ListenerKind,
    },
    /// Stop accepting on socket `id` (its address was removed).
    Remove(u64),
}

#[derive(Clone)]
struct Generation {
    config: Arc<Config>,
    hooks: HooksFactory,
    /// The proxy's host keys, read again on every reload.
    host_keys: Arc<[PrivateKey]>,
}

impl Shared {
    fn generation(&self) -> Generation {
        match self.current.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn take_listener_changes(&self, shard: usize) -> Vec<ListenerChange> {
        let mut all = match self.listener_changes.lock() {
            Ok(all) => all,
            Err(poisoned) => poisoned.into_inner(),
        };
        all.get_mut(shard).map(std::mem::take).unwrap_or_default()
    }

    fn push_listener_changes(&self, changes: Vec<Vec<ListenerChange>>) {
        let mut all = match self.listener_changes.lock() {
            Ok(all) => all,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (pending, new) in all.iter_mut().zip(changes) {
            pending.extend(new);
        }
    }
}

/// The main thread's duplicate of every listening socket, by address: what a SIGHUP
/// compares with the new configuration and what a SIGUSR2 hands to the new process.
///
/// Holding a duplicate also means that a shard that stops accepting on a socket does
/// not close it: a socket is closed only when the main thread drops it too, so that the
/// connections queued on it are reset only when nobody will accept them (an address
/// removed by a reload, or a shutdown).
struct ListenerSet {
    addresses: Vec<ListenerAddress>,
    shards: usize,
    next_id: u64,
    /// The shard that gets the first socket of the next address: with fewer sockets
    /// than shards (handed by systemd), addresses are spread over the shards.
    next_shard: usize,
}

struct ListenerAddress {
    requested: SocketAddr,
    actual: SocketAddr,
    kind: ListenerKind,
    sockets: Vec<(u64, socket2::Socket)>,
}

impl ListenerSet {
    fn new(shards: usize) -> Self {
        ListenerSet {
            addresses: Vec::new(),
            shards,
            next_id: 0,
            next_shard: 0,
        }
    }

    fn no_changes(shards: usize) -> Vec<Vec<ListenerChange>> {
        (0..shards).map(|_| Vec::new()).collect()
    }

    /// Gives `address`'s sockets to the shards, one each in turn (a shard may get
    /// several when there are more sockets than shards), keeping a duplicate of each.
    fn add(
        &mut self,
        address: BoundAddress,
        changes: &mut [Vec<ListenerChange>],
    ) -> io::Result<()> {
        let dups = (address.sockets.iter())
            .map(|s| s.try_clone())
            .collect::<io::Result<Vec<_>>>()?;
        let mut kept = Vec::with_capacity(dups.len());
        for (socket, dup) in address.sockets.into_iter().zip(dups) {
            let id = self.next_id;
            self.next_id += 1;
            changes[self.next_shard % self.shards].push(ListenerChange::Add {
                id,
                socket,
                kind: address.kind,
            });
            self.next_shard += 1;
            kept.push((id, dup));
        }
        self.addresses.push(ListenerAddress {
            requested: address.requested,
            actual: address.actual,
            kind: address.kind,
            sockets: kept,
        });
        Ok(())
    }

    /// Stops every shard accepting on address `index` and drops our duplicates: the
    /// sockets close once the shards have let go of theirs.
    fn remove(&mut self, index: usize, changes: &mut [Vec<ListenerChange>]) {
        let address = self.addresses.remove(index);
        for (id, _) in &address.sockets {
            for shard in changes.iter_mut() {
                shard.push(ListenerChange::Remove(*id));
            }
        }
    }

    fn contains(&self, requested: SocketAddr, kind: ListenerKind) -> bool {
        (self.addresses.iter()).any(|a| a.requested == requested && a.kind == kind)
    }

    fn addrs(&self) -> Vec<(SocketAddr, ListenerKind)> {
        self.addresses.iter().map(|a| (a.actual, a.kind)).collect()
    }

    /// Every socket, with its `LISTEN_FDNAMES` name, for a new process.
    fn handoff(&self) -> Vec<(std::os::fd::RawFd, String)> {
        let mut all = Vec::new();
        for a in &self.addresses {
            let name = listener::handoff_name(a.requested, a.kind);
            for (_, socket) in &a.sockets {
                all.push((socket.as_raw_fd(), name.clone()));
            }
        }
        all
    }

    /// Drops our duplicates (at shutdown): the sockets close with the shards' copies.
    fn close(&mut self) {
        for a in &mut self.addresses {
            a.sockets.clear();
        }
    }
}

/// What the main thread hands one shard.
struct ShardSetup {
    index: usize,
    control: UnixStream,
    shared: Arc<Shared>,
    events: mpsc::Sender<Event>,
}

/// Messages to the main thread.
enum Event {
    /// The shard accepts connections.
    Ready,
    /// The shard's main future ended or unwound.
    Exited(usize),
    Signal(i32),
    Request(Request),
    /// The new process of an upgrade accepts (its pid), or failed.
    Upgraded(Result<u32, String>),
}

enum Request {
    Shutdown,
    StopNow,
    Reload(Box<Config>),
}

/// Control bytes, main thread to shard. End of stream means "stop now" too, so a dying
/// main thread never leaves shards behind.
const CTRL_SHUTDOWN: u8 = b'S';
const CTRL_STOP_NOW: u8 = b'X';
const CTRL_RELOAD: u8 = b'R';
/// Take this shard's [`ListenerChange`]s from [`Shared`].
const CTRL_LISTENERS: u8 = b'L';
/// Graceful shutdown after an upgrade: stop accepting without cancelling an accept
/// ([`detach_listeners`]).
const CTRL_HANDOFF: u8 = b'U';

/// Sends `Exited` when dropped, whether the shard returned or panicked.
struct ExitNotice {
    index: usize,
    events: mpsc::Sender<Event>,
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.events.send(Event::Exited(self.index));
    }
}

async fn shard_main(setup: ShardSetup) {
    let ShardSetup {
        index,
        control,
        shared,
        events,
    } = setup;
    let _exit = ExitNotice {
        index,
        events: events.clone(),
    };

    let generation = shared.generation();
    let ctx = Rc::new(
        ShardContext::new(
            index,
            generation.config.clone(),
            (generation.hooks)(),
            generation.host_keys.clone(),
            shared.admission.clone(),
        )
        .with_audit(shared.audit.clone())
        .with_upstream_keys(shared.upstream_keys.clone()),
    );

    let mut accept_tasks = HashMap::new();
    change_listeners(&ctx, &shared, &mut accept_tasks).await;
    let publisher = shared
        .metrics_enabled
        .then(|| glommio::spawn_local(publish_metrics(ctx.clone())));

    // The control socket is read by its own task and turned into local messages, so
    // waiting for a command can be combined with timers without losing a byte.
    let (commands_tx, commands) = glommio::channels::local_channel::new_unbounded::<u8>();
    // SAFETY: the fd is a socket we own and give up here.
    let mut control = unsafe { glommio::net::UnixStream::from_raw_fd(control.into_raw_fd()) };
    let _control_reader = glommio::spawn_local(async move {
        let mut byte = [0u8; 1];
        loop {
            let command = match control.read(&mut byte).await {
                Ok(1) => byte[0],
                _ => CTRL_STOP_NOW,
            };
            if commands_tx.send(command).await.is_err() || command == CTRL_STOP_NOW {
                break;
            }
        }
    });

    tracing::debug!(shard = index, "shard started");
    let _ = events.send(Event::Ready);

    loop {
        match commands.recv().await.unwrap_or(CTRL_STOP_NOW) {
            CTRL_RELOAD => reload_shard(&ctx, &shared),
            CTRL_LISTENERS => change_listeners(&ctx, &shared, &mut accept_tasks).await,
            CTRL_SHUTDOWN => {
                stop_accepting(std::mem::take(&mut accept_tasks)).await;
                break;
            }
            CTRL_HANDOFF => {
                if let Err(e) = detach_listeners(&accept_tasks) {
                    tracing::warn!(shard = index, error = %e, "cannot detach the listeners: cancelling their accepts");
                    stop_accepting(std::mem::take(&mut accept_tasks)).await;
                }
                break;
            }
            _ => {
                stop_accepting(accept_tasks).await;
                return;
            }
        }
    }

    // Graceful shutdown: no new connections, running sessions get the grace period.
    ctx.warm.close();
    let grace = ctx.config().limits.shutdown_grace;
    let deadline = Instant::now() + grace;
    while ctx.live_sessions() > 0 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            tracing::warn!(
                shard = index,
                sessions = ctx.live_sessions(),
                "grace period over: closing the remaining sessions"
            );
            // Each session tells both peers why (a DISCONNECT, bounded by
            // DISCONNECT_GRACE) before the shard ends.
            ctx.stop_sessions();
            let told = Instant::now() + DISCONNECT_GRACE + Duration::from_millis(500);
            while ctx.live_sessions() > 0 && Instant::now() < told {
                sleep(Duration::from_millis(20)).await;
            }
            break;
        }
        match timeout(remaining.min(Duration::from_millis(100)), commands.recv()).await {
            Err(Elapsed) => {}
            Ok(Some(CTRL_RELOAD)) => reload_shard(&ctx, &shared),
            Ok(Some(CTRL_SHUTDOWN | CTRL_LISTENERS | CTRL_HANDOFF)) => {}
            Ok(_) => break,
        }
    }
    // Detached accept loops wait on a socket nobody connects to: ending them now loses
    // nothing.
    stop_accepting(accept_tasks).await;
    if let Some(publisher) = publisher {
        publisher.cancel().await;
        ctx.metrics.publish(gauges(&ctx));
    }
    tracing::debug!(shard = index, "shard stopped");
}

/// A shard's accept loops by listener id, with the fd each one accepts on.
type AcceptTasks = HashMap<u64, (glommio::Task<()>, RawFd)>;

async fn stop_accepting(tasks: AcceptTasks) {
    // Cancelling the accept loops drops their listeners, which closes the shard's fds
    // (the sockets close when the main thread drops its duplicates too).
    for (task, _) in tasks.into_values() {
        task.cancel().await;
    }
}

/// After an upgrade: stops this shard taking connections from the sockets the new
/// process now serves, without cancelling an accept.
///
/// Cancelling a pending io_uring accept races with the kernel completing it, and
/// glommio drops such a completion: that connection would never be served. Instead,
/// each accept loop's fd is pointed (dup2) at a private listening socket nobody
/// connects to. An accept already pending on the real socket stays there and may still
/// get one connection, which this process serves as any other; every later accept
/// waits on the private socket, and cancelling those at the end loses nothing.
fn detach_listeners(tasks: &AcceptTasks) -> io::Result<()> {
    let nowhere = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    nowhere.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    nowhere.listen(1)?;
    nowhere.set_nonblocking(true)?;
    for (_, fd) in tasks.values() {
        // SAFETY: `fd` is the open listening fd of an accept loop of this shard; dup2
        // replaces it atomically, and the loop's listener closes it when it ends.
        unsafe {
            if libc::dup2(nowhere.as_raw_fd(), *fd) < 0 {
                return Err(io::Error::last_os_error());
            }
            // dup2 clears close-on-exec: no hook or provider process may inherit it.
            libc::fcntl(*fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    Ok(())
}

/// Starts and stops accept loops as the main thread asked (at start, and on a reload
/// that changed the listen addresses). Sessions are not touched.
async fn change_listeners(ctx: &Rc<ShardContext>, shared: &Shared, tasks: &mut AcceptTasks) {
    for change in shared.take_listener_changes(ctx.index) {
        match change {
            ListenerChange::Add { id, socket, kind } => {
                let fd = socket.as_raw_fd();
                let listener = listener::into_glommio(socket);
                let task = glommio::spawn_local(gate::run(listener, kind, ctx.clone()));
                tasks.insert(id, (task, fd));
            }
            ListenerChange::Remove(id) => {
                if let Some((task, _)) = tasks.remove(&id) {
                    task.cancel().await;
                }
            }
        }
    }
}

fn reload_shard(ctx: &ShardContext, shared: &Shared) {
    let generation = shared.generation();
    ctx.reload(
        generation.config,
        (generation.hooks)(),
        generation.host_keys,
    );
    // Held connections were made under the old settings (upstreams, keys, limits).
    ctx.warm.clear();
    tracing::debug!(shard = ctx.index, "configuration reloaded");
}

/// What the shard holds now, for the metrics sink.
fn gauges(ctx: &ShardContext) -> metrics::ShardGauges {
    let pool = ctx.pool.stats();
    let (warm_hits, warm_misses) = ctx.warm.hits_and_misses();
    metrics::ShardGauges {
        pool_in_use: pool.in_use,
        pool_waiters: pool.waiters,
        warm_held: ctx.warm.held(),
        warm_hits,
        warm_misses,
    }
}

async fn publish_metrics(ctx: Rc<ShardContext>) {
    loop {
        sleep(Duration::from_secs(1)).await;
        ctx.metrics.publish(gauges(&ctx));
        metrics::publish_preauth(
            ctx.index,
            ctx.handshake_budget.used(),
            ctx.admission.unauthenticated_count(),
        );
    }
}

/// A started server. Dropping it without [`wait`](RunningServer::wait) stops the shards
/// at once.
pub struct RunningServer {
    listeners: ListenerSet,
    /// The executable and arguments of this process, as recorded at start, for an
    /// upgrade: after the binary was replaced on disk, `/proc/self/exe` names the
    /// deleted file while this path names the new one.
    exe: Option<PathBuf>,
    args: Vec<OsString>,
    /// A new process was started by SIGUSR2 and has not reported yet.
    upgrading: bool,
    /// A new process took over: it is the service now, this one only drains.
    handed_over: bool,
    controls: Vec<UnixStream>,
    handles: Option<PoolThreadHandles<()>>,
    events: (mpsc::Sender<Event>, mpsc::Receiver<Event>),
    shared: Arc<Shared>,
    custom_hooks: Option<HooksFactory>,
    stopping: bool,
}

/// Controls a running server from any thread.
#[derive(Clone)]
pub struct ServerHandle {
    events: mpsc::Sender<Event>,
}

impl ServerHandle {
    /// Stop accepting and let sessions finish within the grace period.
    pub fn shutdown(&self) {
        let _ = self.events.send(Event::Request(Request::Shutdown));
    }

    /// Stop at once, closing every session.
    pub fn stop_now(&self) {
        let _ = self.events.send(Event::Request(Request::StopNow));
    }

    /// Swap in a new configuration (see [`RunningServer::reload`]).
    pub fn reload(&self, config: Config) {
        let _ = self
            .events
            .send(Event::Request(Request::Reload(Box::new(config))));
    }
}

impl RunningServer {
    /// The `listen` addresses accepting connections (with the actual port where the
    /// configuration said port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs_of(ListenerKind::Ssh)
    }

    /// The `proxy_protocol.listen` addresses accepting connections.
    pub fn proxy_protocol_addrs(&self) -> Vec<SocketAddr> {
        self.addrs_of(ListenerKind::ProxyProtocol)
    }

    fn addrs_of(&self, kind: ListenerKind) -> Vec<SocketAddr> {
        (self.listeners.addrs().iter())
            .filter(|(_, k)| *k == kind)
            .map(|(a, _)| *a)
            .collect()
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            events: self.events.0.clone(),
        }
    }

    /// Stop accepting and let sessions finish within the grace period; then
    /// [`wait`](RunningServer::wait) returns.
    pub fn shutdown(&mut self) {
        if !self.stopping {
            self.stopping = true;
            if self.handed_over {
                self.shared.health.set_handed_over();
            } else {
                self.shared.health.set_draining();
            }
            if self.handed_over {
                self.broadcast(CTRL_HANDOFF);
            } else {
                notify::notify("STOPPING=1");
                self.broadcast(CTRL_SHUTDOWN);
            }
            self.listeners.close();
        }
    }

    /// Applies a new configuration to new sessions: limits, rekey, users (with the
    /// default hooks, whose `authorized_keys_file`s are read again) and `[hooks]`
    /// settings; custom hooks are rebuilt by their factory. Listen addresses (`listen`,
    /// `proxy_protocol.listen`) are opened and closed (one that cannot be bound is
    /// logged and the others kept; live sessions are not touched). Settings bound at
    /// start (keys, workers, metrics endpoint, audit log path, buffer pool and handshake
    /// budget sizes) keep their running values, with a warning.
    pub fn reload(&mut self, mut config: Config) {
        let running = self.shared.generation().config;
        let mut restart_only = Vec::new();
        if config.upstream_keys != running.upstream_keys {
            restart_only.push("upstream_key");
        }
        if config.workers != running.workers {
            restart_only.push("workers");
        }
        if config.metrics_listen != running.metrics_listen {
            restart_only.push("metrics_listen");
        }
        if config.audit_log != running.audit_log {
            restart_only.push("audit_log");
            config.audit_log = running.audit_log.clone();
        }
        if config.limits.buffer_pool_bytes_per_shard != running.limits.buffer_pool_bytes_per_shard {
            restart_only.push("limits.buffer_pool_bytes_per_shard");
            config.limits.buffer_pool_bytes_per_shard = running.limits.buffer_pool_bytes_per_shard;
        }
        if config.limits.preauth_buffer_bytes_per_shard
            != running.limits.preauth_buffer_bytes_per_shard
        {
            restart_only.push("limits.preauth_buffer_bytes_per_shard");
            config.limits.preauth_buffer_bytes_per_shard =
                running.limits.preauth_buffer_bytes_per_shard;
        }
        if !restart_only.is_empty() {
            tracing::warn!(keys = ?restart_only, "these settings take effect only at restart");
        }
        let hooks = match &self.custom_hooks {
            Some(factory) => factory.clone(),
            None => match providers::chain::factory(
                &config,
                self.shared.upstream_key.clone(),
                self.shared.health.providers(),
            ) {
                Ok(factory) => factory,
                Err(e) => {
                    tracing::error!(error = %e, "reload failed: keeping the running configuration");
                    return;
                }
            },
        };
        // Host keys are read again (a key may have been rotated in place); reading never
        // generates one here. A key that cannot be read keeps the running ones.
        let host_keys = match keys::read_host_keys(&config.host_keys) {
            Ok(keys) => keys.into(),
            Err(e) => {
                tracing::error!(error = %e, "reload: keeping the running host keys");
                config.host_keys = running.host_keys.clone();
                self.shared.generation().host_keys
            }
        };
        let users = config.users.len();
        let next = Generation {
            config: Arc::new(config),
            hooks,
            host_keys,
        };
        match self.shared.current.lock() {
            Ok(mut g) => *g = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        self.broadcast(CTRL_RELOAD);
        let listeners = self.shared.generation().config.listeners();
        self.reload_listeners(&listeners);
        tracing::info!(users, "configuration reloaded");
    }

    /// Binds the addresses of `wanted` not listened on yet and stops listening on
    /// those no longer in it.
    fn reload_listeners(&mut self, wanted: &[(SocketAddr, ListenerKind)]) {
        if self.stopping {
            return;
        }
        let mut changes = ListenerSet::no_changes(self.controls.len());
        let mut index = 0;
        while index < self.listeners.addresses.len() {
            let address = &self.listeners.addresses[index];
            if wanted.contains(&(address.requested, address.kind)) {
                index += 1;
                continue;
            }
            tracing::info!(addr = %address.actual, kind = ?address.kind, "no longer listening (removed by the reload)");
            self.listeners.remove(index, &mut changes);
        }
        for &(requested, kind) in wanted {
            if self.listeners.contains(requested, kind) {
                continue;
            }
            let shards = self.controls.len();
            let bound =
                match listener::bind_address(requested, kind, shards, &mut ListenFds::default()) {
                    Ok(bound) => bound,
                    Err(e) => {
                        tracing::error!(error = %e, "reload: keeping the other listeners");
                        continue;
                    }
                };
            let actual = bound.actual;
            match self.listeners.add(bound, &mut changes) {
                Ok(()) => tracing::info!(addr = %actual, ?kind, "listening (added by the reload)"),
                Err(e) => {
                    tracing::error!(addr = %actual, error = %e, "reload: cannot duplicate a listening socket")
                }
            }
        }
        if changes.iter().any(|c| !c.is_empty()) {
            self.shared.push_listener_changes(changes);
            self.broadcast(CTRL_LISTENERS);
        }
    }

    /// SIGUSR2: starts the binary on disk with our listening sockets; once it accepts,
    /// this process stops accepting and drains (see [`crate::upgrade`]). If it fails,
    /// this process keeps serving.
    fn upgrade(&mut self) {
        if self.upgrading {
            tracing::warn!("SIGUSR2: an upgrade is already under way, ignored");
            return;
        }
        if self.stopping {
            tracing::warn!("SIGUSR2: stopping, no upgrade");
            return;
        }
        let Some(exe) = self.exe.clone() else {
            tracing::error!("upgrade failed: the path of the running executable is unknown");
            return;
        };
        let pending = match upgrade::spawn(&exe, &self.args, &self.listeners.handoff()) {
            Ok(pending) => pending,
            Err(e) => {
                tracing::error!(exe = %exe.display(), error = %e, "upgrade failed: cannot start the new process; still serving");
                return;
            }
        };
        tracing::info!(
            pid = pending.pid(),
            exe = %exe.display(),
            "upgrade: new process started, waiting until it accepts"
        );
        self.upgrading = true;
        let events = self.events.0.clone();
        let waiter = std::thread::Builder::new()
            .name("sshr-upgrade".into())
            .spawn(move || {
                let _ = events.send(Event::Upgraded(pending.wait_ready(STARTUP_TIMEOUT)));
            });
        if let Err(e) = waiter {
            // The pending process was moved into the closure and is dropped with it;
            // without the waiter, nobody would tell us it is ready: carry on serving.
            tracing::error!(error = %e, "upgrade failed: cannot start a thread; still serving");
            self.upgrading = false;
        }
    }

    fn on_upgraded(&mut self, result: Result<u32, String>) {
        self.upgrading = false;
        match result {
            Ok(pid) => {
                tracing::info!(
                    "upgrade: new process {pid} ready; this process stops accepting and drains"
                );
                // systemd follows the new process from here on (Type=notify units).
                notify::notify(&format!("MAINPID={pid}\nREADY=1"));
                self.handed_over = true;
                self.shutdown();
            }
            Err(e) => tracing::error!("upgrade failed: {e}; this process keeps serving"),
        }
    }

    /// Blocks until every shard has stopped (after [`shutdown`](Self::shutdown), a
    /// [`ServerHandle`] request, a signal forwarded by [`Server::run`], or a shard
    /// failure).
    pub fn wait(mut self) -> Result<(), ServerError> {
        let mut failure: Option<ServerError> = None;
        let shard_count = self.controls.len();
        let mut exited = vec![false; shard_count];
        loop {
            match self.events.1.recv_timeout(Duration::from_millis(250)) {
                Ok(Event::Signal(signal)) => self.on_signal(signal),
                Ok(Event::Request(Request::Shutdown)) => self.shutdown(),
                Ok(Event::Request(Request::StopNow)) => self.stop_now(),
                Ok(Event::Request(Request::Reload(config))) => self.reload(*config),
                Ok(Event::Upgraded(result)) => self.on_upgraded(result),
                Ok(Event::Exited(index)) => {
                    exited[index] = true;
                    if !self.stopping {
                        tracing::error!(
                            shard = index,
                            "shard stopped unexpectedly: stopping the server"
                        );
                        failure.get_or_insert(ServerError::ShardFailed {
                            index,
                            reason: "stopped unexpectedly (see the log above)".into(),
                        });
                        self.stop_now();
                    }
                }
                Ok(Event::Ready) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let finished = self.handles.as_ref().map_or(shard_count, |h| {
                h.handles().iter().filter(|t| t.is_finished()).count()
            });
            if finished == shard_count || exited.iter().all(|&e| e) {
                break;
            }
        }
        let results = self
            .handles
            .take()
            .map(|h| h.join_all())
            .unwrap_or_default();
        for (index, result) in results.into_iter().enumerate() {
            if let Err(e) = result {
                failure.get_or_insert(ServerError::ShardFailed {
                    index,
                    reason: e.to_string(),
                });
            }
        }
        match failure {
            Some(e) => Err(e),
            None => {
                tracing::info!("sshr stopped");
                Ok(())
            }
        }
    }

    fn on_signal(&mut self, signal: i32) {
        match signal {
            // logrotate renamed the audit log: open the path again.
            signal_hook::consts::SIGUSR1 => match &self.shared.audit {
                Some(audit) => audit.reopen(),
                None => tracing::debug!("SIGUSR1: no audit log to reopen"),
            },
            signal_hook::consts::SIGHUP => match self.shared.generation().config.path.clone() {
                Some(path) => match Config::load(&path) {
                    Ok(config) => self.reload(config),
                    Err(e) => {
                        tracing::error!("reload failed, keeping the running configuration: {e}")
                    }
                },
                None => {
                    tracing::warn!("SIGHUP: running the built-in configuration, nothing to reload")
                }
            },
            signal_hook::consts::SIGUSR2 => self.upgrade(),
            _ if self.stopping => {
                tracing::info!("second stop signal: closing every session now");
                self.stop_now();
            }
            _ => {
                let grace = self.shared.generation().config.limits.shutdown_grace;
                tracing::info!(
                    grace_secs = grace.as_secs(),
                    "stop signal: no longer accepting connections, waiting for sessions to end"
                );
                self.shutdown();
            }
        }
    }

    fn stop_now(&mut self) {
        self.stopping = true;
        self.shared.health.set_draining();
        self.broadcast(CTRL_STOP_NOW);
        self.listeners.close();
    }

    fn broadcast(&self, command: u8) {
        for control in &self.controls {
            // A shard that is gone has closed its end; nothing to tell it.
            let _ = (&*control).write_all(&[command]);
        }
    }

    /// Waits for every shard to report ready; on a failure, stops the others and says
    /// why.
    fn wait_until_ready(&mut self, workers: usize) -> Result<(), ServerError> {
        let mut ready = 0;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut timed_out = false;
        // Signals that came during the start: handled by `wait`, after it.
        let mut deferred = Vec::new();
        // `Exited` comes only from shards whose executor ran our code; a shard whose
        // io_uring rings could not be created just ends its thread.
        let mut exited = loop {
            if ready == workers {
                for signal in deferred {
                    let _ = self.events.0.send(Event::Signal(signal));
                }
                return Ok(());
            }
            match self.events.1.recv_timeout(Duration::from_millis(50)) {
                Ok(Event::Ready) => ready += 1,
                Ok(Event::Exited(index)) => break Some(index),
                Ok(Event::Signal(signal)) => deferred.push(signal),
                Ok(_) => {}
                Err(_) => {
                    // An executor that could not be created never runs our code, so it
                    // sends nothing: look at the threads.
                    let any_finished = self
                        .handles
                        .as_ref()
                        .is_some_and(|h| h.handles().iter().any(|t| t.is_finished()));
                    timed_out = Instant::now() > deadline;
                    if any_finished || timed_out {
                        break None;
                    }
                }
            }
        };
        self.stop_now();
        let results = self
            .handles
            .take()
            .map(|h| h.join_all())
            .unwrap_or_default();
        let reason = results
            .into_iter()
            .find_map(|r| r.err())
            .map(|e| e.to_string())
            .unwrap_or_else(|| "stopped during startup (see the log above)".to_string());
        // An `Exited` sent just before the thread ended may still be queued.
        while let Ok(event) = self.events.1.try_recv() {
            if let (Event::Exited(index), None) = (event, exited) {
                exited = Some(index);
            }
        }
        Err(if timed_out {
            ServerError::Threads(format!("shards did not start within {STARTUP_TIMEOUT:?}"))
        } else if let Some(index) = exited {
            // The executor ran: the failure is in the shard's own startup (hooks).
            ServerError::ShardFailed { index, reason }
        } else {
            ServerError::Runtime { reason }
        })
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(handles) = self.handles.take() {
            self.broadcast(CTRL_STOP_NOW);
            let _ = handles.join_all();
        }
    }
}

/// Forwards SIGINT, SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 to the main thread's event loop.
struct SignalForwarder {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SignalForwarder {
    fn install(events: mpsc::Sender<Event>) -> io::Result<Self> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
        let mut signals =
            signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2])?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("sshr-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if events.send(Event::Signal(signal)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(SignalForwarder {
            handle,
            thread: Some(thread),
        })
    }

    fn close(mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds the metrics endpoint in the background, every half second, until the
/// process that held it (the one this upgrade replaces) has exited, or gives up after
/// a while with an error log.
fn retry_metrics_endpoint(addr: SocketAddr, health: Arc<Health>) {
    const GIVE_UP_AFTER: Duration = Duration::from_secs(3600);
    let spawned = std::thread::Builder::new()
        .name("sshr-metrics-bind".into())
        .spawn(move || {
            let start = Instant::now();
            while start.elapsed() < GIVE_UP_AFTER {
                std::thread::sleep(Duration::from_millis(500));
                if metrics::install_prometheus(addr, health.clone()).is_ok() {
                    tracing::info!(%addr, "metrics endpoint listening");
                    return;
                }
            }
            tracing::error!(%addr, "metrics endpoint still busy: running without it");
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a thread: running without the metrics endpoint");
    }
}

/// One shard per CPU we may run on, as far apart as possible (MaxSpread). Only CPUs in
/// our affinity mask are candidates: in a container limited to some CPUs of a large
/// host, pinning a shard elsewhere would fail.
fn placement(workers: usize) -> PoolPlacement {
    let allowed = allowed_cpus();
    let cpus = glommio::CpuSet::online()
        .map(|set| set.filter(|loc| allowed.as_ref().is_none_or(|a| a.contains(&loc.cpu))))
        .ok()
        .filter(|set| set.len() >= workers);
    match cpus {
        Some(set) => PoolPlacement::MaxSpread(workers, Some(set)),
        None => {
            tracing::warn!(
                workers,
                "more workers than usable CPUs: shards are not pinned"
            );
            PoolPlacement::Unbound(workers)
        }
    }
}

/// The CPUs this process may run on (sched_getaffinity), if the kernel says.
fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        Some(
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
                .collect(),
        )
    }
}

/// io_uring rings use locked memory. Raise the soft RLIMIT_MEMLOCK to the hard limit (and
/// the hard limit to unlimited where we may); failing that, glommio's own error says so.
fn raise_memlock_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) != 0 {
            return;
        }
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) == 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) != 0 {
                tracing::debug!("cannot raise RLIMIT_MEMLOCK");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_pins_only_within_our_cpus() {
        let allowed = allowed_cpus().expect("sched_getaffinity works on Linux");
        assert!(!allowed.is_empty());
        assert!(matches!(placement(1), PoolPlacement::MaxSpread(1, Some(_))));
        assert!(matches!(
            placement(allowed.len()),
            PoolPlacement::MaxSpread(n, Some(_)) if n == allowed.len()
        ));
        assert!(matches!(
            placement(allowed.len() + 1),
            PoolPlacement::Unbound(n) if n == allowed.len() + 1
        ));
    }
}
