//! The idle connections of one database file, reused by lookups.
//!
//! A SQLite connection is a handle on a local file: it does not go stale the way a
//! network connection does, needs no reconnection backoff and opens in microseconds. So
//! this is a list of idle connections behind a mutex rather than a general pool (which
//! would bring its own threads and could not tell that the file was replaced). At most
//! as many connections exist as lookups run at once, which the shards' helper threads
//! bound; at most [`MAX_IDLE`] are kept.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::limits::Limit;
use rusqlite::{Connection, OpenFlags};

use super::{describe, MAX_VALUE_BYTES};

/// Idle connections kept for reuse; more are closed when their lookup ends.
const MAX_IDLE: usize = 16;

/// Which file a path named when a connection was opened: a file replaced (`mv`) or
/// deleted since then is another one, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

/// A connection taken from the pool, and the file it reads.
pub(super) struct Idle {
    conn: Connection,
    file: FileId,
}

impl Idle {
    pub(super) fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

pub(super) struct Pool {
    path: PathBuf,
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    pub(super) fn new(path: &Path) -> Pool {
        Pool {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A connection to the file now at the path: an idle one if one reads that file,
    /// else a new one waiting for locks at most `busy_timeout`. Connections to a file
    /// that is no longer there are closed.
    pub(super) fn get(&self, busy_timeout: Duration) -> Result<Idle, String> {
        let meta = std::fs::metadata(&self.path)
            .map_err(|e| format!("sqlite {}: {e}", self.path.display()))?;
        let file = FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|c| c.file == file);
            if let Some(reused) = idle.pop() {
                drop(idle);
                reused
                    .conn
                    .busy_timeout(busy_timeout)
                    .map_err(|e| describe(&self.path, &e))?;
                return Ok(reused);
            }
        }
        let conn = connect(&self.path, busy_timeout).map_err(|e| describe(&self.path, &e))?;
        Ok(Idle { conn, file })
    }

    /// Keeps `conn` for the next lookup (it worked), unless enough are kept.
    pub(super) fn put(&self, conn: Idle) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }
}

/// A lookup connection to the existing file at `path` (never creating it).
///
/// Opened read-write so that SQLite can create the WAL's shared-memory file if it is
/// missing (a read-only connection cannot), but `query_only`: the proxy never writes.
/// SQLite falls back to read-only by itself when the file is write-protected.
pub(super) fn connect(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "query_only", true)?;
    conn.pragma_update(None, "trusted_schema", false)?;
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES as i32)?;
    Ok(conn)
}
