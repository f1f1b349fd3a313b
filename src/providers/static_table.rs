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
    for (line, result) in hostkey::parse_authorized_keys(&text) {
        match result {
            Ok(key) => keys.push(key),
            Err(e) => tracing::warn!(
                user,
                path = %path.display(),
                line,
                error = %e,
                "skipping unparseable authorized_keys line"
            ),
        }
    }
    keys
}
