//! `kind = "postgres"`: the user table in PostgreSQL, for many proxies sharing one
//! database (the schema is [`super::schema::SCHEMA`]).
//!
//! - The proxy starts while the database is down: [`Postgres::open`] checks the
//!   connection string and builds the pool without connecting; connections are made
//!   when lookups need them, and kept (at most `pool_size`, closed after ten idle
//!   minutes, so a fleet of proxies does not hold a database's connection slots for
//!   nothing).
//! - One round trip per lookup: one prepared statement (prepared once per connection)
//!   returns the user's rows and its key lines together.
//! - No lookup outlives the provider's timeout by much: the wait for a connection, the
//!   connect, unacknowledged TCP data (`tcp_user_timeout`) and the statement on the
//!   server (`statement_timeout`) are each bounded by it. Waiting for a free connection
//!   and then running the statement can together take up to twice the timeout when
//!   every pooled connection is busy; the chain stops waiting at the timeout itself.
//! - A connection that died with the server (a restart, a failover) is discarded when
//!   it fails and the lookup tries another one, so a restart costs no login once the
//!   server is back.
//! - Plain TCP or a Unix socket only (`NoTls`): a connection string asking for TLS
//!   (`sslmode=require`) is refused at start. TLS could follow, through a
//!   `MakeTlsConnect` such as the `postgres-openssl` or `postgres-native-tls` crates.
//!
//! The connection string may hold a password: it is never logged nor put in an error;
//! the log names the database by [`Backend::describe`], `postgres host:port/dbname`.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::config::{Host, SslMode};
use postgres::error::SqlState;
use postgres::{Client, NoTls, Row, Statement};
use sshr_protocol::text::{printable, Untrusted};

use super::schema::{self, UserRow, MAX_FIELD, MAX_KEYS, MAX_TARGETS};
use super::Backend;
use crate::config::PostgresUrl;
use crate::hooks::{HookContext, HookError, Lookup};

/// How long an idle pooled connection is kept before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// A PostgreSQL database with the schema of [`super::schema`], through a pool.
pub struct Postgres {
    pool: r2d2::Pool<Manager>,
    /// `host:port/dbname`, no secret.
    place: String,
    timeout: Duration,
    /// Why the last attempt to connect failed (`None` after one succeeded): r2d2 gives
    /// the reason to only one of the lookups that time out waiting for a connection.
    connect_error: Arc<Mutex<Option<String>>>,
}

impl Postgres {
    /// The database at `url` (a `postgres://` URL or `key=value` pairs), with at most
    /// `pool_size` connections. Fails only on what the operator must fix: a file that
    /// cannot be read, a connection string that does not parse or names no host, a TLS
    /// mode this provider cannot honour. Does not connect.
    pub fn open(url: &PostgresUrl, pool_size: u32, timeout: Duration) -> Result<Postgres, String> {
        let text = match url {
            PostgresUrl::Inline(text) => text.trim().to_owned(),
            PostgresUrl::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read url_file {}: {e}", path.display()))?
                .trim()
                .to_owned(),
        };
        let mut config = postgres::Config::from_str(&text)
            .map_err(|e| format!("the connection string does not parse: {}", redacted(&e)))?;
        let place = place(&config)?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(format!(
                "{place}: sslmode=require, but the postgres provider does not do TLS yet \
                 (use a Unix socket, a private network or a TLS-terminating proxy)"
            ));
        }
        // r2d2 asserts that its timeouts are positive.
        let timeout = timeout.max(Duration::from_millis(1));
        let mut options = config.get_options().unwrap_or_default().to_owned();
        if !options.is_empty() {
            options.push(' ');
        }
        // Last, so it wins over one in the operator's options: a stuck statement must
        // not hold a helper thread past the lookup's timeout.
        options.push_str(&format!("-c statement_timeout={}", timeout.as_millis()));
        config
            .options(&options)
            .connect_timeout(timeout)
            .tcp_user_timeout(timeout)
            // Prefer (the default) would try TLS first and fail with `NoTls`.
            .ssl_mode(SslMode::Disable);
        if config.get_application_name().is_none() {
            config.application_name("sshr");
        }
        let connect_error = Arc::new(Mutex::new(None));
        let manager = Manager {
            config,
            connect_error: connect_error.clone(),
        };
        let pool = r2d2::Pool::builder()
            .max_size(pool_size.max(1))
            .min_idle(Some(0))
            .idle_timeout(Some(IDLE_TIMEOUT))
            // A check costs a round trip per lookup; a dead connection is found by the
            // lookup's own statement instead, and retried (see `look_up`).
            .test_on_check_out(false)
            // Also bounds the pause between attempts to reconnect (half of it).
            .connection_timeout(timeout)
            // The lookup that fails reports the reason; retries in the background
            // would only repeat it.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager);
        Ok(Postgres {
            pool,
            place,
            timeout,
            connect_error,
        })
    }

    /// A pooled connection, waiting at most until `deadline`.
    fn connection(&self, deadline: Instant) -> Result<r2d2::PooledConnection<Manager>, HookError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HookError::Timeout);
        }
        self.pool.get_timeout(left).map_err(|_| {
            let why = self
                .connect_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            match why {
                Some(why) => HookError::Unavailable(format!(
                    "postgres {}: cannot connect: {why}",
                    self.place
                )),
                // Connected, but every connection stayed busy.
                None => HookError::Timeout,
            }
        })
    }

    /// What a failed statement means for the login.
    fn failure(&self, error: &postgres::Error) -> HookError {
        let Some(db) = error.as_db_error() else {
            return HookError::Unavailable(format!("postgres {}: {}", self.place, explain(error)));
        };
        let code = db.code();
        let message = Untrusted(db.message());
        if *code == SqlState::QUERY_CANCELED {
            // statement_timeout.
            HookError::Timeout
        } else if code.code().starts_with("42") && *code != SqlState::INSUFFICIENT_PRIVILEGE {
            // Syntax error or access rule violation: a missing table or column, a
            // column of another type than the schema's.
            HookError::InvalidData(format!(
                "postgres {}: the tables do not match sshr's schema: {message}",
                self.place
            ))
        } else {
            HookError::Unavailable(format!(
                "postgres {}: {} {}: {message}",
                self.place,
                db.severity(),
                code.code()
            ))
        }
    }
}

impl Backend for Postgres {
    fn describe(&self) -> String {
        format!("postgres {}", self.place)
    }

    fn look_up(&self, ctx: &HookContext) -> Result<Lookup, HookError> {
        // PostgreSQL text cannot hold NUL: no such user or target can exist, and
        // sending one would be an error, i.e. "unavailable" for a hostile name.
        if ctx.user.contains('\0') || ctx.target.as_deref().is_some_and(|t| t.contains('\0')) {
            return Ok(Lookup::Unknown);
        }
        let deadline = Instant::now() + self.timeout;
        // Each pooled connection may have died with a server restart: a dead one fails
        // at once, is dropped (`has_broken`), and the next is tried.
        let mut lost = None;
        for _ in 0..=self.pool.max_size() {
            let mut conn = self.connection(deadline)?;
            match conn.query(ctx) {
                Ok(rows) => return answer(ctx, &rows),
                Err(e) if conn.client.is_closed() => lost = Some(e),
                Err(e) => return Err(self.failure(&e)),
            }
        }
        Err(match lost {
            Some(e) => HookError::Unavailable(format!("postgres {}: {}", self.place, explain(&e))),
            None => HookError::Timeout,
        })
    }
}

/// Opens connections for the pool and remembers why the last attempt failed.
struct Manager {
    config: postgres::Config,
    connect_error: Arc<Mutex<Option<String>>>,
}

/// A pooled connection and its lookup statement, prepared at its first lookup (so
/// that connecting does not depend on the tables being there yet).
struct Connection {
    client: Client,
    look_up: Option<Statement>,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Connection, postgres::Error> {
        let result = self.config.connect(NoTls);
        let mut last = self.connect_error.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(client) => {
                *last = None;
                Ok(Connection {
                    client,
                    look_up: None,
                })
            }
            Err(e) => {
                // tokio-postgres's connect errors name the failure, never the password.
                *last = Some(explain(&e));
                Err(e)
            }
        }
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.client.is_closed()
    }
}

impl Connection {
    /// The rows of [`lookup_sql`] for `ctx`.
    fn query(&mut self, ctx: &HookContext) -> Result<Vec<Row>, postgres::Error> {
        let statement = match &self.look_up {
            Some(statement) => statement.clone(),
            None => {
                let statement = self.client.prepare(&lookup_sql())?;
                self.look_up = Some(statement.clone());
                statement
            }
        };
        self.client.query(&statement, &[&ctx.user, &ctx.target])
    }
}

/// The lookup of user `$1` (target `$2`, `NULL`: every target), in one statement: the
/// user's rows (`is_key` false), then its key lines (`is_key` true). Every text is cut
/// one character past [`MAX_FIELD`] on the server, so a hostile row cannot make the
/// proxy hold an unbounded value yet a too-long one is still seen as too long. `''`
/// sorts first, so the default row is among the first [`MAX_TARGETS`].
fn lookup_sql() -> String {
    let cut = MAX_FIELD + 1;
    format!(
        "(SELECT false AS is_key, left(target, {cut}) AS target, left(upstream, {cut}), \
                 left(upstream_user, {cut}), left(upstream_host_key, {cut}), \
                 left(tunnel, {cut}), NULL::text \
          FROM users WHERE name = $1::text AND ($2::text IS NULL OR target = $2::text) \
          ORDER BY target LIMIT {MAX_TARGETS}) \
         UNION ALL \
         (SELECT true, NULL, NULL, NULL, NULL, NULL, left(key, {cut}) \
          FROM user_keys WHERE name = $1::text LIMIT {})",
        MAX_KEYS + 1
    )
}

/// The columns of [`lookup_sql`].
const IS_KEY: usize = 0;
const TARGET: usize = 1;
const UPSTREAM: usize = 2;
const UPSTREAM_USER: usize = 3;
const UPSTREAM_HOST_KEY: usize = 4;
const TUNNEL: usize = 5;
const KEY: usize = 6;
const COLUMN_NAMES: [&str; 7] = [
    "is_key",
    "target",
    "upstream",
    "upstream_user",
    "upstream_host_key",
    "tunnel",
    "key",
];

/// The answer for `rows`, checked by [`schema::from_rows`].
fn answer(ctx: &HookContext, rows: &[Row]) -> Result<Lookup, HookError> {
    let user = ctx.user.as_str();
    let wanted = ctx.target.as_deref().unwrap_or("");
    let mut users = Vec::new();
    let mut keys = Vec::new();
    for row in rows {
        if column::<bool>(user, row, IS_KEY)? == Some(true) {
            keys.push(column::<String>(user, row, KEY)?.unwrap_or_default());
            continue;
        }
        let Some(target) = column::<String>(user, row, TARGET)? else {
            if wanted.is_empty() {
                return Err(invalid(user, "a row's target is NULL"));
            }
            continue;
        };
        if target.len() > MAX_FIELD {
            // Cannot be the one wanted, nor a useful menu entry.
            continue;
        }
        let in_use = target == wanted;
        let text = |index: usize| -> Result<Option<String>, HookError> {
            let value = column::<String>(user, row, index)?;
            // A value cut by the server must not be used as if whole (a host-key list
            // cut between lines would pin fewer keys, or none).
            if in_use && value.as_ref().is_some_and(|v| v.len() > MAX_FIELD) {
                return Err(invalid(
                    user,
                    &format!("users.{} is over {MAX_FIELD} bytes", COLUMN_NAMES[index]),
                ));
            }
            Ok(value)
        };
        let required = |index: usize| -> Result<String, HookError> {
            match text(index)? {
                Some(value) => Ok(value),
                None if in_use => Err(invalid(
                    user,
                    &format!("users.{} is NULL", COLUMN_NAMES[index]),
                )),
                None => Ok(String::new()),
            }
        };
        users.push(UserRow {
            upstream: required(UPSTREAM)?,
            upstream_user: required(UPSTREAM_USER)?,
            upstream_host_key: text(UPSTREAM_HOST_KEY)?,
            tunnel: text(TUNNEL)?,
            target,
        });
    }
    schema::from_rows(user, ctx.target.as_deref(), &users, &keys)
}

/// Column `index` of `row` as a `T`; a column of another type is unusable data.
fn column<'a, T: postgres::types::FromSql<'a>>(
    user: &str,
    row: &'a Row,
    index: usize,
) -> Result<Option<T>, HookError> {
    row.try_get::<_, Option<T>>(index).map_err(|e| {
        invalid(
            user,
            &format!("column {} does not read as text: {e}", COLUMN_NAMES[index]),
        )
    })
}

fn invalid(user: &str, what: &str) -> HookError {
    HookError::InvalidData(format!("user {}: {what}", Untrusted(user)))
}

/// `host:port/dbname` of `config` (hosts and ports separated by commas when several),
/// or why it names no server.
fn place(config: &postgres::Config) -> Result<String, String> {
    let mut hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(name) if name.contains(':') => format!("[{name}]"),
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    if hosts.is_empty() {
        hosts = config
            .get_hostaddrs()
            .iter()
            .map(|addr| match addr {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                v4 => v4.to_string(),
            })
            .collect();
    }
    if hosts.is_empty() {
        return Err("the connection string names no host (host= or postgres://HOST/)".into());
    }
    let ports = config.get_ports();
    let port = |index: usize| match ports {
        [] => 5432,
        [one] => *one,
        many => many.get(index).copied().unwrap_or(5432),
    };
    let servers: Vec<String> = hosts
        .iter()
        .enumerate()
        .map(|(index, host)| format!("{host}:{}", port(index)))
        .collect();
    // The server's default database is the one named like the user.
    let dbname = config.get_dbname().or(config.get_user()).unwrap_or("");
    Ok(format!("{}/{dbname}", servers.join(",")))
}

/// `error` and its causes, `error connecting to server: Connection refused (os error
/// 111)`, escaped and cut: a server's message is text from outside.
fn explain(error: &postgres::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    printable(&text, 400)
}

/// A connection string's parse error without the one thing in it that quotes the
/// string: "unexpected character ... but got `c`", where `c` may be of the password.
fn redacted(error: &postgres::Error) -> String {
    let text = explain(error);
    let text = text
        .strip_prefix("invalid connection string: ")
        .unwrap_or(&text);
    match text.find(" but got") {
        Some(end) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(url: &str) -> Result<Postgres, String> {
        Postgres::open(
            &PostgresUrl::Inline(url.into()),
            4,
            Duration::from_millis(500),
        )
    }

    #[test]
    fn describe_names_the_server_never_the_password() {
        let p = open("postgres://sshr:hunter2@db.example:6432/users").unwrap();
        assert_eq!(p.describe(), "postgres db.example:6432/users");
        let p = open("host=/run/postgresql user=sshr password=hunter2").unwrap();
        assert_eq!(p.describe(), "postgres /run/postgresql:5432/sshr");
        let p = open("postgres://u:hunter2@[2001:db8::1],h2:5433/d").unwrap();
        assert_eq!(p.describe(), "postgres [2001:db8::1]:5432,h2:5433/d");
    }

    #[test]
    fn bad_strings_are_refused_without_the_password() {
        for url in [
            "host=h password hunter2",
            "postgres://u:hunter2@h:notaport/d",
            "password=hunter2",
            "postgres://u:hunter2@h/d?sslmode=require",
            "host=h password='hunter2",
        ] {
            let error = open(url).err().unwrap_or_else(|| panic!("{url} opened"));
            assert!(!error.contains("hunter"), "{url}: {error}");
        }
    }

    #[test]
    fn unreadable_url_file_is_named() {
        let error = Postgres::open(
            &PostgresUrl::File("/nonexistent/sshr-pg-url".into()),
            1,
            Duration::from_secs(1),
        )
        .err()
        .unwrap();
        assert!(error.contains("/nonexistent/sshr-pg-url"), "{error}");
    }

    #[test]
    fn a_database_that_is_down_is_unavailable_within_the_timeout() {
        // A port nothing listens on: connection refused, retried until the timeout.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = open(&format!("postgres://u:hunter2@127.0.0.1:{port}/d")).unwrap();
        let ctx = HookContext::new("alice", "127.0.0.1:1".parse().unwrap(), 1, "SSH-2.0-x");
        let start = Instant::now();
        let error = p.look_up(&ctx).unwrap_err();
        assert!(start.elapsed() < Duration::from_millis(1500), "{error}");
        match &error {
            HookError::Unavailable(why) => {
                assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}");
                assert!(!why.contains("hunter2"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }
}
