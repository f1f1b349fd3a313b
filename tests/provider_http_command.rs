//! The `http` and `command` providers against the example directories of
//! `examples/providers/` (real Python programs over a real SQLite file with the schema
//! of `src/providers/schema.rs`), called as the chain calls them: one blocking
//! [`Backend::look_up`] per login.
//!
//! Needs `python3` with its standard library (sqlite3, http.server).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sshr::hooks::{HookContext, HookError, HostKeyPolicy, Lookup};
use sshr::protocol::hostkey::{PrivateKey, PublicKey};
use sshr::providers::command::Command;
use sshr::providers::http::Http;
use sshr::providers::schema::SCHEMA;
use sshr::providers::Backend;
use tempfile::TempDir;

const SECOND: Duration = Duration::from_secs(1);
/// What a timeout may overrun by on a loaded test machine.
const SLACK: Duration = Duration::from_millis(700);

/// The Python interpreter itself (not a shim that needs `$HOME`), since the command
/// provider runs its program with an empty environment.
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let out = std::process::Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .expect("python3 runs");
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        })
        .clone()
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/providers")
        .join(name)
}

fn new_key() -> (PublicKey, String) {
    let key = PrivateKey::generate_ed25519(&mut rand_core::OsRng).public();
    let line = format!("{} test@laptop", key.to_openssh());
    (key, line)
}

fn ctx(user: &str, target: Option<&str>) -> HookContext {
    HookContext::new(
        user,
        "192.0.2.7:50122".parse().unwrap(),
        0x1a2b,
        "SSH-2.0-test",
    )
    .target(target.map(str::to_owned))
}

/// One row of `users`: name, target, upstream, upstream_user, upstream_host_key, tunnel.
type Row<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
);

/// An SQLite directory in a temporary folder, written by Python's sqlite3.
struct Db {
    dir: TempDir,
    path: PathBuf,
}

impl Db {
    fn new(users: &[Row], keys: &[(&str, &str)]) -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("directory.db");
        let data = serde_json::json!({ "schema": SCHEMA, "users": users, "keys": keys });
        let mut child = std::process::Command::new(python())
            .args([
                "-c",
                "import json, sqlite3, sys\n\
                 d = json.load(sys.stdin)\n\
                 with sqlite3.connect(sys.argv[1]) as con:\n\
                 \x20   con.executescript(d['schema'])\n\
                 \x20   con.executemany('INSERT INTO users VALUES (?, ?, ?, ?, ?, ?)', d['users'])\n\
                 \x20   con.executemany('INSERT INTO user_keys VALUES (?, ?)', d['keys'])\n",
            ])
            .arg(&path)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(data.to_string().as_bytes())
            .unwrap();
        assert!(
            child.wait().unwrap().success(),
            "the test database is written"
        );
        Db { dir, path }
    }

    /// The users of most tests: alice (a default server and web2), bob (web1 and web2,
    /// no default), carol (a pinned host key and a tunnel policy).
    fn standard(alice_key: &str, carol_pin: &str) -> Db {
        Db::new(
            &[
                ("alice", "", "10.0.0.1:22", "alice", None, None),
                ("alice", "web2", "10.0.0.2:2222", "al", None, None),
                ("bob", "web1", "10.0.1.1:22", "bob", None, None),
                ("bob", "web2", "10.0.1.2:22", "bob", None, None),
                (
                    "carol",
                    "",
                    "[2001:db8::5]:22",
                    "root",
                    Some(carol_pin),
                    Some("deny"),
                ),
            ],
            &[("alice", alice_key), ("bob", alice_key)],
        )
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// `examples/providers/http_directory.py` serving `db` on a free port; killed when
/// dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(db: &Db, token: Option<&str>) -> Server {
        let mut command = std::process::Command::new(python());
        command
            .arg(example("http_directory.py"))
            .arg(&db.path)
            .arg("0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        match token {
            Some(token) => command.env("SSHR_TOKEN", token),
            None => command.env_remove("SSHR_TOKEN"),
        };
        let mut child = command.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server prints its port");
        Server { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/sshr/login", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay in front of `port` that counts the connections made through it.
fn counting_relay(port: u16) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut c, mut s) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c, &mut s);
                let _ = s.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (relay_port, count)
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

/// The answers every directory must give for [`Db::standard`].
fn check_standard_answers(backend: &dyn Backend, alice_key: &PublicKey, carol_pin: &PublicKey) {
    let (upstream, keys) = found(backend.look_up(&ctx("alice", None)).unwrap());
    assert_eq!(
        (upstream.addr.as_str(), upstream.user.as_str()),
        ("10.0.0.1:22", "alice")
    );
    assert!(matches!(upstream.host_key, HostKeyPolicy::Unpinned));
    assert_eq!(upstream.tunnels, None);
    assert_eq!(keys, vec![alice_key.clone()]);

    let (upstream, _) = found(backend.look_up(&ctx("alice", Some("web2"))).unwrap());
    assert_eq!(
        (upstream.addr.as_str(), upstream.user.as_str()),
        ("10.0.0.2:2222", "al")
    );
    assert!(matches!(
        backend.look_up(&ctx("alice", Some("web3"))).unwrap(),
        Lookup::Unknown
    ));

    match backend.look_up(&ctx("bob", None)).unwrap() {
        Lookup::Choose {
            targets,
            authorized_keys,
        } => {
            assert_eq!(targets, ["web1", "web2"]);
            assert_eq!(authorized_keys, vec![alice_key.clone()]);
        }
        other => panic!("expected Choose, got {other:?}"),
    }
    let (upstream, _) = found(backend.look_up(&ctx("bob", Some("web1"))).unwrap());
    assert_eq!(upstream.addr, "10.0.1.1:22");

    let (upstream, keys) = found(backend.look_up(&ctx("carol", None)).unwrap());
    assert_eq!(upstream.addr, "[2001:db8::5]:22");
    assert!(upstream.host_key.accepts(carol_pin));
    assert!(!upstream.host_key.accepts(alice_key));
    assert_eq!(
        upstream.tunnels,
        Some(sshr::core::values::TunnelPolicy::Deny)
    );
    assert!(keys.is_empty());

    assert!(matches!(
        backend.look_up(&ctx("nobody", None)).unwrap(),
        Lookup::Unknown
    ));
}

#[test]
fn http_directory_answers_known_unknown_and_choice() {
    let (alice_key, alice_line) = new_key();
    let (carol_pin, carol_line) = new_key();
    let db = Db::standard(&alice_line, &carol_line);
    let server = Server::start(&db, None);
    let http = Http::open(&server.url(), None, None, 5 * SECOND).unwrap();
    check_standard_answers(&http, &alice_key, &carol_pin);
}

#[test]
fn command_directory_answers_known_unknown_and_choice() {
    let (alice_key, alice_line) = new_key();
    let (carol_pin, carol_line) = new_key();
    let db = Db::standard(&alice_line, &carol_line);
    let argv = [
        python().display().to_string(),
        example("command_directory.py").display().to_string(),
        db.path.display().to_string(),
        "%u".into(),
        "%t".into(),
        "%a".into(),
    ];
    let command = Command::new(&argv, 64 << 10, 5 * SECOND);
    check_standard_answers(&command, &alice_key, &carol_pin);
}

#[test]
fn http_sends_the_bearer_token() {
    let (_, line) = new_key();
    let db = Db::standard(&line, &line);
    let server = Server::start(&db, Some("s3cret-token"));
    let good = db.file("token", "  s3cret-token\n");
    let http = Http::open(&server.url(), Some(&good), None, 5 * SECOND).unwrap();
    found(http.look_up(&ctx("alice", None)).unwrap());

    let wrong = db.file("wrong", "other-token\n");
    for token in [None, Some(&wrong)] {
        let http = Http::open(&server.url(), token, None, 5 * SECOND).unwrap();
        match http.look_up(&ctx("alice", None)) {
            Err(HookError::Unavailable(why)) => {
                assert!(why.contains("HTTP 401"), "{why}");
                assert!(why.contains(&server.url()), "{why}");
                assert!(!why.contains("s3cret"), "{why}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}

#[test]
fn http_server_down_is_unavailable_at_once() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://user:pw@127.0.0.1:{port}/login?key=k");
    let http = Http::open(&url, None, None, 5 * SECOND).unwrap();
    assert_eq!(
        http.describe(),
        format!("http http://127.0.0.1:{port}/login?…")
    );
    let started = Instant::now();
    match http.look_up(&ctx("alice", None)) {
        Err(HookError::Unavailable(why)) => {
            assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}");
            assert!(!why.contains("pw") && !why.contains("key=k"), "{why}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < SECOND, "{:?}", started.elapsed());
}

#[test]
fn http_silent_server_times_out() {
    // A peer that accepts and never answers (the directory hung).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let timeout = Duration::from_millis(300);
    let http = Http::open(&format!("http://127.0.0.1:{port}/"), None, None, timeout).unwrap();
    let started = Instant::now();
    let result = http.look_up(&ctx("alice", None));
    let took = started.elapsed();
    assert!(matches!(result, Err(HookError::Timeout)), "{result:?}");
    assert!(
        took >= timeout && took < timeout + SLACK,
        "timed out after {took:?}"
    );
    drop(held.join());
}

#[test]
fn http_unusable_answers_are_invalid_data() {
    let (_, line) = new_key();
    let huge_key = format!("{line} {}", "x".repeat(1_100_000));
    let db = Db::new(
        &[
            ("noport", "", "10.0.0.5", "u", None, None),
            (
                "badpin",
                "",
                "10.0.0.5:22",
                "u",
                Some("ssh-ed25519 AAAAjunk"),
                None,
            ),
            ("huge", "", "10.0.0.5:22", "u", None, None),
        ],
        &[("huge", &huge_key)],
    );
    let server = Server::start(&db, None);
    let http = Http::open(&server.url(), None, None, 5 * SECOND).unwrap();
    for user in ["noport", "badpin", "huge"] {
        match http.look_up(&ctx(user, None)) {
            Err(HookError::InvalidData(why)) => {
                if user == "huge" {
                    assert!(why.contains("larger than"), "{why}");
                }
            }
            other => panic!("{user}: expected InvalidData, got {other:?}"),
        }
    }
}

#[test]
fn http_reuses_its_connections() {
    let (_, line) = new_key();
    let db = Db::standard(&line, &line);
    let server = Server::start(&db, None);
    let (relay, connections) = counting_relay(server.port);
    let http = Arc::new(
        Http::open(
            &format!("http://127.0.0.1:{relay}/"),
            None,
            None,
            5 * SECOND,
        )
        .unwrap(),
    );
    let lookups = 50;
    let started = Instant::now();
    for i in 0..lookups {
        let user = if i % 2 == 0 { "alice" } else { "nobody" };
        http.look_up(&ctx(user, None)).unwrap();
    }
    let each = started.elapsed() / lookups;
    println!("http keep-alive: {lookups} lookups, {each:?} each");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one connection, kept"
    );

    // Several threads at once: at most one connection each.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let http = http.clone();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    found(http.look_up(&ctx("alice", None)).unwrap());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let total = connections.load(Ordering::SeqCst);
    assert!((1..=5).contains(&total), "{total} connections");
}

/// A shell script in `db`'s folder, run by `/bin/sh` with `args`.
fn script(db: &Db, name: &str, text: &str, args: &[&str]) -> Vec<String> {
    let path = db.file(name, text);
    let mut argv = vec!["/bin/sh".to_string(), path.display().to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

#[test]
fn command_placeholders_environment_and_no_shell() {
    let db = Db::new(&[], &[]);
    let argv = script(
        &db,
        "echo.sh",
        r#"printf '{"upstream": "10.0.0.9:22", "upstream_user": "%s|%s|%s|%s|%s|%s|%s"}' "$1" "$2" "$3" "$4" "$PATH" "${HOME-unset}" "$(pwd)""#,
        &["%u", "[%t]", "%a", "100%%"],
    );
    let command = Command::new(&argv, 4096, 5 * SECOND);
    let (upstream, _) = found(command.look_up(&ctx("alice", Some("web2"))).unwrap());
    assert_eq!(
        upstream.user,
        "alice|[web2]|192.0.2.7:50122|100%|/usr/bin:/bin|unset|/"
    );
    let (upstream, _) = found(command.look_up(&ctx("alice", None)).unwrap());
    assert!(upstream.user.starts_with("alice|[]|"), "{}", upstream.user);
    // A hostile name is one argument, never shell text.
    let (upstream, _) = found(command.look_up(&ctx("a;b $(id) `id`", None)).unwrap());
    assert!(
        upstream.user.starts_with("a;b $(id) `id`|[]|"),
        "{}",
        upstream.user
    );
}

#[test]
fn command_failures_name_the_status_and_stderr() {
    let db = Db::new(&[], &[]);
    let argv = script(
        &db,
        "fail.sh",
        "echo 'database is locked\x1b[2J' >&2\necho second line >&2\nexit 3\n",
        &[],
    );
    match Command::new(&argv, 4096, 5 * SECOND).look_up(&ctx("alice", None)) {
        Err(HookError::Unavailable(why)) => {
            assert!(why.contains("exited with status 3"), "{why}");
            assert!(why.contains("database is locked\\u{1b}[2J"), "{why}");
            assert!(
                !why.contains("second line") && !why.contains('\x1b'),
                "{why}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let argv = script(&db, "killed.sh", "kill -9 $$\n", &[]);
    match Command::new(&argv, 4096, 5 * SECOND).look_up(&ctx("alice", None)) {
        Err(HookError::Unavailable(why)) => assert!(why.contains("signal 9"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let missing = ["/nonexistent/directory".to_string()];
    match Command::new(&missing, 4096, 5 * SECOND).look_up(&ctx("alice", None)) {
        Err(HookError::Unavailable(why)) => assert!(why.contains("cannot run"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn command_unknown_is_empty_output_or_null() {
    let db = Db::new(&[], &[]);
    for text in ["true\n", "echo\n", "echo null\n"] {
        let argv = script(&db, "unknown.sh", text, &[]);
        let lookup = Command::new(&argv, 4096, 5 * SECOND)
            .look_up(&ctx("alice", None))
            .unwrap();
        assert!(matches!(lookup, Lookup::Unknown), "{text:?}: {lookup:?}");
    }
}

#[test]
fn command_unusable_output_is_invalid_data() {
    let db = Db::new(&[], &[]);
    for (name, text) in [
        ("junk.sh", "echo 'not json'\n"),
        (
            "noport.sh",
            r#"echo '{"upstream": "10.0.0.5", "upstream_user": "u"}'"#,
        ),
    ] {
        let argv = script(&db, name, text, &[]);
        let result = Command::new(&argv, 4096, 5 * SECOND).look_up(&ctx("alice", None));
        assert!(
            matches!(result, Err(HookError::InvalidData(_))),
            "{name}: {result:?}"
        );
    }
}

/// Whether process `pid` still runs (a zombie waiting for its parent does not).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// The pids a script wrote to `file`, once they are all there.
fn pids(file: &Path, count: usize) -> Vec<u32> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let pids: Vec<u32> = text
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(pids.len(), count, "pids written: {text:?}");
    pids
}

fn assert_all_gone(pids: &[u32]) {
    let deadline = Instant::now() + 2 * SECOND;
    while pids.iter().any(|&p| running(p)) {
        assert!(Instant::now() < deadline, "left running: {pids:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn command_too_much_output_is_invalid_and_killed() {
    let db = Db::new(&[], &[]);
    let pidfile = db.dir.path().join("pids");
    let argv = script(
        &db,
        "flood.sh",
        "echo $$ > \"$1\"\nwhile :; do echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; done\n",
        &[pidfile.to_str().unwrap()],
    );
    let started = Instant::now();
    match Command::new(&argv, 10_000, 5 * SECOND).look_up(&ctx("alice", None)) {
        Err(HookError::InvalidData(why)) => assert!(why.contains("max_output_bytes"), "{why}"),
        other => panic!("expected InvalidData, got {other:?}"),
    }
    assert!(started.elapsed() < 2 * SECOND);
    assert_all_gone(&pids(&pidfile, 1));
}

#[test]
fn command_timeout_kills_the_program_and_what_it_started() {
    let db = Db::new(&[], &[]);
    let pidfile = db.dir.path().join("pids");
    let argv = script(
        &db,
        "slow.sh",
        "sleep 30 &\necho $$ $! > \"$1\"\nsleep 30\n",
        &[pidfile.to_str().unwrap()],
    );
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let result = Command::new(&argv, 4096, timeout).look_up(&ctx("alice", None));
    let took = started.elapsed();
    assert!(matches!(result, Err(HookError::Timeout)), "{result:?}");
    assert!(
        took >= timeout && took < timeout + SLACK,
        "timed out after {took:?}"
    );
    assert_all_gone(&pids(&pidfile, 2));
}

#[test]
fn command_background_leftovers_are_killed_after_an_answer() {
    let db = Db::new(&[], &[]);
    let pidfile = db.dir.path().join("pids");
    let argv = script(
        &db,
        "leftover.sh",
        "sleep 30 >/dev/null 2>&1 &\necho $! > \"$1\"\necho null\n",
        &[pidfile.to_str().unwrap()],
    );
    let started = Instant::now();
    let lookup = Command::new(&argv, 4096, 5 * SECOND)
        .look_up(&ctx("alice", None))
        .unwrap();
    assert!(matches!(lookup, Lookup::Unknown), "{lookup:?}");
    assert!(started.elapsed() < SECOND);
    assert_all_gone(&pids(&pidfile, 1));
}

/// Prints what one lookup costs with each provider (figures, not a target: see the
/// report of the run with `--nocapture`).
#[test]
fn lookup_timing_http_vs_command() {
    let (_, line) = new_key();
    let db = Db::standard(&line, &line);
    let time = |name: &str, backend: &dyn Backend, lookups: u32| {
        found(backend.look_up(&ctx("alice", None)).unwrap());
        let started = Instant::now();
        for _ in 0..lookups {
            found(backend.look_up(&ctx("alice", None)).unwrap());
        }
        println!("{name}: {:?} per lookup", started.elapsed() / lookups);
    };
    let server = Server::start(&db, None);
    let http = Http::open(&server.url(), None, None, 5 * SECOND).unwrap();
    time("http, python example, kept-alive connection", &http, 50);
    let argv = [
        python().display().to_string(),
        example("command_directory.py").display().to_string(),
        db.path.display().to_string(),
        "%u".into(),
        "%t".into(),
        "%a".into(),
    ];
    let command = Command::new(&argv, 64 << 10, 5 * SECOND);
    time("command, python example", &command, 10);
    let argv = script(
        &db,
        "fixed.sh",
        r#"echo '{"upstream": "10.0.0.9:22", "upstream_user": "u"}'"#,
        &[],
    );
    let command = Command::new(&argv, 64 << 10, 5 * SECOND);
    time("command, /bin/sh echo", &command, 50);
}
