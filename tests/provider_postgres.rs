//! The `postgres` provider against a real PostgreSQL server
//! (`sshr_testsupport::postgres`): answers, changes, an outage and the recovery after
//! it, hostile rows, concurrent lookups, and the time one lookup takes.
//!
//! Each test has a cluster of its own; without PostgreSQL installed each returns early
//! with a `SKIPPED` line.

use std::io::Write;
use std::time::{Duration, Instant};

use sshr::config::PostgresUrl;
use sshr::hooks::Lookup;
use sshr::protocol::hostkey::{PrivateKey, PublicKey};
use sshr::providers::postgres::Postgres;
use sshr::providers::schema::{MAX_FIELD, SCHEMA};
use sshr::providers::Backend;
use sshr::{HookContext, HookError, HostKeyPolicy};
use sshr_testsupport::postgres::Postgres as Server;

const TIMEOUT: Duration = Duration::from_millis(1000);
/// What a lookup may take past its timeout (thread wake-ups, a busy machine).
const SLACK: Duration = Duration::from_millis(500);
/// In every connection string: trust authentication ignores it, and it must never show.
const PASSWORD: &str = "hunter2-secret";

/// A running server with the schema, and a provider for it.
fn setup() -> Option<(Server, Postgres)> {
    let server = Server::start()?;
    server.execute(SCHEMA);
    let backend = open(&server, "");
    Some((server, backend))
}

/// A provider for `server`, the URL's query being `query`.
fn open(server: &Server, query: &str) -> Postgres {
    let url = format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres{query}",
        server.port()
    );
    Postgres::open(&PostgresUrl::Inline(url), 4, TIMEOUT).expect("open the provider")
}

fn ctx(user: &str, target: Option<&str>) -> HookContext {
    HookContext::new(user, "127.0.0.1:40000".parse().unwrap(), 1, "SSH-2.0-test")
        .target(target.map(str::to_owned))
}

fn key() -> (PublicKey, String) {
    let key = PrivateKey::generate_ed25519(&mut rand_core::OsRng).public();
    let line = format!("{} test@laptop", key.to_openssh());
    (key, line)
}

/// `s` as an SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn found(lookup: Lookup) -> (sshr::Upstream, Vec<PublicKey>) {
    match lookup {
        Lookup::Found {
            upstream,
            authorized_keys,
        } => (upstream, authorized_keys),
        other => panic!("expected Found, got {other:?}"),
    }
}

/// A line for the lead's report, past the harness's output capture.
fn report(line: &str) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

#[test]
fn answers_default_row_target_choice_unknown_and_keys() {
    let Some((server, backend)) = setup() else {
        return;
    };
    let (alice_key, alice_line) = key();
    let (host_key, host_line) = key();
    let (bob_key, bob_line) = key();
    server.execute(&format!(
        "INSERT INTO users (name, target, upstream, upstream_user, upstream_host_key, tunnel) VALUES
           ('alice', '', '10.0.0.1:22', 'alice', NULL, NULL),
           ('alice', 'web2', '[2001:db8::5]:2222', 'deploy', {host}, 'point-to-point'),
           ('bob', 'db1', '10.0.1.1:22', 'bob', NULL, NULL),
           ('bob', 'db2', '10.0.1.2:22', 'bob', NULL, NULL);
         INSERT INTO user_keys (name, key) VALUES
           ('alice', {alice}), ('alice', 'ssh-ed25519 AAAAnot-base64'), ('bob', {bob});",
        host = lit(&host_line),
        alice = lit(&alice_line),
        bob = lit(&bob_line),
    ));
    assert!(backend.describe().starts_with("postgres 127.0.0.1:"));
    assert!(!backend.describe().contains(PASSWORD));

    let (upstream, keys) = found(backend.look_up(&ctx("alice", None)).unwrap());
    assert_eq!(upstream.addr, "10.0.0.1:22");
    assert_eq!(upstream.user, "alice");
    assert!(matches!(upstream.host_key, HostKeyPolicy::Unpinned));
    // The line that does not parse is left out.
    assert_eq!(keys, vec![alice_key.clone()]);

    let (upstream, keys) = found(backend.look_up(&ctx("alice", Some("web2"))).unwrap());
    assert_eq!(upstream.addr, "[2001:db8::5]:2222");
    assert_eq!(upstream.user, "deploy");
    assert!(upstream.host_key.accepts(&host_key));
    assert!(!upstream.host_key.accepts(&alice_key));
    assert!(upstream.tunnels.is_some());
    assert_eq!(keys, vec![alice_key]);

    match backend.look_up(&ctx("bob", None)).unwrap() {
        Lookup::Choose {
            targets,
            authorized_keys,
        } => {
            assert_eq!(targets, ["db1", "db2"]);
            assert_eq!(authorized_keys, vec![bob_key]);
        }
        other => panic!("{other:?}"),
    }
    for (user, target) in [
        ("alice", Some("web3")),
        ("carol", None),
        ("carol", Some("web2")),
        ("ali\0ce", None),
        ("alice", Some("we\0b2")),
        ("' OR ''='", None),
    ] {
        assert!(
            matches!(
                backend.look_up(&ctx(user, target)).unwrap(),
                Lookup::Unknown
            ),
            "{user:?} {target:?}"
        );
    }
}

#[test]
fn a_change_is_seen_at_the_next_lookup() {
    let Some((server, backend)) = setup() else {
        return;
    };
    server.execute(
        "INSERT INTO users (name, upstream, upstream_user) VALUES ('alice', '10.0.0.1:22', 'alice')",
    );
    let (upstream, keys) = found(backend.look_up(&ctx("alice", None)).unwrap());
    assert_eq!(upstream.addr, "10.0.0.1:22");
    assert!(keys.is_empty());

    let (alice_key, alice_line) = key();
    server.execute(&format!(
        "UPDATE users SET upstream = '10.0.0.9:2200' WHERE name = 'alice';
         INSERT INTO user_keys VALUES ('alice', {})",
        lit(&alice_line)
    ));
    let (upstream, keys) = found(backend.look_up(&ctx("alice", None)).unwrap());
    assert_eq!(upstream.addr, "10.0.0.9:2200");
    assert_eq!(keys, vec![alice_key]);

    server.execute("DELETE FROM users WHERE name = 'alice'");
    assert!(matches!(
        backend.look_up(&ctx("alice", None)).unwrap(),
        Lookup::Unknown
    ));
}

#[test]
fn an_outage_is_unavailable_within_the_timeout_and_the_pool_recovers() {
    let Some((mut server, backend)) = setup() else {
        return;
    };
    server.execute(
        "INSERT INTO users (name, upstream, upstream_user) VALUES ('alice', '10.0.0.1:22', 'alice')",
    );
    // Fill the pool with connections that the stop will kill.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| found(backend.look_up(&ctx("alice", None)).unwrap()));
        }
    });

    server.stop();
    for _ in 0..2 {
        let start = Instant::now();
        let error = backend.look_up(&ctx("alice", None)).unwrap_err();
        let took = start.elapsed();
        assert!(took < TIMEOUT + SLACK, "took {took:?}: {error}");
        match &error {
            HookError::Unavailable(why) => {
                assert!(
                    why.contains(&format!("127.0.0.1:{}", server.port())),
                    "{why}"
                );
                assert!(!why.contains(PASSWORD), "{why}");
            }
            other => panic!("{other:?}"),
        }
        report(&format!(
            "postgres provider: server down, lookup failed in {took:?}: {error}"
        ));
    }

    server.start_again();
    let start = Instant::now();
    let lookup = loop {
        match backend.look_up(&ctx("alice", None)) {
            Ok(lookup) => break lookup,
            Err(e) => assert!(start.elapsed() < 5 * TIMEOUT, "not recovered: {e}"),
        }
    };
    assert_eq!(found(lookup).0.addr, "10.0.0.1:22");
    report(&format!(
        "postgres provider: first good lookup {:?} after the server was back",
        start.elapsed()
    ));
}

#[test]
fn a_stuck_statement_times_out() {
    let Some((server, backend)) = setup() else {
        return;
    };
    let mut locker = postgres::Client::connect(&server.url(), postgres::NoTls).unwrap();
    let mut transaction = locker.transaction().unwrap();
    transaction
        .batch_execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let start = Instant::now();
    let result = backend.look_up(&ctx("alice", None));
    let took = start.elapsed();
    assert!(matches!(result, Err(HookError::Timeout)), "{result:?}");
    assert!(took < TIMEOUT + SLACK, "took {took:?}");
    transaction.rollback().unwrap();
    assert!(matches!(
        backend.look_up(&ctx("alice", None)).unwrap(),
        Lookup::Unknown
    ));
}

#[test]
fn hostile_rows_are_invalid_data_never_a_weaker_answer() {
    let Some((server, backend)) = setup() else {
        return;
    };
    let long = "\n".repeat(MAX_FIELD + 10);
    let (_, good_host_line) = key();
    server.execute(&format!(
        "INSERT INTO users (name, target, upstream, upstream_user, upstream_host_key, tunnel) VALUES
           ('alice', '', 'not an address', 'alice', NULL, NULL),
           ('alice', 'web2', '10.0.0.2:22', 'alice', NULL, NULL),
           ('bob', '', '10.0.0.3:22', 'bob', 'ssh-ed25519 garbage', NULL),
           ('carol', '', '10.0.0.4:22', 'carol', {pin}, NULL),
           ('dave', '', '10.0.0.5:22', '', NULL, NULL),
           ('erin', '', '10.0.0.6:22', 'erin', NULL, 'yes')",
        // Newlines past the cut, then a key: cut, it would read as "no pin".
        pin = lit(&format!("{long}{good_host_line}")),
    ));
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        match backend.look_up(&ctx(user, None)) {
            Err(HookError::InvalidData(why)) => assert!(why.contains(user), "{why}"),
            other => panic!("{user}: {other:?}"),
        }
    }
    // A bad row spoils only itself.
    let (upstream, _) = found(backend.look_up(&ctx("alice", Some("web2"))).unwrap());
    assert_eq!(upstream.addr, "10.0.0.2:22");

    // Tables of other types than the schema's, picked by search_path.
    server.execute(
        "CREATE SCHEMA wrong;
         CREATE TABLE wrong.users (name TEXT, target TEXT, upstream INTEGER,
           upstream_user TEXT, upstream_host_key TEXT, tunnel TEXT);
         CREATE TABLE wrong.user_keys (name TEXT, key TEXT);
         INSERT INTO wrong.users VALUES ('alice', '', 22, 'alice', NULL, NULL);
         CREATE SCHEMA missing;",
    );
    let wrong = open(&server, "?options=-c%20search_path%3Dwrong");
    match wrong.look_up(&ctx("alice", None)) {
        Err(HookError::InvalidData(why)) => assert!(!why.contains(PASSWORD), "{why}"),
        other => panic!("{other:?}"),
    }
    let missing = open(&server, "?options=-c%20search_path%3Dmissing");
    assert!(
        matches!(
            missing.look_up(&ctx("alice", None)),
            Err(HookError::InvalidData(_))
        ),
        "no tables"
    );
    // Text as the schema says, but a NULL where the schema forbids one.
    server.execute(
        "CREATE SCHEMA nulls;
         CREATE TABLE nulls.users (name TEXT, target TEXT, upstream TEXT,
           upstream_user TEXT, upstream_host_key TEXT, tunnel TEXT);
         CREATE TABLE nulls.user_keys (name TEXT, key TEXT);
         INSERT INTO nulls.users VALUES ('alice', '', NULL, 'alice', NULL, NULL);
         INSERT INTO nulls.user_keys VALUES ('alice', NULL);",
    );
    let nulls = open(&server, "?options=-c%20search_path%3Dnulls");
    assert!(matches!(
        nulls.look_up(&ctx("alice", None)),
        Err(HookError::InvalidData(_))
    ));
}

#[test]
fn concurrent_lookups_and_the_time_of_one() {
    let Some((server, backend)) = setup() else {
        return;
    };
    let mut keys = Vec::new();
    let mut sql = String::new();
    for i in 0..100 {
        sql.push_str(&format!(
            "INSERT INTO users (name, upstream, upstream_user) VALUES ('user{i}', '10.0.{}.{}:22', 'u{i}');",
            i / 256,
            i % 256
        ));
        let (key, line) = key();
        sql.push_str(&format!(
            "INSERT INTO user_keys VALUES ('user{i}', {});",
            lit(&line)
        ));
        keys.push(key);
    }
    server.execute(&sql);

    let start = Instant::now();
    std::thread::scope(|s| {
        for thread in 0..8 {
            let (backend, keys) = (&backend, &keys);
            s.spawn(move || {
                for n in 0..200 {
                    let i = (thread * 37 + n) % 100;
                    let (upstream, found_keys) =
                        found(backend.look_up(&ctx(&format!("user{i}"), None)).unwrap());
                    assert_eq!(upstream.user, format!("u{i}"));
                    assert_eq!(found_keys, vec![keys[i].clone()]);
                }
            });
        }
    });
    let concurrent = start.elapsed();

    let mut times: Vec<Duration> = (0..300)
        .map(|n| {
            let ctx = ctx(&format!("user{}", n % 100), None);
            let start = Instant::now();
            found(backend.look_up(&ctx).unwrap());
            start.elapsed()
        })
        .collect();
    times.sort();
    report(&format!(
        "postgres provider: one lookup takes {:?} (median of 300; p90 {:?}); \
         1600 lookups from 8 threads on a pool of 4 took {concurrent:?}",
        times[times.len() / 2],
        times[times.len() * 9 / 10],
    ));
}
