//! A proxy with its own hooks compiled in, instead of the static user table.
//!
//! Users log in as `USER+HOST` (`ssh -p 2222 alice+web1@proxy`): the session goes to
//! `HOST.<domain>:<port>` as `USER`. A user's authorized keys are the file
//! `<keys_dir>/USER.pub` (OpenSSH authorized_keys format), read on every login on a
//! helper thread, so adding a key needs neither a restart nor a reload. The proxy logs
//! in everywhere with its `upstream_key` (the first of them; then the others).
//!
//! Settings come from the `[hooks]` table of the usual configuration file:
//!
//! ```toml
//! [hooks]
//! domain = "internal.example"   # optional; HOST is used as is without it
//! port = 22                     # optional
//! keys_dir = "/etc/sshr/users"
//! ```
//!
//! Run: `cargo run --release --example custom_hooks -- sshr.toml` (without an argument,
//! the built-in configuration and `keys_dir = "users"`). `docs/hooks.md` walks through
//! trying it.
//!
//! Everything here comes from the one dependency `sshr`: the hooks API, the key types
//! (`sshr::protocol`), the `async_trait` attribute and the log set-up.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use sshr::hooks::{self, HookContext, HookError, Hooks, Upstream};
use sshr::protocol::hostkey::{self, PrivateKey, PublicKey};
use sshr::Config;

/// Settings shared by every shard (read-only, so an `Arc` is enough).
struct Settings {
    domain: Option<String>,
    port: u16,
    keys_dir: PathBuf,
}

impl Settings {
    fn from_config(config: &Config) -> Result<Self, String> {
        let table = &config.hooks;
        let domain = match table.get("domain") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .ok_or("[hooks] domain must be a string")?
                    .to_string(),
            ),
        };
        let port = match table.get("port") {
            None => 22,
            Some(v) => v
                .as_integer()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0)
                .ok_or("[hooks] port must be a number from 1 to 65535")?,
        };
        let keys_dir = match table.get("keys_dir") {
            None => PathBuf::from("users"),
            Some(v) => PathBuf::from(v.as_str().ok_or("[hooks] keys_dir must be a string")?),
        };
        Ok(Settings {
            domain,
            port,
            keys_dir,
        })
    }
}

/// The hooks of one shard.
struct UserAtHost {
    settings: Arc<Settings>,
    upstream_key: Rc<PrivateKey>,
}

/// The user and host of a login as `alice+web1`: the proxy has split the login name at
/// its `target_separator` (`+`) into `ctx.user` and `ctx.target`. Both parts end up in a
/// host name and a file path, so only a conservative alphabet is accepted: no `/`, no
/// `..` tricks.
fn split_login(ctx: &HookContext) -> Option<(&str, &str)> {
    let (user, host) = (ctx.user.as_str(), ctx.target.as_deref()?);
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with(['.', '-'])
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    (ok(user) && ok(host)).then_some((user, host))
}

#[sshr::async_trait(?Send)]
impl Hooks for UserAtHost {
    async fn find_upstream(&self, ctx: &HookContext) -> Result<Option<Upstream>, HookError> {
        let Some((user, host)) = split_login(ctx) else {
            return Ok(None);
        };
        let host = match &self.settings.domain {
            Some(domain) => format!("{host}.{domain}"),
            None => host.to_string(),
        };
        Ok(Some(Upstream::new(
            format!("{host}:{}", self.settings.port),
            user,
        )))
    }

    async fn fetch_authorized_keys(&self, ctx: &HookContext) -> Result<Vec<PublicKey>, HookError> {
        let Some((user, _)) = split_login(ctx) else {
            return Ok(Vec::new());
        };
        let path = self.settings.keys_dir.join(format!("{user}.pub"));
        // File I/O blocks: run it off the shard's event loop.
        let text = sshr::run_blocking(move || std::fs::read_to_string(path)).await;
        match text {
            // Unparseable lines and lines with options (which this example does not
            // enforce) are left out.
            Ok(text) => Ok(hostkey::parse_authorized_keys(&text)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|entry| entry.options.is_none())
                .map(|entry| entry.key)
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(HookError::Unavailable(format!("keys of {user}: {e}"))),
        }
    }

    async fn fetch_private_key(
        &self,
        _ctx: &HookContext,
        _upstream: &Upstream,
    ) -> Result<Rc<PrivateKey>, HookError> {
        Ok(self.upstream_key.clone())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The daemon's own log set-up: stderr, `RUST_LOG` (info by default), colours only on
    // a terminal, peer text escaped.
    sshr::logging::init();

    let config = match std::env::args_os().nth(1) {
        Some(path) => Config::load(path.as_ref())?,
        None => Config::builtin()?,
    };
    let settings = Arc::new(Settings::from_config(&config)?);
    // The first key of `upstream_key` (never empty); the proxy offers the others after
    // the one this hook gives.
    let upstream_key = Arc::new(sshr::keys::load_upstream_key(&config.upstream_keys[0])?);

    // Called once on each shard's thread: everything it returns stays on that shard.
    let factory = hooks::factory(move || UserAtHost {
        settings: settings.clone(),
        upstream_key: Rc::new((*upstream_key).clone()),
    });

    sshr::Server::new(config).hooks(factory).run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_login;
    use sshr::hooks::HookContext;

    fn login(user: &str, target: Option<&str>) -> HookContext {
        HookContext::new(user, "192.0.2.1:5000".parse().unwrap(), 1, "SSH-2.0-x")
            .target(target.map(str::to_owned))
    }

    #[test]
    fn logins_split_and_refuse_paths() {
        assert_eq!(
            split_login(&login("alice", Some("web1"))),
            Some(("alice", "web1"))
        );
        assert_eq!(split_login(&login("alice", None)), None);
        assert_eq!(split_login(&login("../etc", Some("web1"))), None);
        assert_eq!(split_login(&login("alice", Some(".."))), None);
    }
}
