//! The three hooks of the sshr paper, as the operator-facing library API.
//!
//! A login asks, in order:
//! 1. [`Hooks::find_upstream`]: which server does this user belong to, as whom do we log
//!    in there, and which host key do we expect from it;
//! 2. [`Hooks::fetch_authorized_keys`]: which public keys may log in to the proxy as
//!    this user (public-key logins are checked at the proxy, because the client's
//!    signature covers the session id of the client leg and cannot be forwarded);
//! 3. [`Hooks::fetch_private_key`]: which key the proxy logs in to the upstream with
//!    (first; the proxy's own `upstream_key`s follow if the upstream refuses it).
//!
//! Hooks run on the shard that accepted the session, inside its single-threaded event
//! loop: they may await network I/O but must never block the thread. Put blocking work
//! (a file read, a synchronous database client, DNS) behind [`crate::run_blocking`].
//! Hooks are built once per shard by a [`HooksFactory`], so an implementation may keep
//! plain `Rc`/`RefCell` caches without locks.
//!
//! ```no_run
//! use std::rc::Rc;
//! use sshr::hooks::{HookContext, HookError, Hooks, Upstream};
//! use sshr::protocol::hostkey::{PrivateKey, PublicKey};
//!
//! struct OneServer { key: Rc<PrivateKey> }
//!
//! #[sshr::async_trait(?Send)]
//! impl Hooks for OneServer {
//!     async fn find_upstream(&self, ctx: &HookContext) -> Result<Option<Upstream>, HookError> {
//!         Ok(Some(Upstream::new("10.0.0.5:22", &ctx.user)))
//!     }
//!     async fn fetch_authorized_keys(&self, _: &HookContext) -> Result<Vec<PublicKey>, HookError> {
//!         Ok(Vec::new())
//!     }
//!     async fn fetch_private_key(&self, _: &HookContext, _: &Upstream) -> Result<Rc<PrivateKey>, HookError> {
//!         Ok(self.key.clone())
//!     }
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sshr_protocol::hostkey::{PrivateKey, PublicKey};
use sshr_protocol::transport::HostKeyCheck;

use crate::core::values::TunnelPolicy;

/// What the proxy knows about a login when it calls a hook.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HookContext {
    /// The account: the login name the client sent (SSH_MSG_USERAUTH_REQUEST user name),
    /// without the target (`alice` for `alice+web2`).
    pub user: String,
    /// The server the client named after `target_separator` (`web2` for `alice+web2`);
    /// `None`: the account's default server.
    pub target: Option<String>,
    /// The client's address as the proxy's socket sees it.
    pub client_addr: SocketAddr,
    /// A proxy-assigned id, unique per process, that every log line of the session
    /// carries. The shard index is in the high 16 bits.
    pub session_id: u64,
    /// The client's identification string, e.g. `SSH-2.0-OpenSSH_9.2p1 Debian-2`.
    pub client_version: String,
}

impl HookContext {
    /// The context of a login to `user`'s default server; see [`HookContext::target`].
    pub fn new(
        user: impl Into<String>,
        client_addr: SocketAddr,
        session_id: u64,
        client_version: impl Into<String>,
    ) -> Self {
        HookContext {
            user: user.into(),
            target: None,
            client_addr,
            session_id,
            client_version: client_version.into(),
        }
    }

    /// The same login, to the server the client named.
    pub fn target(mut self, target: Option<String>) -> Self {
        self.target = target;
        self
    }
}

/// The answer to a login's one lookup ([`Hooks::look_up`]).
#[derive(Clone, Debug)]
pub enum Lookup {
    /// No such user (or no such target of it): answered exactly like a wrong key.
    Unknown,
    /// The user's server, and the public keys allowed to log in to the proxy as the user
    /// (empty: public-key login is impossible, password and keyboard-interactive logins
    /// are passed through).
    Found {
        upstream: Upstream,
        authorized_keys: Vec<PublicKey>,
    },
    /// The user has several servers and none is the default: the client must name one
    /// (`user+target`), or choose from this list once it has proven its key. The keys
    /// are the user's, as for `Found`.
    Choose {
        targets: Vec<String>,
        authorized_keys: Vec<PublicKey>,
    },
}

/// Where a user's session goes.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// `host:port`; a host name is resolved off the shard when the session connects.
    /// IPv6 literals are written in brackets: `[2001:db8::5]:22`.
    pub addr: String,
    /// The user name the proxy logs in as on the upstream.
    pub user: String,
    /// Which host keys the upstream may present.
    pub host_key: HostKeyPolicy,
    /// Which SSH tunnels (`ssh -w`) the user may open; `None`: the configuration's
    /// `tunnels.default`.
    pub tunnels: Option<TunnelPolicy>,
}

impl Upstream {
    /// An upstream with an unpinned host key; see [`Upstream::pinned`].
    pub fn new(addr: impl Into<String>, user: impl Into<String>) -> Self {
        Upstream {
            addr: addr.into(),
            user: user.into(),
            host_key: HostKeyPolicy::Unpinned,
            tunnels: None,
        }
    }

    /// The same upstream, with this tunnel policy instead of the configured default.
    pub fn tunnels(mut self, policy: TunnelPolicy) -> Self {
        self.tunnels = Some(policy);
        self
    }

    /// The same upstream, accepting only these host keys.
    pub fn pinned(mut self, keys: Vec<PublicKey>) -> Self {
        self.host_key = HostKeyPolicy::Pinned(keys);
        self
    }
}

/// How the proxy verifies an upstream's host key.
#[derive(Clone, Debug)]
pub enum HostKeyPolicy {
    /// Only these keys are accepted; any other key aborts the upstream connection.
    Pinned(Vec<PublicKey>),
    /// Any key is accepted, and the session logs a warning with its fingerprint.
    /// Convenient on a private network; pin keys where an attacker could sit between
    /// the proxy and the upstream.
    Unpinned,
}

/// Why a hook could not answer. The client is never told more than "permission denied"
/// (an unknown user must look exactly like a wrong key); the log gets the details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// The hook did not answer in time (the session enforces `limits.hook_timeout_secs`).
    #[error("hook timed out")]
    Timeout,
    /// A backend the hook depends on (database, directory, key service) is unreachable
    /// or failing.
    #[error("hook backend unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with data the hook could not use (a malformed key or
    /// address).
    #[error("hook got invalid data: {0}")]
    InvalidData(String),
    /// The hook refuses this login on purpose (account disabled, client address not
    /// allowed). Answered to the client like a wrong key.
    #[error("login refused by hook: {0}")]
    Denied(String),
}

/// The operator's answers to the three questions of a login.
///
/// One value per shard (see [`HooksFactory`]); methods take `&self` and run on the
/// shard's event loop, so they must await rather than block.
#[async_trait::async_trait(?Send)]
pub trait Hooks {
    /// Everything a login needs to know about `ctx.user` (and `ctx.target`), in one
    /// call: the session makes exactly one per login, and fails the login with "the
    /// account service is unavailable" on an error.
    ///
    /// The default asks [`Hooks::find_upstream`], then [`Hooks::fetch_authorized_keys`];
    /// a hook backed by a remote service should answer both in one round trip instead.
    async fn look_up(&self, ctx: &HookContext) -> Result<Lookup, HookError> {
        let Some(upstream) = self.find_upstream(ctx).await? else {
            return Ok(Lookup::Unknown);
        };
        let authorized_keys = self.fetch_authorized_keys(ctx).await?;
        Ok(Lookup::Found {
            upstream,
            authorized_keys,
        })
    }

    /// The upstream of `ctx.user`, or `None` if there is no such user.
    ///
    /// The session answers an unknown user exactly like a wrong key, with the same
    /// timing, so the proxy cannot be used to enumerate users.
    async fn find_upstream(&self, ctx: &HookContext) -> Result<Option<Upstream>, HookError>;

    /// The public keys allowed to log in to the proxy as `ctx.user`. An empty list means
    /// public-key login is impossible for this user (password and keyboard-interactive
    /// logins are still passed through to the upstream). An RSA key smaller than the
    /// configuration's `required_rsa_size` is refused at login even when listed here.
    async fn fetch_authorized_keys(&self, ctx: &HookContext) -> Result<Vec<PublicKey>, HookError>;

    /// The key the proxy logs in to `upstream` with, on behalf of `ctx.user`: a key of
    /// the user's own, or one of the proxy's. The proxy offers it first, then the keys
    /// of `upstream_key` it has not offered yet, in order, until the upstream accepts
    /// one (as ssh offers several identities). An error refuses the login.
    async fn fetch_private_key(
        &self,
        ctx: &HookContext,
        upstream: &Upstream,
    ) -> Result<Rc<PrivateKey>, HookError>;
}

/// Calls a hook with a time limit (`limits.hook_timeout`): a hook that has not answered
/// by then fails with [`HookError::Timeout`]. Must be called on a shard.
pub async fn with_timeout<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, HookError>>,
) -> Result<T, HookError> {
    crate::rt::timeout(limit, call)
        .await
        .unwrap_or(Err(HookError::Timeout))
}

/// Builds the hooks of one shard. Called once on each shard's thread at startup (and
/// again on every configuration reload), so the value it returns need not be `Send`.
pub type HooksFactory = Arc<dyn Fn() -> Rc<dyn Hooks> + Send + Sync>;

/// Wraps a closure that builds a [`Hooks`] value into a [`HooksFactory`].
///
/// ```ignore
/// let factory = sshr::hooks::factory(move || MyHooks::new(&settings));
/// ```
pub fn factory<H, F>(make: F) -> HooksFactory
where
    H: Hooks + 'static,
    F: Fn() -> H + Send + Sync + 'static,
{
    Arc::new(move || Rc::new(make()) as Rc<dyn Hooks>)
}

impl HostKeyPolicy {
    /// Whether the upstream may present `key`.
    pub fn accepts(&self, key: &PublicKey) -> bool {
        match self {
            HostKeyPolicy::Pinned(keys) => keys.iter().any(|k| k == key),
            HostKeyPolicy::Unpinned => true,
        }
    }
}

/// The client-role transport's form of the policy.
impl From<HostKeyPolicy> for HostKeyCheck {
    fn from(policy: HostKeyPolicy) -> Self {
        match policy {
            HostKeyPolicy::Pinned(keys) => HostKeyCheck::Pinned(keys),
            HostKeyPolicy::Unpinned => HostKeyCheck::AcceptAny,
        }
    }
}

impl fmt::Display for HostKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKeyPolicy::Pinned(keys) => write!(f, "pinned ({} key(s))", keys.len()),
            HostKeyPolicy::Unpinned => f.write_str("unpinned"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_policy_accepts_only_its_keys() {
        let key = || PrivateKey::generate_ed25519(&mut rand_core::OsRng).public();
        let (a, b) = (key(), key());
        let upstream = Upstream::new("h:22", "u");
        assert!(upstream.host_key.accepts(&a));
        let pinned = upstream.pinned(vec![a.clone()]);
        assert!(pinned.host_key.accepts(&a));
        assert!(!pinned.host_key.accepts(&b));
        assert!(matches!(
            HostKeyCheck::from(pinned.host_key),
            HostKeyCheck::Pinned(keys) if keys.len() == 1
        ));
        assert!(matches!(
            HostKeyCheck::from(HostKeyPolicy::Unpinned),
            HostKeyCheck::AcceptAny
        ));
    }

    #[test]
    fn slow_hooks_time_out() {
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            let slow = async {
                crate::rt::sleep(Duration::from_secs(5)).await;
                Ok::<_, HookError>(1)
            };
            assert_eq!(
                with_timeout(Duration::from_millis(10), slow).await,
                Err(HookError::Timeout)
            );
            let fast = async { Err::<u8, _>(HookError::Unavailable("db down".into())) };
            assert_eq!(
                with_timeout(Duration::from_secs(5), fast).await,
                Err(HookError::Unavailable("db down".into()))
            );
        });
    }
}
