//! `sshr db`: the built binary run on a database in a temporary directory, and what a
//! lookup then reads from it. Runs without root, network or sshd.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use sshr::hooks::{HookContext, Lookup};
use sshr::protocol::hostkey::{PrivateKey, PublicKey};
use sshr::providers::sqlite::Sqlite;
use sshr::providers::Backend;

fn sshr(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sshr"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Runs `sshr db --db DB ARGS...`, which must succeed; returns its standard output.
fn db_ok(db: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut all = vec!["db", "--db", db.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = sshr(&all, stdin);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{args:?}: {stderr}{stdout}");
    stdout
}

/// Runs a command that must fail with exit status 1 and one line `sshr: ...`; returns
/// that line.
fn fails(args: &[&str]) -> String {
    let out = sshr(args, None);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
    assert!(lines[0].starts_with("sshr: "), "{stderr}");
    lines[0].to_string()
}

fn db_fails(db: &Path, args: &[&str]) -> String {
    let mut all = vec!["db", "--db", db.to_str().unwrap()];
    all.extend_from_slice(args);
    fails(&all)
}

fn key(comment: &str) -> (PublicKey, String) {
    let key = PrivateKey::generate_ed25519(&mut rand_core::OsRng).public();
    let line = format!("{} {comment}", key.to_openssh());
    (key, line)
}

fn look_up(db: &Path, user: &str, target: Option<&str>) -> Lookup {
    let ctx = HookContext::new(user, "192.0.2.1:5555".parse().unwrap(), 1, "SSH-2.0-test")
        .target(target.map(str::to_owned));
    Sqlite::open(db).unwrap().look_up(&ctx).unwrap()
}

fn upstream_addr(lookup: Lookup) -> String {
    match lookup {
        Lookup::Found { upstream, .. } => upstream.addr,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_user_added_moved_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    assert!(db_ok(&db, &["init"], None).starts_with("created "));
    assert!(db_ok(&db, &["init"], None).contains("tables present"));

    let (laptop, laptop_line) = key("alice@laptop");
    let (desk, desk_line) = key("alice@desk");
    let key_file = dir.path().join("alice.pub");
    std::fs::write(&key_file, format!("# alice\n\n{laptop_line}\n")).unwrap();
    db_ok(
        &db,
        &[
            "add-user",
            "alice",
            "10.0.0.1:22",
            "--key-file",
            key_file.to_str().unwrap(),
        ],
        None,
    );
    db_ok(
        &db,
        &[
            "add-user",
            "alice",
            "10.0.0.2:22",
            "--target",
            "web2",
            "-u",
            "root",
        ],
        None,
    );
    let out = db_ok(&db, &["add-key", "alice", "-"], Some(&desk_line));
    assert!(out.contains(&desk.fingerprint()), "{out}");

    let listed = db_ok(&db, &["list"], None);
    for expected in [
        "alice",
        "10.0.0.1:22 as alice",
        "web2: 10.0.0.2:22 as root",
        &laptop.fingerprint(),
        &desk.fingerprint(),
    ] {
        assert!(listed.contains(expected), "{expected}: {listed}");
    }
    match look_up(&db, "alice", None) {
        Lookup::Found {
            upstream,
            authorized_keys,
        } => {
            assert_eq!(upstream.addr, "10.0.0.1:22");
            assert_eq!(authorized_keys, vec![laptop.clone(), desk.clone()]);
        }
        other => panic!("{other:?}"),
    }

    db_ok(&db, &["set-upstream", "alice", "10.0.0.3:2222"], None);
    db_ok(
        &db,
        &[
            "set-upstream",
            "alice",
            "[2001:db8::5]:22",
            "--target",
            "web2",
        ],
        None,
    );
    assert_eq!(upstream_addr(look_up(&db, "alice", None)), "10.0.0.3:2222");
    assert_eq!(
        upstream_addr(look_up(&db, "alice", Some("web2"))),
        "[2001:db8::5]:22"
    );

    db_ok(&db, &["remove-key", "alice", &laptop.fingerprint()], None);
    let listed = db_ok(&db, &["list", "alice"], None);
    assert!(!listed.contains(&laptop.fingerprint()), "{listed}");
    assert!(listed.contains(&desk.fingerprint()), "{listed}");

    db_ok(&db, &["remove-user", "alice", "--target", "web2"], None);
    assert!(matches!(
        look_up(&db, "alice", Some("web2")),
        Lookup::Unknown
    ));
    db_ok(&db, &["remove-user", "alice"], None);
    assert!(matches!(look_up(&db, "alice", None), Lookup::Unknown));
    assert!(db_ok(&db, &["list"], None).starts_with("no users"));
}

#[test]
fn mistakes_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("users.db");
    db_ok(&db, &["init"], None);
    db_ok(&db, &["add-user", "alice", "10.0.0.1:22"], None);
    let (_, line) = key("someone");

    let e = db_fails(&db, &["add-user", "bob", "10.0.0.1"]);
    assert!(e.contains("bob") && e.contains(":port"), "{e}");
    let e = db_fails(&db, &["add-user", "alice", "10.0.0.2:22"]);
    assert!(e.contains("already has"), "{e}");
    let e = db_fails(&db, &["add-key", "alice", "ssh-ed25519 AAAAnot-a-key"]);
    assert!(e.contains("does not parse"), "{e}");
    let e = db_fails(&db, &["add-key", "alice", &format!("no-pty {line}")]);
    assert!(e.contains("options"), "{e}");
    let e = db_fails(&db, &["add-key", "nobody", &line]);
    assert!(e.contains("no user nobody"), "{e}");
    let e = db_fails(&db, &["remove-user", "nobody"]);
    assert!(e.contains("no user nobody"), "{e}");
    let e = db_fails(&db, &["remove-key", "alice", "SHA256:AAAA"]);
    assert!(e.contains("has no key"), "{e}");
    let e = db_fails(&db, &["set-upstream", "alice", "10.0.0.1:0"]);
    assert!(e.contains("alice"), "{e}");
    let e = db_fails(&db, &["set-upstream", "alice", "10.0.0.1:22", "-t", "web9"]);
    assert!(e.contains("no target web9"), "{e}");

    // Nothing of that was written.
    assert_eq!(upstream_addr(look_up(&db, "alice", None)), "10.0.0.1:22");
    assert!(matches!(look_up(&db, "bob", None), Lookup::Unknown));

    let missing = dir.path().join("missing.db");
    let e = db_fails(&missing, &["list"]);
    assert!(e.contains("sshr db init"), "{e}");
    assert!(!missing.exists());
    let e = db_fails(&dir.path().join("no/such/dir.db"), &["init"]);
    assert!(e.contains("does not exist"), "{e}");
    // The first user of a new proxy creates the database.
    let fresh = dir.path().join("fresh.db");
    assert!(db_ok(&fresh, &["add-user", "carol", "10.0.0.9:22"], None).starts_with("created "));
    assert_eq!(upstream_addr(look_up(&fresh, "carol", None)), "10.0.0.9:22");
}

#[test]
fn the_database_comes_from_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sshr.toml");
    let head = "listen = [\"127.0.0.1:2222\"]\n\
                host_keys = [\"host_key\"]\n\
                upstream_key = \"upstream_key\"\n";
    std::fs::write(
        &config,
        format!("{head}\n[[providers]]\nkind = \"sqlite\"\npath = \"users.db\"\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let out = sshr(&["db", "--config", config, "init"], None);
    assert!(out.status.success(), "{out:?}");
    // The path is relative to the configuration file, not to the current directory.
    let db = dir.path().join("users.db");
    assert!(db.exists());
    let out = sshr(
        &["--config", config, "db", "add-user", "alice", "10.0.0.1:22"],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(upstream_addr(look_up(&db, "alice", None)), "10.0.0.1:22");

    let e = fails(&["--workers", "2", "db", "--config", config, "list"]);
    assert!(e.contains("not of `sshr db`"), "{e}");

    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, head).unwrap();
    let e = fails(&["db", "--config", plain.to_str().unwrap(), "list"]);
    assert!(
        e.contains("--db PATH") && e.contains("kind = \"sqlite\""),
        "{e}"
    );
}
