//! One proxied session: the client's handshake and authentication, the upstream
//! connection (started as soon as the user name is known, so that its key exchange
//! overlaps the client's authentication), then the relay.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use glommio::net::TcpStream;
use glommio::Task;
use rand_core::RngCore;
use sshr_protocol::auth::{self, InfoResponse, Method, Request};
use sshr_protocol::hostkey::PublicKey;
use sshr_protocol::msg::{self, disconnect};
use sshr_protocol::transport::{Config as TransportConfig, Event, Transport};
use tracing::{debug, info, warn, Instrument};

use crate::config::Config;
use crate::hooks::{HookContext, HookError, Hooks, Upstream};
use crate::leg::{Leg, LegError, Received, RxBuf, Side};
use crate::metrics::AuthFailure;
use crate::preauth::PreauthSlot;
use crate::relay;
use crate::shard::ShardContext;
use crate::tunnel::{SessionTunnels, TunnelPolicy};
use crate::upstream::{self, UpstreamConn, UpstreamError, UpstreamReply};
use crate::warm::CipherPreference;

/// Methods we offer, the same for every user name so that none can be enumerated.
const METHODS: [&str; 3] = ["publickey", "password", "keyboard-interactive"];
/// Upstream banners kept for a passed-through login until it succeeds.
const MAX_HELD_BANNERS: usize = 8;
/// Password and keyboard-interactive failures take at least this long, whether the
/// upstream or the proxy (unknown user) decided.
const MIN_PASSWORD_FAILURE_TIME: std::time::Duration = std::time::Duration::from_millis(300);
/// Longest user name passed to the hooks (Linux allows 32; LDAP-style names a bit more).
const MAX_USER_NAME: usize = 256;
/// Failed attempts before we hang up (OpenSSH's MaxAuthTries default).
const MAX_AUTH_FAILURES: u32 = 6;

pub fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut s);
    s
}

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
        let transport = Transport::server(
            ctx.transport.clone(),
            ctx.shard.host_keys.clone(),
            seed(),
            Instant::now(),
        );
        let client = Rc::new(Leg::new(Side::Client, stream, transport));
        let mut rx = RxBuf::new();
        let started = Instant::now();
        let auth_timeout = ctx.config.limits.auth_timeout;
        let outcome = glommio::timer::timeout(auth_timeout, async {
            Ok(authenticate(&ctx, &client, &mut rx, peer, id).await)
        })
        .await;
        let login = match outcome {
            Err(_) => {
                ctx.shard.metrics.auth_failure(AuthFailure::Timeout);
                info!("authentication timed out");
                client
                    .disconnect(disconnect::BY_APPLICATION, "sshr: authentication timed out")
                    .await;
                return;
            }
            Ok(Err(end)) => {
                end.finish(&ctx, &client).await;
                return;
            }
            Ok(Ok(login)) => login,
        };
        info!(
            user = %login.user,
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
        )
        .await;
    }
    .instrument(span)
    .await
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
    /// Tell the client this and hang up.
    Refuse {
        reason: u32,
        message: &'static str,
        failure: AuthFailure,
    },
}

impl From<LegError> for AuthEnd {
    fn from(e: LegError) -> Self {
        AuthEnd::Leg(e)
    }
}

impl AuthEnd {
    async fn finish(self, ctx: &SessionEnv, client: &Leg) {
        match self {
            AuthEnd::Leg(e) => {
                ctx.shard.metrics.auth_failure(AuthFailure::Aborted);
                match &e {
                    LegError::Closed { .. } => debug!("client left during authentication"),
                    e => info!(error = %e, "session ended during authentication"),
                }
            }
            AuthEnd::Refuse {
                reason,
                message,
                failure,
            } => {
                ctx.shard.metrics.auth_failure(failure);
                client.disconnect(reason, message).await;
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
    connecting: Option<Task<Result<UpstreamConn, UpstreamError>>>,
    conn: Option<UpstreamConn>,
    /// What the client is told once it has proven who it is, when the upstream
    /// connection failed.
    failed: Option<&'static str>,
    /// The connection came from the warm pool.
    warm: bool,
    /// Counts the upstream connection made before the client proved anything
    /// (`src/preauth.rs`); `None` when there is none.
    _preauth: Option<PreauthSlot>,
    /// The server had as many such connections as allowed: connect once asked to.
    deferred: bool,
    /// The cipher the upstream connection asks for (the client leg's).
    prefer: CipherPreference,
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
                    warn!(user, error = %e, "find_upstream hook failed");
                    ctx.shard.metrics.auth_failure(AuthFailure::HookError);
                    None
                }
                Err(_) => {
                    warn!(user, error = %HookError::Timeout, "find_upstream hook failed");
                    None
                }
            }
        };
        // Take a warm upstream connection, or start one now: its TCP and key exchange
        // overlap the client's authentication. (The pool refills after a login, never
        // for a client that has proven nothing.)
        // Beyond `limits.preauth_upstream_connections` for this server, not before the
        // client has proven something (`src/preauth.rs`).
        let prefer = client_cipher(client);
        let preauth = upstream.as_ref().and_then(|u| {
            let limit = ctx.config.limits.preauth_upstream_connections;
            ctx.shard.preauth.try_take(&u.addr, limit)
        });
        let deferred = upstream.is_some() && preauth.is_none();
        if deferred {
            debug!(
                user,
                "upstream connection deferred until the client authenticates"
            );
        }
        let (warm, connecting) = match &upstream {
            Some(u) if !deferred => open_upstream(ctx, u, prefer),
            _ => (None, None),
        };
        let authorized = match &upstream {
            Some(_) => match glommio::timer::timeout(hook_timeout, async {
                Ok(ctx.hooks.fetch_authorized_keys(&hook_ctx).await)
            })
            .await
            {
                Ok(Ok(keys)) => keys,
                Ok(Err(e)) => {
                    warn!(user, error = %e, "fetch_authorized_keys hook failed");
                    Vec::new()
                }
                Err(_) => {
                    warn!(user, "fetch_authorized_keys hook timed out");
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
            connecting,
            warm: warm.is_some(),
            conn: warm,
            failed: None,
            _preauth: preauth,
            deferred,
            prefer,
        }
    }

    /// The upstream connection failed during a password or keyboard-interactive
    /// exchange: log it, and refuse (or decoy) every later attempt like [`Self::upstream`]
    /// does after a failed connect.
    fn lose_upstream(&mut self, error: UpstreamError) {
        let addr = self
            .upstream
            .as_ref()
            .map(|u| u.addr.as_str())
            .unwrap_or_default();
        warn!(user = %self.user, upstream = addr, error = %error, "upstream failed during authentication");
        self.failed = Some(error.client_message());
        self.conn = None;
    }

    /// The upstream connection, waiting for it if it is still being set up. Once it has
    /// failed, every later call gives the same refusal.
    async fn upstream(&mut self, ctx: &SessionEnv) -> Result<&mut UpstreamConn, AuthEnd> {
        if self.deferred {
            self.deferred = false;
            if let Some(u) = &self.upstream {
                let (warm, connecting) = open_upstream(ctx, u, self.prefer);
                self.warm = warm.is_some();
                self.conn = warm;
                self.connecting = connecting;
            }
        }
        if self.conn.is_none() {
            if let Some(task) = self.connecting.take() {
                match task.await {
                    Ok(c) => self.conn = Some(c),
                    Err(e) => {
                        let addr = self
                            .upstream
                            .as_ref()
                            .map(|u| u.addr.as_str())
                            .unwrap_or_default();
                        warn!(user = %self.user, upstream = addr, error = %e, "upstream connection failed");
                        self.failed = Some(e.client_message());
                    }
                }
            }
        }
        match (&mut self.conn, self.failed) {
            (Some(conn), _) => Ok(conn),
            (None, message) => Err(AuthEnd::Refuse {
                reason: disconnect::BY_APPLICATION,
                message: message.unwrap_or("sshr: the server for this account is unreachable"),
                failure: AuthFailure::UpstreamRejected,
            }),
        }
    }
}

/// A warm connection to `u` if the pool has one, or one being made now.
#[allow(clippy::type_complexity)]
fn open_upstream(
    ctx: &SessionEnv,
    u: &Upstream,
    prefer: CipherPreference,
) -> (
    Option<UpstreamConn>,
    Option<Task<Result<UpstreamConn, UpstreamError>>>,
) {
    let warm = Some(u)
        .filter(|_| ctx.config.warm_upstreams.per_upstream > 0)
        .and_then(|u| ctx.shard.warm.take(u, prefer));
    if warm.is_some() {
        return (warm, None);
    }
    let u = u.clone();
    let config = ctx.transport.clone();
    let timeout = ctx.config.limits.connect_timeout;
    let task = glommio::spawn_local(
        async move { upstream::connect(&u, config, prefer, seed(), timeout).await }
            .in_current_span(),
    );
    (None, Some(task))
}

/// The cipher and MAC the client leg negotiated, to ask the upstream for the same: then
/// relayed packets keep their size and are re-sealed where they lie.
fn client_cipher(client: &Leg) -> CipherPreference {
    match client.transport.borrow().negotiated() {
        Some(n) => (Some(n.cipher_c2s), n.mac_c2s),
        None => (None, None),
    }
}

async fn failure(client: &Leg, partial: bool) -> Result<(), AuthEnd> {
    client.send(&auth::encode_failure(METHODS, partial)).await?;
    Ok(())
}

async fn authenticate(
    ctx: &SessionEnv,
    client: &Rc<Leg>,
    rx: &mut RxBuf,
    peer: SocketAddr,
    id: u64,
) -> Result<Login, AuthEnd> {
    let mut pending: Option<Pending> = None;
    let mut failures = 0u32;
    // A message read while passing keyboard-interactive through that must be handled
    // as a new request.
    let mut carried: Option<Vec<u8>> = None;
    // The upstream's banners during password or keyboard-interactive pass-through,
    // shown when the login succeeds (see `pass_replies`).
    let mut banners: Vec<Vec<u8>> = Vec::new();
    loop {
        if failures >= MAX_AUTH_FAILURES {
            return Err(AuthEnd::Refuse {
                reason: disconnect::NO_MORE_AUTH_METHODS_AVAILABLE,
                message: "sshr: too many authentication failures",
                failure: AuthFailure::WrongKey,
            });
        }
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
            return Err(AuthEnd::Refuse {
                reason: disconnect::PROTOCOL_ERROR,
                message: "sshr: expected a user authentication request",
                failure: AuthFailure::Aborted,
            });
        }
        let req = match Request::parse(&payload) {
            Ok(r) => r,
            Err(e) => {
                info!(error = %e, "malformed authentication request");
                return Err(AuthEnd::Refuse {
                    reason: disconnect::PROTOCOL_ERROR,
                    message: "sshr: malformed authentication request",
                    failure: AuthFailure::Aborted,
                });
            }
        };
        if req.service != auth::CONNECTION_SERVICE {
            return Err(AuthEnd::Refuse {
                reason: disconnect::SERVICE_NOT_AVAILABLE,
                message: "sshr: only the ssh-connection service is available",
                failure: AuthFailure::Aborted,
            });
        }
        match &pending {
            None => pending = Some(Pending::start(ctx, client, req.user, peer, id).await),
            // As OpenSSH: the user name may not change between attempts.
            Some(p) if p.user != req.user => {
                return Err(AuthEnd::Refuse {
                    reason: disconnect::PROTOCOL_ERROR,
                    message: "sshr: changing the user name during authentication is not allowed",
                    failure: AuthFailure::Aborted,
                });
            }
            Some(_) => {}
        }
        let Some(p) = pending.as_mut() else { continue };
        match req.method {
            Method::None | Method::Other(_) => failure(client, false).await?,
            Method::PublicKey {
                algorithm,
                key_blob,
                signature: None,
            } => {
                let ok = auth::check_publickey(algorithm, key_blob)
                    .is_ok_and(|(k, _)| p.authorized.contains(&k));
                if ok {
                    client
                        .send(&auth::encode_pk_ok(algorithm, key_blob))
                        .await?;
                } else {
                    failure(client, false).await?;
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
                if !verified {
                    failures += 1;
                    ctx.shard.metrics.auth_failure(if p.upstream.is_some() {
                        AuthFailure::WrongKey
                    } else {
                        AuthFailure::UnknownUser
                    });
                    info!(user = %p.user, "public key refused");
                    failure(client, false).await?;
                    continue;
                }
                let Some(upstream) = p.upstream.clone() else {
                    continue;
                };
                let hook_ctx = p.hook_ctx.clone();
                let key = match ctx.hooks.fetch_private_key(&hook_ctx, &upstream).await {
                    Ok(k) => k,
                    Err(e) => {
                        warn!(user = %p.user, error = %e, "fetch_private_key hook failed");
                        return Err(AuthEnd::Refuse {
                            reason: disconnect::BY_APPLICATION,
                            message: "sshr: the server for this account refused the proxy's login",
                            failure: AuthFailure::HookError,
                        });
                    }
                };
                let conn = p.upstream(ctx).await?;
                let mut banners = Vec::new();
                let r = conn
                    .login_with_key(&upstream.user, &key, |b| banners.push(b))
                    .await;
                for b in banners {
                    client.send(&b).await?;
                }
                if let Err(e) = r {
                    warn!(user = %p.user, upstream = %upstream.addr, error = %e, "upstream login failed");
                    return Err(AuthEnd::Refuse {
                        reason: disconnect::BY_APPLICATION,
                        message: e.client_message(),
                        failure: AuthFailure::UpstreamRejected,
                    });
                }
                return finish(ctx, client, pending, "publickey").await;
            }
            method @ (Method::Password { .. } | Method::KeyboardInteractive { .. }) => {
                let started = Instant::now();
                let keyboard_interactive = matches!(method, Method::KeyboardInteractive { .. });
                let name = if matches!(method, Method::Password { .. }) {
                    "password"
                } else {
                    "keyboard-interactive"
                };
                let user = p.upstream.as_ref().map(|u| u.user.clone());
                let conn = match user {
                    Some(_) => p.upstream(ctx).await.ok(),
                    None => None,
                };
                let outcome = match (user, conn) {
                    (Some(user), Some(conn)) => match conn.pass_through(&user, method).await {
                        Ok(()) => {
                            pass_replies(client, conn, rx, &mut carried, &mut banners).await?
                        }
                        Err(e) => Passed::UpstreamFailed {
                            error: e,
                            asked: false,
                        },
                    },
                    // No such user, or its server is down (logged above). The client has
                    // proven nothing yet: "unreachable" would tell it the account exists,
                    // so both fail like a wrong password.
                    _ => decoy(client, keyboard_interactive, rx, &mut carried).await?,
                };
                // The upstream broke off (it crashed, or hung up at its MaxAuthTries):
                // the same, and every later attempt gets the decoy.
                let outcome = match outcome {
                    Passed::UpstreamFailed { error, asked } => {
                        p.lose_upstream(error);
                        if asked {
                            Passed::Failure { partial: false }
                        } else {
                            decoy(client, keyboard_interactive, rx, &mut carried).await?
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
                    Passed::Failure { partial } => {
                        failures += 1;
                        ctx.shard.metrics.auth_failure(if p.upstream.is_some() {
                            AuthFailure::UpstreamRejected
                        } else {
                            AuthFailure::UnknownUser
                        });
                        // An unknown user fails at once, a known one after a round trip
                        // to the upstream: pad both to the same time.
                        glommio::timer::sleep(
                            MIN_PASSWORD_FAILURE_TIME.saturating_sub(started.elapsed()),
                        )
                        .await;
                        failure(client, partial).await?;
                    }
                    Passed::Interrupted => {}
                    Passed::UpstreamFailed { .. } => unreachable!("handled above"),
                }
            }
        }
    }
}

/// The answer an unknown user gets to password or keyboard-interactive: what a real
/// upstream would do (a "Password: " prompt for keyboard-interactive), then failure.
async fn decoy(
    client: &Leg,
    keyboard_interactive: bool,
    rx: &mut RxBuf,
    carried: &mut Option<Vec<u8>>,
) -> Result<Passed, AuthEnd> {
    if keyboard_interactive {
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
    }
    Ok(Passed::Failure { partial: false })
}

enum Passed {
    Success,
    Failure {
        partial: bool,
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
async fn pass_replies(
    client: &Leg,
    conn: &mut UpstreamConn,
    rx: &mut RxBuf,
    carried: &mut Option<Vec<u8>>,
    banners: &mut Vec<Vec<u8>>,
) -> Result<Passed, AuthEnd> {
    let mut asked = false;
    loop {
        let reply = match conn.auth_reply().await {
            Ok(reply) => reply,
            Err(error) => return Ok(Passed::UpstreamFailed { error, asked }),
        };
        match reply {
            UpstreamReply::Success => return Ok(Passed::Success),
            UpstreamReply::Failure { partial_success } => {
                return Ok(Passed::Failure {
                    partial: partial_success,
                })
            }
            UpstreamReply::ForClient(p) if p[0] == msg::USERAUTH_BANNER => {
                if banners.len() < MAX_HELD_BANNERS {
                    banners.push(p);
                }
            }
            UpstreamReply::ForClient(p) => {
                // INFO_REQUEST (keyboard-interactive) or PASSWD_CHANGEREQ (password):
                // the user answers, and the answer goes back unchanged.
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
                            return Err(AuthEnd::Refuse {
                                reason: disconnect::PROTOCOL_ERROR,
                                message: "sshr: malformed keyboard-interactive response",
                                failure: AuthFailure::Aborted,
                            });
                        }
                        if let Err(e) = conn.leg.send(&answer).await {
                            return Ok(Passed::UpstreamFailed {
                                error: e.into(),
                                asked,
                            });
                        }
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
    let Some(mut p) = pending else {
        return Err(AuthEnd::Refuse {
            reason: disconnect::PROTOCOL_ERROR,
            message: "sshr: internal error",
            failure: AuthFailure::Aborted,
        });
    };
    let conn = p.upstream(ctx).await?;
    let _ = conn;
    client.send(&auth::encode_success()).await?;
    // Make a connection ready for the next login to this server (`src/warm.rs`).
    if let Some(u) = &p.upstream {
        ctx.shard.warm.refill(
            &ctx.config.warm_upstreams,
            u,
            ctx.transport.clone(),
            client_cipher(client),
            ctx.config.limits.connect_timeout,
        );
    }
    let conn = p.conn.take().ok_or(AuthEnd::Refuse {
        reason: disconnect::PROTOCOL_ERROR,
        message: "sshr: internal error",
        failure: AuthFailure::Aborted,
    })?;
    Ok(Login {
        user: p.user,
        tunnels: p.upstream.as_ref().and_then(|u| u.tunnels),
        upstream_addr: p.upstream.map(|u| u.addr).unwrap_or_default(),
        method,
        conn,
        warm: p.warm,
    })
}
