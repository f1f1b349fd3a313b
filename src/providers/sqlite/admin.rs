//! Changes to a `kind = "sqlite"` database, for `sshr db`: the operator's way to run a
//! fleet without writing SQL.
//!
//! Every change is checked as a lookup would check it ([`schema::upstream`],
//! [`hostkey::parse_authorized_keys`]) before it is written, so what `sshr db` accepts
//! a login can use: a bad address or key line is refused here, with the reason, instead
//! of failing logins later. Each change is one transaction; a running proxy sees it at
//! the next login.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use sshr_protocol::hostkey::{self, AuthorizedKey};

use super::{check_schema, create_if_missing, describe, schema, UserRow};
use crate::hooks::HookError;

/// How long a change waits for another writer (a proxy never holds a lock for long; a
/// `sqlite3` shell in a transaction might).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a change was refused. Each says, in one line, what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The database cannot be opened, read or written (the message names the file).
    #[error("{0}")]
    Database(String),
    /// What was asked for is unusable: a bad address, key line or name.
    #[error("{0}")]
    Invalid(String),
    /// No such user, target or key.
    #[error("{0}")]
    NotFound(String),
    /// The user already has that target.
    #[error("{0}")]
    Exists(String),
}

/// A user's server to add ([`Admin::add_user`]).
#[derive(Clone, Debug, Default)]
pub struct NewUser {
    /// The login name clients use.
    pub name: String,
    /// `""`: the user's default server; else the name clients add after the separator.
    pub target: String,
    /// `host:port`.
    pub upstream: String,
    /// The user name on the upstream; `None`: the same as `name`.
    pub upstream_user: Option<String>,
    /// Public keys the upstream may present (OpenSSH lines); empty: unpinned.
    pub host_keys: Vec<String>,
    /// Tunnel policy word; `None`: the configuration's `tunnels.default`.
    pub tunnel: Option<String>,
    /// authorized_keys lines to add with the user (as for [`Admin::add_keys`]).
    pub keys: Vec<String>,
}

/// A move of a user's server ([`Admin::set_upstream`]).
#[derive(Clone, Debug, Default)]
pub struct UpstreamChange {
    /// The new `host:port`.
    pub upstream: String,
    /// `None`: keep the upstream user name.
    pub upstream_user: Option<String>,
    /// `None`: keep the pinned host keys; `Some(empty)`: unpin.
    pub host_keys: Option<Vec<String>>,
}

/// One user, as [`Admin::list`] shows it. Values are shown even when a lookup would
/// refuse them (so that they can be found and fixed); a value that is not text is
/// shown as `<blob of N bytes>` or the number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub name: String,
    /// Its rows of `users`, the default (`target = ''`) first.
    pub servers: Vec<UserRow>,
    pub keys: Vec<KeyListing>,
}

/// One key line of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyListing {
    /// `SHA256:...`; `None` when the line is not a usable key (a lookup skips it).
    pub fingerprint: Option<String>,
    /// The key's comment, or for an unusable line why it is unusable.
    pub comment: String,
}

/// What [`Admin::remove_user`] removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removed {
    /// Rows of `users` (servers).
    pub servers: usize,
    /// Key lines: all of the user's when no server of it is left.
    pub keys: usize,
}

/// What [`Admin::add_keys`] did with each key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeysAdded {
    /// Fingerprints of the keys added.
    pub added: Vec<String>,
    /// Fingerprints of the keys the user already had (left as they were).
    pub present: Vec<String>,
}

/// A database opened for changes.
pub struct Admin {
    conn: Connection,
    path: PathBuf,
}

impl Admin {
    /// `sshr db init`: creates the database (in WAL mode, see [`super`]) if the file is
    /// missing, else adds the tables of [`schema::SCHEMA`] that it lacks (existing ones
    /// are left as they are). Returns whether the file was created.
    pub fn init(path: &Path) -> Result<(Admin, bool), AdminError> {
        let created = create_if_missing(path).map_err(AdminError::Database)?;
        let admin = Admin::connect(path)?;
        if !created {
            admin
                .conn
                .execute_batch(&format!("BEGIN; {} COMMIT;", schema::SCHEMA))
                .map_err(|e| admin.db(&e))?;
        }
        check_schema(&admin.conn, path).map_err(AdminError::Database)?;
        Ok((admin, created))
    }

    /// Opens an existing database with the schema.
    pub fn open(path: &Path) -> Result<Admin, AdminError> {
        if !path.exists() {
            return Err(AdminError::Database(format!(
                "sqlite {}: no such file (create it with `sshr db init`)",
                path.display()
            )));
        }
        let admin = Admin::connect(path)?;
        check_schema(&admin.conn, path).map_err(AdminError::Database)?;
        Ok(admin)
    }

    fn connect(path: &Path) -> Result<Admin, AdminError> {
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.pragma_update(None, "trusted_schema", false)?;
            Ok(conn)
        };
        let conn = open().map_err(|e| AdminError::Database(describe(path, &e)))?;
        Ok(Admin {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self, e: &rusqlite::Error) -> AdminError {
        AdminError::Database(describe(&self.path, e))
    }

    /// `sshr db add-user`: a server of a user (its default one, or a named target),
    /// with key lines. Refused if the user already has that target, or if anything
    /// would make its logins fail.
    pub fn add_user(&mut self, user: &NewUser) -> Result<KeysAdded, AdminError> {
        check_word("user name", &user.name, false)?;
        check_word("target", &user.target, true)?;
        let upstream_user = user.upstream_user.as_deref().unwrap_or(&user.name);
        let host_keys = joined_keys(&user.host_keys);
        check_upstream(
            &user.name,
            &user.upstream,
            upstream_user,
            host_keys.as_deref(),
            user.tunnel.as_deref(),
        )?;
        let keys = parse_key_lines(&user.keys)?;
        let path = self.path.clone();
        let db = |e: rusqlite::Error| AdminError::Database(describe(&path, &e));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let existing: Option<String> = tx
            .query_row(
                "SELECT upstream FROM users WHERE name = ?1 AND target = ?2",
                (&user.name, &user.target),
                |r| Ok(shown(r.get_ref(0)?)),
            )
            .optional()
            .map_err(db)?;
        if let Some(upstream) = existing {
            return Err(AdminError::Exists(format!(
                "user {} already has {} ({upstream}); move it with `sshr db set-upstream`",
                user.name,
                server_name(&user.target)
            )));
        }
        tx.execute(
            "INSERT INTO users (name, target, upstream, upstream_user, upstream_host_key, tunnel) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            (
                &user.name,
                &user.target,
                &user.upstream,
                upstream_user,
                &host_keys,
                &user.tunnel,
            ),
        )
        .map_err(db)?;
        let added = insert_keys(&tx, &user.name, &keys).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(added)
    }

    /// `sshr db add-key`: authorized_keys lines (one key each, no options; blank lines
    /// and `#` comments skipped) for a user that exists. All are checked before any is
    /// written; keys the user already has are left as they are.
    pub fn add_keys(&mut self, name: &str, lines: &[String]) -> Result<KeysAdded, AdminError> {
        let keys = parse_key_lines(lines)?;
        if keys.is_empty() {
            return Err(AdminError::Invalid("no key line given".into()));
        }
        let path = self.path.clone();
        let db = |e: rusqlite::Error| AdminError::Database(describe(&path, &e));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        if targets(&tx, name).map_err(db)?.is_empty() {
            return Err(unknown_user(name));
        }
        let added = insert_keys(&tx, name, &keys).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(added)
    }

    /// `sshr db list`: every user (or only `name`), sorted by name, with the users
    /// that have key lines but no server.
    pub fn list(&self, name: Option<&str>) -> Result<Vec<Listing>, AdminError> {
        let db = |e: rusqlite::Error| self.db(&e);
        let mut users: BTreeMap<String, Listing> = BTreeMap::new();
        let mut servers = self
            .conn
            .prepare(
                "SELECT name, target, upstream, upstream_user, upstream_host_key, tunnel \
                 FROM users WHERE ?1 IS NULL OR name = ?1 ORDER BY name, target",
            )
            .map_err(db)?;
        let mut rows = servers.query([name]).map_err(db)?;
        while let Some(r) = rows.next().map_err(db)? {
            let row = UserRow {
                target: shown(r.get_ref(1).map_err(db)?),
                upstream: shown(r.get_ref(2).map_err(db)?),
                upstream_user: shown(r.get_ref(3).map_err(db)?),
                upstream_host_key: shown_optional(r.get_ref(4).map_err(db)?),
                tunnel: shown_optional(r.get_ref(5).map_err(db)?),
            };
            listing(&mut users, shown(r.get_ref(0).map_err(db)?))
                .servers
                .push(row);
        }
        let mut keys = self
            .conn
            .prepare("SELECT name, key FROM user_keys WHERE ?1 IS NULL OR name = ?1")
            .map_err(db)?;
        let mut rows = keys.query([name]).map_err(db)?;
        while let Some(r) = rows.next().map_err(db)? {
            let line = shown(r.get_ref(1).map_err(db)?);
            let key = match parse_key_line(&line) {
                Ok(entry) => KeyListing {
                    fingerprint: Some(entry.key.fingerprint()),
                    comment: entry.comment,
                },
                Err(why) => KeyListing {
                    fingerprint: None,
                    comment: why,
                },
            };
            listing(&mut users, shown(r.get_ref(0).map_err(db)?))
                .keys
                .push(key);
        }
        if let Some(name) = name {
            if users.is_empty() {
                return Err(unknown_user(name));
            }
        }
        Ok(users.into_values().collect())
    }

    /// `sshr db remove-user`: the user's servers and key lines, or with `target` only
    /// that server (and the key lines too if it was the user's last).
    pub fn remove_user(&mut self, name: &str, target: Option<&str>) -> Result<Removed, AdminError> {
        let path = self.path.clone();
        let db = |e: rusqlite::Error| AdminError::Database(describe(&path, &e));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let servers = match target {
            Some(target) => {
                let n = tx
                    .execute(
                        "DELETE FROM users WHERE name = ?1 AND target = ?2",
                        (name, target),
                    )
                    .map_err(db)?;
                if n == 0 {
                    return Err(unknown_target(&tx, name, target).map_err(db)?);
                }
                n
            }
            None => tx
                .execute("DELETE FROM users WHERE name = ?1", [name])
                .map_err(db)?,
        };
        let keys = if targets(&tx, name).map_err(db)?.is_empty() {
            tx.execute("DELETE FROM user_keys WHERE name = ?1", [name])
                .map_err(db)?
        } else {
            0
        };
        if servers == 0 && keys == 0 {
            return Err(unknown_user(name));
        }
        tx.commit().map_err(db)?;
        Ok(Removed { servers, keys })
    }

    /// `sshr db remove-key`: the user's key lines holding the key `which` names: a
    /// fingerprint (`SHA256:...`, as `ssh-keygen -l` and `sshr db list` show it), or a
    /// key line (its comment does not matter). A line that is not a key is removed by
    /// its exact text. Returns how many lines were removed.
    pub fn remove_key(&mut self, name: &str, which: &str) -> Result<usize, AdminError> {
        let which = which.trim();
        let wanted_fingerprint = if which.starts_with("SHA256:") {
            Some(which.to_owned())
        } else {
            parse_key_line(which)
                .ok()
                .map(|entry| entry.key.fingerprint())
        };
        let path = self.path.clone();
        let db = |e: rusqlite::Error| AdminError::Database(describe(&path, &e));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let lines: Vec<String> = {
            let mut statement = tx
                .prepare("SELECT key FROM user_keys WHERE name = ?1")
                .map_err(db)?;
            let rows = statement
                .query_map([name], |r| Ok(shown(r.get_ref(0)?)))
                .map_err(db)?;
            rows.collect::<Result<_, _>>().map_err(db)?
        };
        let matching: Vec<&String> = lines
            .iter()
            .filter(|line| match &wanted_fingerprint {
                Some(fingerprint) => {
                    parse_key_line(line).is_ok_and(|entry| entry.key.fingerprint() == *fingerprint)
                }
                None => line.trim() == which,
            })
            .collect();
        if matching.is_empty() {
            if lines.is_empty() && targets(&tx, name).map_err(db)?.is_empty() {
                return Err(unknown_user(name));
            }
            return Err(AdminError::NotFound(format!(
                "user {name} has no key {} (`sshr db list {name}` shows its keys)",
                wanted_fingerprint.as_deref().unwrap_or(which)
            )));
        }
        let mut removed = 0;
        for line in matching {
            removed += tx
                .execute(
                    "DELETE FROM user_keys WHERE name = ?1 AND key = ?2",
                    (name, line),
                )
                .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(removed)
    }

    /// `sshr db set-upstream`: moves a server of a user (`target`: `""` for its
    /// default one) to another address, optionally with another upstream user name or
    /// host keys. The result is checked like a lookup would check it.
    pub fn set_upstream(
        &mut self,
        name: &str,
        target: &str,
        change: &UpstreamChange,
    ) -> Result<(), AdminError> {
        let path = self.path.clone();
        let db = |e: rusqlite::Error| AdminError::Database(describe(&path, &e));
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let current = tx
            .query_row(
                "SELECT upstream_user, upstream_host_key, tunnel FROM users \
                 WHERE name = ?1 AND target = ?2",
                (name, target),
                |r| {
                    Ok((
                        shown(r.get_ref(0)?),
                        shown_optional(r.get_ref(1)?),
                        shown_optional(r.get_ref(2)?),
                    ))
                },
            )
            .optional()
            .map_err(db)?;
        let Some((upstream_user, host_keys, tunnel)) = current else {
            return Err(unknown_target(&tx, name, target).map_err(db)?);
        };
        let upstream_user = change.upstream_user.clone().unwrap_or(upstream_user);
        let host_keys = match &change.host_keys {
            Some(keys) => joined_keys(keys),
            None => host_keys,
        };
        check_upstream(
            name,
            &change.upstream,
            &upstream_user,
            host_keys.as_deref(),
            tunnel.as_deref(),
        )?;
        tx.execute(
            "UPDATE users SET upstream = ?3, upstream_user = ?4, upstream_host_key = ?5 \
             WHERE name = ?1 AND target = ?2",
            (name, target, &change.upstream, &upstream_user, &host_keys),
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(())
    }
}

fn listing(users: &mut BTreeMap<String, Listing>, name: String) -> &mut Listing {
    users.entry(name.clone()).or_insert_with(|| Listing {
        name,
        servers: Vec::new(),
        keys: Vec::new(),
    })
}

/// "the default server" or "target web2".
fn server_name(target: &str) -> String {
    if target.is_empty() {
        "a default server".into()
    } else {
        format!("target {target}")
    }
}

fn unknown_user(name: &str) -> AdminError {
    AdminError::NotFound(format!(
        "no user {name} in the database (`sshr db list` shows the users)"
    ))
}

/// The error for a target that `name` does not have, listing those it has.
fn unknown_target(conn: &Connection, name: &str, target: &str) -> rusqlite::Result<AdminError> {
    let have = targets(conn, name)?;
    if have.is_empty() {
        return Ok(unknown_user(name));
    }
    let shown: Vec<&str> = have
        .iter()
        .map(|t| {
            if t.is_empty() {
                "(default)"
            } else {
                t.as_str()
            }
        })
        .collect();
    Ok(AdminError::NotFound(format!(
        "user {name} has no {}; it has: {} (name one with --target)",
        server_name(target).trim_start_matches("a "),
        shown.join(", ")
    )))
}

/// The targets of `name` (`""` for its default server).
fn targets(conn: &Connection, name: &str) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare("SELECT target FROM users WHERE name = ?1 ORDER BY target")?;
    let rows = statement.query_map([name], |r| Ok(shown(r.get_ref(0)?)))?;
    rows.collect()
}

/// Inserts the keys the user does not have yet.
fn insert_keys(
    conn: &Connection,
    name: &str,
    keys: &[(String, AuthorizedKey)],
) -> rusqlite::Result<KeysAdded> {
    let mut have: Vec<String> = {
        let mut statement = conn.prepare("SELECT key FROM user_keys WHERE name = ?1")?;
        let rows = statement.query_map([name], |r| Ok(shown(r.get_ref(0)?)))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()?
            .iter()
            .filter_map(|line| parse_key_line(line).ok())
            .map(|entry| entry.key.fingerprint())
            .collect()
    };
    let mut done = KeysAdded::default();
    for (line, entry) in keys {
        let fingerprint = entry.key.fingerprint();
        if have.contains(&fingerprint) {
            done.present.push(fingerprint);
            continue;
        }
        conn.execute(
            "INSERT INTO user_keys (name, key) VALUES (?1, ?2)",
            (name, line),
        )?;
        have.push(fingerprint.clone());
        done.added.push(fingerprint);
    }
    Ok(done)
}

/// A user name or target: no spaces or control characters (they could not be typed
/// as a login name), not longer than a lookup reads.
fn check_word(what: &str, value: &str, may_be_empty: bool) -> Result<(), AdminError> {
    if value.is_empty() && !may_be_empty {
        return Err(AdminError::Invalid(format!("the {what} is empty")));
    }
    if value.len() > schema::MAX_FIELD {
        return Err(AdminError::Invalid(format!(
            "the {what} is longer than {} bytes",
            schema::MAX_FIELD
        )));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AdminError::Invalid(format!(
            "the {what} {value:?} has a space or control character"
        )));
    }
    Ok(())
}

/// Checks a server as a lookup would ([`schema::upstream`]).
fn check_upstream(
    name: &str,
    addr: &str,
    upstream_user: &str,
    host_keys: Option<&str>,
    tunnel: Option<&str>,
) -> Result<(), AdminError> {
    let host_keys: Vec<&str> = host_keys
        .map(|k| k.lines().filter(|l| !l.trim().is_empty()).collect())
        .unwrap_or_default();
    match schema::upstream(name, addr, upstream_user, &host_keys, tunnel) {
        Ok(_) => Ok(()),
        Err(HookError::InvalidData(why)) => Err(AdminError::Invalid(why)),
        Err(other) => Err(AdminError::Invalid(other.to_string())),
    }
}

/// The `upstream_host_key` value of these key lines: `None` for none.
fn joined_keys(keys: &[String]) -> Option<String> {
    let lines: Vec<&str> = keys
        .iter()
        .flat_map(|k| k.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// The keys of authorized_keys lines (blank lines and `#` comments skipped), or the
/// first line that is not usable, with its number when there are several.
fn parse_key_lines(lines: &[String]) -> Result<Vec<(String, AuthorizedKey)>, AdminError> {
    let mut keys = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = parse_key_line(line).map_err(|why| {
            if lines.len() == 1 {
                AdminError::Invalid(why)
            } else {
                AdminError::Invalid(format!("key line {}: {why}", index + 1))
            }
        })?;
        keys.push((line.to_owned(), entry));
    }
    Ok(keys)
}

/// One authorized_keys line as a lookup uses it ([`schema::authorized_keys`]): a key,
/// without options (which the proxy does not enforce).
fn parse_key_line(line: &str) -> Result<AuthorizedKey, String> {
    let line = line.trim();
    if line.len() > schema::MAX_FIELD {
        return Err(format!("key line longer than {} bytes", schema::MAX_FIELD));
    }
    if line.contains('\n') || line.contains('\r') {
        return Err("one key per line".into());
    }
    match hostkey::parse_authorized_keys(line).into_iter().next() {
        None => Err("empty key line".into()),
        Some(Err(e)) => Err(format!("key line does not parse: {e}")),
        Some(Ok(entry)) if entry.options.is_some() => Err(
            "key line has options, which sshr does not enforce: remove them (everything before the key type)"
                .into(),
        ),
        Some(Ok(entry)) => Ok(entry),
    }
}

/// A value as `list` shows it: text as it is, anything else described.
fn shown(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => "<NULL>".into(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(x) => x.to_string(),
        ValueRef::Text(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        ValueRef::Blob(bytes) => format!("<blob of {} bytes>", bytes.len()),
    }
}

fn shown_optional(value: ValueRef<'_>) -> Option<String> {
    match value {
        ValueRef::Null => None,
        other => Some(shown(other)),
    }
}
