//! End to end with OpenSSH 10.x, whose `ssh` and `sshd` prefer the post-quantum
//! `mlkem768x25519-sha256` (Debian 12's 9.2 lacks it) and whose `ssh` warns on every
//! connection that is not post-quantum. They run chrooted from the Debian unstable root
//! of `scripts/openssh10-root` (tests/support/src/openssh10.rs); needs root.
//!
//! - OpenSSH 10 straight to OpenSSH 10 negotiates mlkem768x25519-sha256: the fixture
//!   itself works, and the algorithm names below are the ones its logs print.
//! - Through sshr, OpenSSH 10 with its defaults on both ends: the command runs, both legs
//!   negotiate mlkem768x25519-sha256 (the client's `ssh -v` and the upstream sshd's
//!   DEBUG1 log), and the client prints no post-quantum warning.
//! - Through sshr, the versions mixed: an OpenSSH 10 client to a 9.2 upstream and a 9.2
//!   client to a 10 upstream run a command.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sshr_testsupport::openssh10::{self, RootDir, MLKEM768X25519, NOT_POST_QUANTUM};
use sshr_testsupport::{keygen, run_bounded, ssh_command, Sshd, SshdOptions, Sshr, SshrSetup};

const SSHR: &str = env!("CARGO_BIN_EXE_sshr");

/// The command every test runs, and what it must print and exit with.
const REMOTE: &str = "echo from-upstream; echo to-stderr >&2; exit 7";
const REMOTE_STDOUT: &str = "from-upstream\n";
const REMOTE_STATUS: i32 = 7;

fn public_key(private: &Path) -> String {
    fs::read_to_string(private.with_extension("pub"))
        .unwrap()
        .trim()
        .to_owned()
}

/// A new ed25519 key `name` in `dir`; its public line.
fn new_key(dir: &Path, name: &str) -> String {
    let key = dir.join(name);
    keygen(&key, "ed25519", None);
    public_key(&key)
}

/// sshr in front of the upstream on `upstream_port`, with one user `alice` (key
/// `alice_pub`) routed to root there; `setup`'s upstream key must be trusted by it.
fn start_sshr(setup: SshrSetup, upstream_port: u16, alice_pub: &str) -> Sshr {
    let tables = format!(
        "[[users]]\nname = \"alice\"\nupstream = \"127.0.0.1:{upstream_port}\"\n\
         upstream_user = \"root\"\nauthorized_keys = [{alice_pub:?}]\n"
    );
    setup.start(Path::new(SSHR), &tables)
}

/// Run a client (stdin from /dev/null, 30 s at most).
fn run(mut cmd: Command) -> Output {
    run_bounded(&mut cmd, Stdio::null(), Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"))
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The command ran on the upstream: its output and exit status came back.
fn assert_ran(out: &Output, context: &str) {
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).as_ref()
        ),
        (Some(REMOTE_STATUS), REMOTE_STDOUT),
        "{context}: the remote command did not run as expected\n{}",
        describe(out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("to-stderr"),
        "{context}: the remote command's stderr did not come back\n{}",
        describe(out)
    );
}

/// The post-quantum facts of one connection, for one assertion that shows them all.
fn pq_report(client_stderr: &str, upstream_log: &str) -> (Option<String>, bool, Option<String>) {
    (
        openssh10::negotiated_kex(client_stderr).map(str::to_owned),
        client_stderr.contains(NOT_POST_QUANTUM),
        openssh10::negotiated_kex(upstream_log).map(str::to_owned),
    )
}

#[test]
fn openssh10_direct_negotiates_mlkem768x25519() {
    let keys = RootDir::new("sshr-e2e10");
    let alice_pub = new_key(keys.dir(), "alice");
    let sshd = openssh10::Sshd::start(SshdOptions {
        authorized_keys: vec![alice_pub],
        ..SshdOptions::default()
    });
    let mut cmd = openssh10::ssh_command(sshd.port, Some(&keys.path("alice")));
    cmd.arg("-v").arg("root@127.0.0.1").arg(REMOTE);
    let out = run(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("OpenSSH_10."),
        "the root's ssh is not OpenSSH 10 ({})\n{}",
        openssh10::version(),
        describe(&out)
    );
    assert_ran(&out, "OpenSSH 10 -> OpenSSH 10 sshd");
    let log = sshd.log();
    assert!(
        log.contains("sshd-session version OpenSSH_10."),
        "the upstream is not OpenSSH 10; its log:\n{log}"
    );
    assert_eq!(
        pq_report(&stderr, &log),
        (Some(MLKEM768X25519.into()), false, Some(MLKEM768X25519.into())),
        "(client kex, post-quantum warning, sshd kex) of a direct connection\nclient {}\nsshd log:\n{log}",
        describe(&out)
    );
}

#[test]
fn openssh10_through_sshr_to_openssh10_is_post_quantum_on_both_legs() {
    let keys = RootDir::new("sshr-e2e10");
    let alice_pub = new_key(keys.dir(), "alice");
    let setup = SshrSetup::new();
    let upstream = openssh10::Sshd::start(SshdOptions {
        authorized_keys: vec![setup.upstream_public_key.clone()],
        ..SshdOptions::default()
    });
    let sshr = start_sshr(setup, upstream.port, &alice_pub);
    let mut cmd = openssh10::ssh_command(sshr.port(), Some(&keys.path("alice")));
    cmd.arg("-v").arg("alice@127.0.0.1").arg(REMOTE);
    let out = run(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ran(
        &out,
        &format!(
            "OpenSSH 10 -> sshr -> OpenSSH 10 sshd; sshr log:\n{}",
            sshr.log()
        ),
    );
    let log = upstream.log();
    assert_eq!(
        pq_report(&stderr, &log),
        (
            Some(MLKEM768X25519.into()),
            false,
            Some(MLKEM768X25519.into())
        ),
        "(client leg kex, post-quantum warning printed, upstream leg kex) through sshr\n\
         client {}\nupstream sshd log:\n{log}\nsshr log:\n{}",
        describe(&out),
        sshr.log()
    );
}

#[test]
fn openssh10_client_through_sshr_to_openssh92_upstream() {
    let keys = RootDir::new("sshr-e2e10");
    let alice_pub = new_key(keys.dir(), "alice");
    let setup = SshrSetup::new();
    let upstream = Sshd::start(SshdOptions {
        authorized_keys: vec![setup.upstream_public_key.clone()],
        ..SshdOptions::default()
    });
    let sshr = start_sshr(setup, upstream.port, &alice_pub);
    let mut cmd = openssh10::ssh_command(sshr.port(), Some(&keys.path("alice")));
    cmd.arg("alice@127.0.0.1").arg(REMOTE);
    let out = run(cmd);
    assert_ran(
        &out,
        &format!(
            "OpenSSH 10 -> sshr -> OpenSSH 9.2 sshd; sshr log:\n{}\nsshd log:\n{}",
            sshr.log(),
            upstream.log()
        ),
    );
}

#[test]
fn openssh92_client_through_sshr_to_openssh10_upstream() {
    let keys = tempfile::tempdir().unwrap();
    let alice_pub = new_key(keys.path(), "alice");
    let setup = SshrSetup::new();
    let upstream = openssh10::Sshd::start(SshdOptions {
        authorized_keys: vec![setup.upstream_public_key.clone()],
        ..SshdOptions::default()
    });
    let sshr = start_sshr(setup, upstream.port, &alice_pub);
    let mut cmd = ssh_command("ssh", sshr.port(), Some(&keys.path().join("alice")));
    cmd.env_remove("SSH_AUTH_SOCK")
        .arg("alice@127.0.0.1")
        .arg(REMOTE);
    let out = run(cmd);
    let log = upstream.log();
    assert_ran(
        &out,
        &format!(
            "OpenSSH 9.2 -> sshr -> OpenSSH 10 sshd; sshr log:\n{}\nsshd log:\n{log}",
            sshr.log()
        ),
    );
    assert!(
        log.contains("sshd-session version OpenSSH_10."),
        "the upstream is not OpenSSH 10; its log:\n{log}"
    );
}
