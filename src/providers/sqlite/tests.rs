use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use sshr_protocol::hostkey::{PrivateKey, PublicKey};
use tempfile::TempDir;

use super::*;

fn key_line(comment: &str) -> (PublicKey, String) {
    let key = PrivateKey::generate_ed25519(&mut rand_core::OsRng).public();
    let line = format!("{} {comment}", key.to_openssh());
    (key, line)
}

fn ctx(user: &str, target: Option<&str>) -> HookContext {
    HookContext::new(user, "192.0.2.1:5555".parse().unwrap(), 1, "SSH-2.0-test")
        .target(target.map(str::to_owned))
}

/// A new database in a temporary directory, and a connection to write it with.
fn new_db() -> (TempDir, PathBuf, Sqlite, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.db");
    let db = Sqlite::open(&path).unwrap();
    let writer = Connection::open(&path).unwrap();
    (dir, path, db, writer)
}

fn add_row(conn: &Connection, name: &str, target: &str, upstream: &str) {
    conn.execute(
        "INSERT INTO users (name, target, upstream, upstream_user) VALUES (?1, ?2, ?3, ?1)",
        (name, target, upstream),
    )
    .unwrap();
}

fn add_key(conn: &Connection, name: &str, line: &str) {
    conn.execute(
        "INSERT INTO user_keys (name, key) VALUES (?1, ?2)",
        (name, line),
    )
    .unwrap();
}

fn found(lookup: Result<Lookup, HookError>) -> (crate::hooks::Upstream, Vec<PublicKey>) {
    match lookup {
        Ok(Lookup::Found {
            upstream,
            authorized_keys,
        }) => (upstream, authorized_keys),
        other => panic!("{other:?}"),
    }
}

#[test]
fn open_creates_the_schema_in_wal_mode() {
    let (_dir, path, db, writer) = new_db();
    let mode: String = writer
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert!(matches!(
        db.look_up(&ctx("alice", None)),
        Ok(Lookup::Unknown)
    ));
    assert_eq!(db.describe(), format!("sqlite {}", path.display()));
    // Opening it again leaves it as it is.
    add_row(&writer, "alice", "", "10.0.0.1:22");
    let again = Sqlite::open(&path).unwrap();
    found(again.look_up(&ctx("alice", None)));
}

#[test]
fn open_refuses_what_lookups_could_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let missing_dir = dir.path().join("nope").join("users.db");
    let e = Sqlite::open(&missing_dir).err().unwrap();
    assert!(e.contains("does not exist"), "{e}");

    let no_users = dir.path().join("other.db");
    Connection::open(&no_users)
        .unwrap()
        .execute_batch("CREATE TABLE user_keys (name TEXT, key TEXT);")
        .unwrap();
    let e = Sqlite::open(&no_users).err().unwrap();
    assert!(
        e.contains("no `users` table") && e.contains("other.db"),
        "{e}"
    );

    let old_columns = dir.path().join("old.db");
    Connection::open(&old_columns)
        .unwrap()
        .execute_batch(
            "CREATE TABLE users (name TEXT, upstream TEXT);
             CREATE TABLE user_keys (name TEXT, key TEXT);",
        )
        .unwrap();
    let e = Sqlite::open(&old_columns).err().unwrap();
    assert!(e.contains("no such column"), "{e}");

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![b'x'; 4096]).unwrap();
    let e = Sqlite::open(&garbage).err().unwrap();
    assert!(e.contains("not a database"), "{e}");
}

#[test]
fn an_existing_file_is_not_altered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(schema::SCHEMA).unwrap();
    Sqlite::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
}

#[test]
fn default_row_named_target_unknown_and_keys() {
    let (_dir, _path, db, w) = new_db();
    let (key, line) = key_line("alice@laptop");
    add_row(&w, "alice", "", "10.0.0.1:22");
    add_row(&w, "alice", "web2", "[2001:db8::5]:2222");
    add_key(&w, "alice", &line);
    add_key(&w, "alice", "ssh-ed25519 AAAAnot-base64 broken");

    let (upstream, keys) = found(db.look_up(&ctx("alice", None)));
    assert_eq!(upstream.addr, "10.0.0.1:22");
    assert_eq!(upstream.user, "alice");
    // The line that does not parse is left out, the other one used.
    assert_eq!(keys, vec![key.clone()]);

    let (upstream, keys) = found(db.look_up(&ctx("alice", Some("web2"))));
    assert_eq!(upstream.addr, "[2001:db8::5]:2222");
    assert_eq!(keys, vec![key]);

    assert!(matches!(
        db.look_up(&ctx("alice", Some("web3"))),
        Ok(Lookup::Unknown)
    ));
    assert!(matches!(db.look_up(&ctx("bob", None)), Ok(Lookup::Unknown)));
}

#[test]
fn several_targets_and_no_default_is_a_choice() {
    let (_dir, _path, db, w) = new_db();
    let (key, line) = key_line("bob");
    add_row(&w, "bob", "web2", "10.0.0.2:22");
    add_row(&w, "bob", "web1", "10.0.0.1:22");
    add_key(&w, "bob", &line);
    match db.look_up(&ctx("bob", None)) {
        Ok(Lookup::Choose {
            targets,
            authorized_keys,
        }) => {
            assert_eq!(targets, ["web1", "web2"]);
            assert_eq!(authorized_keys, vec![key]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_default_row_is_read_past_the_target_limit() {
    let (_dir, _path, db, w) = new_db();
    for i in 0..schema::MAX_TARGETS + 10 {
        add_row(&w, "carol", &format!("t{i:03}"), "10.0.0.2:22");
    }
    add_row(&w, "carol", "", "10.0.0.1:22");
    assert_eq!(found(db.look_up(&ctx("carol", None))).0.addr, "10.0.0.1:22");
    w.execute("DELETE FROM users WHERE target = ''", [])
        .unwrap();
    match db.look_up(&ctx("carol", None)) {
        Ok(Lookup::Choose { targets, .. }) => assert_eq!(targets.len(), schema::MAX_TARGETS),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_data_is_invalid() {
    let (_dir, _path, db, w) = new_db();
    add_row(&w, "alice", "", "10.0.0.1");
    let e = db.look_up(&ctx("alice", None)).unwrap_err();
    assert!(matches!(e, HookError::InvalidData(_)), "{e:?}");

    // A value of the wrong SQL type.
    w.execute(
        "INSERT INTO users (name, target, upstream, upstream_user) VALUES ('bob', '', x'3130', 'bob')",
        [],
    )
    .unwrap();
    match db.look_up(&ctx("bob", None)) {
        Err(HookError::InvalidData(why)) => {
            assert!(why.contains("users.upstream is a blob"), "{why}")
        }
        other => panic!("{other:?}"),
    }

    // A value too long for SQLite to hand over.
    let huge = "h".repeat(MAX_VALUE_BYTES + 1);
    w.execute(
        "INSERT INTO users (name, target, upstream, upstream_user) VALUES ('carol', '', ?1, 'carol')",
        [&huge],
    )
    .unwrap();
    let e = db.look_up(&ctx("carol", None)).unwrap_err();
    assert!(matches!(e, HookError::InvalidData(_)), "{e:?}");

    // A long key line is bounded, and still too long: skipped.
    let (key, line) = key_line("dave");
    add_row(&w, "dave", "", "10.0.0.1:22");
    add_key(
        &w,
        "dave",
        &format!("{line}{}", "é".repeat(schema::MAX_FIELD)),
    );
    add_key(&w, "dave", &line);
    w.execute(
        "INSERT INTO user_keys (name, key) VALUES ('dave', x'00')",
        [],
    )
    .unwrap();
    assert_eq!(found(db.look_up(&ctx("dave", None))).1, vec![key]);
}

#[test]
fn a_change_is_seen_by_the_next_lookup() {
    let (_dir, path, db, w) = new_db();
    add_row(&w, "alice", "", "10.0.0.1:22");
    assert_eq!(found(db.look_up(&ctx("alice", None))).0.addr, "10.0.0.1:22");
    let mut admin = Admin::open(&path).unwrap();
    admin
        .set_upstream(
            "alice",
            "",
            &UpstreamChange {
                upstream: "10.0.0.9:2200".into(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        found(db.look_up(&ctx("alice", None))).0.addr,
        "10.0.0.9:2200"
    );
    let (key, line) = key_line("new");
    admin.add_keys("alice", &[line]).unwrap();
    assert_eq!(found(db.look_up(&ctx("alice", None))).1, vec![key]);
    admin.remove_user("alice", None).unwrap();
    assert!(matches!(
        db.look_up(&ctx("alice", None)),
        Ok(Lookup::Unknown)
    ));
}

#[test]
fn a_replaced_file_is_read_and_a_deleted_one_is_unavailable() {
    // Files in rollback-journal mode, which can be replaced with `mv` (see the module
    // documentation for WAL).
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, upstream: &str| {
        let path = dir.path().join(name);
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(schema::SCHEMA).unwrap();
        add_row(&conn, "alice", "", upstream);
        path
    };
    let path = make("users.db", "10.0.0.1:22");
    let db = Sqlite::open(&path).unwrap();
    assert_eq!(found(db.look_up(&ctx("alice", None))).0.addr, "10.0.0.1:22");
    let next = make("next.db", "10.0.0.2:22");
    std::fs::rename(&next, &path).unwrap();
    assert_eq!(found(db.look_up(&ctx("alice", None))).0.addr, "10.0.0.2:22");

    std::fs::remove_file(&path).unwrap();
    match db.look_up(&ctx("alice", None)) {
        Err(HookError::Unavailable(why)) => assert!(why.contains("users.db"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_corrupt_file_is_unavailable() {
    let (_dir, path, db, w) = new_db();
    add_row(&w, "alice", "", "10.0.0.1:22");
    drop(w);
    found(db.look_up(&ctx("alice", None)));
    // Overwritten in place (same inode): the idle connection reads garbage.
    let _ = std::fs::remove_file(path.with_extension("db-wal"));
    let _ = std::fs::remove_file(path.with_extension("db-shm"));
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let e = db.look_up(&ctx("alice", None)).unwrap_err();
    assert!(matches!(e, HookError::Unavailable(_)), "{e:?}");
}

#[test]
fn a_locked_database_is_unavailable_within_the_timeout() {
    // A database the operator made in rollback-journal mode: a writer's exclusive lock
    // blocks readers (WAL would not).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.db");
    let writer = Connection::open(&path).unwrap();
    writer.execute_batch(schema::SCHEMA).unwrap();
    add_row(&writer, "alice", "", "10.0.0.1:22");
    let db = Sqlite::open(&path)
        .unwrap()
        .timeout(Duration::from_millis(100));
    found(db.look_up(&ctx("alice", None)));
    writer.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = Instant::now();
    match db.look_up(&ctx("alice", None)) {
        Err(HookError::Unavailable(why)) => assert!(why.contains("locked"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    writer.execute_batch("COMMIT").unwrap();
    found(db.look_up(&ctx("alice", None)));
}

#[test]
fn a_slow_query_is_interrupted_at_the_timeout() {
    // `users` may be a view the operator wrote; this one takes long to read.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("view.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE VIEW users AS
               WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000000000)
               SELECT 'alice' AS name, '' AS target, 'h:22' AS upstream, 'alice' AS upstream_user,
                      NULL AS upstream_host_key, NULL AS tunnel
               FROM n WHERE x = 0;
             CREATE TABLE user_keys (name TEXT NOT NULL, key TEXT NOT NULL);",
        )
        .unwrap();
    let db = Sqlite::open(&path)
        .unwrap()
        .timeout(Duration::from_millis(50));
    let started = Instant::now();
    assert_eq!(
        db.look_up(&ctx("alice", None)).unwrap_err(),
        HookError::Timeout
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn concurrent_lookups_from_several_threads() {
    let (_dir, _path, db, w) = new_db();
    for i in 0..20 {
        add_row(&w, &format!("user{i}"), "", &format!("10.0.0.{i}:22"));
    }
    let db = Arc::new(db);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let db = db.clone();
            std::thread::spawn(move || {
                for n in 0..200 {
                    let i = (t + n) % 20;
                    let (upstream, _) = found(db.look_up(&ctx(&format!("user{i}"), None)));
                    assert_eq!(upstream.addr, format!("10.0.0.{i}:22"));
                }
            })
        })
        .collect();
    // A writer at the same time does not make lookups fail (WAL).
    for i in 20..40 {
        add_row(&w, &format!("user{i}"), "", "10.0.1.1:22");
    }
    for t in threads {
        t.join().unwrap();
    }
}

mod admin {
    use super::*;

    fn new_admin() -> (TempDir, PathBuf, Admin) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.db");
        let (admin, created) = Admin::init(&path).unwrap();
        assert!(created);
        (dir, path, admin)
    }

    fn user(name: &str, target: &str, upstream: &str) -> NewUser {
        NewUser {
            name: name.into(),
            target: target.into(),
            upstream: upstream.into(),
            ..Default::default()
        }
    }

    #[test]
    fn init_twice_keeps_the_data() {
        let (_dir, path, mut admin) = new_admin();
        admin.add_user(&user("alice", "", "10.0.0.1:22")).unwrap();
        drop(admin);
        let (admin, created) = Admin::init(&path).unwrap();
        assert!(!created);
        assert_eq!(admin.list(None).unwrap().len(), 1);
        let e = Admin::open(&path.with_file_name("missing.db"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("sshr db init"), "{e}");
    }

    #[test]
    fn add_user_checks_before_writing() {
        let (_dir, path, mut admin) = new_admin();
        let (host, host_line) = key_line("host");
        let (key, line) = key_line("alice@laptop");
        let mut alice = user("alice", "", "10.0.0.1:22");
        alice.upstream_user = Some("root".into());
        alice.host_keys = vec![host_line];
        alice.tunnel = Some("point-to-point".into());
        alice.keys = vec![line.clone()];
        let added = admin.add_user(&alice).unwrap();
        assert_eq!(added.added, vec![key.fingerprint()]);
        let db = Sqlite::open(&path).unwrap();
        let (upstream, keys) = found(db.look_up(&ctx("alice", None)));
        assert_eq!(upstream.user, "root");
        assert!(upstream.host_key.accepts(&host));
        assert_eq!(keys, vec![key.clone()]);

        // Again: refused, nothing changed.
        let e = admin.add_user(&alice).unwrap_err();
        assert!(matches!(e, AdminError::Exists(_)), "{e}");
        // A second target with the same key file: the key is not doubled.
        let mut web2 = user("alice", "web2", "10.0.0.2:22");
        web2.keys = vec![line];
        let added = admin.add_user(&web2).unwrap();
        assert_eq!(added.present, vec![key.fingerprint()]);
        assert_eq!(admin.list(Some("alice")).unwrap()[0].keys.len(), 1);

        for bad in [
            user("bob", "", "10.0.0.1"),
            user("bob", "", "a b:22"),
            user("", "", "10.0.0.1:22"),
            user("b ob", "", "10.0.0.1:22"),
            user("bob", "we b", "10.0.0.1:22"),
            NewUser {
                tunnel: Some("yes".into()),
                ..user("bob", "", "h:22")
            },
            NewUser {
                host_keys: vec!["ssh-ed25519 garbage".into()],
                ..user("bob", "", "h:22")
            },
            NewUser {
                keys: vec!["ssh-ed25519 AAAAnot-base64".into()],
                ..user("bob", "", "h:22")
            },
        ] {
            let e = admin.add_user(&bad).unwrap_err();
            assert!(matches!(e, AdminError::Invalid(_)), "{bad:?}: {e}");
            assert!(!e.to_string().contains('\n'));
        }
        assert!(matches!(
            admin.list(Some("bob")),
            Err(AdminError::NotFound(_))
        ));
    }

    #[test]
    fn keys_are_added_listed_and_removed() {
        let (_dir, _path, mut admin) = new_admin();
        let (a, line_a) = key_line("a@laptop");
        let (b, line_b) = key_line("b@desk");
        let e = admin
            .add_keys("alice", std::slice::from_ref(&line_a))
            .unwrap_err();
        assert!(matches!(e, AdminError::NotFound(_)), "{e}");
        admin.add_user(&user("alice", "", "10.0.0.1:22")).unwrap();
        let e = admin
            .add_keys("alice", &[format!("no-pty {line_a}")])
            .unwrap_err();
        assert!(e.to_string().contains("options"), "{e}");
        let e = admin
            .add_keys("alice", &[line_a.clone(), "garbage".into()])
            .unwrap_err();
        assert!(e.to_string().starts_with("key line 2:"), "{e}");
        admin
            .add_keys("alice", &[line_a.clone(), line_b.clone()])
            .unwrap();
        let listed = admin.list(None).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].servers[0].upstream, "10.0.0.1:22");
        assert_eq!(
            listed[0].keys,
            vec![
                KeyListing {
                    fingerprint: Some(a.fingerprint()),
                    comment: "a@laptop".into()
                },
                KeyListing {
                    fingerprint: Some(b.fingerprint()),
                    comment: "b@desk".into()
                },
            ]
        );
        // By fingerprint, then by line (another comment is the same key).
        assert_eq!(admin.remove_key("alice", &a.fingerprint()).unwrap(), 1);
        let other_comment = format!("{} renamed", b.to_openssh());
        assert_eq!(admin.remove_key("alice", &other_comment).unwrap(), 1);
        let e = admin.remove_key("alice", &a.fingerprint()).unwrap_err();
        assert!(matches!(e, AdminError::NotFound(_)), "{e}");
        let e = admin.remove_key("nobody", &a.fingerprint()).unwrap_err();
        assert!(e.to_string().contains("no user nobody"), "{e}");
    }

    #[test]
    fn remove_user_and_set_upstream() {
        let (_dir, path, mut admin) = new_admin();
        let (_, line) = key_line("alice");
        let mut alice = user("alice", "", "10.0.0.1:22");
        alice.keys = vec![line];
        admin.add_user(&alice).unwrap();
        admin
            .add_user(&user("alice", "web2", "10.0.0.2:22"))
            .unwrap();

        let change = |upstream: &str| UpstreamChange {
            upstream: upstream.into(),
            ..Default::default()
        };
        admin
            .set_upstream("alice", "web2", &change("10.0.0.3:22"))
            .unwrap();
        let db = Sqlite::open(&path).unwrap();
        assert_eq!(
            found(db.look_up(&ctx("alice", Some("web2")))).0.addr,
            "10.0.0.3:22"
        );
        let e = admin
            .set_upstream("alice", "web2", &change("10.0.0.3"))
            .unwrap_err();
        assert!(matches!(e, AdminError::Invalid(_)), "{e}");
        let e = admin
            .set_upstream("alice", "web9", &change("10.0.0.3:22"))
            .unwrap_err();
        assert!(e.to_string().contains("(default), web2"), "{e}");
        let e = admin
            .set_upstream("bob", "", &change("10.0.0.3:22"))
            .unwrap_err();
        assert!(e.to_string().contains("no user bob"), "{e}");

        // One target: the keys stay for the other one.
        let removed = admin.remove_user("alice", Some("")).unwrap();
        assert_eq!(
            removed,
            Removed {
                servers: 1,
                keys: 0
            }
        );
        assert!(matches!(
            db.look_up(&ctx("alice", None)),
            Ok(Lookup::Choose { .. })
        ));
        let removed = admin.remove_user("alice", None).unwrap();
        assert_eq!(
            removed,
            Removed {
                servers: 1,
                keys: 1
            }
        );
        assert!(matches!(
            admin.remove_user("alice", None),
            Err(AdminError::NotFound(_))
        ));
        assert!(admin.list(None).unwrap().is_empty());
    }
}
