//! One proxied session: the client's handshake and authentication, the upstream
//! connection (started as soon as the user name is known, so that its key exchange
//! overlaps the client's authentication), then the relay.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use glommio::net::TcpStream;
use glommio::Task;
use rand_core::RngCore;
use sshr_protocol::auth::{self, InfoResponse, Method, Request};
use sshr_protocol::hostkey::PublicKey;
use sshr_protocol::msg::{self};
use sshr_protocol::text::Untrusted;
use sshr_protocol::transport::{Config as TransportConfig, Event, Transport};
use tracing::{debug, info, warn, Instrument};

use crate::config::Config;
use crate::core::attempts::{AuthAttempts, FailedBecause, Next};
use crate::core::failure_times::{Answer, MIN_FAILURE_TIME};
use crate::core::penalty::Offence;
use crate::core::refusal::Refusal;
use crate::core::values::{CipherPreference, Side, TunnelPolicy};
use crate::hooks::{HookContext, HookError, Hooks, Upstream};
use crate::io::leg::{Leg, LegError, Received, RxBuf};
use crate::metrics::AuthFailure;
use crate::proxy::preauth::{Claim, PreauthSlot};
use crate::proxy::relay;
use crate::proxy::shard::ShardContext;
use crate::proxy::tunnel::SessionTunnels;
use crate::proxy::upstream::{self, UpstreamConn, UpstreamError, UpstreamReply};
use crate::rt::seed;

/// Methods we offer, the same for every user name so that none can be enumerated.
const METHODS: [&str; 3] = ["publickey", "password", "keyboard-interactive"];
/// Upstream banners kept for a passed-through login until it succeeds.
const MAX_HELD_BANNERS: usize = 8;
/// Longest user name passed to the hooks (Linux allows 32; LDAP-style names a bit more).
const MAX_USER_NAME: usize = 256;

/// The transport settings of both legs, from the proxy's configuration.
pub fn transport_config(config: &Config) -> Arc<TransportConfig> {
    Arc::new(TransportConfig {
        rekey_bytes: config.rekey.bytes,
        rekey_interval: config.rekey.interval,
        ..TransportConfig::default()
    })
}

/// What a session takes from its shard at its start: a reload never changes it.
pub struct SessionEnv {
    pub shard: Rc<ShardContext>,
    pub config: Arc<Config>,
    pub hooks: Rc<dyn Hooks>,
    pub transport: Arc<TransportConfig>,
}

/// Serve one accepted client connection to the end.
pub async fn serve(stream: TcpStream, peer: SocketAddr, shard: Rc<ShardContext>) {
    let id = shard.next_session_id();
    let config = shard.config();
    let ctx = SessionEnv {
        hooks: shard.hooks(),
        transport: transport_config(&config),
        config,
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
                ctx.shard.host_keys.clone(),
                seed(),
                Instant::now(),
            ),
        ));
        // Until the login, a started packet must complete in time, and what it makes
        // the buffer grow is charged to the shard's handshake budget.
        client.set_packet_timeout(Some(ctx.config.limits.packet_timeout));
        let mut rx = RxBuf::with_budget(ctx.shard.handshake_budget.clone());
        let started = Instant::now();
        let mut attempts = AuthAttempts::new(ctx.config.limits.max_auth_tries);
        // Set while the login waits on the proxy's side (hooks, an upstream slot or
        // connection): a timeout then is not the client's fault.
        let waiting = Cell::new(false);
        let auth_timeout = ctx.config.limits.auth_timeout;
        // Whichever comes first: the end of authentication, the auth timeout, or the end
        // of the shutdown grace period. (Awaited in place rather than through a timeout
        // helper, which would hold the authentication state twice.)
        let outcome = futures_lite::future::or(
            async {
                match authenticate(&ctx, &client, &mut rx, peer, id, &mut attempts, &waiting).await
                {
                    Ok(login) => AuthOutcome::Login(login),
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
        let login = match outcome {
            AuthOutcome::Login(login) => login,
            AuthOutcome::TimedOut => {
                ctx.shard.metrics.auth_failure(AuthFailure::Timeout);
                info!(client = %peer, "authentication timed out");
                if !waiting.get() {
                    penalise(&ctx, peer, Offence::GraceExceeded);
                }
                client.refuse(Refusal::AuthTimedOut).await;
                return;
            }
            AuthOutcome::Ended(end) => {
                if end.is_the_clients_doing() {
                    let offence = if attempts.failures() > 0 {
                        Offence::AuthFail
                    } else {
                        Offence::NoAuth
                    };
                    penalise(&ctx, peer, offence);
                }
                end.finish(&ctx, &client).await;
                return;
            }
            AuthOutcome::Stopped => {
                client.refuse(Refusal::ShuttingDown).await;
                return;
            }
        };
        unauthenticated.authenticated();
        client.set_packet_timeout(None);
        info!(
            user = %Untrusted(&login.user),
            upstream = %login.upstream_addr,
            method = login.method,
            warm_upstream = login.warm,
            setup_ms = started.elapsed().as_millis() as u64,
            "authenticated; relaying"
        );
        let policy = login.tunnels.unwrap_or(ctx.config.tunnels.default);
        let tunnels = SessionTunnels::new(login.user, policy, &ctx.config.tunnels);
        relay::run(
            &ctx.shard,
            client,
            rx,
            login.conn.leg,
            login.conn.rx,
            tunnels,
            &stop,
        )
        .await;
    }
    .instrument(span)
    .await
}

/// How the authentication phase ended.
enum AuthOutcome {
    Login(Login),
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
struct Login {
    user: String,
    upstream_addr: String,
    method: &'static str,
    conn: UpstreamConn,
    /// The upstream connection was ready before the login (`src/warm.rs`).
    warm: bool,
    /// The hook's tunnel policy for this user (`None`: the configured default).
    tunnels: Option<TunnelPolicy>,
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
        !matches!(
            self,
            AuthEnd::Leg(LegError::Busy { .. })
                | AuthEnd::Refuse(_, AuthFailure::UpstreamRejected | AuthFailure::HookError)
        )
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
    /// `None`: no such user (answered exactly like a wrong key).
    upstream: Option<Upstream>,
    authorized: Vec<PublicKey>,
    link: Link,
    /// The cipher the upstream connection asks for (the client leg's).
    prefer: CipherPreference,
}

/// The upstream connection of a login in progress. Each one holds a slot of the
/// server's `limits.preauth_upstream_connections` (`src/preauth.rs`) until the login ends.
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
        /// It came from the warm pool (`src/warm.rs`).
        warm: bool,
    },
    /// It failed; what the client is told once it has proven who it is.
    Failed(Refusal),
}

impl Pending {
    async fn start(
        ctx: &SessionEnv,
        client: &Leg,
        user: &str,
        peer: SocketAddr,
        id: u64,
    ) -> Pending {
        let client_version = client
            .transport
            .borrow()
            .peer_version()
            .unwrap_or_default()
            .to_owned();
        let hook_ctx = HookContext::new(user, peer, id, client_version);
        let hook_timeout = ctx.config.limits.hook_timeout;
        // No real account has a name this long; don't hand it to the hooks (it is
        // answered like any unknown user).
        let plausible =
            !user.is_empty() && user.len() <= MAX_USER_NAME && !user.chars().any(char::is_control);
        let upstream = if !plausible {
            None
        } else {
            match glommio::timer::timeout(hook_timeout, async {
                Ok(ctx.hooks.find_upstream(&hook_ctx).await)
            })
            .await
            {
                Ok(Ok(u)) => u,
                Ok(Err(e)) => {
                    warn!(user = %Untrusted(user), error = %e, "find_upstream hook failed");
                    ctx.shard.metrics.auth_failure(AuthFailure::HookError);
                    None
                }
                Err(_) => {
                    warn!(user = %Untrusted(user), error = %HookError::Timeout, "find_upstream hook failed");
                    None
                }
            }
        };
        // Take a warm upstream connection, or start one now if the server has a slot
        // free: its TCP and key exchange overlap the client's authentication. Otherwise
        // it is opened when the login needs it (`Pending::connection`).
        let prefer = client_cipher(client);
        let link = match &upstream {
            Some(u) => try_open(ctx, u, prefer),
            None => Link::None,
        };
        if upstream.is_some() && matches!(link, Link::None) {
            debug!(
                user = %Untrusted(user),
                "no upstream slot free: connecting when the login needs it"
            );
        }
        let authorized = match &upstream {
            Some(_) => match glommio::timer::timeout(hook_timeout, async {
                Ok(ctx.hooks.fetch_authorized_keys(&hook_ctx).await)
            })
            .await
            {
                Ok(Ok(keys)) => keys,
                Ok(Err(e)) => {
                    warn!(user = %Untrusted(user), error = %e, "fetch_authorized_keys hook failed");
                    Vec::new()
                }
                Err(_) => {
                    warn!(user = %Untrusted(user), "fetch_authorized_keys hook timed out");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        Pending {
            user: user.to_owned(),
            hook_ctx,
            upstream,
            authorized,
            link,
            prefer,
        }
    }

    /// The upstream connection failed during a password or keyboard-interactive
    /// exchange: log it, and refuse (or decoy) every later attempt like
    /// [`Self::connection`] does after a failed connect. Its slot is freed.
    fn lose_upstream(&mut self, error: UpstreamError) {
        let addr = self
            .upstream
            .as_ref()
            .map(|u| u.addr.as_str())
            .unwrap_or_default();
        warn!(user = %Untrusted(&self.user), upstream = addr, error = %error, "upstream failed during authentication");
        self.link = Link::Failed(error.refusal());
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
                    warn!(user = %Untrusted(&self.user), upstream = %u.addr, error = %e, "upstream connection failed");
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
    let config = ctx.transport.clone();
    let timeout = ctx.config.limits.connect_timeout;
    let task = glommio::spawn_local(
        async move { upstream::connect(&u, config, prefer, seed(), timeout).await }
            .in_current_span(),
    );
    Link::Connecting { task, _slot: slot }
}

/// The cipher and MAC the client leg negotiated, to ask the upstream for the same: then
/// relayed packets keep their size and are re-sealed where they lie.
fn client_cipher(client: &Leg) -> CipherPreference {
    match client.transport.borrow().negotiated() {
        Some(n) => (Some(n.cipher_c2s), n.mac_c2s),
        None => (None, None),
    }
}

fn refuse(refusal: Refusal, failure: AuthFailure) -> AuthEnd {
    AuthEnd::Refuse(refusal, failure)
}

/// What a failed attempt was, for [`failed_attempt`].
struct Failure<'a> {
    method: &'a str,
    because: FailedBecause,
    /// The fingerprint of a public key, when there is one.
    key: Option<String>,
    partial: bool,
}

impl<'a> Failure<'a> {
    fn new(method: &'a str, because: FailedBecause) -> Self {
        Failure {
            method,
            because,
            key: None,
            partial: false,
        }
    }

    /// A refused public-key request (a query, or `signed`), for a `known` user or not.
    fn publickey(known: bool, signed: bool, algorithm: &str, key_blob: &[u8]) -> Self {
        let because = match (known, signed) {
            (false, _) => FailedBecause::UnknownUser,
            (true, false) => FailedBecause::KeyNotAuthorized,
            (true, true) => FailedBecause::KeyRefused,
        };
        Failure {
            key: auth::check_publickey(algorithm, key_blob)
                .ok()
                .map(|(k, _)| k.fingerprint().to_string()),
            ..Failure::new("publickey", because)
        }
    }
}

/// One failed attempt: log it (the client sees only USERAUTH_FAILURE), count it the
/// way sshd does, and answer, or hang up at `limits.max_auth_tries`.
async fn failed_attempt(
    ctx: &SessionEnv,
    client: &Leg,
    attempts: &mut AuthAttempts,
    (user, peer): (&str, SocketAddr),
    failure: Failure<'_>,
) -> Result<(), AuthEnd> {
    let Failure {
        method,
        because,
        key,
        partial,
    } = failure;
    let none = method == "none";
    if none {
        debug!(user = %Untrusted(user), "method none: telling the client the methods");
    } else {
        info!(
            user = %Untrusted(user),
            client = %peer,
            method = %Untrusted(method),
            key = key.as_deref().unwrap_or("-"),
            reason = because.label(),
            "login attempt failed"
        );
    }
    let metric = match because {
        FailedBecause::UnknownUser => Some(AuthFailure::UnknownUser),
        FailedBecause::KeyRefused => Some(AuthFailure::WrongKey),
        FailedBecause::UpstreamRefused | FailedBecause::UpstreamUnavailable => {
            Some(AuthFailure::UpstreamRejected)
        }
        FailedBecause::KeyNotAuthorized | FailedBecause::MethodNotOffered => None,
    };
    if let Some(m) = metric {
        ctx.shard.metrics.auth_failure(m);
    }
    if attempts.failed(none, partial) == Next::HangUp {
        info!(user = %Untrusted(user), client = %peer, tries = attempts.failures(), "too many authentication failures: hanging up");
        return Err(refuse(Refusal::TooManyFailures, AuthFailure::Aborted));
    }
    client.send(&auth::encode_failure(METHODS, partial)).await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn authenticate(
    ctx: &SessionEnv,
    client: &Rc<Leg>,
    rx: &mut RxBuf,
    peer: SocketAddr,
    id: u64,
    attempts: &mut AuthAttempts,
    waiting: &Cell<bool>,
) -> Result<Login, AuthEnd> {
    let mut pending: Option<Pending> = None;
    // A message read while passing keyboard-interactive through that must be handled
    // as a new request.
    let mut carried: Option<Vec<u8>> = None;
    // The upstream's banners during password or keyboard-interactive pass-through,
    // shown when the login succeeds (see `pass_replies`).
    let mut banners: Vec<Vec<u8>> = Vec::new();
    loop {
        let payload = match carried.take() {
            Some(p) => p,
            None => match client.recv(rx).await? {
                Received::Event(Event::KexDone {
                    first: true,
                    algorithms,
                }) => {
                    debug!(?algorithms, "client key exchange done");
                    continue;
                }
                Received::Event(_) => continue,
                Received::Packet(p) => p,
            },
        };
        if payload[0] != msg::USERAUTH_REQUEST {
            return Err(refuse(Refusal::ExpectedUserauth, AuthFailure::Aborted));
        }
        if attempts.request() == Next::HangUp {
            return Err(refuse(Refusal::TooManyRequests, AuthFailure::Aborted));
        }
        let req = match Request::parse(&payload) {
            Ok(r) => r,
            Err(e) => {
                info!(error = %e, "malformed authentication request");
                return Err(refuse(Refusal::MalformedRequest, AuthFailure::Aborted));
            }
        };
        if req.service != auth::CONNECTION_SERVICE {
            return Err(refuse(Refusal::WrongService, AuthFailure::Aborted));
        }
        match &pending {
            None => {
                let _waiting = Waiting::on(waiting);
                pending = Some(Pending::start(ctx, client, req.user, peer, id).await);
            }
            // As OpenSSH: the user name may not change between attempts.
            Some(p) if p.user != req.user => {
                return Err(refuse(Refusal::UserChanged, AuthFailure::Aborted));
            }
            Some(_) => {}
        }
        let Some(p) = pending.as_mut() else { continue };
        let known = p.upstream.is_some();
        match req.method {
            Method::None => {
                let failure = Failure::new("none", FailedBecause::MethodNotOffered);
                failed_attempt(ctx, client, attempts, (&p.user, peer), failure).await?
            }
            Method::Other(name) => {
                let failure = Failure::new(name, FailedBecause::MethodNotOffered);
                failed_attempt(ctx, client, attempts, (&p.user, peer), failure).await?
            }
            Method::PublicKey {
                algorithm,
                key_blob,
                signature: None,
            } => {
                let ok = auth::check_publickey(algorithm, key_blob)
                    .is_ok_and(|(k, _)| p.authorized.contains(&k));
                if ok {
                    // Not a failure (yet), as in sshd: the client signs next.
                    client
                        .send(&auth::encode_pk_ok(algorithm, key_blob))
                        .await?;
                } else {
                    let failure = Failure::publickey(known, false, algorithm, key_blob);
                    failed_attempt(ctx, client, attempts, (&p.user, peer), failure).await?;
                }
            }
            Method::PublicKey {
                algorithm,
                key_blob,
                signature: Some(sig),
            } => {
                let session_id = client
                    .transport
                    .borrow()
                    .session_id()
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default();
                // Membership first (cheap, no oracle), then the signature over this
                // leg's session id: it can never be replayed to the upstream.
                let verified = auth::check_publickey(algorithm, key_blob)
                    .is_ok_and(|(k, _)| p.authorized.contains(&k))
                    && auth::verify_publickey(
                        &session_id,
                        req.user,
                        req.service,
                        algorithm,
                        key_blob,
                        sig,
                    )
                    .is_ok();
                let upstream = match (&p.upstream, verified) {
                    (Some(u), true) => u.clone(),
                    _ => {
                        let failure = Failure::publickey(known, true, algorithm, key_blob);
                        failed_attempt(ctx, client, attempts, (&p.user, peer), failure).await?;
                        continue;
                    }
                };
                let hook_ctx = p.hook_ctx.clone();
                let key = match glommio::timer::timeout(ctx.config.limits.hook_timeout, async {
                    Ok(ctx.hooks.fetch_private_key(&hook_ctx, &upstream).await)
                })
                .await
                {
                    Ok(Ok(k)) => k,
                    failed => {
                        let error = match failed {
                            Ok(Err(e)) => e,
                            _ => HookError::Timeout,
                        };
                        warn!(user = %Untrusted(&p.user), error = %error, "fetch_private_key hook failed");
                        return Err(refuse(Refusal::LoginRefused, AuthFailure::HookError));
                    }
                };
                // Proven: this login gets a slot before any unproven one.
                let connection = {
                    let _waiting = Waiting::on(waiting);
                    p.connection(ctx, Claim::Proven).await
                };
                let conn = match connection {
                    Ok(conn) => conn,
                    Err(refusal) => return Err(refuse(refusal, AuthFailure::UpstreamRejected)),
                };
                let mut banners = Vec::new();
                let r = conn
                    .login_with_key(&upstream.user, &key, |b| banners.push(b))
                    .await;
                for b in banners {
                    client.send(&b).await?;
                }
                if let Err(e) = r {
                    warn!(user = %Untrusted(&p.user), upstream = %upstream.addr, error = %e, "upstream login failed");
                    return Err(refuse(e.refusal(), AuthFailure::UpstreamRejected));
                }
                return finish(ctx, client, pending, "publickey").await;
            }
            method @ (Method::Password { .. } | Method::KeyboardInteractive { .. }) => {
                let started = Instant::now();
                let keyboard_interactive = matches!(method, Method::KeyboardInteractive { .. });
                let name = if keyboard_interactive {
                    "keyboard-interactive"
                } else {
                    "password"
                };
                let upstream_user = p.upstream.as_ref().map(|u| u.user.clone());
                // Waits for a slot while the server has as many unproven connections as
                // allowed (the auth timeout ends the wait).
                let connection = match upstream_user {
                    Some(_) => {
                        let _waiting = Waiting::on(waiting);
                        Some(p.connection(ctx, Claim::Unproven).await)
                    }
                    None => None,
                };
                let (outcome, mut because) = match (upstream_user, connection) {
                    (None, _) | (_, None) => (
                        decoy(ctx, client, keyboard_interactive, rx, &mut carried, started).await?,
                        FailedBecause::UnknownUser,
                    ),
                    (Some(user), Some(connection)) => match connection {
                        Ok(conn) => match conn.pass_through(&user, method).await {
                            Ok(()) => (
                                pass_replies(
                                    ctx,
                                    client,
                                    conn,
                                    rx,
                                    &mut carried,
                                    &mut banners,
                                    started,
                                    keyboard_interactive,
                                )
                                .await?,
                                FailedBecause::UpstreamRefused,
                            ),
                            Err(e) => (
                                Passed::UpstreamFailed {
                                    error: e,
                                    asked: false,
                                },
                                FailedBecause::UpstreamUnavailable,
                            ),
                        },
                        // Its server is down (logged): the client has proven nothing
                        // yet, and "unreachable" would tell it the account exists, so it
                        // fails like a wrong password.
                        Err(_) => (
                            decoy(ctx, client, keyboard_interactive, rx, &mut carried, started)
                                .await?,
                            FailedBecause::UpstreamUnavailable,
                        ),
                    },
                };
                // The upstream broke off (it crashed, or hung up at its MaxAuthTries):
                // the same, and every later attempt gets the decoy.
                let outcome = match outcome {
                    Passed::UpstreamFailed { error, asked } => {
                        p.lose_upstream(error);
                        because = FailedBecause::UpstreamUnavailable;
                        if asked {
                            // After the user answered a prompt (a keyboard-interactive one,
                            // or a password change request).
                            Passed::Failure {
                                partial: false,
                                since: Instant::now(),
                                mimic: Some(if keyboard_interactive {
                                    Answer::KeyboardRefusal
                                } else {
                                    Answer::PasswordRefusal
                                }),
                            }
                        } else {
                            decoy(ctx, client, keyboard_interactive, rx, &mut carried, started)
                                .await?
                        }
                    }
                    outcome => outcome,
                };
                match outcome {
                    Passed::Success => {
                        for b in banners.drain(..) {
                            client.send(&b).await?;
                        }
                        return finish(ctx, client, pending, name).await;
                    }
                    Passed::Failure {
                        partial,
                        since,
                        mimic,
                    } => {
                        // A real refusal takes at least MIN_FAILURE_TIME; the proxy's own
                        // takes as long as real ones typically do (`core::failure_times`).
                        let wait = match mimic {
                            Some(answer) => {
                                let pick = rand_core::OsRng.next_u64();
                                ctx.shard.admission.decoy_time(answer, pick)
                            }
                            None => MIN_FAILURE_TIME,
                        };
                        glommio::timer::sleep(wait.saturating_sub(since.elapsed())).await;
                        let failure = Failure {
                            partial,
                            ..Failure::new(name, because)
                        };
                        failed_attempt(ctx, client, attempts, (&p.user, peer), failure).await?;
                    }
                    Passed::Interrupted => {}
                    Passed::UpstreamFailed { .. } => unreachable!("handled above"),
                }
            }
        }
    }
}

/// The answer an unknown user gets to password or keyboard-interactive: what a real
/// upstream would do (for keyboard-interactive a "Password: " prompt, after as long as
/// real prompts take, if most upstreams prompt), then failure (timed by the caller).
async fn decoy(
    ctx: &SessionEnv,
    client: &Leg,
    keyboard_interactive: bool,
    rx: &mut RxBuf,
    carried: &mut Option<Vec<u8>>,
    started: Instant,
) -> Result<Passed, AuthEnd> {
    if keyboard_interactive && !ctx.shard.admission.decoy_prompts() {
        // Most upstreams refuse keyboard-interactive at once (sshd's default): so does
        // the decoy, padded like theirs.
        return Ok(Passed::Failure {
            partial: false,
            since: started,
            mimic: None,
        });
    }
    if keyboard_interactive {
        let pick = rand_core::OsRng.next_u64();
        let wait = ctx.shard.admission.decoy_time(Answer::Prompt, pick);
        glommio::timer::sleep(wait.saturating_sub(started.elapsed())).await;
        let prompt = auth::InfoRequest {
            name: "",
            instruction: "",
            language: "",
            prompts: vec![auth::Prompt {
                prompt: "Password: ",
                echo: false,
            }],
        };
        client.send(&prompt.encode()).await?;
        let answer = loop {
            match client.recv(rx).await? {
                Received::Packet(a) => break a,
                Received::Event(_) => {}
            }
        };
        if answer[0] != msg::USERAUTH_INFO_RESPONSE {
            *carried = Some(answer);
            return Ok(Passed::Interrupted);
        }
        // Judged like a real answer (`pass_replies`): a malformed one ends the session
        // for a known name too.
        if InfoResponse::parse(&answer).is_err() {
            return Err(malformed_info_response());
        }
        return Ok(Passed::Failure {
            partial: false,
            since: Instant::now(),
            mimic: Some(Answer::KeyboardRefusal),
        });
    }
    Ok(Passed::Failure {
        partial: false,
        since: started,
        mimic: Some(Answer::PasswordRefusal),
    })
}

fn malformed_info_response() -> AuthEnd {
    refuse(Refusal::MalformedInfoResponse, AuthFailure::Aborted)
}

enum Passed {
    Success,
    Failure {
        partial: bool,
        /// When the client's last input (the password, or the last answer) went in.
        since: Instant,
        /// The proxy answers itself (no such user, or its server is down), taking as
        /// long as real upstreams take for this answer; `None`: a real refusal, or one
        /// the proxy pads only to MIN_FAILURE_TIME.
        mimic: Option<Answer>,
    },
    /// The client started another request instead of answering; it is in `carried`.
    Interrupted,
    /// The upstream connection failed; `asked`: after the client was shown a prompt.
    UpstreamFailed {
        error: UpstreamError,
        asked: bool,
    },
}

/// Relay the upstream's answers to a passed-through request (prompts, password change
/// requests) and the client's responses, until the upstream decides. Banners are kept in
/// `banners` and shown only on success: a name the proxy does not know gets none, so a
/// banner before the password would tell that the account exists.
#[allow(clippy::too_many_arguments)]
async fn pass_replies(
    ctx: &SessionEnv,
    client: &Leg,
    conn: &mut UpstreamConn,
    rx: &mut RxBuf,
    carried: &mut Option<Vec<u8>>,
    banners: &mut Vec<Vec<u8>>,
    started: Instant,
    keyboard_interactive: bool,
) -> Result<Passed, AuthEnd> {
    let mut asked = false;
    // When the client's last input went upstream: the upstream's answer is timed from
    // here, for the decoys of `core::failure_times`.
    let mut since = started;
    loop {
        let reply = match conn.auth_reply().await {
            Ok(reply) => reply,
            Err(error) => return Ok(Passed::UpstreamFailed { error, asked }),
        };
        match reply {
            UpstreamReply::Success => return Ok(Passed::Success),
            UpstreamReply::Failure { partial_success } => {
                // Only refusals of what a user typed are timed; a keyboard-interactive
                // request refused at once is a refusal without a prompt.
                let admission = &ctx.shard.admission;
                match (keyboard_interactive, asked) {
                    _ if partial_success => {}
                    (false, _) => admission.record_answer(Answer::PasswordRefusal, since.elapsed()),
                    (true, true) => {
                        admission.record_answer(Answer::KeyboardRefusal, since.elapsed())
                    }
                    (true, false) => admission.record_prompted(false),
                }
                return Ok(Passed::Failure {
                    partial: partial_success,
                    since,
                    mimic: None,
                });
            }
            UpstreamReply::ForClient(p) if p[0] == msg::USERAUTH_BANNER => {
                if banners.len() < MAX_HELD_BANNERS {
                    banners.push(p);
                }
            }
            UpstreamReply::ForClient(p) => {
                // INFO_REQUEST (keyboard-interactive) or PASSWD_CHANGEREQ (password):
                // the user answers, and the answer goes back unchanged.
                if !asked && keyboard_interactive {
                    ctx.shard
                        .admission
                        .record_answer(Answer::Prompt, since.elapsed());
                    ctx.shard.admission.record_prompted(true);
                }
                client.send(&p).await?;
                asked = true;
                let answer = loop {
                    match client.recv(rx).await? {
                        Received::Packet(a) => break a,
                        Received::Event(_) => {}
                    }
                };
                match answer[0] {
                    msg::USERAUTH_INFO_RESPONSE => {
                        if InfoResponse::parse(&answer).is_err() {
                            return Err(malformed_info_response());
                        }
                        if let Err(e) = conn.leg.send(&answer).await {
                            return Ok(Passed::UpstreamFailed {
                                error: e.into(),
                                asked,
                            });
                        }
                        since = Instant::now();
                    }
                    _ => {
                        // A new USERAUTH_REQUEST abandons this one (RFC 4256 3.2); the
                        // upstream treats the next request the same way.
                        *carried = Some(answer);
                        return Ok(Passed::Interrupted);
                    }
                }
            }
        }
    }
}

async fn finish(
    ctx: &SessionEnv,
    client: &Leg,
    pending: Option<Pending>,
    method: &'static str,
) -> Result<Login, AuthEnd> {
    let internal = || refuse(Refusal::Internal, AuthFailure::Aborted);
    let Some(mut p) = pending else {
        return Err(internal());
    };
    // The upstream login is done: the connection is no longer an unauthenticated one,
    // and its slot is freed here.
    let (conn, warm) = match std::mem::replace(&mut p.link, Link::None) {
        Link::Ready { conn, warm, .. } => (conn, warm),
        _ => return Err(internal()),
    };
    client.send(&auth::encode_success()).await?;
    // Make a connection ready for the next login to this server (`src/warm.rs`).
    if let Some(u) = &p.upstream {
        ctx.shard.warm.refill(
            &ctx.config.warm_upstreams,
            u,
            ctx.transport.clone(),
            client_cipher(client),
            ctx.config.limits.connect_timeout,
            &ctx.shard.admission.slots,
            ctx.config.limits.preauth_upstream_connections,
        );
    }
    Ok(Login {
        user: p.user,
        tunnels: p.upstream.as_ref().and_then(|u| u.tunnels),
        upstream_addr: p.upstream.map(|u| u.addr).unwrap_or_default(),
        method,
        conn,
        warm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_endings_the_client_caused_earn_a_penalty() {
        let refused = |failure| refuse(Refusal::Unreachable, failure);
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
    fn waiting_marks_only_while_it_lives() {
        let flag = Cell::new(false);
        {
            let _w = Waiting::on(&flag);
            assert!(flag.get());
        }
        assert!(!flag.get());
    }
}
