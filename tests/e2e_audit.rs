//! End to end: the audit log (`audit_log`) of the real `sshr` binary, written while real
//! OpenSSH clients (`ssh`, `sftp`) log in through it to a real `sshd` on loopback: every
//! event with its fields, no password in it, and a new file after logrotate's rename and
//! SIGUSR1.
//!
//! Needs root (sshd) and `/usr/sbin/sshd` with the OpenSSH clients, like
//! `tests/e2e_openssh.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use sshr_protocol::auth::{self, Method, Request};
use sshr_testsupport::conn::Conn;
use sshr_testsupport::{
    echo_server, free_listen_port, keygen, one_user, run_bounded, ssh_command, Sshd, Sshr, TempDir,
};

const SSHR: &str = env!("CARGO_BIN_EXE_sshr");

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// sshr with `audit_log` in its directory, alice routed to root on a real sshd.
struct Env {
    sshd: Sshd,
    sshr: Sshr,
    keys: TempDir,
    log: PathBuf,
    /// Holds the log; removed after the daemons stop (fields drop in order).
    _dir: TempDir,
}

impl Env {
    fn new() -> Env {
        Env::with_sshd(&[])
    }

    /// With `sshd_overrides` first in the sshd's configuration.
    fn with_sshd(sshd_overrides: &[&str]) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("sshr-audit")
            .tempdir()
            .unwrap();
        let log = dir.path().join("audit.log");
        // (`audit_log` before any table: a top-level key.)
        let tables = format!("audit_log = {:?}\n", log.display().to_string());
        let (sshd, sshr, keys) = one_user::start(SSHR, sshd_overrides, &tables);
        Env {
            sshd,
            sshr,
            keys,
            log,
            _dir: dir,
        }
    }

    fn key(&self) -> PathBuf {
        self.keys.path().join(one_user::USER)
    }

    /// `ssh` as alice with `options`, then `remote` (the command).
    fn ssh(&self, identity: Option<&Path>, options: &[&str], remote: &[&str]) -> Command {
        let mut cmd = ssh_command("ssh", self.sshr.port(), identity);
        cmd.args(options)
            .arg(format!("{}@127.0.0.1", one_user::USER))
            .args(remote);
        cmd
    }

    /// What the proxy logged, for failure messages.
    fn context(&self) -> String {
        format!(
            "audit log:\n{}\nsshr log (tail):\n{}",
            fs::read_to_string(&self.log).unwrap_or_default(),
            sshr_testsupport::tail(&self.sshr.log(), 40)
        )
    }
}

/// The records in `path` (every line must be one JSON object).
fn records(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits (bounded) until `path` holds records for which `done` holds; returns them.
fn wait_for(path: &Path, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + secs(30);
    loop {
        let got = records(path);
        if done(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not in the audit log within 30 s:\n{}",
            fs::read_to_string(path).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn event<'a>(records: &'a [Value], name: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["event"] == name).collect()
}

/// The records of each session that got as far as its version line, by session id, in
/// order. (The readiness probe of the test support connects and leaves at once: its
/// session has only a `close` record.)
fn sessions(records: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut by_id: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for r in records {
        let id = r["session_id"].as_str().expect("session_id is a string");
        by_id.entry(id.to_owned()).or_default().push(r);
    }
    by_id.retain(|_, records| records.iter().any(|r| r["event"] == "connect"));
    by_id
}

/// The number of sessions (with a version line) that have ended.
fn closes(records: &[Value]) -> usize {
    sessions(records)
        .values()
        .filter(|records| records.iter().any(|r| r["event"] == "close"))
        .count()
}

fn fingerprint(public: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("ssh-keygen -l output")
        .to_owned()
}

/// The fingerprint of an OpenSSH public key line.
fn line_fingerprint(dir: &Path, line: &str) -> String {
    let path = dir.join("host.pub");
    fs::write(&path, format!("{line}\n")).unwrap();
    fingerprint(&path)
}

/// Kills the child on drop (a forwarding `ssh -N`).
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn common_fields_hold(r: &Value) {
    let time = r["time"].as_str().unwrap_or_else(|| panic!("time: {r}"));
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "RFC 3339 UTC with milliseconds: {r}"
    );
    let client: SocketAddr = r["client_addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("client_addr ip:port: {r}"));
    assert!(client.ip().is_loopback() && client.port() != 0, "{r}");
    assert!(
        r["session_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit())),
        "session_id in hex: {r}"
    );
}

#[test]
fn every_event_of_real_sessions_is_recorded_with_its_fields() {
    let env = Env::new();
    let alice_fp = fingerprint(&env.key().with_extension("pub"));
    let host_fp = line_fingerprint(env.keys.path(), &env.sshd.host_public_keys[0]);
    let upstream_addr = format!("127.0.0.1:{}", env.sshd.port);

    // 1. A shell session with a terminal.
    let out = run_bounded(
        &mut env.ssh(Some(&env.key()), &["-tt"], &["echo audit-shell-ok"]),
        Stdio::null(),
        secs(60),
    )
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("audit-shell-ok"),
        "ssh -tt: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        env.context()
    );
    wait_for(&env.log, "the shell session's close", |r| closes(r) >= 1);

    // 2. A local and a remote forward, used: bytes go through each to an echo server
    // (with -R the upstream sshd listens, on this machine).
    let echo = echo_server();
    let (lport, rport) = (free_listen_port(), free_listen_port());
    let local_spec = format!("{lport}:127.0.0.1:{echo}");
    let remote_spec = format!("127.0.0.1:{rport}:127.0.0.1:{echo}");
    let mut forward = env.ssh(
        Some(&env.key()),
        &["-N", "-o", "ExitOnForwardFailure=yes"],
        &[],
    );
    forward.args(["-L", &local_spec, "-R", &remote_spec]);
    let forward = Background(
        forward
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let laddr = SocketAddr::from(([127, 0, 0, 1], lport));
    let raddr = SocketAddr::from(([127, 0, 0, 1], rport));
    for addr in [laddr, raddr] {
        assert!(
            sshr_testsupport::wait_for_port(addr, secs(30)),
            "ssh -L/-R did not listen on {addr}; {}",
            env.context()
        );
    }
    for addr in [laddr, raddr] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(secs(20))).unwrap();
        let sent = vec![0x5au8; 100_000];
        s.write_all(&sent).unwrap();
        let mut got = vec![0u8; sent.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, sent, "echoed through {addr}");
    }
    drop(forward);
    wait_for(&env.log, "the forwarding session's close", |r| {
        closes(r) >= 2
    });

    // 3. An sftp upload, checked.
    let data_dir = tempfile::tempdir().unwrap();
    let local = data_dir.path().join("upload.bin");
    let remote = data_dir.path().join("remote.bin");
    let size: usize = 3 << 20;
    let mut data = vec![0u8; size];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    fs::write(&local, &data).unwrap();
    let batch = data_dir.path().join("batch");
    fs::write(
        &batch,
        format!("put {} {}\n", local.display(), remote.display()),
    )
    .unwrap();
    let mut sftp = ssh_command("sftp", env.sshr.port(), Some(&env.key()));
    sftp.arg("-b")
        .arg(&batch)
        .arg(format!("{}@127.0.0.1", one_user::USER));
    let out = run_bounded(&mut sftp, Stdio::null(), secs(120)).unwrap();
    assert!(
        out.status.success(),
        "sftp: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        env.context()
    );
    let digest = |p: &Path| hex::encode(Sha256::digest(fs::read(p).unwrap()));
    assert_eq!(digest(&remote), digest(&local), "the uploaded copy");
    let got = wait_for(&env.log, "the sftp session's close", |r| closes(r) >= 3);

    // Each session: connect, auth, upstream, channel(s), close, under one id and one
    // client address.
    for r in &got {
        common_fields_hold(r);
    }
    let by_id = sessions(&got);
    assert_eq!(by_id.len(), 3, "three sessions; {}", env.context());
    let mut kinds = Vec::new();
    for (id, records) in &by_id {
        let names: Vec<&str> = records
            .iter()
            .map(|r| r["event"].as_str().unwrap())
            .collect();
        assert_eq!(names.first(), Some(&"connect"), "session {id}: {names:?}");
        assert_eq!(names.last(), Some(&"close"), "session {id}: {names:?}");
        let addrs: Vec<_> = records.iter().map(|r| &r["client_addr"]).collect();
        assert!(
            addrs.iter().all(|a| *a == addrs[0]),
            "session {id}: {addrs:?}"
        );
        let connect = records[0];
        assert!(
            connect["client_version"]
                .as_str()
                .is_some_and(|v| v.starts_with("SSH-2.0-OpenSSH")),
            "{connect}"
        );
        let auths: Vec<_> = records.iter().filter(|r| r["event"] == "auth").collect();
        let success = auths
            .iter()
            .find(|r| r["result"] == "success")
            .unwrap_or_else(|| panic!("session {id}: no successful auth: {auths:?}"));
        assert_eq!(success["method"], "publickey");
        assert_eq!(success["key_fingerprint"], alice_fp.as_str());
        assert_eq!(success["user"], one_user::USER);
        assert_eq!(success["target"], Value::Null);
        let upstream = records
            .iter()
            .find(|r| r["event"] == "upstream")
            .unwrap_or_else(|| panic!("session {id}: no upstream record"));
        assert_eq!(upstream["upstream_addr"], upstream_addr.as_str());
        assert_eq!(upstream["upstream_user"], "root");
        assert_eq!(upstream["host_key_fingerprint"], host_fp.as_str());
        assert!(upstream["warm"].is_boolean() && upstream["setup_ms"].is_u64());
        let channels: Vec<_> = records.iter().filter(|r| r["event"] == "channel").collect();
        let close = records.last().unwrap();
        assert_eq!(close["reason"], "client closed", "{close}");
        let from_client = close["bytes_from_client"].as_u64().unwrap();
        let to_client = close["bytes_to_client"].as_u64().unwrap();
        assert!(from_client > 0 && to_client > 0, "{close}");
        assert!(close["duration_ms"].is_u64());
        kinds.push((channels, from_client, to_client));
    }
    // Which session was which, by its channels.
    let direct = format!("127.0.0.1:{echo}");
    let forward = kinds
        .iter()
        .find(|(c, ..)| c.iter().any(|r| r["channel_type"] == "direct-tcpip"))
        .unwrap_or_else(|| panic!("no direct-tcpip channel; {}", env.context()));
    let tcpip = forward
        .0
        .iter()
        .find(|r| r["channel_type"] == "direct-tcpip")
        .unwrap();
    assert_eq!(tcpip["address"], direct.as_str());
    let remote = forward
        .0
        .iter()
        .find(|r| r["channel_type"] == "tcpip-forward")
        .unwrap_or_else(|| panic!("no tcpip-forward record; {}", env.context()));
    assert_eq!(remote["address"], format!("127.0.0.1:{rport}").as_str());
    assert!(
        forward.1 >= 100_000 && forward.2 >= 100_000,
        "the forwarded bytes went both ways: {forward:?}"
    );
    let sessions_only: Vec<_> = kinds
        .iter()
        .filter(|(c, ..)| c.iter().all(|r| r["channel_type"] == "session"))
        .collect();
    assert_eq!(sessions_only.len(), 2, "shell and sftp: {kinds:?}");
    // The sftp upload: at least the file's bytes from the client, and not more than a
    // little framing on top; far less back.
    let sftp_session = sessions_only
        .iter()
        .max_by_key(|(_, from, _)| *from)
        .unwrap();
    let (from, to) = (sftp_session.1, sftp_session.2);
    assert!(
        from >= size as u64 && from < size as u64 * 11 / 10 + 65536,
        "bytes_from_client {from} for a {size} byte upload"
    );
    assert!(to < from / 4, "bytes_to_client {to} for an upload");
}

#[test]
fn failed_logins_are_recorded_and_no_password_is() {
    // The upstream offers passwords (the proxy lists what it offers: a client is only
    // asked for a password where one can work).
    let env = Env::with_sshd(&["PasswordAuthentication yes"]);

    // A key the user does not have.
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    keygen(&wrong, "ed25519", None);
    let wrong_fp = fingerprint(&wrong.with_extension("pub"));
    let out = run_bounded(
        &mut env.ssh(Some(&wrong), &[], &["true"]),
        Stdio::null(),
        secs(60),
    )
    .unwrap();
    assert!(!out.status.success(), "the wrong key was let in");
    let got = wait_for(&env.log, "the wrong key's session close", |r| {
        closes(r) >= 1
    });
    let failure = event(&got, "auth")
        .into_iter()
        .find(|r| r["result"] == "failure" && r["method"] == "publickey")
        .unwrap_or_else(|| panic!("no publickey failure; {}", env.context()));
    assert_eq!(failure["key_fingerprint"], wrong_fp.as_str());
    assert_eq!(failure["user"], one_user::USER);
    assert!(event(&got, "upstream").is_empty(), "no upstream login");

    // A wrong password attempt: its text never reaches the log.
    let password = format!("pw-{}-{}", std::process::id(), free_listen_port());
    let askpass = dir.path().join("askpass");
    fs::write(&askpass, format!("#!/bin/sh\necho '{password}'\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&askpass, fs::Permissions::from_mode(0o755)).unwrap();
    // (Not `ssh_command`: its BatchMode=yes would win, ssh keeps an option's first value.)
    let mut cmd = Command::new("ssh");
    cmd.args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .args([
            "-o",
            "BatchMode=no",
            "-o",
            "PreferredAuthentications=password",
        ])
        .args([
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "PubkeyAuthentication=no",
        ])
        .args(["-p", &env.sshr.port().to_string()])
        .arg(format!("{}@127.0.0.1", one_user::USER))
        .arg("true");
    cmd.env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0");
    let out = run_bounded(&mut cmd, Stdio::null(), secs(60)).unwrap();
    assert!(!out.status.success(), "the password was let in");
    let got = wait_for(&env.log, "the password session's close", |r| closes(r) >= 2);
    let password_failure = event(&got, "auth")
        .into_iter()
        .find(|r| r["method"] == "password")
        .unwrap_or_else(|| panic!("no password attempt recorded; {}", env.context()));
    assert_eq!(password_failure["result"], "failure");
    assert_eq!(password_failure["key_fingerprint"], Value::Null);
    let text = fs::read_to_string(&env.log).unwrap();
    assert!(
        !text.contains(&password),
        "the password is in the audit log"
    );
    assert!(
        !text.contains("PRIVATE KEY"),
        "key material is in the audit log"
    );

    // A client whose address we know exactly (a scripted one): `client_addr` is it.
    let stream = TcpStream::connect(env.sshr.addr()).unwrap();
    let mine = stream.local_addr().unwrap();
    let mut c = Conn::client(stream);
    let none = Request {
        user: "alice+x;y",
        service: auth::CONNECTION_SERVICE,
        method: Method::None,
    };
    c.t.send(&none.encode()).unwrap();
    let reply = c.next_packet().expect("an answer to `none`");
    assert_eq!(reply[0], sshr_protocol::msg::USERAUTH_FAILURE);
    drop(c);
    let got = wait_for(&env.log, "the scripted client's close", |r| closes(r) >= 3);
    let ours: Vec<_> = got
        .iter()
        .filter(|r| r["client_addr"] == mine.to_string().as_str())
        .collect();
    let names: Vec<_> = ours.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(names, ["connect", "auth", "close"], "{}", env.context());
    assert!(ours
        .iter()
        .all(|r| r["session_id"] == ours[0]["session_id"]));
    assert_eq!(
        (&ours[1]["method"], &ours[1]["result"]),
        (&"none".into(), &"failure".into())
    );
    assert_eq!(ours[1]["user"], "alice+x;y", "the name as given");
    assert_eq!(ours[2]["reason"], "client closed");
}

#[test]
fn sigusr1_after_a_rename_starts_a_new_file() {
    let env = Env::new();
    let login = || {
        let out = run_bounded(
            &mut env.ssh(Some(&env.key()), &[], &["true"]),
            Stdio::null(),
            secs(60),
        )
        .unwrap();
        assert!(
            out.status.success(),
            "ssh: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            env.context()
        );
    };
    login();
    wait_for(&env.log, "the first session's close", |r| closes(r) >= 1);
    let rotated = env.log.with_extension("log.1");
    fs::rename(&env.log, &rotated).unwrap();
    let kill = Command::new("kill")
        .args(["-USR1", &env.sshr.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // The writer opens the path again (the proxy logs it).
    let deadline = Instant::now() + secs(30);
    while !env.log.exists() {
        assert!(
            Instant::now() < deadline,
            "no new file after SIGUSR1; {}",
            env.context()
        );
        thread::sleep(Duration::from_millis(20));
    }
    login();
    let new = wait_for(&env.log, "the second session's close", |r| closes(r) >= 1);
    let old = records(&rotated);
    assert_eq!(
        closes(&old),
        1,
        "the first session stays in the rotated file"
    );
    assert_eq!(
        sessions(&new).len(),
        1,
        "only the second session in the new file"
    );
    assert_ne!(
        sessions(&old).keys().next(),
        sessions(&new).keys().next(),
        "two sessions"
    );
    assert!(env.sshr.log().contains("audit log reopened"));
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&env.log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & !0o640, 0, "created 0640 at most: {mode:o}");
}

#[test]
fn an_audit_log_that_cannot_be_opened_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("audit.log");
    let config = dir.path().join("sshr.toml");
    fs::write(
        &config,
        format!(
            "listen = [\"127.0.0.1:{}\"]\nhost_keys = [\"k\"]\nupstream_key = \"u\"\n\
             workers = 1\naudit_log = {:?}\n",
            free_listen_port(),
            missing.display().to_string()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(SSHR);
    cmd.arg("--config").arg(&config).env("RUST_LOG", "off");
    let out = run_bounded(&mut cmd, Stdio::null(), secs(60)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr:?}");
    assert!(
        stderr.contains(&format!("cannot open the audit log {}", missing.display())),
        "{stderr}"
    );
    assert!(
        !dir.path().join("k").exists(),
        "no generated key left behind"
    );
}
