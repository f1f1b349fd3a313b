//! The built binary starts with a generated configuration, accepts TCP connections on
//! its loopback port, serves Prometheus metrics, and exits cleanly on SIGTERM; a bad
//! configuration is refused with a one-line error and exit code 1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHR: &str = env!("CARGO_BIN_EXE_sshr");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the daemon if a test fails before it could stop it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn connect_within(addr: SocketAddr, limit: Duration, daemon: &mut Daemon) -> TcpStream {
    let start = Instant::now();
    loop {
        if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            return stream;
        }
        if let Ok(Some(status)) = daemon.0.try_wait() {
            panic!("sshr exited before accepting connections: {status}");
        }
        assert!(
            start.elapsed() < limit,
            "sshr did not accept on {addr} within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_get(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body
}

fn wait_exit(daemon: &mut Daemon, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < limit,
            "sshr did not exit within {limit:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn starts_accepts_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics_port = free_port();
    let config = dir.path().join("sshr.toml");
    std::fs::write(
        &config,
        format!(
            r#"
listen = ["127.0.0.1:{port}"]
host_keys = ["keys/host_ed25519"]
upstream_key = "keys/upstream_ed25519"
workers = 2
metrics_listen = "127.0.0.1:{metrics_port}"

[limits]
shutdown_grace_secs = 5

[[users]]
name = "demo"
upstream = "127.0.0.1:22"
authorized_keys_file = "does-not-exist"
"#
        ),
    )
    .unwrap();
    let log = dir.path().join("sshr.log");
    let mut daemon = Daemon(
        Command::new(SSHR)
            .arg("--config")
            .arg(&config)
            // Relative paths are relative to the config file, not to the cwd.
            .current_dir("/")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );

    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let first = connect_within(addr, Duration::from_secs(20), &mut daemon);
    // Accept several, so that more than one shard is likely to serve one.
    let more: Vec<_> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();

    // Keys were generated beside the config, private.
    let keys = dir.path().join("keys");
    assert_eq!(mode(&keys.join("host_ed25519")), 0o600);
    assert_eq!(mode(&keys.join("upstream_ed25519")), 0o600);
    assert_eq!(mode(&keys), 0o700);
    let public = std::fs::read_to_string(keys.join("upstream_ed25519.pub")).unwrap();
    assert!(public.starts_with("ssh-ed25519 "), "{public}");

    // The metrics endpoint counts the accepted sessions (published about once a second).
    let metrics_addr: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let start = Instant::now();
    loop {
        let body = http_get(metrics_addr);
        let total = body
            .lines()
            .find_map(|l| l.strip_prefix("sshr_sessions_total "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if total == Some(9.0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sshr_sessions_total never reached 9: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop((first, more));

    // SIGTERM: clean exit, and the port is closed.
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(
        unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) },
        0
    );
    let status = wait_exit(&mut daemon, Duration::from_secs(10));
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "exit status {status}; log:\n{log_text}");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "port still open after exit"
    );
    assert!(log_text.contains("accepting connections"), "{log_text}");
    assert!(log_text.contains("sshr stopped"), "{log_text}");
    // The missing authorized_keys_file is a warning, not an error.
    assert!(
        log_text.contains("WARN") && log_text.contains("does-not-exist"),
        "{log_text}"
    );
    // No key material in the log.
    assert!(!log_text.contains("PRIVATE KEY"), "{log_text}");
}

#[test]
fn check_config_refuses_a_bad_config_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "listen = [\"127.0.0.1:2222\"]\nhost_keys = [\"k\"]\nupstream_key = \"u\"\nlisten_prot = 1\n",
    )
    .unwrap();
    let out = Command::new(SSHR)
        .arg("--config")
        .arg(&config)
        .arg("--check-config")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr:?}");
    assert!(lines[0].contains("bad.toml:4"), "{stderr}");
    assert!(lines[0].contains("listen_prot"), "{stderr}");
    assert!(
        !dir.path().join("k").exists(),
        "--check-config must not generate keys"
    );

    // A good configuration passes the check, still without writing keys.
    std::fs::write(
        &config,
        "listen = [\"127.0.0.1:2222\"]\nhost_keys = [\"k\"]\nupstream_key = \"u\"\n",
    )
    .unwrap();
    let out = Command::new(SSHR)
        .arg("--config")
        .arg(&config)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
    assert!(!dir.path().join("k").exists());
}

#[test]
fn busy_port_is_a_one_line_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = dir.path().join("sshr.toml");
    std::fs::write(
        &config,
        format!("listen = [\"127.0.0.1:{port}\"]\nhost_keys = [\"k\"]\nupstream_key = \"u\"\nworkers = 1\n"),
    )
    .unwrap();
    let out = Command::new(SSHR)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

/// Without enough locked memory for io_uring, the daemon says what to do instead of
/// panicking. Needs root to drop to an unprivileged user with a low RLIMIT_MEMLOCK
/// (root could simply raise it again).
#[test]
fn io_uring_failure_explains_the_memlock_limit() {
    use std::os::unix::fs::chown;
    use std::os::unix::process::CommandExt;

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to switch to an unprivileged user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    const NOBODY: u32 = 65534;
    chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    // A copy the unprivileged user can surely execute.
    let binary = dir.path().join("sshr");
    std::fs::copy(SSHR, &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("sshr.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!("listen = [\"127.0.0.1:{port}\"]\nhost_keys = [\"keys/h\"]\nupstream_key = \"keys/u\"\nworkers = 1\n"),
    )
    .unwrap();
    chown(&config, Some(NOBODY), Some(NOBODY)).unwrap();

    let mut command = Command::new(&binary);
    command.arg("--config").arg(&config).env("RUST_LOG", "off");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 64 * 1024,
                rlim_max: 64 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains("glommio could not create io_uring rings"),
        "{stderr}"
    );
    assert!(stderr.contains("ulimit -l"), "{stderr}");
}

/// `sshr --config <config> --check-config`: exit code and stderr.
fn check_config(config: &Path) -> (Option<i32>, String) {
    let out = Command::new(SSHR)
        .arg("--config")
        .arg(config)
        .arg("--check-config")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_fails_for_a_port_in_use_and_an_address_not_here() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = dir.path().join("sshr.toml");
    std::fs::write(
        &config,
        format!("listen = [\"127.0.0.1:{port}\"]\nhost_keys = [\"k\"]\nupstream_key = \"u\"\n"),
    )
    .unwrap();
    let (code, stderr) = check_config(&config);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port} (`listen`)")),
        "{stderr}"
    );

    // The metrics address too; and an address of no interface of this host (TEST-NET-1).
    let free = free_port();
    std::fs::write(
        &config,
        format!(
            "listen = [\"127.0.0.1:{free}\", \"192.0.2.1:2222\"]\nhost_keys = [\"k\"]\n\
             upstream_key = \"u\"\nmetrics_listen = \"127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();
    let (code, stderr) = check_config(&config);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot listen on 192.0.2.1:2222 (`listen`)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (`metrics_listen`)"
        )),
        "{stderr}"
    );
    assert!(!dir.path().join("k").exists() && !dir.path().join("u").exists());
    drop(taken);
}

#[test]
fn check_config_fails_for_a_key_path_that_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where a file is: not writable even by root.
    std::fs::write(dir.path().join("keys"), "").unwrap();
    let config = dir.path().join("sshr.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "listen = [\"127.0.0.1:{port}\"]\nhost_keys = [\"keys/host\"]\n\
             upstream_key = \"/proc/sshr-no-such-dir/upstream\"\n"
        ),
    )
    .unwrap();
    let (code, stderr) = check_config(&config);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("keys/host: Not a directory"), "{stderr}");
    assert!(
        stderr.contains("/proc/sshr-no-such-dir/upstream is absent and cannot be generated"),
        "{stderr}"
    );
    // Nothing left behind by the probes.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["keys", "sshr.toml"]);
}

#[test]
fn a_failed_start_leaves_no_generated_keys() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // One host key exists already: it must stay, and stay the same.
    let existing = dir.path().join("old_host");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&existing)
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let existing_text = std::fs::read(&existing).unwrap();
    let config = dir.path().join("sshr.toml");
    std::fs::write(
        &config,
        format!(
            "listen = [\"127.0.0.1:{port}\"]\nhost_keys = [\"old_host\", \"keys/new_host\"]\n\
             upstream_key = \"keys/upstream\"\nworkers = 1\n"
        ),
    )
    .unwrap();
    let out = Command::new(SSHR)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("generated host key"), "{stderr}");
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["old_host", "old_host.pub", "sshr.toml"], "{stderr}");
    assert_eq!(std::fs::read(&existing).unwrap(), existing_text);
}

#[test]
fn a_garbage_key_file_is_named_as_not_an_openssh_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("host");
    std::fs::write(&key, b"\0\0\0garbage\0").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.path().join("sshr.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!("listen = [\"127.0.0.1:{port}\"]\nhost_keys = [\"host\"]\nupstream_key = \"u\"\nworkers = 1\n"),
    )
    .unwrap();
    for check in [true, false] {
        let mut command = Command::new(SSHR);
        command.arg("--config").arg(&config).env("RUST_LOG", "off");
        if check {
            command.arg("--check-config");
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr:?}");
        assert!(
            stderr.contains(&format!(
                "key file {} is not an OpenSSH private key (it is binary data)",
                key.display()
            )),
            "{stderr}"
        );
        assert!(
            stderr.contains("-----BEGIN OPENSSH PRIVATE KEY-----"),
            "{stderr}"
        );
        assert!(!stderr.contains("NUL byte"), "{stderr}");
    }
    assert!(
        !dir.path().join("u").exists(),
        "the failed start removed it"
    );
}

#[test]
fn tunnel_yes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sshr.toml");
    std::fs::write(
        &config,
        "listen = [\"127.0.0.1:2222\"]\nhost_keys = [\"k\"]\nupstream_key = \"u\"\n\n\
         [[users]]\nname = \"a\"\nupstream = \"h:22\"\ntunnel = \"yes\"\n",
    )
    .unwrap();
    let (code, stderr) = check_config(&config);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("sshr.toml:8"), "{stderr}");
    assert!(
        stderr.contains(
            "`tunnel` = \"yes\" is not a tunnel policy: use \"deny\", \"point-to-point\", \"ethernet\" or \"any\""
        ),
        "{stderr}"
    );
}

/// A key appended to a user's authorized_keys_file while sshr runs is accepted at the
/// next login, without a restart or reload.
#[test]
fn a_key_added_to_authorized_keys_file_is_accepted_at_the_next_login() {
    use sshr_testsupport::{keygen, run_with_timeout, ssh_command, Sshd, SshdOptions, SshrSetup};

    let setup = SshrSetup::new();
    let sshd = Sshd::start(SshdOptions {
        authorized_keys: vec![setup.upstream_public_key.clone()],
        ..SshdOptions::default()
    });
    let client = setup.dir.path().join("id_alice");
    keygen(&client, "ed25519", None);
    let client_public = std::fs::read_to_string(client.with_extension("pub")).unwrap();
    let authorized = setup.dir.path().join("alice.keys");
    std::fs::write(&authorized, "# no keys yet\n").unwrap();
    let sshr = setup.start(
        Path::new(SSHR),
        &format!(
            "[[users]]\nname = \"alice\"\nupstream = \"127.0.0.1:{}\"\nupstream_user = \"root\"\n\
             authorized_keys_file = {:?}\n",
            sshd.port,
            authorized.display().to_string()
        ),
    );
    let login = || {
        let mut cmd = ssh_command("ssh", sshr.setup.port, Some(&client));
        cmd.arg("alice@127.0.0.1").args(["echo", "logged-in"]);
        run_with_timeout(cmd, Duration::from_secs(30))
    };
    let out = login();
    assert!(!out.status.success(), "no key yet: {out:?}");

    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&authorized)
        .unwrap();
    file.write_all(client_public.as_bytes()).unwrap();
    drop(file);
    let out = login();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("logged-in"),
        "{out:?}\nsshr log:\n{}",
        sshr.log()
    );

    // Emptied again: refused again.
    std::fs::write(&authorized, "").unwrap();
    let out = login();
    assert!(!out.status.success(), "key removed: {out:?}");
}
