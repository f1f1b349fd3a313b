//! End to end: how the proxy logs in upstream, and what it tells clients about it, with
//! the real `sshr` binary between real clients (OpenSSH `ssh`, paramiko) and real
//! OpenSSH `sshd`s on loopback.
//!
//! - Several upstream keys (`upstream_key = [...]`): a key the server refuses is
//!   followed by the next, as ssh does with several identities.
//! - The methods listed to a client follow what the account's server offers, so that
//!   paramiko's `password=` falls back to keyboard-interactive on a server that takes
//!   passwords only that way; a name without a server gets the list real servers gave,
//!   after as long as they took.
//! - A server whose key exchange has nothing in common with the proxy's is reported as
//!   that, in one line, not as "unreachable".
//!
//! Needs root (sshd; `useradd`/`userdel` for the password test's temporary account),
//! `/usr/sbin/sshd`, the OpenSSH client and Debian's `python3-paramiko`.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sshr_protocol::auth::{self, Failure, Method, Request};
use sshr_protocol::msg;
use sshr_protocol::transport::{Event, Input};
use sshr_testsupport::conn::Conn;
use sshr_testsupport::temp_account::TempAccount;
use sshr_testsupport::{keygen, run_bounded, Sshd, SshdOptions, Sshr, SshrSetup, TempDir};

const SSHR: &str = env!("CARGO_BIN_EXE_sshr");

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn public_key(path: &Path) -> String {
    fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_owned()
}

/// A client key pair in a new directory: `<dir>/client` and `client.pub`.
fn client_key() -> (TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("client");
    keygen(&key, "ed25519", None);
    (dir, key)
}

/// One `[[users]]` entry with the client key: `name` to `upstream_user` on `port`.
fn user(name: &str, port: u16, upstream_user: &str, key: &Path) -> String {
    format!(
        "[[users]]\nname = \"{name}\"\nupstream = \"127.0.0.1:{port}\"\nupstream_user = \"{upstream_user}\"\nauthorized_keys = [{:?}]\n\n",
        public_key(key)
    )
}

/// `ssh` with a clean configuration, in batch mode, `args` first (ssh keeps an option's
/// first value): `user@127.0.0.1 -p port remote...`.
fn ssh(port: u16, user: &str, key: Option<&Path>, args: &[&str], remote: &[&str]) -> Output {
    let mut cmd = Command::new("ssh");
    cmd.env_remove("SSH_AUTH_SOCK").env_remove("DISPLAY");
    cmd.args(args)
        .args(["-F", "/dev/null"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "BatchMode=yes"])
        .args(["-o", "ConnectTimeout=10"])
        .args(["-o", "LogLevel=ERROR"])
        .args(["-p", &port.to_string()]);
    match key {
        Some(k) => cmd.arg("-i").arg(k).args(["-o", "IdentitiesOnly=yes"]),
        None => cmd.args(["-o", "PubkeyAuthentication=no"]),
    };
    cmd.arg(format!("{user}@127.0.0.1")).args(remote);
    run_bounded(&mut cmd, Stdio::null(), secs(60)).unwrap_or_else(|e| panic!("{e}"))
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The part of ssh's "user@host: Permission denied (...)." line after the user name.
fn denial(out: &Output) -> Option<String> {
    String::from_utf8_lossy(&out.stderr).lines().find_map(|l| {
        l.split_once(": Permission denied")
            .map(|(_, r)| format!("Permission denied{r}"))
    })
}

// ---------------------------------------------------------------------------------------
// 1. Several upstream keys

#[test]
fn a_key_the_upstream_refuses_is_followed_by_the_next() {
    // An sshd that takes RSA user keys only, and only with SHA-512 signatures (as some
    // hardened servers do), with both of the proxy's keys in its authorized_keys.
    let mut setup = SshrSetup::new();
    let rsa = setup.dir.path().join("upstream_rsa");
    keygen(&rsa, "rsa", Some(3072));
    let sshd = Sshd::start_with_overrides(
        SshdOptions {
            authorized_keys: vec![setup.upstream_public_key.clone(), public_key(&rsa)],
            ..SshdOptions::default()
        },
        &["PubkeyAcceptedAlgorithms rsa-sha2-512"],
    );
    let (_keys, key) = client_key();
    let tables = user("alice", sshd.port, "root", &key);

    // With the ed25519 key alone, the server refuses the proxy: what the second key is
    // needed for.
    let only_ed25519 = SshrSetup::new();
    let mut authorized = fs::read_to_string(sshd.path("authorized_keys")).unwrap();
    authorized.push_str(&format!("{}\n", only_ed25519.upstream_public_key));
    fs::write(sshd.path("authorized_keys"), authorized).unwrap();
    let sshr = only_ed25519.start(Path::new(SSHR), &tables);
    let out = ssh(sshr.port(), "alice", Some(&key), &[], &["echo logged-in"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("sshr: the server for this account refused the proxy's login"),
        "one ed25519 key against an RSA-only server: {}\nsshd log:\n{}",
        describe(&out),
        sshd.log()
    );
    drop(sshr);

    // ed25519 first, then RSA: refused, then accepted.
    setup.more_upstream_keys.push(rsa.clone());
    let sshr = setup.start(Path::new(SSHR), &tables);
    let out = ssh(sshr.port(), "alice", Some(&key), &[], &["echo logged-in"]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "logged-in",
        "[ed25519, rsa]: {}\nsshr log:\n{}\nsshd log:\n{}",
        describe(&out),
        sshr.log(),
        sshd.log()
    );
    let log = sshr.log();
    let rsa_fingerprint = fingerprint(&rsa);
    let ed_fingerprint = fingerprint(&setup_upstream_key(&sshr));
    let refused = log
        .lines()
        .find(|l| l.contains("upstream refused the proxy's key"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(
        refused.contains(&ed_fingerprint) && refused.contains("ssh-ed25519"),
        "the ed25519 key went first: {refused}"
    );
    // The server refused ed25519 for its algorithm, then accepted the RSA key: since it
    // takes rsa-sha2-512 signatures only, the proxy signed with that (never ssh-rsa).
    let sshd_log = sshd.log();
    let refused_at =
        sshd_log.find("signature algorithm ssh-ed25519 not in PubkeyAcceptedAlgorithms");
    let accepted_at = sshd_log
        .lines()
        .find(|l| l.contains("Accepted publickey for root") && l.contains(&rsa_fingerprint))
        .and_then(|l| sshd_log.find(l));
    assert!(
        matches!((refused_at, accepted_at), (Some(r), Some(a)) if r < a),
        "ed25519 refused, then the RSA key accepted:\n{sshd_log}"
    );
}

/// The proxy's first upstream key (generated by the setup).
fn setup_upstream_key(sshr: &Sshr) -> std::path::PathBuf {
    sshr.setup.upstream_key.clone()
}

/// `SHA256:...` of a key file, as ssh-keygen prints it.
fn fingerprint(key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key.with_extension("pub"))
        .output()
        .expect("ssh-keygen");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("a fingerprint")
        .to_owned()
}

// ---------------------------------------------------------------------------------------
// 2. The methods listed follow the account's server

/// Logs in with paramiko's `SSHClient.connect(password=...)` (no keys, no agent) and
/// runs `id -un`. Prints `OK <name>`, or `REFUSED <exception>`; paramiko's log (the
/// methods each refusal listed) goes to stderr.
const PARAMIKO_PASSWORD: &str = r#"
import logging, sys, paramiko
logging.basicConfig(stream=sys.stderr, level=logging.DEBUG)
port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
c = paramiko.SSHClient()
c.set_missing_host_key_policy(paramiko.AutoAddPolicy())
try:
    c.connect("127.0.0.1", port=port, username=user, password=password,
              look_for_keys=False, allow_agent=False, timeout=20, banner_timeout=20,
              auth_timeout=30)
except paramiko.AuthenticationException as e:
    print("REFUSED", type(e).__name__)  # BadAuthenticationType after a failed fallback
    sys.exit(0)
_, out, _ = c.exec_command("id -un")
print("OK", out.read().decode().strip())
c.close()
"#;

/// Runs [`PARAMIKO_PASSWORD`] with Debian's python3 (which has python3-paramiko).
fn paramiko_password(port: u16, user: &str, password: &str) -> (String, String) {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg("-c")
        .arg(PARAMIKO_PASSWORD)
        .arg(port.to_string())
        .arg(user)
        .arg(password);
    let out = run_bounded(&mut cmd, Stdio::null(), secs(90)).unwrap_or_else(|e| panic!("{e}"));
    (
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The methods paramiko logged for a refusal that did not list its method.
fn allowed(paramiko_log: &str) -> Option<&str> {
    paramiko_log
        .lines()
        .find_map(|l| l.split_once("Allowed methods: ").map(|(_, m)| m.trim()))
}

#[test]
fn paramiko_password_falls_back_to_keyboard_interactive_where_the_server_wants_it() {
    // sshd that takes passwords only through PAM's keyboard-interactive prompt.
    let account = TempAccount::create("sshrpw");
    let setup = SshrSetup::new();
    let sshd = Sshd::start_with_overrides(
        SshdOptions {
            authorized_keys: vec![setup.upstream_public_key.clone()],
            ..SshdOptions::default()
        },
        &["UsePAM yes", "KbdInteractiveAuthentication yes"],
    );
    let tables = format!(
        "[[users]]\nname = \"{}\"\nupstream = \"127.0.0.1:{}\"\n",
        account.name, sshd.port
    );
    let sshr = setup.start(Path::new(SSHR), &tables);
    let context = |what: &str, log: &str| {
        format!(
            "{what}\nparamiko:\n{}\nsshr log:\n{}\nsshd log:\n{}",
            sshr_testsupport::tail(log, 30),
            sshr.log(),
            sshr_testsupport::tail(&sshd.log(), 40)
        )
    };

    // Direct, paramiko falls back: the reference behaviour.
    let (direct, log) = paramiko_password(sshd.port, &account.name, &account.password);
    assert_eq!(
        direct,
        format!("OK {}", account.name),
        "{}",
        context("direct", &log)
    );

    // Through the proxy: the same.
    let (proxied, log) = paramiko_password(sshr.port(), &account.name, &account.password);
    assert_eq!(
        proxied,
        format!("OK {}", account.name),
        "{}",
        context("through sshr", &log)
    );
    assert_eq!(
        allowed(&log),
        Some("['publickey', 'keyboard-interactive']"),
        "{}",
        context("the proxy's list", &log)
    );

    // A wrong password is still refused, with the same list.
    let (wrong, log) = paramiko_password(sshr.port(), &account.name, "wrong-password");
    assert_eq!(
        wrong,
        "REFUSED BadAuthenticationType",
        "{}",
        context("wrong", &log)
    );
    assert_eq!(
        allowed(&log),
        Some("['publickey', 'keyboard-interactive']"),
        "{}",
        context("wrong password", &log)
    );

    // A name the proxy does not know gets the list the real server gave.
    let (unknown, log) = paramiko_password(sshr.port(), "nosuchuser", "wrong-password");
    assert_eq!(
        unknown,
        "REFUSED BadAuthenticationType",
        "{}",
        context("unknown", &log)
    );
    assert_eq!(
        allowed(&log),
        Some("['publickey', 'keyboard-interactive']"),
        "{}",
        context("unknown name", &log)
    );

    // ssh's `none` first: the same list, for the account and for an unknown name.
    for name in [account.name.as_str(), "nosuchuser"] {
        let out = ssh(sshr.port(), name, None, &[], &["true"]);
        assert_eq!(
            denial(&out).as_deref(),
            Some("Permission denied (publickey,keyboard-interactive)."),
            "{name}: {}\nsshr log:\n{}",
            describe(&out),
            sshr.log()
        );
    }
}

/// Completes the key exchange and the `ssh-userauth` service request of `c`.
fn until_service_accepted(c: &mut Conn) {
    let deadline = Instant::now() + secs(30);
    loop {
        assert!(Instant::now() < deadline, "no service accept within 30 s");
        c.flush();
        match c.t.read(&mut c.rx, Instant::now()).expect("handshake") {
            Input::Consumed(n) => {
                c.rx.drain(..n);
            }
            Input::Packet { len, .. } => {
                c.rx.drain(..len);
            }
            Input::NeedMore(_) => {
                let mut buf = [0u8; 65536];
                let n = c.s.read(&mut buf).expect("read from the proxy");
                assert!(n > 0, "the proxy closed the connection");
                c.rx.extend_from_slice(&buf[..n]);
            }
        }
        while let Some(e) = c.t.poll_event() {
            if matches!(e, Event::ServiceAccepted(_)) {
                return;
            }
        }
    }
}

/// A first `none` request as `user`: the methods listed, and how long the answer took.
fn none_answer(port: u16, user: &str) -> (String, Duration) {
    let mut c = Conn::connect(port);
    until_service_accepted(&mut c);
    let none = Request {
        user,
        service: auth::CONNECTION_SERVICE,
        method: Method::None,
    };
    c.t.send(&none.encode()).unwrap();
    let sent = Instant::now();
    c.flush();
    let reply = c.next_packet().expect("an answer");
    let took = sent.elapsed();
    assert_eq!(reply[0], msg::USERAUTH_FAILURE, "{user}");
    let listed = Failure::parse(&reply).unwrap().methods.as_str().to_owned();
    (listed, took)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn a_name_without_a_server_gets_the_real_list_after_a_real_wait() {
    // A server that offers public keys only (sshd's settings in the support crate), no
    // warm connections: every known name's list waits for a new upstream connection.
    let setup = SshrSetup::new();
    let sshd = Sshd::start(SshdOptions {
        authorized_keys: vec![setup.upstream_public_key.clone()],
        ..SshdOptions::default()
    });
    let (_keys, key) = client_key();
    let tables = format!(
        "[warm_upstreams]\nper_upstream = 0\n\n{}",
        user("alice", sshd.port, "root", &key)
    );
    let sshr = setup.start(Path::new(SSHR), &tables);
    // Before any server was heard, the decoy lists everything.
    let (first, _) = none_answer(sshr.port(), "nosuchuser");
    assert_eq!(first, "publickey,password,keyboard-interactive");

    let known: Vec<(String, Duration)> =
        (0..5).map(|_| none_answer(sshr.port(), "alice")).collect();
    let unknown: Vec<(String, Duration)> = (0..5)
        .map(|_| none_answer(sshr.port(), "nosuchuser"))
        .collect();
    for (list, _) in known.iter().chain(&unknown) {
        assert_eq!(list, "publickey", "known {known:?}, unknown {unknown:?}");
    }
    let k = median(known.iter().map(|x| x.1).collect());
    let u = median(unknown.iter().map(|x| x.1).collect());
    // The known name waits for the upstream's connection and its answer; without the
    // decoy wait the unknown one would be answered in well under a millisecond.
    assert!(
        u >= k.mul_f32(0.3) && u <= k * 3 + Duration::from_millis(50),
        "known name's list in {known:?}, unknown name's in {unknown:?}"
    );
    // The upstream was asked, with the account's upstream user, once per known login.
    let asked = sshd
        .log()
        .matches("userauth-request for user root service ssh-connection method none")
        .count();
    assert_eq!(asked, 5, "sshd log:\n{}", sshd.log());
    eprintln!("the list took: known name {known:?}, unknown name {unknown:?}");
}

// ---------------------------------------------------------------------------------------
// 3. A key exchange with nothing in common

#[test]
fn a_server_without_a_common_algorithm_is_named_as_such() {
    let setup = SshrSetup::new();
    let upstream = |host_keys: Vec<&'static str>, overrides: &[&str]| {
        Sshd::start_with_overrides(
            SshdOptions {
                host_keys,
                authorized_keys: vec![setup.upstream_public_key.clone()],
                ..SshdOptions::default()
            },
            overrides,
        )
    };
    // Algorithms OpenSSH 9.2 can still be told to use and the proxy does not have.
    let kex = upstream(
        vec!["ed25519"],
        &["KexAlgorithms diffie-hellman-group1-sha1"],
    );
    let host_key = upstream(vec!["rsa"], &["HostKeyAlgorithms ssh-rsa"]);
    let cipher = upstream(vec!["ed25519"], &["Ciphers aes192-ctr"]);
    let mac = upstream(
        vec!["ed25519"],
        &["Ciphers aes128-ctr", "MACs umac-128-etm@openssh.com"],
    );
    let (_keys, key) = client_key();
    let cases = [
        ("kex", &kex, "key exchange", "diffie-hellman-group1-sha1"),
        ("hostkey", &host_key, "host key type", "ssh-rsa"),
        ("cipher", &cipher, "cipher", "aes192-ctr"),
        ("mac", &mac, "MAC", "umac-128-etm@openssh.com"),
    ];
    let tables: String = cases
        .iter()
        .map(|(name, sshd, _, _)| user(name, sshd.port, "root", &key))
        .collect();
    let sshr = setup.start(Path::new(SSHR), &tables);

    for (name, sshd, what, theirs) in cases {
        let out = ssh(sshr.port(), name, Some(&key), &[], &["echo should-not-run"]);
        let expected =
            format!("sshr: the server for this account uses no {what} that the proxy supports");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr.lines().find(|l| l.contains("sshr: "));
        assert!(
            out.status.code() == Some(255)
                && line.is_some_and(
                    |l| l.starts_with("Received disconnect from ") && l.ends_with(&expected)
                ),
            "{name}: expected \"{expected}\": {}\nsshd log:\n{}",
            describe(&out),
            sshr_testsupport::tail(&sshd.log(), 20)
        );
        assert!(!stderr.contains("unreachable"), "{name}: {stderr}");
        // The log names the list and both sides' algorithms.
        let log = sshr.log();
        let logged = log
            .lines()
            .find(|l| l.contains("upstream key exchange failed") && l.contains(theirs))
            .unwrap_or_else(|| panic!("{name}: no log line with {theirs}:\n{log}"));
        assert!(
            logged.contains("proxy_offers=") && logged.contains("upstream_offers="),
            "{name}: {logged}"
        );
    }
    // Counted apart from other failures (the metrics are published once a second).
    let deadline = Instant::now() + secs(10);
    let counted = r#"sshr_upstream_connect_failures_total{reason="negotiation"} 4"#;
    let mut metrics = String::new();
    while Instant::now() < deadline && !metrics.contains(counted) {
        std::thread::sleep(Duration::from_millis(200));
        metrics = sshr.metrics().unwrap();
    }
    assert!(metrics.contains(counted), "{metrics}");
}
