//! A throwaway PostgreSQL server for the `postgres` provider's tests.
//!
//! [`Postgres::start`] makes a new cluster with Debian's binaries
//! (`/usr/lib/postgresql/<version>/bin`, package `postgresql`, which `scripts/test`
//! installs) in a temporary directory and runs it on a free loopback port with its
//! socket in that directory, so a cluster the package started on 5432 plays no part.
//! Durability is off (`fsync=off`): the data is thrown away.
//!
//! PostgreSQL refuses to run as root: as root (CI), `initdb` and `postgres` run as the
//! `postgres` account that the Debian package creates, in a directory owned by it.
//! Dropping the value stops the server (a fast shutdown, which also removes its shared
//! memory) and removes the directory: nothing is left behind, and no account is made.

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a starting server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before harsher signals.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running (or, after [`Postgres::stop`], stopped) PostgreSQL cluster of its own.
pub struct Postgres {
    /// Holds the cluster (`data/`), its socket and `server.log`.
    dir: TempDir,
    /// `/usr/lib/postgresql/<version>/bin`.
    bin: PathBuf,
    port: u16,
    /// The uid and gid the server runs as, when this process is root.
    run_as: Option<(u32, u32)>,
    server: Option<Child>,
}

impl Postgres {
    /// A new cluster, running; `None` (with a `SKIPPED <test>: <reason>` line on the
    /// terminal, for `scripts/test` to count) when PostgreSQL is not installed. Panics
    /// when it is installed but does not start: that is a failure to look at.
    pub fn start() -> Option<Postgres> {
        let bin = match newest_bin() {
            Some(bin) => bin,
            None => {
                skipped("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres; Debian package postgresql)");
                return None;
            }
        };
        // SAFETY: geteuid has no preconditions.
        let run_as = if unsafe { libc::geteuid() } == 0 {
            match account("postgres") {
                Some(ids) => Some(ids),
                None => {
                    skipped(
                        "running as root and there is no postgres account to run PostgreSQL as",
                    );
                    return None;
                }
            }
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("sshr-pg")
            .tempdir()
            .expect("make a temporary directory");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("give the temporary directory to the postgres account");
        }
        let mut pg = Postgres {
            dir,
            bin,
            port: crate::free_listen_port(),
            run_as,
            server: None,
        };
        let initdb = pg
            .command("initdb")
            .arg("-D")
            .arg(pg.data())
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        pg.start_again();
        Some(pg)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (trust authentication: any
    /// password given is ignored).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `sql` (one or more statements) on a connection of its own; panics on an
    /// error.
    pub fn execute(&self, sql: &str) {
        if let Err(e) = self.try_execute(sql) {
            panic!("{sql}: {e}\nserver log:\n{}", self.log());
        }
    }

    /// Runs `sql` (one or more statements) on a connection of its own.
    pub fn try_execute(&self, sql: &str) -> Result<(), ::postgres::Error> {
        let mut client = ::postgres::Client::connect(&self.url(), ::postgres::NoTls)?;
        client.batch_execute(sql)
    }

    /// Stops the server (a fast shutdown: connections are closed). The cluster stays.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            shut_down(&mut server);
        }
    }

    /// Starts the server of this cluster on the same port (after [`Postgres::stop`])
    /// and waits until it accepts connections.
    pub fn start_again(&mut self) {
        assert!(self.server.is_none(), "the server is already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("open server.log");
        let server = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.server = Some(server);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.server.as_mut().map(Child::try_wait) {
                self.server = None;
                panic!("postgres exited ({status}); log:\n{}", self.log());
            }
            if self.try_execute("SELECT 1").is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!("postgres did not start; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the server wrote to its log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `program` of the cluster's version, run as the server's account, in the
    /// cluster's directory (the account may not be allowed into ours).
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.current_dir(self.dir.path()).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            // std drops the supplementary groups too when it changes the uid.
            command.uid(uid).gid(gid);
        }
        command
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops `server` by fast shutdown (SIGINT), which removes its shared memory and
/// socket; if it hangs, by immediate shutdown (SIGQUIT), then SIGKILL.
fn shut_down(server: &mut Child) {
    let pid = server.id() as libc::pid_t;
    for signal in [libc::SIGINT, libc::SIGQUIT] {
        // SAFETY: signals our own child, which has not been waited for yet.
        unsafe { libc::kill(pid, signal) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = server.kill();
    let _ = server.wait();
}

/// `/usr/lib/postgresql/<version>/bin` of the newest installed version.
fn newest_bin() -> Option<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    fs::read_dir(root)
        .ok()?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let version: f64 = name.parse().ok()?;
            let bin = root.join(&name).join("bin");
            (bin.join("postgres").exists() && bin.join("initdb").exists()).then_some((version, bin))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// The uid and gid of `name` in /etc/passwd.
fn account(name: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// One line past the test harness's output capture, for `scripts/test` to count.
fn skipped(reason: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    let line = format!("SKIPPED {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}
