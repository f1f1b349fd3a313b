//! `kind = "sqlite"`: the user table in a local SQLite file, with the schema of
//! [`super::schema`]. [`Admin`] is what `sshr db` writes it with.
//!
//! Choices, and why:
//! - **A new file is created in WAL mode** (`PRAGMA journal_mode=WAL`, which is stored in
//!   the file): a reader then never waits for a writer, so `sshr db` or `sqlite3`
//!   changing a user does not hold up logins. A file that already exists is never
//!   altered: the operator owns it, and its journal mode with it.
//! - **No caching here**: every lookup reads the file, so a change is seen by the next
//!   login. The chain ([`super::chain`]) caches when the operator asks for it.
//! - **Idle connections are kept for reuse** (`pool.rs`): a lookup then costs two
//!   indexed reads instead of opening the file and parsing its schema. The file's
//!   identity (device and inode) is checked at every lookup, so a database replaced by
//!   `mv` is read from the new file, and a deleted one fails instead of being read from
//!   a file that is gone. Replacing a file in WAL mode that way is not safe whatever
//!   the reader does (SQLite pairs a database with its `-wal` file by name, and does
//!   not end the WAL of a moved file): copy into it with
//!   `sqlite3 users.db ".restore new.db"` instead.
//! - **Bounded**: rows and keys are read with `LIMIT`s, one text value is copied up to
//!   [`schema::MAX_FIELD`] (a longer one stays too long for [`schema::from_rows`]),
//!   SQLite refuses values over [`MAX_VALUE_BYTES`], and a lookup is interrupted at its
//!   timeout (waiting for a lock included) so that it ends by itself as
//!   [`Backend`] requires.
//! - Lookup connections run with `query_only` and `trusted_schema = OFF`: the proxy
//!   never writes the file, and a view in it cannot make the proxy call functions with
//!   side effects.

mod admin;
mod pool;

pub use admin::{
    Admin, AdminError, KeyListing, KeysAdded, Listing, NewUser, Removed, UpstreamChange,
};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use sshr_protocol::text::Untrusted;

use super::schema::{self, UserRow};
use super::Backend;
use crate::hooks::{HookContext, HookError, Lookup};
use pool::Pool;

/// How long a lookup may take (waiting for a lock included) when the provider's
/// `timeout_ms` is not given to [`Sqlite::timeout`]: the default `limits.hook_timeout_secs`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest text or blob SQLite hands a lookup connection (`SQLITE_LIMIT_LENGTH`); a
/// row holding a longer value is an unusable answer.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// The rows of a user, the default one (`target = ''`) first, as the primary key orders
/// them. One more than [`schema::MAX_TARGETS`], so that the default row is always read.
const ROWS_SQL: &str = "SELECT target, upstream, upstream_user, upstream_host_key, tunnel \
     FROM users WHERE name = ?1 ORDER BY target LIMIT ?2";
/// The row of one named target of a user.
const TARGET_SQL: &str = "SELECT target, upstream, upstream_user, upstream_host_key, tunnel \
     FROM users WHERE name = ?1 AND target = ?2 LIMIT 1";
const KEYS_SQL: &str = "SELECT key FROM user_keys WHERE name = ?1 LIMIT ?2";

/// SQLite virtual-machine steps between two looks at the clock during a lookup.
const PROGRESS_STEPS: i32 = 1000;

/// A SQLite database with the schema of [`super::schema`].
pub struct Sqlite {
    path: PathBuf,
    timeout: Duration,
    pool: Pool,
}

impl Sqlite {
    /// Opens the database at `path`: creates it with [`schema::SCHEMA`] if the file is
    /// missing (its directory must exist), else checks that it has the `users` and
    /// `user_keys` tables with their columns, without changing anything in it.
    ///
    /// Lookups wait for a lock at most [`DEFAULT_TIMEOUT`]; see [`Sqlite::timeout`].
    pub fn open(path: &Path) -> Result<Sqlite, String> {
        create_if_missing(path)?;
        let conn = pool::connect(path, DEFAULT_TIMEOUT).map_err(|e| describe(path, &e))?;
        check_schema(&conn, path)?;
        let pool = Pool::new(path);
        Ok(Sqlite {
            path: path.to_path_buf(),
            timeout: DEFAULT_TIMEOUT,
            pool,
        })
    }

    /// The same database, with lookups ending at `limit` (the provider's `timeout_ms`):
    /// a lookup still waiting for a lock, or still reading, then fails.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    fn read(
        &self,
        conn: &mut Connection,
        user: &str,
        target: Option<&str>,
    ) -> Result<(Vec<UserRow>, Vec<String>), HookError> {
        // The busy timeout (set when the connection was opened) bounds the wait for a
        // lock; this bounds the reading.
        let deadline = Instant::now() + self.timeout;
        conn.progress_handler(PROGRESS_STEPS, Some(move || Instant::now() >= deadline))
            .map_err(|e| self.error(user, &e.into()))?;
        // One snapshot for the rows and the keys: a change made between the two reads
        // is seen whole or not at all.
        let tx = conn
            .unchecked_transaction()
            .map_err(|e| self.error(user, &e.into()))?;
        let rows = match target {
            Some(target) => read_rows(&tx, TARGET_SQL, (user, target)),
            None => read_rows(&tx, ROWS_SQL, (user, schema::MAX_TARGETS as i64 + 1)),
        }
        .map_err(|e| self.error(user, &e))?;
        let keys = read_keys(&tx, user).map_err(|e| self.error(user, &e))?;
        // Ends the read transaction (it wrote nothing).
        drop(tx);
        Ok((rows, keys))
    }

    /// The error of a failed lookup: what SQLite said, with the path.
    fn error(&self, user: &str, e: &ReadError) -> HookError {
        match e {
            ReadError::Type(what) => HookError::InvalidData(format!(
                "user {}: {what} in {}",
                Untrusted(user),
                self.path.display()
            )),
            ReadError::Sql(e) => match e.sqlite_error_code() {
                Some(ErrorCode::OperationInterrupted) => HookError::Timeout,
                Some(ErrorCode::TooBig) => HookError::InvalidData(format!(
                    "user {}: a value longer than {MAX_VALUE_BYTES} bytes in {}",
                    Untrusted(user),
                    self.path.display()
                )),
                _ => HookError::Unavailable(describe(&self.path, e)),
            },
        }
    }
}

impl Backend for Sqlite {
    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }

    fn look_up(&self, ctx: &HookContext) -> Result<Lookup, HookError> {
        let mut idle = self
            .pool
            .get(self.timeout)
            .map_err(HookError::Unavailable)?;
        let (rows, keys) = self.read(idle.conn(), &ctx.user, ctx.target.as_deref())?;
        // Only a connection that just worked is kept: after an error it is dropped, and
        // the next lookup opens the file afresh.
        self.pool.put(idle);
        schema::from_rows(&ctx.user, ctx.target.as_deref(), &rows, &keys)
    }
}

/// Why reading a user failed: SQLite, or a value of the wrong type.
enum ReadError {
    Sql(rusqlite::Error),
    Type(String),
}

impl From<rusqlite::Error> for ReadError {
    fn from(e: rusqlite::Error) -> Self {
        ReadError::Sql(e)
    }
}

fn read_rows(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<UserRow>, ReadError> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let mut out = Vec::new();
    // The LIMIT bounds this; the count guards against a `users` view that ignores it.
    while let Some(row) = rows.next()? {
        if out.len() > schema::MAX_TARGETS {
            break;
        }
        out.push(UserRow {
            target: text(row.get_ref(0)?, "users.target")?,
            upstream: text(row.get_ref(1)?, "users.upstream")?,
            upstream_user: text(row.get_ref(2)?, "users.upstream_user")?,
            upstream_host_key: optional_text(row.get_ref(3)?, "users.upstream_host_key")?,
            tunnel: optional_text(row.get_ref(4)?, "users.tunnel")?,
        });
    }
    Ok(out)
}

/// The user's key lines. A value that is not text is left out with a warning, like a
/// line that does not parse ([`schema::authorized_keys`]).
fn read_keys(conn: &Connection, user: &str) -> Result<Vec<String>, ReadError> {
    let mut statement = conn.prepare_cached(KEYS_SQL)?;
    let mut rows = statement.query((user, schema::MAX_KEYS as i64 + 1))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        if out.len() > schema::MAX_KEYS {
            break;
        }
        match text(row.get_ref(0)?, "user_keys.key") {
            Ok(line) => out.push(line),
            Err(ReadError::Type(what)) => {
                tracing::warn!(user = %Untrusted(user), "skipping key line: {what}")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// A text value, copied up to just past [`schema::MAX_FIELD`] bytes: a longer value is
/// still longer than the limit, so [`schema::from_rows`] judges it the same.
fn text(value: ValueRef<'_>, column: &str) -> Result<String, ReadError> {
    match value {
        ValueRef::Text(bytes) => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| ReadError::Type(format!("{column} is not UTF-8")))?;
            let mut end = text.len().min(schema::MAX_FIELD + 1);
            while !text.is_char_boundary(end) {
                end += 1;
            }
            Ok(text[..end].to_owned())
        }
        other => Err(ReadError::Type(format!(
            "{column} is {}, not text",
            type_name(other)
        ))),
    }
}

fn optional_text(value: ValueRef<'_>, column: &str) -> Result<Option<String>, ReadError> {
    match value {
        ValueRef::Null => Ok(None),
        other => text(other, column).map(Some),
    }
}

fn type_name(value: ValueRef<'_>) -> &'static str {
    match value {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    }
}

/// One line for a SQLite error on the database at `path`.
fn describe(path: &Path, e: &rusqlite::Error) -> String {
    format!("sqlite {}: {}", path.display(), one_line(&e.to_string()))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Creates the database at `path` with the schema, in WAL mode, if no file is there.
/// Returns whether it did.
fn create_if_missing(path: &Path) -> Result<bool, String> {
    match std::fs::metadata(path) {
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("sqlite {}: {e}", path.display())),
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "sqlite {}: directory {} does not exist (sshr creates the database file, not its directory)",
            path.display(),
            dir.display()
        ));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let create = || -> rusqlite::Result<()> {
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(DEFAULT_TIMEOUT)?;
        // Returns the mode now in force; WAL is refused only by file systems without
        // shared memory, where the default journal still works.
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.execute_batch(&format!("BEGIN; {} COMMIT;", schema::SCHEMA))
    };
    create().map_err(|e| format!("cannot create {}", describe(path, &e)))?;
    Ok(true)
}

/// Fails unless the database has the tables and columns that lookups read. Preparing
/// the lookup statements checks exactly those, and reads the file (so a file that is
/// not a database fails here, at start, rather than at the first login).
fn check_schema(conn: &Connection, path: &Path) -> Result<(), String> {
    let has = |name: &str| -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type IN ('table', 'view') AND name = ?1",
            [name],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
    };
    for table in ["users", "user_keys"] {
        match has(table) {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "sqlite {}: no `{table}` table (`sshr db init` adds the missing tables)",
                    path.display()
                ))
            }
            Err(e) => return Err(describe(path, &e)),
        }
    }
    for sql in [ROWS_SQL, TARGET_SQL, KEYS_SQL] {
        conn.prepare(sql).map_err(|e| {
            format!(
                "{} (the columns are those of `sshr db init`)",
                describe(path, &e)
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
