//! The default hooks: the static `[[users]]` table of the configuration.
//!
//! The table is built at startup and on reload. Inline keys are fixed then; an
//! `authorized_keys_file` is read then too, and again at a login when it has changed
//! since (device, inode, size, modification or change time differ), as sshd reads
//! authorized_keys at each login: a key added to the file is accepted at the next login,
//! a key removed is refused. The check is one `stat` on the shard; the read itself runs on
//! the shard's helper threads ([`crate::run_blocking`]).
//!
//! A file that is missing or cannot be read means no keys for that user, with one warning
//! per change: failing closed, because deleting the file or taking away its read
//! permission is how an operator may revoke access, and the proxy must never go on
//! granting what the file no longer grants. A line that does not parse, holds a key
//! type sshr does not support or an RSA key under `required_rsa_size` is skipped with a
//! warning naming the user, the file or configuration and the line, and the others are
//! used, as sshd does. (Inline lists are checked by the configuration; the table warns
//! about the entries it left out each time it is built.)

use std::collections::HashMap;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sshr_protocol::hostkey::{self, PrivateKey, PublicKey};

use crate::config::{AuthorizedKeys, Config};
use crate::hooks::{HookContext, HookError, Hooks, HooksFactory, HostKeyPolicy, Lookup, Upstream};

/// The resolved user table, shared by every shard.
#[derive(Debug, Default)]
pub struct StaticTable {
    users: HashMap<String, Entry>,
}

#[derive(Debug)]
struct Entry {
    /// Per target (`""`: the default server).
    servers: HashMap<String, Upstream>,
    authorized_keys: UserKeys,
}

#[derive(Debug)]
enum UserKeys {
    /// Inline in the configuration, or none.
    Fixed(Arc<[PublicKey]>),
    File(KeysFile),
}

impl StaticTable {
    /// Builds the table from `config.users`, reading every `authorized_keys_file`.
    pub fn from_config(config: &Config) -> StaticTable {
        let users = config
            .users
            .iter()
            .map(|user| {
                for skipped in &user.skipped_keys {
                    tracing::warn!(
                        user = user.name.as_str(),
                        config = config.origin.as_str(),
                        line = skipped.line,
                        entry = skipped.entry,
                        reason = skipped.reason.as_str(),
                        "skipping unusable authorized_keys entry"
                    );
                }
                let authorized_keys = match &user.authorized_keys {
                    AuthorizedKeys::None => UserKeys::Fixed(Arc::from([])),
                    AuthorizedKeys::Inline(keys) => UserKeys::Fixed(keys.as_slice().into()),
                    AuthorizedKeys::File(path) => UserKeys::File(KeysFile::read_now(
                        &user.name,
                        path,
                        config.required_rsa_size,
                    )),
                };
                if authorized_keys.last_read().is_empty() {
                    tracing::debug!(user = %user.name, "no authorized keys: public-key login impossible for this user");
                }
                let servers = user
                    .servers
                    .iter()
                    .map(|server| {
                        let host_key = if server.upstream_host_keys.is_empty() {
                            HostKeyPolicy::Unpinned
                        } else {
                            HostKeyPolicy::Pinned(server.upstream_host_keys.clone())
                        };
                        let upstream = Upstream {
                            addr: server.upstream.clone(),
                            user: server.upstream_user.clone(),
                            host_key,
                            tunnels: server.tunnel,
                        };
                        (server.target.clone(), upstream)
                    })
                    .collect();
                let entry = Entry {
                    servers,
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

    /// The default upstream of `user`, if the table has that user and it has one.
    pub fn upstream(&self, user: &str) -> Option<&Upstream> {
        self.users.get(user).and_then(|e| e.servers.get(""))
    }

    /// The authorized keys of `user` as last read (empty for an unknown user). A login
    /// asks the hooks instead, which read a changed file again first.
    pub fn authorized_keys(&self, user: &str) -> Vec<PublicKey> {
        self.users
            .get(user)
            .map_or_else(Vec::new, |e| e.authorized_keys.last_read().to_vec())
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

impl UserKeys {
    fn last_read(&self) -> Arc<[PublicKey]> {
        match self {
            UserKeys::Fixed(keys) => keys.clone(),
            UserKeys::File(file) => file.last().keys,
        }
    }
}

/// An `authorized_keys_file` and what was last read from it.
#[derive(Debug)]
struct KeysFile {
    user: String,
    path: PathBuf,
    /// `required_rsa_size`: smaller RSA keys in the file are skipped.
    required_rsa_size: usize,
    /// Shared by the shards; held only to copy or replace the value, never across I/O.
    last: Mutex<FileRead>,
}

/// One reading of an `authorized_keys_file`.
#[derive(Clone, Debug)]
struct FileRead {
    /// The file's identity and times when read; `None`: it could not be found.
    stamp: Option<Stamp>,
    keys: Arc<[PublicKey]>,
    /// Modified so shortly before it was read that a second change within the same
    /// timestamp tick would not show in the stamp: read it again next time.
    racy: bool,
}

/// What tells that a file may have changed: what sshd would see as a different file or
/// different content. Change time catches a `chmod` that made it readable again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// A file modified less than this before it was read is read again at the next login
/// (timestamps advance in ticks of a few milliseconds; this leaves a wide margin).
const RACY_WINDOW: Duration = Duration::from_secs(2);

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

impl FileRead {
    /// Whether a file now stamped `now` must be read again.
    fn is_stale(&self, now: Option<Stamp>) -> bool {
        self.racy || now != self.stamp
    }
}

impl KeysFile {
    /// Reads the file now, blocking (startup and reload).
    fn read_now(user: &str, path: &Path, required_rsa_size: usize) -> KeysFile {
        KeysFile {
            user: user.to_string(),
            path: path.to_path_buf(),
            required_rsa_size,
            last: Mutex::new(read_keys_file(user, path, required_rsa_size)),
        }
    }

    fn last(&self) -> FileRead {
        match self.last.lock() {
            Ok(last) => last.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The keys of the file as it is now: the last reading if the file has not changed
    /// since, else a new one.
    async fn current(&self) -> Arc<[PublicKey]> {
        let last = self.last();
        let now = std::fs::metadata(&self.path).ok().map(|m| Stamp::of(&m));
        if !last.is_stale(now) {
            return last.keys;
        }
        let (user, path, min) = (self.user.clone(), self.path.clone(), self.required_rsa_size);
        let read = crate::run_blocking(move || read_keys_file(&user, &path, min)).await;
        let keys = read.keys.clone();
        match self.last.lock() {
            Ok(mut last) => *last = read,
            Err(poisoned) => *poisoned.into_inner() = read,
        }
        keys
    }
}

/// Reads an authorized_keys file. Problems are warnings, never fatal: one user's broken
/// file must not keep every other user out. An unreadable file gives no keys.
fn read_keys_file(user: &str, path: &Path, required_rsa_size: usize) -> FileRead {
    let opened = std::fs::File::open(path).and_then(|file| {
        let meta = file.metadata()?;
        let text = io::read_to_string(file)?;
        Ok((meta, text))
    });
    let (meta, text) = match opened {
        Ok(read) => read,
        Err(e) => {
            tracing::warn!(
                user,
                path = %path.display(),
                error = %e,
                "cannot read authorized_keys_file: this user has no keys until it can be read"
            );
            return FileRead {
                stamp: std::fs::metadata(path).ok().map(|m| Stamp::of(&m)),
                keys: Arc::from([]),
                racy: false,
            };
        }
    };
    let racy = meta
        .modified()
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_none_or(|age| age < RACY_WINDOW);
    FileRead {
        stamp: Some(Stamp::of(&meta)),
        keys: parse_keys(user, path, &text, required_rsa_size).into(),
        racy,
    }
}

fn parse_keys(user: &str, path: &Path, text: &str, required_rsa_size: usize) -> Vec<PublicKey> {
    let mut keys = Vec::new();
    for entry in hostkey::parse_authorized_keys(text) {
        match entry {
            Ok(entry) if entry.key.check_rsa_size(required_rsa_size).is_err() => {
                tracing::warn!(
                    user,
                    path = %path.display(),
                    line = entry.line,
                    key_type = entry.key.algorithm_name(),
                    fingerprint = entry.key.fingerprint().as_str(),
                    bits = entry.key.rsa_bits(),
                    required_rsa_size,
                    "skipping authorized_keys line: RSA key smaller than required_rsa_size"
                )
            }
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
    async fn look_up(&self, ctx: &HookContext) -> Result<Lookup, HookError> {
        let Some(entry) = self.table.users.get(&ctx.user) else {
            return Ok(Lookup::Unknown);
        };
        let target = ctx.target.as_deref().unwrap_or("");
        let upstream = entry.servers.get(target).cloned();
        if upstream.is_none() && !target.is_empty() {
            return Ok(Lookup::Unknown);
        }
        let authorized_keys = self.fetch_authorized_keys(ctx).await?;
        Ok(match upstream {
            Some(upstream) => Lookup::Found {
                upstream,
                authorized_keys,
            },
            None => {
                let mut targets: Vec<String> = entry.servers.keys().cloned().collect();
                targets.sort();
                Lookup::Choose {
                    targets,
                    authorized_keys,
                }
            }
        })
    }

    async fn find_upstream(&self, ctx: &HookContext) -> Result<Option<Upstream>, HookError> {
        let target = ctx.target.as_deref().unwrap_or("");
        Ok(self
            .table
            .users
            .get(&ctx.user)
            .and_then(|e| e.servers.get(target))
            .cloned())
    }

    async fn fetch_authorized_keys(&self, ctx: &HookContext) -> Result<Vec<PublicKey>, HookError> {
        let keys = match self.table.users.get(&ctx.user).map(|e| &e.authorized_keys) {
            None => return Ok(Vec::new()),
            Some(UserKeys::Fixed(keys)) => keys.clone(),
            Some(UserKeys::File(file)) => file.current().await,
        };
        Ok(keys.to_vec())
    }

    async fn fetch_private_key(
        &self,
        _ctx: &HookContext,
        _upstream: &Upstream,
    ) -> Result<Rc<PrivateKey>, HookError> {
        Ok(self.upstream_key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::on_shard;
    use std::io::Write;

    fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
        futures_lite::future::block_on(future)
    }

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
        on_shard(|| async {
            let keys: Vec<_> = hooks
                .fetch_authorized_keys(&ctx("bob"))
                .await
                .unwrap()
                .iter()
                .map(|k| k.fingerprint())
                .collect();
            assert_eq!(
                keys,
                vec![bob1.public().fingerprint(), bob2.public().fingerprint()]
            );
            // Removed: bob has no keys any more (fail closed).
            std::fs::remove_file(&bob_file).unwrap();
            assert!(hooks
                .fetch_authorized_keys(&ctx("bob"))
                .await
                .unwrap()
                .is_empty());
        });

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

    fn fingerprints<'a>(keys: impl IntoIterator<Item = &'a PublicKey>) -> Vec<String> {
        keys.into_iter().map(|k| k.fingerprint()).collect()
    }

    fn table_with_file(dir: &Path) -> StaticTable {
        let text = r#"
listen = ["127.0.0.1:2222"]
host_keys = ["h"]
upstream_key = "u"

[[users]]
name = "dana"
upstream = "d:22"
authorized_keys_file = "dana.keys"
"#;
        StaticTable::from_config(&Config::parse(text, "t", dir).unwrap())
    }

    /// An RSA key under `required_rsa_size` in an authorized_keys file is skipped, at the
    /// first reading and when the file is read again at a login; the other keys stay.
    #[test]
    fn rsa_keys_under_the_required_size_are_skipped() {
        const RSA1024: &str = include_str!("../../protocol/tests/data/hostkey/rsa1024.pub");
        let rsa = PublicKey::from_openssh(RSA1024).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("erin.keys");
        let good = key().public();
        std::fs::write(&path, format!("{}{}\n", RSA1024, good.to_openssh())).unwrap();
        let table = |required: &str| {
            let text = format!(
                "{required}\nlisten = [\"127.0.0.1:2222\"]\nhost_keys = [\"h\"]\nupstream_key = \"u\"\n\
                 [[users]]\nname = \"erin\"\nupstream = \"e:22\"\nauthorized_keys_file = \"erin.keys\"\n"
            );
            StaticTable::from_config(&Config::parse(&text, "t", dir.path()).unwrap())
        };
        // OpenSSH's default, 1024 bits: both keys.
        assert_eq!(
            fingerprints(table("").authorized_keys("erin").iter()),
            fingerprints([&rsa, &good])
        );
        let strict = table("required_rsa_size = 2048");
        assert_eq!(
            fingerprints(strict.authorized_keys("erin").iter()),
            fingerprints([&good])
        );
        // Read again at a login after a change: still skipped.
        let other = key().public();
        std::fs::write(
            &path,
            format!("{}\n{}\n", other.to_openssh(), RSA1024.trim()),
        )
        .unwrap();
        let hooks = (strict.factory(Arc::new(key())))();
        on_shard(|| async {
            let keys = hooks.fetch_authorized_keys(&ctx("erin")).await.unwrap();
            assert_eq!(fingerprints(keys.iter()), fingerprints([&other]));
        });
    }

    /// Sets the file's modification time a minute back, out of the racy window, so that
    /// only its stamp can tell the next change.
    fn age(path: &Path) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(60))
            .unwrap();
    }

    #[test]
    fn a_changed_file_is_read_again_at_the_next_login() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dana.keys");
        let (k1, k2, k3) = (key().public(), key().public(), key().public());
        std::fs::write(&path, format!("{}\n", k1.to_openssh())).unwrap();
        age(&path);
        let table = table_with_file(dir.path());
        assert_eq!(
            fingerprints(&table.authorized_keys("dana")),
            fingerprints([&k1])
        );
        let hooks = table.factory(Arc::new(key()))();
        on_shard(|| async {
            let dana = ctx("dana");
            let fetch = || hooks.fetch_authorized_keys(&dana);

            // Appended, as `ssh-copy-id` does.
            let mut file = std::fs::File::options().append(true).open(&path).unwrap();
            writeln!(file, "{}", k2.to_openssh()).unwrap();
            drop(file);
            age(&path);
            assert_eq!(
                fingerprints(&fetch().await.unwrap()),
                fingerprints([&k1, &k2])
            );

            // Rewritten in place to the same size and modification time: the change time
            // still tells.
            let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
            std::fs::write(&path, format!("{}\n{}\n", k3.to_openssh(), k2.to_openssh())).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(modified)
                .unwrap();
            assert_eq!(
                fingerprints(&fetch().await.unwrap()),
                fingerprints([&k3, &k2])
            );

            // Replaced by rename (a new inode), as editors save.
            let new = dir.path().join("dana.keys.new");
            std::fs::write(&new, format!("{}\n", k1.to_openssh())).unwrap();
            std::fs::rename(&new, &path).unwrap();
            assert_eq!(fingerprints(&fetch().await.unwrap()), fingerprints([&k1]));

            // No longer text: no keys, not the last good ones.
            std::fs::write(&path, b"\xff\xfe not utf-8\n").unwrap();
            assert!(fetch().await.unwrap().is_empty());
            // Fixed again.
            std::fs::write(&path, format!("{}\n", k2.to_openssh())).unwrap();
            assert_eq!(fingerprints(&fetch().await.unwrap()), fingerprints([&k2]));
        });
    }

    #[test]
    fn a_file_is_read_again_only_when_its_stamp_changed_or_it_was_racy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "x").unwrap();
        let stamp = Some(Stamp::of(&std::fs::metadata(&path).unwrap()));
        let read = FileRead {
            stamp,
            keys: Arc::from([]),
            racy: false,
        };
        assert!(!read.is_stale(stamp));
        assert!(read.is_stale(None), "removed");
        let other = stamp.map(|s| Stamp {
            ino: s.ino + 1,
            ..s
        });
        assert!(read.is_stale(other), "replaced");
        let grown = stamp.map(|s| Stamp { size: 2, ..s });
        assert!(read.is_stale(grown));
        let touched = stamp.map(|s| Stamp {
            ctime: (s.ctime.0 + 1, 0),
            ..s
        });
        assert!(read.is_stale(touched), "chmod");
        let racy = FileRead { racy: true, ..read };
        assert!(racy.is_stale(stamp));
        let absent = FileRead {
            stamp: None,
            keys: Arc::from([]),
            racy: false,
        };
        assert!(
            !absent.is_stale(None),
            "still absent: no read, no second warning"
        );

        // A file just written is racy; an old one is not.
        assert!(read_keys_file("u", &path, hostkey::MIN_RSA_BITS).racy);
        age(&path);
        assert!(!read_keys_file("u", &path, hostkey::MIN_RSA_BITS).racy);
    }
}
