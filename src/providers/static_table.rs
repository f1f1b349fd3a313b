//! The default hooks: the static `[[users]]` table of the configuration.
//!
//! Everything is resolved when the table is built (at startup and on reload):
//! `authorized_keys_file`s are read then, not at each login, so a login never touches
//! the disk and never blocks its shard. A missing or unreadable file means the user has
//! no keys, with a warning; a login then fails like a wrong key.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use sshr_protocol::hostkey::{self, PrivateKey, PublicKey};

use crate::config::{AuthorizedKeys, Config};
use crate::hooks::{HookContext, HookError, Hooks, HooksFactory, HostKeyPolicy, Upstream};

/// The resolved user table, shared read-only by every shard.
#[derive(Debug, Default)]
pub struct StaticTable {
    users: HashMap<String, Entry>,
}

#[derive(Debug)]
struct Entry {
    upstream: Upstream,
    authorized_keys: Vec<PublicKey>,
}

impl StaticTable {
    /// Builds the table from `config.users`, reading every `authorized_keys_file`.
    pub fn from_config(config: &Config) -> StaticTable {
        let users = config
            .users
            .iter()
            .map(|user| {
                let authorized_keys = match &user.authorized_keys {
                    AuthorizedKeys::None => Vec::new(),
                    AuthorizedKeys::Inline(keys) => keys.clone(),
                    AuthorizedKeys::File(path) => read_authorized_keys(&user.name, path),
                };
                if authorized_keys.is_empty() {
                    tracing::debug!(user = %user.name, "no authorized keys: public-key login impossible for this user");
                }
                let host_key = if user.upstream_host_keys.is_empty() {
                    HostKeyPolicy::Unpinned
                } else {
                    HostKeyPolicy::Pinned(user.upstream_host_keys.clone())
                };
                let entry = Entry {
                    upstream: Upstream {
                        addr: user.upstream.clone(),
                        user: user.upstream_user.clone(),
                        host_key,
                        tunnels: user.tunnel,
                    },
                    authorized_keys,
                };
                (user.name.clone(), entry)
            })
            .collect();
        StaticTable { users }
    }

    /// Number of users in the table.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The upstream of `user`, if the table has that user.
    pub fn upstream(&self, user: &str) -> Option<&Upstream> {
        self.users.get(user).map(|e| &e.upstream)
    }

    /// The authorized keys of `user` (empty for an unknown user).
    pub fn authorized_keys(&self, user: &str) -> &[PublicKey] {
        self.users.get(user).map_or(&[], |e| &e.authorized_keys)
    }

    /// A factory building, on each shard, hooks that answer from this table and log in
    /// to every upstream with `upstream_key`.
    pub fn factory(self, upstream_key: Arc<PrivateKey>) -> HooksFactory {
        let table = Arc::new(self);
        Arc::new(move || {
            Rc::new(StaticTableHooks {
                table: table.clone(),
                // One copy of the key per shard, so sessions can share it as an Rc.
                upstream_key: Rc::new((*upstream_key).clone()),
            }) as Rc<dyn Hooks>
        })
    }
}

/// The per-shard [`Hooks`] of a [`StaticTable`].
pub struct StaticTableHooks {
    table: Arc<StaticTable>,
    upstream_key: Rc<PrivateKey>,
}

impl StaticTableHooks {
    pub fn new(table: Arc<StaticTable>, upstream_key: Rc<PrivateKey>) -> Self {
        StaticTableHooks {
            table,
            upstream_key,
        }
    }
}

#[async_trait::async_trait(?Send)]
impl Hooks for StaticTableHooks {
    async fn find_upstream(&self, ctx: &HookContext) -> Result<Option<Upstream>, HookError> {
        Ok(self.table.upstream(&ctx.user).cloned())
    }

    async fn fetch_authorized_keys(&self, ctx: &HookContext) -> Result<Vec<PublicKey>, HookError> {
        Ok(self.table.authorized_keys(&ctx.user).to_vec())
    }

    async fn fetch_private_key(
        &self,
        _ctx: &HookContext,
        _upstream: &Upstream,
    ) -> Result<Rc<PrivateKey>, HookError> {
        Ok(self.upstream_key.clone())
    }
}

/// Reads an authorized_keys file; problems are warnings, never fatal: one user's broken
/// file must not keep every other user out.
fn read_authorized_keys(user: &str, path: &Path) -> Vec<PublicKey> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!(
                user,
                path = %path.display(),
                error = %e,
                "cannot read authorized_keys_file: this user has no keys"
            );
            return Vec::new();
        }
    };
    let mut keys = Vec::new();
    for entry in hostkey::parse_authorized_keys(&text) {
        match entry {
            // Options (`from=`, `command=`, `restrict`...) restrict a key; the proxy
            // does not enforce them yet, so such a key would get more than the file
            // grants. Leave it out rather than widen its access.
            Ok(entry) if entry.options.is_some() => tracing::warn!(
                user,
                path = %path.display(),
                line = entry.line,
                "skipping authorized_keys line with options: sshr does not enforce key options"
            ),
            Ok(entry) => keys.push(entry.key),
            Err(e) => tracing::warn!(
                user,
                path = %path.display(),
                error = %e,
                "skipping unparseable authorized_keys line"
            ),
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    fn key() -> PrivateKey {
        PrivateKey::generate_ed25519(&mut rand_core::OsRng)
    }

    fn ctx(user: &str) -> HookContext {
        HookContext::new(user, "127.0.0.1:50000".parse().unwrap(), 1, "SSH-2.0-test")
    }

    #[test]
    fn lookups_follow_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob1, bob2, pin) = (key(), key(), key(), key());
        let bob_file = dir.path().join("bob.keys");
        std::fs::write(
            &bob_file,
            format!(
                "# bob's keys\n{}\nthis line is broken\n\n{}\nfrom=\"10.0.0.1\" {}\n",
                bob1.public().to_openssh(),
                bob2.public().to_openssh(),
                alice.public().to_openssh()
            ),
        )
        .unwrap();
        let text = format!(
            r#"
listen = ["127.0.0.1:2222"]
host_keys = ["h"]
upstream_key = "u"

[[users]]
name = "alice"
upstream = "10.0.0.1:22"
upstream_user = "root"
authorized_keys = ["{}"]
upstream_host_key = "{}"

[[users]]
name = "bob"
upstream = "bob.example:2201"
authorized_keys_file = "bob.keys"

[[users]]
name = "carol"
upstream = "c:22"
authorized_keys_file = "missing.keys"
"#,
            alice.public().to_openssh(),
            pin.public().to_openssh()
        );
        let config = Config::parse(&text, "t", dir.path()).unwrap();
        let table = StaticTable::from_config(&config);
        assert_eq!(table.len(), 3);
        // Read once at build: later changes to the file do not matter until a reload.
        std::fs::remove_file(&bob_file).unwrap();

        let upstream_key = Arc::new(key());
        let hooks = (table.factory(upstream_key.clone()))();

        let up = block_on(hooks.find_upstream(&ctx("alice")))
            .unwrap()
            .unwrap();
        assert_eq!(
            (up.addr.as_str(), up.user.as_str()),
            ("10.0.0.1:22", "root")
        );
        match &up.host_key {
            HostKeyPolicy::Pinned(keys) => {
                assert_eq!(keys.len(), 1);
                assert_eq!(keys[0].fingerprint(), pin.public().fingerprint());
            }
            HostKeyPolicy::Unpinned => panic!("alice's upstream is pinned"),
        }
        let keys = block_on(hooks.fetch_authorized_keys(&ctx("alice"))).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].fingerprint(), alice.public().fingerprint());

        let up = block_on(hooks.find_upstream(&ctx("bob"))).unwrap().unwrap();
        assert_eq!(
            (up.addr.as_str(), up.user.as_str()),
            ("bob.example:2201", "bob")
        );
        assert!(matches!(up.host_key, HostKeyPolicy::Unpinned));
        let keys: Vec<_> = block_on(hooks.fetch_authorized_keys(&ctx("bob")))
            .unwrap()
            .iter()
            .map(|k| k.fingerprint())
            .collect();
        assert_eq!(
            keys,
            vec![bob1.public().fingerprint(), bob2.public().fingerprint()]
        );

        // A missing file: the user exists but has no keys.
        assert!(block_on(hooks.find_upstream(&ctx("carol")))
            .unwrap()
            .is_some());
        assert!(block_on(hooks.fetch_authorized_keys(&ctx("carol")))
            .unwrap()
            .is_empty());

        // Unknown users: no upstream, no keys, and no error (the session answers them
        // like a wrong key).
        assert!(block_on(hooks.find_upstream(&ctx("mallory")))
            .unwrap()
            .is_none());
        assert!(block_on(hooks.fetch_authorized_keys(&ctx("mallory")))
            .unwrap()
            .is_empty());

        let private = block_on(hooks.fetch_private_key(&ctx("alice"), &up)).unwrap();
        assert_eq!(
            private.public().fingerprint(),
            upstream_key.public().fingerprint()
        );
    }
}
