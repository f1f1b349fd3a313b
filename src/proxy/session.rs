//! One proxied session: the client's handshake and authentication, the upstream
//! connection (started as soon as the user name is known, so that its key exchange
//! overlaps the client's authentication), then the relay.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;
use glommio::Task;
use sshr_protocol::auth::{self, Request};
use sshr_protocol::hostkey::PrivateKey;
use sshr_protocol::msg::{self};
use sshr_protocol::text::Untrusted;
use sshr_protocol::transport::{Config as TransportConfig, Event, Transport};
use tracing::{debug, info, warn, Instrument};

use crate::audit::{CloseReason, SessionAudit};
use crate::config::Config;
use crate::core::algorithms::{self, LegAlgorithms};
use crate::core::login::{offence, Action, AuthFailure, Login, LookedUp, Reply};
use crate::core::methods::Methods;
use crate::core::penalty::Offence;
use crate::core::refusal::Refusal;
use crate::core::values::{CipherPreference, LoginName, Side, TunnelPolicy};
use crate::hooks::{self, HookContext, Hooks, Lookup, Upstream};
use crate::io::leg::{Leg, LegError, Received, RxBuf};
use crate::proxy::admission::UserSession;
use crate::proxy::preauth::{Claim, PreauthSlot};
use crate::proxy::relay;
use crate::proxy::shard::ShardContext;
use crate::proxy::tunnel::SessionTunnels;
use crate::proxy::upstream::{self, Offered, UpstreamConn, UpstreamError, UpstreamReply};
use crate::rt::seed;

/// The client leg's transport settings, from the proxy's configuration.
pub fn transport_config(config: &Config) -> Arc<TransportConfig> {
    leg_config(config, &config.algorithms.client)
}

/// The upstream leg's transport settings.
pub fn upstream_transport_config(config: &Config) -> Arc<TransportConfig> {
    leg_config(config, &config.algorithms.upstream)
}

fn leg_config(config: &Config, algorithms: &LegAlgorithms) -> Arc<TransportConfig> {
    Arc::new(TransportConfig {
        kex: algorithms.kex.clone(),
        ciphers: algorithms.ciphers.clone(),
        macs: algorithms.macs.clone(),
        rekey_bytes: config.rekey.bytes,
        rekey_interval: config.rekey.interval,
        min_rsa_bits: config.required_rsa_size,
        ..TransportConfig::default()
    })
}

/// What a session takes from its shard at its start: a reload never changes it.
pub struct SessionEnv {
    pub shard: Rc<ShardContext>,
    pub config: Arc<Config>,
    pub hooks: Rc<dyn Hooks>,
    pub transport: Arc<TransportConfig>,
    /// The upstream leg's.
    pub upstream_transport: Arc<TransportConfig>,
    /// The session's audit records; its `close` record goes when the session ends.
    pub audit: SessionAudit,
}

/// Serve one accepted client connection to the end.
pub async fn serve(stream: TcpStream, peer: SocketAddr, shard: Rc<ShardContext>) {
    let id = shard.next_session_id();
    let config = shard.config();
    let ctx = SessionEnv {
        hooks: shard.hooks(),
        transport: transport_config(&config),
        upstream_transport: upstream_transport_config(&config),
        config,
        audit: SessionAudit::new(shard.audit.clone(), id, peer),
        shard,
    };
    let span = tracing::info_span!("session", id = format_args!("{id:x}"), %peer);
    async move {
        let mut unauthenticated = ctx.shard.admission.unauthenticated();
        let stop = ctx.shard.stop_signal();
        // (One statement: a local kept to the end of the block would take its room in
        // this future's state for the whole session.)
        let client = Rc::new(Leg::new(
            Side::Client,
            stream,
            Transport::server(
                ctx.transport.clone(),
                ctx.shard.host_keys(),
                seed(),
                Instant::now(),
            ),
        ));
        // Until the login, a started packet must complete in time, and what it makes
        // the buffer grow is charged to the shard's handshake budget.
        client.set_packet_timeout(Some(ctx.config.limits.packet_timeout));
        let mut rx = RxBuf::with_budget(ctx.shard.handshake_budget.clone());
        let started = Instant::now();
        let mut login = Login::new(ctx.config.limits.max_auth_tries, peer)
            .target_separator(ctx.config.target_separator)
            .required_rsa_size(ctx.config.required_rsa_size);
        // Set while the login waits on the proxy's side (hooks, an upstream slot or
        // connection): a timeout then is not the client's fault.
        let waiting = Cell::new(false);
        let auth_timeout = ctx.config.limits.auth_timeout;
        // Whichever comes first: the end of authentication, the auth timeout, or the end
        // of the shutdown grace period. (Awaited in place rather than through a timeout
        // helper, which would hold the authentication state twice.)
        let outcome = futures_lite::future::or(
            async {
                let login = &mut login;
                match authenticate(&ctx, &client, &mut rx, (peer, id), login, &waiting).await {
                    Ok(done) => AuthOutcome::Login(Box::new(done)),
                    Err(end) => AuthOutcome::Ended(end),
                }
            },
            futures_lite::future::or(
                async {
                    glommio::timer::sleep(auth_timeout).await;
                    AuthOutcome::TimedOut
                },
                async {
                    stop.stopped().await;
                    AuthOutcome::Stopped
                },
            ),
        )
        .await;
        note_version(&ctx, &client);
        let login = match outcome {
            AuthOutcome::Login(done) => *done,
            AuthOutcome::TimedOut => {
                ctx.audit
                    .ending(CloseReason::Timeout, Some(&"authentication timed out"));
                ctx.shard.metrics.auth_failure(AuthFailure::Timeout);
                info!(client = %peer, "authentication timed out");
                if !waiting.get() {
                    penalise(&ctx, peer, Offence::GraceExceeded);
                }
                client.refuse(Refusal::AuthTimedOut).await;
                return;
            }
            AuthOutcome::Ended(end) => {
                match &end {
                    AuthEnd::Leg(e) => {
                        let (reason, error) = relay::close_reason(e);
                        ctx.audit.ending(reason, error);
                    }
                    AuthEnd::Refuse(refusal, _) => ctx
                        .audit
                        .ending(CloseReason::AuthFailed, Some(&refusal.message())),
                }
                if let Some(offence) = offence(end.is_the_clients_doing(), login.failures()) {
                    penalise(&ctx, peer, offence);
                }
                end.finish(&ctx, &client).await;
                return;
            }
            AuthOutcome::Stopped => {
                ctx.audit.ending(CloseReason::Shutdown, None);
                client.refuse(Refusal::ShuttingDown).await;
                return;
            }
        };
        unauthenticated.authenticated();
        client.set_packet_timeout(None);
        let client_algs = client.transport.borrow().negotiated();
        let upstream_algs = login.conn.leg.transport.borrow().negotiated();
        info!(
            user = %Untrusted(&login.user),
            upstream = %login.upstream_addr,
            method = login.method,
            warm_upstream = login.warm,
            setup_ms = started.elapsed().as_millis() as u64,
            lookup_us = login.lookup_time.as_micros() as u64,
            kex = client_algs.map_or("", |n| n.kex.name()),
            cipher = client_algs.map_or("", |n| n.cipher_s2c.name()),
            upstream_kex = upstream_algs.map_or("", |n| n.kex.name()),
            upstream_cipher = upstream_algs.map_or("", |n| n.cipher_c2s.name()),
            "authenticated; relaying"
        );
        let host_key = login
            .conn
            .leg
            .transport
            .borrow()
            .host_key()
            .map(|k| k.fingerprint());
        ctx.audit.upstream(
            &login.upstream_addr,
            &login.upstream_user,
            host_key.as_deref(),
            login.warm,
            started.elapsed(),
        );
        let policy = login.tunnels.unwrap_or(ctx.config.tunnels.default);
        let tunnels = SessionTunnels::new(login.user, policy, &ctx.config.tunnels);
        relay::run(
            &ctx.shard,
            relay::watch_settings(&ctx.config.limits),
            client,
            rx,
            login.conn.leg,
            login.conn.rx,
            tunnels,
            &stop,
            &ctx.audit,
        )
        .await;
    }
    .instrument(span)
    .await
}

/// How the authentication phase ended.
enum AuthOutcome {
    /// Boxed: far larger than the other outcomes, and made once per session.
    Login(Box<Authenticated>),
    Ended(AuthEnd),
    TimedOut,
    /// The shutdown grace period ran out.
    Stopped,
}

/// Marks the login as waiting on the proxy's side while it lives.
struct Waiting<'a>(&'a Cell<bool>);

impl<'a> Waiting<'a> {
    fn on(flag: &'a Cell<bool>) -> Self {
        flag.set(true);
        Waiting(flag)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// A connection from `peer` ended without a login: count it against its source.
fn penalise(ctx: &SessionEnv, peer: SocketAddr, offence: Offence) {
    let refused_now = ctx
        .shard
        .admission
        .penalise(peer.ip(), offence, &ctx.config, Instant::now());
    if refused_now {
        warn!(
            source = %peer.ip(),
            "penalised: refusing connections from this address for a while ([penalties])"
        );
    }
}

/// A successful login: the upstream leg is authenticated too.
struct Authenticated {
    user: String,
    upstream_addr: String,
    upstream_user: String,
    method: &'static str,
    conn: UpstreamConn,
    /// The upstream connection was ready before the login (`src/proxy/warm.rs`).
    warm: bool,
    /// The hook's tunnel policy for this user (`None`: the configured default).
    tunnels: Option<TunnelPolicy>,
    /// How long the lookup of the user took.
    lookup_time: Duration,
    /// Counts the session against its account while the relay runs.
    _user_session: UserSession,
}

/// How authentication ended without a login.
enum AuthEnd {
    /// The client left or broke the protocol (already told, if it can be).
    Leg(LegError),
    /// Tell the client why and hang up; `AuthFailure` is what the metrics count.
    Refuse(Refusal, AuthFailure),
}

impl From<LegError> for AuthEnd {
    fn from(e: LegError) -> Self {
        AuthEnd::Leg(e)
    }
}

impl AuthEnd {
    /// Whether the client, rather than its server, a hook or the proxy's own limits,
    /// ended the login (only then does its source earn a penalty).
    fn is_the_clients_doing(&self) -> bool {
        match self {
            AuthEnd::Leg(e) => !matches!(e, LegError::Busy { .. }),
            AuthEnd::Refuse(_, failure) => failure.is_the_clients_doing(),
        }
    }

    async fn finish(self, ctx: &SessionEnv, client: &Leg) {
        match self {
            AuthEnd::Leg(e) => {
                ctx.shard.metrics.auth_failure(AuthFailure::Aborted);
                match &e {
                    LegError::Closed { .. } => debug!("client left during authentication"),
                    e => info!(error = %e, "session ended during authentication"),
                }
            }
            AuthEnd::Refuse(refusal, failure) => {
                ctx.shard.metrics.auth_failure(failure);
                client.refuse(refusal).await;
            }
        }
    }
}

/// Everything known about the login once the client named its user.
struct Pending {
    user: String,
    hook_ctx: HookContext,
    /// `None`: no such user (answered exactly like a wrong key), or no server chosen.
    upstream: Option<Upstream>,
    /// What the login core is told.
    answer: Option<LookedUp>,
    /// How long the lookup took (the directory's share of the set-up time).
    lookup_time: Duration,
    link: Link,
    /// The cipher the upstream connection asks for (the client leg's).
    prefer: CipherPreference,
    /// Taken once the client has proven who it is (`limits.max_sessions_per_user`).
    user_session: Option<UserSession>,
}

/// The upstream connection of a login in progress. Each one holds a slot of the
/// server's `limits.preauth_upstream_connections` (`src/proxy/preauth.rs`) until the login ends.
enum Link {
    /// Not opened (yet): no such user, or no slot was free before the client proved
    /// anything.
    None,
    Connecting {
        task: Task<Result<UpstreamConn, UpstreamError>>,
        /// `None` when the cap is off (`preauth_upstream_connections = 0`).
        _slot: Option<PreauthSlot>,
    },
    Ready {
        conn: UpstreamConn,
        _slot: Option<PreauthSlot>,
        /// It came from the warm pool (`src/proxy/warm.rs`).
        warm: bool,
    },
    /// It failed; what the client is told once it has proven who it is.
    Failed(Refusal),
}

impl Pending {
    async fn start(
        ctx: &SessionEnv,
        client: &Leg,
        name: LoginName,
        peer: SocketAddr,
        id: u64,
    ) -> Pending {
        let client_version = client
            .transport
            .borrow()
            .peer_version()
            .unwrap_or_default()
            .to_owned();
        let user = name.user.clone();
        let hook_ctx = HookContext::new(name.user, peer, id, client_version).target(name.target);
        let hook_timeout = ctx.config.limits.hook_timeout;
        // (The login core hands the hooks only plausible names.) One lookup per login:
        // its latency is the login's.
        let asked = Instant::now();
        let looked_up = hooks::with_timeout(hook_timeout, ctx.hooks.look_up(&hook_ctx)).await;
        let lookup_time = asked.elapsed();
        let (upstream, answer) = match looked_up {
            Ok(Lookup::Found {
                upstream,
                authorized_keys,
            }) => (
                Some(upstream),
                LookedUp::Known {
                    authorized: authorized_keys,
                },
            ),
            Ok(Lookup::Choose {
                targets,
                authorized_keys,
            }) => (
                None,
                LookedUp::Choose {
                    targets,
                    authorized: authorized_keys,
                },
            ),
            Ok(Lookup::Unknown) => (None, LookedUp::Unknown),
            Err(e) => {
                warn!(user = %Untrusted(&user), target = ?hook_ctx.target.as_deref().map(Untrusted), error = %e, "user lookup failed: refusing the login as \"account service unavailable\"");
                (None, LookedUp::Unavailable)
            }
        };
        // Take a warm upstream connection, or start one now if the server has a slot
        // free: its TCP and key exchange overlap the client's authentication. Otherwise
        // it is opened when the login needs it (`Pending::connection`).
        let prefer = upstream_cipher(ctx, client);
        let link = match &upstream {
            Some(u) => try_open(ctx, u, prefer),
            None => Link::None,
        };
        if upstream.is_some() && matches!(link, Link::None) {
            debug!(
                user = %Untrusted(&user),
                "no upstream slot free: connecting when the login needs it"
            );
        }
        Pending {
            user,
            hook_ctx,
            upstream,
            answer: Some(answer),
            lookup_time,
            link,
            prefer,
            user_session: None,
        }
    }

    /// Counts the session against its account (`limits.max_sessions_per_user`, whole
    /// proxy), once the client has proven who it is: refused when the account has as
    /// many as it may.
    fn claim_user_session(&mut self, ctx: &SessionEnv) -> Result<(), (Refusal, AuthFailure)> {
        if self.user_session.is_some() {
            return Ok(());
        }
        let cap = ctx.config.limits.max_sessions_per_user;
        match ctx.shard.admission.user_session(&self.user, cap) {
            Some(s) => {
                self.user_session = Some(s);
                Ok(())
            }
            None => {
                info!(
                    user = %Untrusted(&self.user),
                    "login refused: the account has max_sessions_per_user sessions"
                );
                Err((Refusal::TooManyUserSessions, AuthFailure::SessionsPerUser))
            }
        }
    }

    /// The upstream connection, if it is set up.
    fn ready(&mut self) -> Option<&mut UpstreamConn> {
        match &mut self.link {
            Link::Ready { conn, .. } => Some(conn),
            _ => None,
        }
    }

    /// The upstream connection failed during a password or keyboard-interactive
    /// exchange: log it, and refuse (or decoy) every later attempt like
    /// [`Self::connection`] does after a failed connect. Its slot is freed.
    fn lose_upstream(&mut self, ctx: &SessionEnv, error: UpstreamError) {
        ctx.shard.metrics.upstream_failure(error.failure());
        let addr = self
            .upstream
            .as_ref()
            .map(|u| u.addr.as_str())
            .unwrap_or_default();
        warn!(user = %Untrusted(&self.user), upstream = addr, error = %error, "upstream failed during authentication");
        self.link = Link::Failed(error.refusal());
    }

    /// Which methods the user's server offers the account ([`Action::AskMethods`]):
    /// asked on its connection if one is open or being opened (never waiting for a
    /// slot: a login without one is answered like a name without a server). `None`
    /// when it cannot be asked.
    async fn ask_methods(&mut self, ctx: &SessionEnv, waiting: &Cell<bool>) -> Option<Methods> {
        let user = self.upstream.as_ref()?.user.clone();
        if matches!(self.link, Link::None | Link::Failed(_)) {
            return None;
        }
        let _waiting = Waiting::on(waiting);
        let conn = self.connection(ctx, Claim::Unproven).await.ok()?;
        match conn.ask_methods(&user).await {
            Ok(Offered::Methods(list)) => {
                debug!(user = %Untrusted(&self.user), offers = %Untrusted(&list), "the upstream's methods");
                Some(Methods::from_upstream(list.split(',')))
            }
            // The server let the account in without a credential: whatever the client
            // gives next succeeds there, as it would have directly.
            Ok(Offered::LoggedIn) => Some(Methods::ALL),
            Err(e) => {
                self.lose_upstream(ctx, e);
                None
            }
        }
    }

    /// The upstream connection: opened now if it was not (waiting for a slot as
    /// `claim`, up to the caller's deadline), awaited if it is being set up. Once it has
    /// failed, every later call gives the same refusal.
    async fn connection(
        &mut self,
        ctx: &SessionEnv,
        claim: Claim,
    ) -> Result<&mut UpstreamConn, Refusal> {
        let Some(u) = self.upstream.clone() else {
            return Err(Refusal::Unreachable);
        };
        if matches!(self.link, Link::None) {
            self.link = open(ctx, &u, self.prefer, claim).await;
        }
        if matches!(self.link, Link::Connecting { .. }) {
            let Link::Connecting { task, _slot: slot } =
                std::mem::replace(&mut self.link, Link::None)
            else {
                unreachable!("matched above");
            };
            self.link = match task.await {
                Ok(conn) => Link::Ready {
                    conn,
                    _slot: slot,
                    warm: false,
                },
                Err(e) => {
                    ctx.shard.metrics.upstream_failure(e.failure());
                    log_connect_failure(&self.user, &u.addr, &e);
                    Link::Failed(e.refusal())
                }
            };
        }
        match &mut self.link {
            Link::Ready { conn, .. } => Ok(conn),
            Link::Failed(refusal) => Err(*refusal),
            Link::None | Link::Connecting { .. } => Err(Refusal::Unreachable),
        }
    }
}

/// Logs why the upstream connection of `user` failed: a key exchange with nothing in
/// common names the list and both sides' algorithms.
fn log_connect_failure(user: &str, addr: &str, e: &UpstreamError) {
    match e.no_common_algorithm() {
        Some((what, ours, theirs)) => warn!(
            user = %Untrusted(user),
            upstream = addr,
            list = what,
            proxy_offers = %ours,
            upstream_offers = %theirs,
            "upstream key exchange failed: no {what} algorithm in common"
        ),
        None => {
            warn!(user = %Untrusted(user), upstream = addr, error = %e, "upstream connection failed")
        }
    }
}

/// A warm connection to `u`, or one being made now if the server has an unproven slot
/// free; else nothing yet.
fn try_open(ctx: &SessionEnv, u: &Upstream, prefer: CipherPreference) -> Link {
    if let Some(link) = take_warm(ctx, u, prefer) {
        return link;
    }
    let limit = ctx.config.limits.preauth_upstream_connections;
    // A cap of 0 turns the cap off, and with it the early connection: logins connect
    // when they need the server.
    match ctx
        .shard
        .admission
        .slots
        .try_take(&u.addr, Claim::Unproven, limit)
    {
        Some(slot) => connect(ctx, u, prefer, Some(slot)),
        None => Link::None,
    }
}

/// A warm connection to `u`, or one made once a slot is free for `claim` (waiting in
/// turn).
async fn open(ctx: &SessionEnv, u: &Upstream, prefer: CipherPreference, claim: Claim) -> Link {
    if let Some(link) = take_warm(ctx, u, prefer) {
        return link;
    }
    let limit = ctx.config.limits.preauth_upstream_connections;
    let slot = match limit {
        0 => None,
        _ => Some(ctx.shard.admission.slots.take(&u.addr, claim, limit).await),
    };
    connect(ctx, u, prefer, slot)
}

fn take_warm(ctx: &SessionEnv, u: &Upstream, prefer: CipherPreference) -> Option<Link> {
    if ctx.config.warm_upstreams.per_upstream == 0 {
        return None;
    }
    let taken = ctx.shard.warm.take(u, prefer)?;
    Some(Link::Ready {
        conn: taken.conn,
        _slot: taken.slot,
        warm: true,
    })
}

fn connect(
    ctx: &SessionEnv,
    u: &Upstream,
    prefer: CipherPreference,
    slot: Option<PreauthSlot>,
) -> Link {
    let u = u.clone();
    let config = ctx.upstream_transport.clone();
    let timeout = ctx.config.limits.connect_timeout;
    let task = glommio::spawn_local(
        async move { upstream::connect(&u, config, prefer, seed(), timeout).await }
            .in_current_span(),
    );
    Link::Connecting { task, _slot: slot }
}

/// The cipher and MAC to ask the upstream for (`core::algorithms`).
fn upstream_cipher(ctx: &SessionEnv, client: &Leg) -> CipherPreference {
    algorithms::upstream_preference(
        ctx.config.algorithms.upstream_cipher,
        client.transport.borrow().negotiated().as_ref(),
        ctx.shard.cpu,
        &ctx.config.algorithms.upstream,
    )
}

/// Performs the login's actions (`core::login`) until it succeeds or ends.
async fn authenticate(
    ctx: &SessionEnv,
    client: &Rc<Leg>,
    rx: &mut RxBuf,
    (peer, id): (SocketAddr, u64),
    login: &mut Login,
    waiting: &Cell<bool>,
) -> Result<Authenticated, AuthEnd> {
    let timings = &*ctx.shard.admission;
    let session_id = |client: &Leg| {
        client
            .transport
            .borrow()
            .session_id()
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    };
    let mut pending: Option<Pending> = None;
    loop {
        for attempt in login.take_attempts() {
            ctx.audit.auth(&attempt);
        }
        let Some(action) = login.poll() else {
            return Err(AuthEnd::Refuse(Refusal::Internal, AuthFailure::Aborted));
        };
        match action {
            Action::ReadClient => {
                let payload = next_message(client, rx).await;
                note_version(ctx, client);
                let payload = payload?;
                login.client_message(&payload, &session_id(client), Instant::now(), timings);
            }
            Action::SendClient(p) => client.send(&p).await?,
            Action::LookUp(name) => {
                let mut p = {
                    let _waiting = Waiting::on(waiting);
                    Pending::start(ctx, client, name, peer, id).await
                };
                let answer = p.answer.take().unwrap_or(LookedUp::Unavailable);
                pending = Some(p);
                let now = Instant::now();
                login.looked_up(answer, &session_id(client), now, timings);
            }
            Action::LoginWithKey => {
                let Some(p) = pending.as_mut() else {
                    return Err(AuthEnd::Refuse(Refusal::Internal, AuthFailure::Aborted));
                };
                let result = login_with_key(ctx, client, p, waiting).await?;
                login.key_login(result);
            }
            Action::PassThrough(request) => {
                let reply = match pending.as_mut() {
                    Some(p) => pass_through(ctx, p, &request, waiting).await,
                    None => Reply::Unavailable,
                };
                login.upstream(reply, &session_id(client), Instant::now(), timings);
            }
            Action::AskMethods => {
                let offered = match pending.as_mut() {
                    Some(p) => p.ask_methods(ctx, waiting).await,
                    None => None,
                };
                login.methods(offered, &session_id(client), Instant::now(), timings);
            }
            Action::ReadUpstream => {
                let reply = match pending.as_mut() {
                    Some(p) => read_upstream(ctx, p).await,
                    None => Reply::Failed,
                };
                login.upstream(reply, &session_id(client), Instant::now(), timings);
            }
            Action::SendUpstream(answer) => {
                let Some(p) = pending.as_mut() else {
                    return Err(AuthEnd::Refuse(Refusal::Internal, AuthFailure::Aborted));
                };
                let sent = match p.ready() {
                    Some(conn) => conn.leg.send(&answer).await.map_err(UpstreamError::from),
                    None => Err(UpstreamError::Unexpected(msg::USERAUTH_INFO_RESPONSE)),
                };
                if let Err(e) = sent {
                    p.lose_upstream(ctx, e);
                    let now = Instant::now();
                    login.upstream(Reply::Failed, &session_id(client), now, timings);
                }
            }
            Action::WaitUntil(at) => {
                glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await;
                login.timer(&session_id(client), Instant::now(), timings);
            }
            Action::Count(failure) => ctx.shard.metrics.auth_failure(failure),
            Action::Succeed { method } => return finish(ctx, client, pending, method).await,
            Action::Refuse(refusal, failure) => return Err(AuthEnd::Refuse(refusal, failure)),
        }
    }
}

/// The audit log's `connect` record, once the client's version line is in.
fn note_version(ctx: &SessionEnv, client: &Leg) {
    if !ctx.audit.is_connected() {
        if let Some(version) = client.transport.borrow().peer_version() {
            ctx.audit.connect(version);
        }
    }
}

/// The client's next message (transport events, such as the end of the first key
/// exchange, are only logged).
async fn next_message(client: &Leg, rx: &mut RxBuf) -> Result<Vec<u8>, LegError> {
    loop {
        match client.recv(rx).await? {
            Received::Event(Event::KexDone {
                first: true,
                algorithms,
            }) => debug!(?algorithms, "client key exchange done"),
            Received::Event(_) => {}
            Received::Packet(p) => return Ok(p),
        }
    }
}

/// The proxy logs in upstream with its own key for a client that proved its key:
/// `Ok(Err(..))` with what the client is told and counted when that fails.
async fn login_with_key(
    ctx: &SessionEnv,
    client: &Leg,
    p: &mut Pending,
    waiting: &Cell<bool>,
) -> Result<Result<(), (Refusal, AuthFailure)>, LegError> {
    let Some(upstream) = p.upstream.clone() else {
        return Ok(Err((Refusal::Internal, AuthFailure::Aborted)));
    };
    // Proven: refused now if the account is at its cap, before the upstream login.
    if let Err(refused) = p.claim_user_session(ctx) {
        return Ok(Err(refused));
    }
    let key = match hooks::with_timeout(
        ctx.config.limits.hook_timeout,
        ctx.hooks.fetch_private_key(&p.hook_ctx, &upstream),
    )
    .await
    {
        Ok(k) => k,
        Err(error) => {
            warn!(user = %Untrusted(&p.user), error = %error, "fetch_private_key hook failed");
            return Ok(Err((Refusal::LoginRefused, AuthFailure::HookError)));
        }
    };
    // Proven: this login gets a slot before any unproven one.
    let connection = {
        let _waiting = Waiting::on(waiting);
        p.connection(ctx, Claim::Proven).await
    };
    let conn = match connection {
        Ok(conn) => conn,
        Err(refusal) => return Ok(Err((refusal, AuthFailure::UpstreamRejected))),
    };
    let keys = keys_to_offer(&key, &ctx.shard.upstream_keys);
    let mut banners = Vec::new();
    let r = conn
        .login_with_keys(&upstream.user, &keys, |b| banners.push(b))
        .await;
    for b in banners {
        client.send(&b).await?;
    }
    if let Err(e) = r {
        ctx.shard.metrics.upstream_failure(e.failure());
        warn!(user = %Untrusted(&p.user), upstream = %upstream.addr, error = %e, "upstream login failed");
        return Ok(Err((e.refusal(), AuthFailure::UpstreamRejected)));
    }
    Ok(Ok(()))
}

/// The keys the proxy offers upstream, in order: the one the hook gave, then those of
/// `upstream_key`, each key once.
fn keys_to_offer<'k>(
    hook_key: &'k PrivateKey,
    configured: &'k [PrivateKey],
) -> Vec<&'k PrivateKey> {
    let mut keys = vec![hook_key];
    for k in configured {
        if !keys.iter().any(|o| o.public() == k.public()) {
            keys.push(k);
        }
    }
    keys
}

/// Passes a password or keyboard-interactive request to the user's server (waiting for
/// a slot while it has as many unproven connections as allowed; the auth timeout ends
/// the wait), and reads its first reply.
async fn pass_through(
    ctx: &SessionEnv,
    p: &mut Pending,
    request: &[u8],
    waiting: &Cell<bool>,
) -> Reply {
    let Some(upstream_user) = p.upstream.as_ref().map(|u| u.user.clone()) else {
        return Reply::Unavailable;
    };
    let connection = {
        let _waiting = Waiting::on(waiting);
        p.connection(ctx, Claim::Unproven).await
    };
    // Its server is down (logged).
    let Ok(conn) = connection else {
        return Reply::Unavailable;
    };
    let Ok(req) = Request::parse(request) else {
        return Reply::Unavailable;
    };
    if let Err(e) = conn.pass_through(&upstream_user, req.method).await {
        p.lose_upstream(ctx, e);
        return Reply::Failed;
    }
    read_upstream(ctx, p).await
}

/// The upstream's next reply to a passed-through request.
async fn read_upstream(ctx: &SessionEnv, p: &mut Pending) -> Reply {
    let Some(conn) = p.ready() else {
        return Reply::Failed;
    };
    match conn.auth_reply().await {
        Ok(UpstreamReply::Success) => Reply::Success,
        Ok(UpstreamReply::Failure {
            partial_success,
            methods,
        }) => Reply::Failure {
            partial: partial_success,
            methods: Methods::from_upstream(methods.split(',')),
        },
        Ok(UpstreamReply::ForClient(m)) => Reply::ForClient(m),
        Err(e) => {
            p.lose_upstream(ctx, e);
            Reply::Failed
        }
    }
}

async fn finish(
    ctx: &SessionEnv,
    client: &Leg,
    pending: Option<Pending>,
    method: &'static str,
) -> Result<Authenticated, AuthEnd> {
    let internal = || AuthEnd::Refuse(Refusal::Internal, AuthFailure::Aborted);
    let Some(mut p) = pending else {
        return Err(internal());
    };
    // (A password or keyboard-interactive login is proven only now.)
    if let Err((refusal, failure)) = p.claim_user_session(ctx) {
        return Err(AuthEnd::Refuse(refusal, failure));
    }
    let Some(user_session) = p.user_session.take() else {
        return Err(internal());
    };
    // The upstream login is done: the connection is no longer an unauthenticated one,
    // and its slot is freed here.
    let (conn, warm) = match std::mem::replace(&mut p.link, Link::None) {
        Link::Ready { conn, warm, .. } => (conn, warm),
        _ => return Err(internal()),
    };
    client.send(&auth::encode_success()).await?;
    // Make a connection ready for the next login to this server (`src/proxy/warm.rs`).
    if let Some(u) = &p.upstream {
        ctx.shard.warm.refill(
            &ctx.config.warm_upstreams,
            u,
            ctx.upstream_transport.clone(),
            upstream_cipher(ctx, client),
            ctx.config.limits.connect_timeout,
            &ctx.shard.admission.slots,
            ctx.config.limits.preauth_upstream_connections,
        );
    }
    Ok(Authenticated {
        user: p.user,
        tunnels: p.upstream.as_ref().and_then(|u| u.tunnels),
        upstream_user: p
            .upstream
            .as_ref()
            .map(|u| u.user.clone())
            .unwrap_or_default(),
        upstream_addr: p.upstream.map(|u| u.addr).unwrap_or_default(),
        lookup_time: p.lookup_time,
        method,
        conn,
        warm,
        _user_session: user_session,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_endings_the_client_caused_earn_a_penalty() {
        let refused = |failure| AuthEnd::Refuse(Refusal::Unreachable, failure);
        assert!(refused(AuthFailure::Aborted).is_the_clients_doing());
        assert!(refused(AuthFailure::WrongKey).is_the_clients_doing());
        assert!(!refused(AuthFailure::UpstreamRejected).is_the_clients_doing());
        assert!(!refused(AuthFailure::HookError).is_the_clients_doing());
        assert!(AuthEnd::Leg(LegError::Stalled { side: Side::Client }).is_the_clients_doing());
        assert!(!AuthEnd::Leg(LegError::Busy {
            side: Side::Client,
            source: crate::io::leg::BudgetExhausted,
        })
        .is_the_clients_doing());
    }

    #[test]
    fn the_hooks_key_goes_first_then_each_configured_key_once() {
        let key = || PrivateKey::generate_ed25519(&mut rand_core::OsRng);
        let (ed, rsa, own) = (key(), key(), key());
        let configured = [ed.clone(), rsa.clone()];
        let fingerprints = |keys: Vec<&PrivateKey>| -> Vec<String> {
            keys.iter().map(|k| k.public().fingerprint()).collect()
        };
        // The default hooks give the first configured key.
        assert_eq!(
            fingerprints(keys_to_offer(&ed, &configured)),
            fingerprints(vec![&ed, &rsa])
        );
        // A hook with a key of the user's own: that one first.
        assert_eq!(
            fingerprints(keys_to_offer(&own, &configured)),
            fingerprints(vec![&own, &ed, &rsa])
        );
        assert_eq!(
            fingerprints(keys_to_offer(&rsa, &configured)),
            fingerprints(vec![&rsa, &ed])
        );
        assert_eq!(keys_to_offer(&own, &[]).len(), 1);
    }

    #[test]
    fn waiting_marks_only_while_it_lives() {
        let flag = Cell::new(false);
        {
            let _w = Waiting::on(&flag);
            assert!(flag.get());
        }
        assert!(!flag.get());
    }
}
