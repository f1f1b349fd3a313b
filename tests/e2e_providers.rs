//! Each `[[providers]]` kind end to end: a real `ssh` through the real `sshr` binary to
//! real `sshd`s, with the user table in a real backend that the test changes, slows
//! and stops while the proxy runs:
//!
//! - `sqlite`: a database file, changed with Python's sqlite3 module as an operator's
//!   script would; an exclusive lock held by another process is its outage;
//! - `postgres`: a throwaway PostgreSQL cluster from Debian's packages;
//! - `http`: the example directory server of `examples/providers/http_directory.py`;
//! - `command`: `examples/providers/command_directory.py` as the command.
//!
//! The http and command directories read the same SQLite schema, so every kind is
//! changed by the same SQL. Needs root (sshd) and python3.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sshr::providers::schema::SCHEMA;
use sshr_testsupport::{
    free_listen_port, keygen, run_with_timeout, ssh_command, wait_for_port, Sshd, SshdOptions,
    Sshr, SshrSetup,
};

const SSHR: &str = env!("CARGO_BIN_EXE_sshr");
/// The provider's `timeout_ms` in these tests.
const TIMEOUT: Duration = Duration::from_millis(2000);
/// The provider's `stale_if_error_secs` in these tests.
const STALE: Duration = Duration::from_secs(5);

/// A user directory that the test changes, slows down and stops.
trait Directory {
    /// Its `[[providers]]` entry, without the timing keys.
    fn provider(&self) -> String;
    /// Its `kind`.
    fn kind(&self) -> String {
        let provider = self.provider();
        let kind = provider.split('"').nth(1).unwrap_or_default();
        kind.to_owned()
    }
    /// Runs SQL on its data (the schema of `src/providers/schema.rs`).
    fn sql(&mut self, sql: &str);
    /// Lookups hang from now on (past the provider's timeout).
    fn slow(&mut self);
    /// Lookups fail from now on (quickly, or after the timeout).
    fn stop(&mut self);
    /// Lookups work again.
    fn restore(&mut self);
}

// --- SQLite, and the directories that read an SQLite file --------------------------------

/// Runs SQL on an SQLite file with Python's sqlite3 module (the file is created in the
/// default rollback-journal mode, where a writer's exclusive lock also stops readers).
fn sqlite_exec(db: &Path, sql: &str) {
    let status = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
        ])
        .arg(db)
        .arg(sql)
        .status()
        .expect("python3");
    assert!(status.success(), "sql failed: {sql}");
}

/// A process holding an exclusive lock on an SQLite file until it is killed.
fn sqlite_lock(db: &Path) -> Child {
    let mut child = Command::new("python3")
        .args([
            "-u",
            "-c",
            "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); \
             c.execute('BEGIN EXCLUSIVE'); print('locked'); time.sleep(120)",
        ])
        .arg(db)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    child
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

struct SqliteDir {
    _dir: tempfile::TempDir,
    db: PathBuf,
    lock: Option<Child>,
}

impl SqliteDir {
    fn new() -> SqliteDir {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("users.db");
        sqlite_exec(&db, SCHEMA);
        SqliteDir {
            _dir: dir,
            db,
            lock: None,
        }
    }
}

impl Drop for SqliteDir {
    fn drop(&mut self) {
        kill(&mut self.lock);
    }
}

impl Directory for SqliteDir {
    fn provider(&self) -> String {
        format!(
            "kind = \"sqlite\"\npath = {:?}\n",
            self.db.display().to_string()
        )
    }
    fn sql(&mut self, sql: &str) {
        sqlite_exec(&self.db, sql);
    }
    fn slow(&mut self) {
        self.lock = Some(sqlite_lock(&self.db));
    }
    fn stop(&mut self) {
        self.slow();
    }
    fn restore(&mut self) {
        kill(&mut self.lock);
    }
}

fn example(name: &str) -> String {
    format!("{}/examples/providers/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `examples/providers/http_directory.py` serving an SQLite file.
struct HttpDir {
    data: SqliteDir,
    port: u16,
    server: Option<Child>,
}

impl HttpDir {
    fn new() -> HttpDir {
        let mut dir = HttpDir {
            data: SqliteDir::new(),
            port: free_listen_port(),
            server: None,
        };
        dir.start_server();
        dir
    }

    fn start_server(&mut self) {
        let child = Command::new("python3")
            .arg(example("http_directory.py"))
            .arg(&self.data.db)
            .arg(self.port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        self.server = Some(child);
        let addr = ([127, 0, 0, 1], self.port).into();
        assert!(
            wait_for_port(addr, Duration::from_secs(10)),
            "the example directory server did not start"
        );
    }

    fn signal(&self, signal: &str) {
        if let Some(c) = &self.server {
            let _ = Command::new("kill")
                .args([signal, &c.id().to_string()])
                .status();
        }
    }
}

impl Drop for HttpDir {
    fn drop(&mut self) {
        self.signal("-CONT");
        kill(&mut self.server);
    }
}

impl Directory for HttpDir {
    fn provider(&self) -> String {
        format!(
            "kind = \"http\"\nurl = \"http://127.0.0.1:{}/\"\n",
            self.port
        )
    }
    fn sql(&mut self, sql: &str) {
        self.data.sql(sql);
    }
    fn slow(&mut self) {
        // It accepts (the kernel does) and never answers.
        self.signal("-STOP");
    }
    fn stop(&mut self) {
        self.signal("-CONT");
        kill(&mut self.server);
    }
    fn restore(&mut self) {
        self.signal("-CONT");
        if self.server.is_none() {
            self.start_server();
        }
    }
}

/// `examples/providers/command_directory.py` behind a wrapper that the test can make
/// hang (a marker file) or fail (another marker).
struct CommandDir {
    data: SqliteDir,
    wrapper: PathBuf,
    hang: PathBuf,
    fail: PathBuf,
}

impl CommandDir {
    fn new() -> CommandDir {
        let data = SqliteDir::new();
        let dir = data.db.parent().unwrap().to_path_buf();
        let (wrapper, hang, fail) = (dir.join("lookup.sh"), dir.join("hang"), dir.join("fail"));
        std::fs::write(
            &wrapper,
            format!(
                "[ -e {hang} ] && exec /bin/sleep 30\n[ -e {fail} ] && exit 3\nexec /usr/bin/env python3 {script} \"$@\"\n",
                hang = hang.display(),
                fail = fail.display(),
                script = example("command_directory.py"),
            ),
        )
        .unwrap();
        CommandDir {
            data,
            wrapper,
            hang,
            fail,
        }
    }
}

impl Directory for CommandDir {
    fn provider(&self) -> String {
        format!(
            "kind = \"command\"\ncommand = \"/bin/sh {} {} %u %t %a\"\n",
            self.wrapper.display(),
            self.data.db.display()
        )
    }
    fn sql(&mut self, sql: &str) {
        self.data.sql(sql);
    }
    fn slow(&mut self) {
        std::fs::write(&self.hang, "").unwrap();
    }
    fn stop(&mut self) {
        std::fs::write(&self.fail, "").unwrap();
    }
    fn restore(&mut self) {
        let _ = std::fs::remove_file(&self.hang);
        let _ = std::fs::remove_file(&self.fail);
    }
}

// --- PostgreSQL ------------------------------------------------------------------------

struct PostgresDir {
    pg: sshr_testsupport::postgres::Postgres,
    locker: Option<Child>,
    stopped: bool,
}

impl PostgresDir {
    fn new() -> Option<PostgresDir> {
        let pg = sshr_testsupport::postgres::Postgres::start()?;
        pg.execute(SCHEMA);
        Some(PostgresDir {
            pg,
            locker: None,
            stopped: false,
        })
    }

    fn end_locker(&mut self) {
        if self.locker.is_some() {
            // The locking session sleeps on the server: end it there.
            self.pg.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()",
            );
        }
        kill(&mut self.locker);
    }
}

impl Drop for PostgresDir {
    fn drop(&mut self) {
        kill(&mut self.locker);
    }
}

impl Directory for PostgresDir {
    fn provider(&self) -> String {
        format!(
            "kind = \"postgres\"\nurl = {:?}\npool_size = 4\n",
            self.pg.url()
        )
    }
    fn sql(&mut self, sql: &str) {
        self.pg.execute(sql);
    }
    fn slow(&mut self) {
        // Another session holds the table: lookups wait for the lock.
        let child = Command::new("psql")
            .arg(self.pg.url())
            .args([
                "-q",
                "-c",
                "BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("psql");
        self.locker = Some(child);
        std::thread::sleep(Duration::from_millis(500));
    }
    fn stop(&mut self) {
        self.pg.stop();
        self.stopped = true;
    }
    fn restore(&mut self) {
        self.end_locker();
        if std::mem::take(&mut self.stopped) {
            self.pg.start_again();
        }
    }
}

// --- The rig -----------------------------------------------------------------------------

/// Two sshds (the servers users move between), sshr with one worker in front of them
/// with `dir` as its provider, and alice's key.
struct Rig<D: Directory> {
    dir: D,
    a: Sshd,
    b: Sshd,
    sshr: Sshr,
    keys: tempfile::TempDir,
    key_line: String,
}

fn rig<D: Directory>(mut dir: D) -> Rig<D> {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("alice");
    keygen(&key, "ed25519", None);
    let key_line = std::fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_owned();
    let setup = SshrSetup::new();
    let sshd = || {
        Sshd::start(SshdOptions {
            authorized_keys: vec![setup.upstream_public_key.clone()],
            ..SshdOptions::default()
        })
    };
    let (a, b) = (sshd(), sshd());
    dir.sql("DELETE FROM users; DELETE FROM user_keys;");
    let tables = format!(
        "workers = 1\n\n[warm_upstreams]\nper_upstream = 0\n\n[[providers]]\n{}timeout_ms = {}\nstale_if_error_secs = {}\n",
        dir.provider(),
        TIMEOUT.as_millis(),
        STALE.as_secs()
    );
    let sshr = setup.start(Path::new(SSHR), &tables);
    Rig {
        dir,
        a,
        b,
        sshr,
        keys,
        key_line,
    }
}

impl<D: Directory> Rig<D> {
    fn key(&self) -> PathBuf {
        self.keys.path().join("alice")
    }

    /// `ssh LOGIN@proxy` printing the server's port (the end of SSH_CONNECTION):
    /// `Ok(port)`, or `Err(stderr)`.
    fn login(&self, login: &str) -> Result<u16, String> {
        let mut cmd = ssh_command("ssh", self.sshr.port(), Some(&self.key()));
        cmd.arg(format!("{login}@127.0.0.1"))
            .arg("echo port=${SSH_CONNECTION##* }");
        let out = run_with_timeout(cmd, Duration::from_secs(30));
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.trim().strip_prefix("port=").map(str::parse) {
            Some(Ok(port)) if out.status.success() => Ok(port),
            _ => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }

    fn must_reach(&self, login: &str, server: &Sshd, what: &str) {
        match self.login(login) {
            Ok(port) => assert_eq!(
                port,
                server.port,
                "{what}: {login} reached the wrong server; sshr log:\n{}",
                self.sshr.log()
            ),
            Err(e) => panic!(
                "{what}: {login} could not log in: {e}\nsshr log:\n{}",
                self.sshr.log()
            ),
        }
    }

    fn must_fail(&self, login: &str, what: &str) -> String {
        match self.login(login) {
            Ok(port) => panic!("{what}: {login} logged in (to port {port})"),
            Err(e) => e,
        }
    }

    fn add_alice(&mut self, target: &str, server: u16) {
        self.dir.sql(&format!(
            "INSERT INTO users (name, target, upstream, upstream_user) VALUES ('alice', '{target}', '127.0.0.1:{server}', 'root');"
        ));
    }

    fn add_key(&mut self) {
        let line = self.key_line.replace('\'', "''");
        self.dir.sql(&format!(
            "INSERT INTO user_keys (name, key) VALUES ('alice', '{line}');"
        ));
    }
}

/// The scenario of the issue, for one kind of provider.
fn scenario<D: Directory>(dir: D) {
    let mut rig = rig(dir);
    let (a, b) = (rig.a.port, rig.b.port);

    // Nobody yet: refused like any unknown name.
    let refused = rig.must_fail("alice", "before she is added");
    assert!(refused.contains("Permission denied"), "{refused}");

    // Added in the backend: logs in without a restart or reload.
    rig.add_alice("", a);
    rig.add_key();
    rig.must_reach("alice", &rig.a, "added");

    // Moved: the next login goes to the new server.
    rig.dir.sql(&format!(
        "UPDATE users SET upstream = '127.0.0.1:{b}' WHERE name = 'alice';"
    ));
    rig.must_reach("alice", &rig.b, "moved");
    rig.dir.sql(&format!(
        "UPDATE users SET upstream = '127.0.0.1:{a}' WHERE name = 'alice';"
    ));

    // A second server, chosen in the login name.
    rig.add_alice("web2", b);
    rig.must_reach("alice+web2", &rig.b, "target");
    rig.must_reach("alice", &rig.a, "default next to a target");
    let refused = rig.must_fail("alice+web9", "unknown target");
    assert!(refused.contains("Permission denied"), "{refused}");

    // A removed key is refused at the next login.
    rig.dir.sql("DELETE FROM user_keys WHERE name = 'alice';");
    let refused = rig.must_fail("alice", "key removed");
    assert!(refused.contains("Permission denied"), "{refused}");
    rig.add_key();

    // A malformed answer (here a row without a port): a clear log line, and the login
    // refused as when the directory cannot answer; the proxy goes on.
    rig.dir.sql(
        "INSERT INTO users (name, target, upstream, upstream_user) VALUES ('mallory', '', 'no-port', 'root');",
    );
    let refused = rig.must_fail("mallory", "malformed row");
    assert!(
        refused.contains("sshr: the account service is unavailable"),
        "mallory: {refused}"
    );
    let log = rig.sshr.log();
    assert!(
        log.lines()
            .any(|l| l.contains("invalid data") && l.contains("mallory") && l.contains("no-port")),
        "no clear log line for the malformed row; sshr log:\n{log}"
    );

    // A slow backend does not stall a live session on the same (only) shard.
    no_stall_while_slow(&mut rig);

    // The backend stopped: the last answer (under stale_if_error_secs) still logs alice
    // in, with a warning; a name with no earlier answer gets the clear line in time.
    rig.must_reach("alice", &rig.a, "fresh answer before the outage");
    let fresh = Instant::now();
    rig.dir.stop();
    rig.must_reach("alice", &rig.a, "stale answer during the outage");
    assert!(
        fresh.elapsed() < STALE,
        "the stale login came too late to prove anything ({:?})",
        fresh.elapsed()
    );
    assert!(
        rig.sshr.log().contains("using its last answer"),
        "no warning about the stale answer; sshr log:\n{}",
        rig.sshr.log()
    );
    let started = Instant::now();
    let refused = rig.must_fail("bob", "no earlier answer");
    assert!(
        refused.contains("sshr: the account service is unavailable, try again later"),
        "bob: {refused}"
    );
    assert!(
        started.elapsed() < TIMEOUT + Duration::from_secs(5),
        "the refusal took {:?}",
        started.elapsed()
    );
    // After stale_if_error_secs, alice too.
    std::thread::sleep(STALE.saturating_sub(fresh.elapsed()) + Duration::from_millis(500));
    let refused = rig.must_fail("alice", "after stale_if_error_secs");
    assert!(
        refused.contains("sshr: the account service is unavailable"),
        "alice: {refused}"
    );

    // Back: logins work again, with the same provider (its connections recover).
    rig.dir.restore();
    rig.must_reach("alice", &rig.a, "after the outage");

    // The outcomes are counted per kind and result.
    let metrics = rig.sshr.metrics().expect("metrics endpoint");
    for result in ["found", "unknown", "stale", "error"] {
        let series = format!(
            "sshr_provider_lookups_total{{kind=\"{}\",result=\"{result}\"}}",
            rig.dir.kind()
        );
        assert!(
            metrics.lines().any(|l| l.starts_with(&series)),
            "no {series} in:\n{metrics}"
        );
    }
}

/// A session prints a line every 100 ms while another login waits on the slow backend:
/// no gap between lines may come near the backend's delay.
fn no_stall_while_slow<D: Directory>(rig: &mut Rig<D>) {
    let mut cmd = ssh_command("ssh", rig.sshr.port(), Some(&rig.key()));
    cmd.arg("alice@127.0.0.1")
        .arg("echo ready; for i in $(seq 1 40); do echo tick; sleep 0.1; done")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut session = cmd.spawn().unwrap();
    let mut lines = BufReader::new(session.stdout.take().unwrap()).lines();
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "ready",
        "session did not start"
    );
    rig.dir.slow();
    let sshr_port = rig.sshr.port();
    let key = rig.key();
    // The slow lookup, from another client.
    let waiting = std::thread::spawn(move || {
        let mut cmd = ssh_command("ssh", sshr_port, Some(&key));
        cmd.args(["carol@127.0.0.1", "true"]);
        let started = Instant::now();
        let _ = run_with_timeout(cmd, Duration::from_secs(30));
        started.elapsed()
    });
    let mut last = Instant::now();
    let mut longest = Duration::ZERO;
    for line in lines.by_ref() {
        if line.is_err() {
            break;
        }
        longest = longest.max(last.elapsed());
        last = Instant::now();
    }
    let _ = session.wait();
    let slow_login = waiting.join().unwrap();
    rig.dir.restore();
    assert!(
        slow_login >= TIMEOUT - Duration::from_millis(200),
        "the slow backend answered carol in {slow_login:?}: it was not slow"
    );
    assert!(
        longest < Duration::from_millis(1000),
        "the live session stalled for {longest:?} while a lookup waited {slow_login:?}"
    );
}

#[test]
fn sqlite_provider() {
    scenario(SqliteDir::new());
}

#[test]
fn http_provider() {
    scenario(HttpDir::new());
}

#[test]
fn command_provider() {
    scenario(CommandDir::new());
}

#[test]
fn postgres_provider() {
    match PostgresDir::new() {
        Some(dir) => scenario(dir),
        None => eprintln!("SKIPPED postgres_provider: PostgreSQL is not installed"),
    }
}

/// A user with two servers and no default, from the static table's `targets`: a real
/// interactive client (paramiko, answering keyboard-interactive as a user would) gets
/// the menu after its key is proven and reaches the server it picks; `ssh` in batch
/// mode, which cannot show a menu, prints the banner naming the syntax; and naming the
/// server in the login goes straight there.
#[test]
fn a_menu_of_servers_for_an_account_with_no_default() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("alice");
    keygen(&key, "ed25519", None);
    let key_line = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let setup = SshrSetup::new();
    let sshd = || {
        Sshd::start(SshdOptions {
            authorized_keys: vec![setup.upstream_public_key.clone()],
            ..SshdOptions::default()
        })
    };
    let (web1, web2) = (sshd(), sshd());
    let tables = format!(
        "[[users]]\nname = \"alice\"\nupstream_user = \"root\"\nauthorized_keys = [{:?}]\n\
         targets = [\n  {{ name = \"web1\", upstream = \"127.0.0.1:{}\" }},\n  {{ name = \"web2\", upstream = \"127.0.0.1:{}\" }},\n]\n",
        key_line.trim(),
        web1.port,
        web2.port
    );
    let sshr = setup.start(Path::new(SSHR), &tables);

    // Interactive: the menu, answered with the second entry.
    let script = r#"
import sys, paramiko
port, key = int(sys.argv[1]), sys.argv[2]
t = paramiko.Transport(("127.0.0.1", port))
t.start_client(timeout=20)
left = t.auth_publickey("alice", paramiko.Ed25519Key.from_private_key_file(key))
assert left == ["keyboard-interactive"], left
seen = []
def menu(title, instructions, prompts):
    seen.append(instructions)
    return ["2"]
t.auth_interactive("alice", menu)
assert t.is_authenticated()
assert "2) web2" in seen[0], seen
ch = t.open_session()
ch.exec_command("echo port=${SSH_CONNECTION##* }")
print(ch.makefile().read().decode().strip())
t.close()
"#;
    // Debian's python3, which has python3-paramiko (`scripts/test` installs it).
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg("-c")
        .arg(script)
        .arg(sshr.port().to_string())
        .arg(&key);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("port={}", web2.port),
        "paramiko through the menu: {}\nsshr log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshr.log()
    );

    // Batch mode: no menu, but the banner says how to name a server.
    // (ssh keeps an option's first value: LogLevel INFO, ssh's default where banners
    // show, must come before the test's usual options.)
    let mut cmd = Command::new("ssh");
    cmd.args(["-o", "LogLevel=INFO"]);
    let usual = ssh_command("ssh", sshr.port(), Some(&key));
    cmd.args(usual.get_args());
    cmd.args(["alice@127.0.0.1", "true"]);
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("several servers (web1, web2)") && stderr.contains("alice+SERVER"),
        "batch-mode ssh: {stderr}"
    );

    // Named in the login: straight there.
    let mut cmd = ssh_command("ssh", sshr.port(), Some(&key));
    cmd.arg("alice+web1@127.0.0.1")
        .arg("echo port=${SSH_CONNECTION##* }");
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("port={}", web1.port),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
