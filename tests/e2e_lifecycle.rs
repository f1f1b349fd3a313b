//! The daemon's lifecycle with real peers: the `sshr` binary in front of a real OpenSSH
//! `sshd`, driven by the real `ssh` client.
//!
//! - SIGUSR2 upgrades in place: a loop of logins sees no refusal, a transfer started
//!   before the upgrade completes intact, the new process serves, the old one exits
//!   once its session ended.
//! - SIGHUP opens a new listen address and closes a removed one; a live session goes on.
//! - A new process that fails to start leaves the old one serving.
//! - `user = "nobody"`: started as root, the process runs as nobody and still serves;
//!   an upgrade, whose new process cannot read the root-only files, fails cleanly.
//! - systemd socket activation: a socket handed as fd 3 with `LISTEN_FDS` is served.
//!
//! Needs root (sshd; the privilege drop), `/usr/sbin/sshd`, the OpenSSH client, `sh`,
//! `head` and `sha256sum`.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use sshr_testsupport::{
    connections_to, free_listen_port, keygen, one_user, run_bounded, ssh_command, tail,
    wait_for_port, Sshd, SshdOptions, SshrSetup,
};

const SSHR: &str = env!("CARGO_BIN_EXE_sshr");

/// `ssh alice@127.0.0.1 -p port command` with alice's key.
fn ssh(port: u16, key: &Path, command: &str) -> Command {
    let mut cmd = ssh_command("ssh", port, Some(key));
    cmd.arg(format!("{}@127.0.0.1", one_user::USER))
        .arg(command);
    cmd
}

fn login(port: u16, key: &Path) -> Result<(), String> {
    let out = run_bounded(
        &mut ssh(port, key, "true"),
        Stdio::null(),
        Duration::from_secs(60),
    )?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "login on port {port} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid we started (or its upgrade child).
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0, "kill {pid}");
}

fn alive(pid: u32) -> bool {
    // A zombie is no longer alive: look at its state, not only at /proc/<pid>.
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Kills a process that is not our child (the new process of an upgrade) if a test
/// ends before it stopped it.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.filter(|&p| alive(p)) {
            // SAFETY: kill(2) on the pid this test found in the log.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Waits until the daemon's shards accept: its port accepts into the kernel's queue
/// from the bind on, before the privilege drop and the signal handlers.
fn wait_ready(proxy: &sshr_testsupport::Sshr) {
    assert!(
        wait_until(Duration::from_secs(60), || proxy
            .log()
            .contains("accepting connections")),
        "sshr did not start; log:\n{}",
        tail(&proxy.log(), 20)
    );
}

/// sshd lets this many unauthenticated connections in before it drops some
/// (`MaxStartups`): during an upgrade both processes' warm pools connect ahead.
const SSHD_STARTUPS: &[&str] = &["MaxStartups 200"];

/// Waits until `cond` holds, at most `limit`; false if it never did.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    cond()
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The log lines that tell of trouble (the unpinned host key warnings left out).
fn warnings(log: &str) -> String {
    let lines: Vec<&str> = (log.lines())
        .filter(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && !l.contains("not pinned"))
        .collect();
    tail(&lines.join("\n"), 30)
}

/// The pid in the old process's log line "upgrade: new process <pid> ready".
fn upgraded_pid(log: &str) -> Option<u32> {
    log.lines().find_map(|l| {
        let rest = l.split("upgrade: new process ").nth(1)?;
        let (pid, tail) = rest.split_once(' ')?;
        tail.starts_with("ready").then(|| pid.parse().ok())?
    })
}

#[test]
fn sigusr2_upgrade_refuses_no_login_and_keeps_transfers() {
    const LOGINS: usize = 200;
    const PARALLEL: usize = 4;
    const SIZE_MB: usize = 200;
    let (sshd, mut proxy, keys) = one_user::start(
        SSHR,
        SSHD_STARTUPS,
        // The transfer keeps a busy machine busier: the upstream handshake of a login
        // may take longer than the default 10 s, which is not what this test is about.
        "workers = 2\n[limits]\nshutdown_grace_secs = 300\nconnect_timeout_secs = 120\n",
    );
    wait_ready(&proxy);
    let key = keys.path().join(one_user::USER);
    let port = proxy.port();
    let old_pid = proxy.pid();
    let mut new_process = KillOnDrop(None);

    // The data: random, written by `head` (fast even in a debug build of the test).
    let data = keys.path().join("data");
    let made = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c {}M /dev/urandom > '{}'",
            SIZE_MB,
            data.display()
        ))
        .status()
        .unwrap();
    assert!(made.success());
    let want = sha256sum(&data);

    // The transfer: `sha256sum` upstream reads what we feed, the first part before the
    // upgrade and the rest once the new process accepts, so the session spans it.
    let mut transfer = ssh(port, &key, "sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = transfer.stdin.take().unwrap();
    let (upgraded_tx, upgraded_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let feeder = {
        let data = data.clone();
        thread::spawn(move || -> Result<(), String> {
            let bytes = fs::read(&data).map_err(|e| e.to_string())?;
            let first = 10 << 20;
            stdin
                .write_all(&bytes[..first])
                .map_err(|e| e.to_string())?;
            let _ = started_tx.send(());
            // Bounded: the test fails below if the upgrade never happens.
            let _ = upgraded_rx.recv_timeout(Duration::from_secs(900));
            stdin.write_all(&bytes[first..]).map_err(|e| e.to_string())
        })
    };

    // The logins, a few at a time; SIGUSR2 once a fifth of them are done.
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let done = done.clone();
            let key = key.clone();
            thread::spawn(move || {
                let mut failures = Vec::new();
                for _ in 0..LOGINS / PARALLEL {
                    if let Err(e) = login(port, &key) {
                        failures.push(e);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                failures
            })
        })
        .collect();
    started_rx
        .recv_timeout(Duration::from_secs(600))
        .expect("the first part of the transfer was written");
    assert!(
        wait_until(Duration::from_secs(600), || done.load(Ordering::SeqCst)
            >= LOGINS / 5),
        "logins stalled before the upgrade"
    );
    signal(old_pid, libc::SIGUSR2);
    assert!(
        wait_until(Duration::from_secs(120), || upgraded_pid(&proxy.log())
            .is_some()),
        "no new process ready after SIGUSR2; log:\n{}",
        tail(&proxy.log(), 30)
    );
    let new_pid = upgraded_pid(&proxy.log()).unwrap();
    new_process.0 = Some(new_pid);
    assert_ne!(new_pid, old_pid);
    let _ = upgraded_tx.send(());
    let done_at_upgrade = done.load(Ordering::SeqCst);

    let failures: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {LOGINS} logins failed across the upgrade, e.g. {:?}; warnings:\n{}\nsshd:\n{}",
        failures.len(),
        &failures[..failures.len().min(3)],
        warnings(&proxy.log()),
        tail(
            &fs::read_to_string(sshd.path("sshd.log")).unwrap_or_default(),
            15
        )
    );
    assert!(
        done_at_upgrade < LOGINS,
        "every login was over before the new process was ready: nothing ran across it"
    );

    // The transfer, started in the old process, completes there intact.
    feeder
        .join()
        .unwrap()
        .expect("the transfer's data was written");
    // Generous: a debug build on a busy machine relays a few MB/s.
    let deadline = Instant::now() + Duration::from_secs(1800);
    let status = loop {
        if let Some(status) = transfer.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = transfer.kill();
            panic!("the transfer did not end");
        }
        thread::sleep(Duration::from_millis(100));
    };
    let out = transfer.wait_with_output().unwrap();
    assert!(
        status.success(),
        "transfer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = String::from_utf8_lossy(&out.stdout);
    assert_eq!(got.split_whitespace().next(), Some(want.as_str()));

    // The old process exits once its sessions are over; the new one serves.
    assert!(
        wait_until(Duration::from_secs(60), || proxy.exited().is_some()),
        "the old process did not exit after its sessions ended; log:\n{}",
        tail(&proxy.log(), 30)
    );
    assert!(proxy.exited().unwrap().success());
    assert!(alive(new_pid), "the new process runs");
    login(port, &key).expect("the new process serves logins");
    // It takes the metrics endpoint over once the old process let go of it.
    assert!(
        wait_until(Duration::from_secs(30), || proxy
            .log()
            .matches("metrics endpoint listening")
            .count()
            >= 2),
        "the new process did not take the metrics endpoint; log:\n{}",
        tail(&proxy.log(), 20)
    );
    proxy.metrics().expect("metrics served by the new process");

    // SIGTERM stops the new process as any other.
    signal(new_pid, libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(30), || !alive(new_pid)),
        "the new process did not stop on SIGTERM"
    );
    drop(sshd);
}

#[test]
fn sighup_opens_and_closes_listen_addresses_and_sessions_go_on() {
    let (sshd, proxy, keys) = one_user::start(SSHR, SSHD_STARTUPS, "workers = 2\n");
    wait_ready(&proxy);
    let key = keys.path().join(one_user::USER);
    let old_port = proxy.port();
    let new_port = free_listen_port();

    let live = {
        let key = key.clone();
        thread::spawn(move || {
            run_bounded(
                &mut ssh(old_port, &key, "sleep 5; echo done"),
                Stdio::null(),
                Duration::from_secs(120),
            )
        })
    };
    assert!(
        wait_until(Duration::from_secs(30), || connections_to(sshd.port) > 0),
        "the live session did not reach the upstream"
    );

    let config = fs::read_to_string(&proxy.config_path).unwrap();
    let old_listen = format!("listen = [\"127.0.0.1:{old_port}\"]");
    assert!(config.contains(&old_listen), "{config}");
    let both = config.replace(
        &old_listen,
        &format!("listen = [\"127.0.0.1:{old_port}\", \"127.0.0.1:{new_port}\"]"),
    );
    fs::write(&proxy.config_path, both).unwrap();
    signal(proxy.pid(), libc::SIGHUP);
    let new_addr = SocketAddr::from(([127, 0, 0, 1], new_port));
    assert!(
        wait_for_port(new_addr, Duration::from_secs(20)),
        "no listener on {new_addr} after SIGHUP; log:\n{}",
        tail(&proxy.log(), 20)
    );
    login(new_port, &key).unwrap();
    login(old_port, &key).unwrap();

    let out = live.join().unwrap().expect("the live session ended");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "done");

    // Removing the first address stops accepting there.
    let only_new = config.replace(&old_listen, &format!("listen = [\"127.0.0.1:{new_port}\"]"));
    fs::write(&proxy.config_path, only_new).unwrap();
    signal(proxy.pid(), libc::SIGHUP);
    let old_addr = SocketAddr::from(([127, 0, 0, 1], old_port));
    assert!(
        wait_until(Duration::from_secs(20), || {
            TcpStream::connect_timeout(&old_addr, Duration::from_millis(500)).is_err()
        }),
        "{old_addr} still accepts after its removal; log:\n{}",
        tail(&proxy.log(), 20)
    );
    login(new_port, &key).unwrap();
    assert!(proxy.log().contains("no longer listening"));
    drop(sshd);
}

/// The uid and gid of `name` (`id -u`, `id -g`).
fn ids_of(name: &str) -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id").arg(flag).arg(name).output().unwrap();
        assert!(out.status.success(), "id {flag} {name}");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// The real, effective, saved and filesystem ids of a `Uid:` or `Gid:` line.
fn status_ids(pid: u32, field: &str) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

#[test]
fn started_as_root_it_drops_to_the_configured_user() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: the privilege drop needs root");
        return;
    }
    let (uid, gid) = ids_of("nobody");
    assert_ne!(uid, 0);
    let (sshd, proxy, keys) =
        one_user::start(SSHR, SSHD_STARTUPS, "user = \"nobody\"\nworkers = 2\n");
    wait_ready(&proxy);
    let key = keys.path().join(one_user::USER);
    assert_eq!(status_ids(proxy.pid(), "Uid:"), vec![uid; 4]);
    assert_eq!(status_ids(proxy.pid(), "Gid:"), vec![gid; 4]);
    // The key files are root's and private: they were read before the drop.
    login(proxy.port(), &key).unwrap();
    assert!(proxy.log().contains("dropped root privileges"));

    // An upgrade now starts the new process as nobody, which cannot read the private
    // files (configuration, keys): it fails, and the running process keeps serving.
    signal(proxy.pid(), libc::SIGUSR2);
    assert!(
        wait_until(Duration::from_secs(60), || proxy
            .log()
            .contains("upgrade failed")),
        "no upgrade failure logged; log:\n{}",
        tail(&proxy.log(), 20)
    );
    assert!(alive(proxy.pid()));
    login(proxy.port(), &key).unwrap();
    drop(sshd);
}

#[test]
fn a_failed_upgrade_keeps_the_old_process_serving() {
    let (sshd, proxy, keys) = one_user::start(SSHR, SSHD_STARTUPS, "workers = 2\n");
    wait_ready(&proxy);
    let key = keys.path().join(one_user::USER);
    // The new process reads the configuration again: broken, it exits at start.
    fs::write(&proxy.config_path, "listen = [").unwrap();
    signal(proxy.pid(), libc::SIGUSR2);
    assert!(
        wait_until(Duration::from_secs(60), || proxy
            .log()
            .contains("upgrade failed")),
        "no upgrade failure logged; log:\n{}",
        tail(&proxy.log(), 20)
    );
    assert!(alive(proxy.pid()));
    assert!(upgraded_pid(&proxy.log()).is_none());
    for _ in 0..3 {
        login(proxy.port(), &key).unwrap();
    }
    drop(sshd);
}

/// Kills the daemon if a test fails before it could stop it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn systemd_socket_activation_serves_the_handed_socket() {
    let clients = tempfile::tempdir().unwrap();
    let alice = clients.path().join(one_user::USER);
    keygen(&alice, "ed25519", None);
    let alice_pub = fs::read_to_string(alice.with_extension("pub")).unwrap();
    let setup = SshrSetup::new();
    let sshd = Sshd::start(SshdOptions {
        authorized_keys: vec![setup.upstream_public_key.clone()],
        ..SshdOptions::default()
    });

    // A plain socket (no SO_REUSEPORT), as systemd makes by default: with two workers,
    // sshr cannot bind a second socket beside it and its shards share this one.
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let config = setup.dir.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "listen = [\"{addr}\"]\nhost_keys = [{:?}]\nupstream_key = {:?}\nworkers = 2\n\
             [penalties]\nexempt = [\"127.0.0.0/8\"]\n\
             [[users]]\nname = \"{}\"\nupstream = \"127.0.0.1:{}\"\nupstream_user = \"root\"\n\
             authorized_keys = [{:?}]\n",
            setup.host_key.display().to_string(),
            setup.upstream_key.display().to_string(),
            one_user::USER,
            sshd.port,
            alice_pub.trim()
        ),
    )
    .unwrap();
    let log = setup.dir.path().join("sshr.log");
    let fd = socket.as_raw_fd();
    let mut cmd = Command::new("sh");
    // LISTEN_PID must be the daemon's pid: the shell's, which exec keeps.
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
        .arg(SSHR)
        .arg("--config")
        .arg(&config)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "sshr.socket")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
    // SAFETY: only dup2/fcntl between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut daemon = Daemon(cmd.spawn().unwrap());
    // The test keeps its copy open (it never accepts): had sshr bound the address
    // itself rather than taken the handed socket, its bind would have failed.
    let read_log = || String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
    assert!(
        wait_until(Duration::from_secs(30), || {
            read_log().contains("accepting connections") || daemon.0.try_wait().unwrap().is_some()
        }),
        "sshr did not start; log:\n{}",
        read_log()
    );
    assert!(
        daemon.0.try_wait().unwrap().is_none(),
        "sshr exited; log:\n{}",
        read_log()
    );
    assert!(
        read_log().contains("listening sockets handed to us"),
        "{}",
        read_log()
    );
    for _ in 0..4 {
        login(addr.port(), &alice).unwrap();
    }
    drop(socket);
    drop(sshd);
}

/// The host key `ssh-keyscan` gets from `port` (type and base64).
fn scanned_host_key(port: u16) -> String {
    let out = run_bounded(
        Command::new("ssh-keyscan").args([
            "-T",
            "10",
            "-t",
            "ed25519",
            "-p",
            &port.to_string(),
            "127.0.0.1",
        ]),
        Stdio::null(),
        Duration::from_secs(30),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| !l.starts_with('#') && l.contains("ssh-ed25519"))
        .unwrap_or_else(|| panic!("no host key from ssh-keyscan: {text:?}"));
    line.split_whitespace()
        .skip(1)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `type base64` of an OpenSSH public key file.
fn public_key_of(private: &Path) -> String {
    let line = fs::read_to_string(private.with_extension("pub")).unwrap();
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn sighup_reads_the_host_keys_again_and_keeps_them_when_unreadable() {
    let (_sshd, proxy, keys) = one_user::start(SSHR, SSHD_STARTUPS, "workers = 2\n");
    wait_ready(&proxy);
    let key = keys.path().join(one_user::USER);
    let host_key = proxy.setup.host_key.clone();
    let old = public_key_of(&host_key);
    assert_eq!(scanned_host_key(proxy.port()), old);

    // The key rotated in place: new connections get the new one.
    let rotated = keys.path().join("rotated_host_key");
    keygen(&rotated, "ed25519", None);
    fs::copy(&rotated, &host_key).unwrap();
    let new = public_key_of(&rotated);
    assert_ne!(new, old);
    let reloads = |log: &str| log.matches("configuration reloaded").count();
    let before = reloads(&proxy.log());
    signal(proxy.pid(), libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(30), || reloads(&proxy.log()) > before),
        "no reload; log:\n{}",
        tail(&proxy.log(), 20)
    );
    assert!(
        wait_until(Duration::from_secs(10), || scanned_host_key(proxy.port())
            == new),
        "the rotated host key is not offered"
    );
    login(proxy.port(), &key).unwrap();

    // A key file that cannot be read keeps the running keys, with an error.
    fs::write(&host_key, "not a key\n").unwrap();
    let before = reloads(&proxy.log());
    signal(proxy.pid(), libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(30), || reloads(&proxy.log()) > before),
        "no reload; log:\n{}",
        tail(&proxy.log(), 20)
    );
    assert!(
        proxy
            .log()
            .contains("reload: keeping the running host keys"),
        "{}",
        tail(&proxy.log(), 20)
    );
    assert_eq!(scanned_host_key(proxy.port()), new);
    login(proxy.port(), &key).unwrap();
}
