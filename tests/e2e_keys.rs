//! End to end, host and user key types: real OpenSSH `ssh` through the `sshr` binary to
//! real OpenSSH `sshd` upstreams on loopback.
//!
//! - client keys: ECDSA P-521, and RSA 1024 (OpenSSH's `RequiredRSASize` default),
//!   refused with a reason in the log when `required_rsa_size` asks for more;
//! - host keys: sshr serving an ECDSA P-521 host key to `ssh` that allows nothing else
//!   and checks it against known_hosts, and an upstream sshd whose only host key is
//!   ECDSA P-521, which sshr logs in to with a P-521 key of its own; an upstream RSA
//!   1024 host key, refused when `required_rsa_size` asks for more;
//! - an inline `authorized_keys` list with unusable lines first: sshr starts, names each
//!   skipped line in a warning, and the good key logs in.
//!
//! Needs root (sshd), `/usr/sbin/sshd` and the OpenSSH clients.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sshr_testsupport::{keygen, run_bounded, ssh_command, Sshd, SshdOptions, Sshr, SshrSetup};

const SSHR: &str = env!("CARGO_BIN_EXE_sshr");

/// What an unusable inline line is logged as.
const SKIPPED: &str = "skipping unusable authorized_keys entry";

/// A client key made by ssh-keygen in `dir`: its path and public line.
fn client_key(dir: &Path, name: &str, kind: &str, bits: Option<u32>) -> (PathBuf, String) {
    let path = dir.join(name);
    keygen(&path, kind, bits);
    let public = fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_owned())
}

/// `ssh-keygen -lf`: the SHA256 fingerprint of a public key file.
fn fingerprint(public: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

/// An upstream sshd that trusts the proxy's upstream key, with these host key types and
/// extra sshd_config lines.
fn upstream(setup: &SshrSetup, host_keys: Vec<&'static str>, extra: Vec<String>) -> Sshd {
    Sshd::start(SshdOptions {
        host_keys,
        extra,
        authorized_keys: vec![setup.upstream_public_key.clone()],
    })
}

/// `[[users]]` entry `name` to root on `sshd`, with these inline keys and extra lines.
fn user(name: &str, sshd: &Sshd, keys: &[&str], extra: &str) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("  {k:?},\n")).collect();
    format!(
        "[[users]]\nname = \"{name}\"\nupstream = \"127.0.0.1:{}\"\nupstream_user = \"root\"\n\
         authorized_keys = [\n{}]\n{extra}\n",
        sshd.port,
        keys.concat()
    )
}

/// `ssh -i key user@proxy echo <word>` through sshr, with `-v`.
fn login(sshr: &Sshr, key: &Path, user: &str, options: &[&str]) -> Output {
    let mut cmd = ssh_command("ssh", sshr.port(), Some(key));
    cmd.arg("-v")
        .args(options)
        .args([&format!("{user}@127.0.0.1"), "echo", "through-sshr"]);
    run_bounded(&mut cmd, Stdio::null(), Duration::from_secs(30)).unwrap()
}

fn logged_in(out: &Output) -> bool {
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "through-sshr"
}

fn explain(out: &Output, sshr: &Sshr) -> String {
    format!(
        "status {}\nssh stderr:\n{}\nsshr log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        sshr.log()
    )
}

#[test]
fn ecdsa_p521_client_key_logs_in() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = client_key(keys.path(), "id_ecdsa521", "ecdsa", Some(521));
    assert!(public.starts_with("ecdsa-sha2-nistp521 "));
    let setup = SshrSetup::new();
    let sshd = upstream(&setup, vec!["ed25519"], Vec::new());
    let sshr = setup.start(Path::new(SSHR), &user("alice", &sshd, &[&public], ""));

    let out = login(&sshr, &key, "alice", &[]);
    assert!(logged_in(&out), "{}", explain(&out, &sshr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Server accepts key:") && stderr.contains("ECDSA"),
        "{stderr}"
    );
}

#[test]
fn rsa_1024_client_key_logs_in_unless_more_is_required() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = client_key(keys.path(), "id_rsa1024", "rsa", Some(1024));
    let (ed_key, ed_public) = client_key(keys.path(), "id_ed25519", "ed25519", None);
    let setup = SshrSetup::new();
    let sshd = upstream(&setup, vec!["ed25519"], Vec::new());
    let sshr = setup.start(Path::new(SSHR), &user("alice", &sshd, &[&public], ""));
    // OpenSSH's default, 1024 bits.
    let out = login(&sshr, &key, "alice", &[]);
    assert!(logged_in(&out), "{}", explain(&out, &sshr));
    drop(sshr);

    // Asked for 2048: the listed key is skipped at start (named by fingerprint, never by
    // its text), and the client offering it is refused with the reason in the log.
    let setup = SshrSetup::new();
    let sshd = upstream(&setup, vec!["ed25519"], Vec::new());
    let tables = format!(
        "required_rsa_size = 2048\n\n{}",
        user("alice", &sshd, &[&public, &ed_public], "")
    );
    let sshr = setup.start(Path::new(SSHR), &tables);
    let out = login(&sshr, &key, "alice", &[]);
    assert!(!logged_in(&out), "{}", explain(&out, &sshr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        explain(&out, &sshr)
    );
    let log = sshr.log();
    let fp = fingerprint(&key.with_extension("pub"));
    let skipped = log
        .lines()
        .find(|l| l.contains(SKIPPED))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(
        skipped.contains("user=\"alice\"")
            && skipped.contains("entry=1")
            && skipped.contains(&fp)
            && skipped.contains("RSA key of 1024 bits is smaller than the required 2048 bits"),
        "{skipped}"
    );
    let material = public.split_whitespace().nth(1).unwrap();
    assert!(
        !log.contains(&material[16..48]),
        "key text in the log:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("login attempt failed")
            && l.contains(&fp)
            && l.contains("reason=\"RSA key smaller than required_rsa_size\"")),
        "{log}"
    );
    // The other key still logs in.
    let out = login(&sshr, &ed_key, "alice", &[]);
    assert!(logged_in(&out), "{}", explain(&out, &sshr));
}

/// A P-521 key whose private scalar ssh-keygen wrote in 65 bytes, as it does for about
/// half of them (the protocol crate's fixture): copied to `path`, private to its owner.
fn short_scalar_p521_key(path: &Path) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol/tests/data/hostkey");
    fs::copy(fixtures.join("ecdsa521-short"), path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    fs::copy(
        fixtures.join("ecdsa521-short.pub"),
        path.with_extension("pub"),
    )
    .unwrap();
    fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn sshr_serves_an_ecdsa_p521_host_key() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = client_key(keys.path(), "id_ed25519", "ed25519", None);
    // One made now, and one whose scalar is short (a fresh one is, one time in two).
    for short in [false, true] {
        let mut setup = SshrSetup::new();
        let host_key = setup.dir.path().join("ssh_host_ecdsa521_key");
        let host_public = if short {
            short_scalar_p521_key(&host_key)
        } else {
            keygen(&host_key, "ecdsa", Some(521));
            fs::read_to_string(host_key.with_extension("pub")).unwrap()
        };
        setup.host_key = host_key.clone();
        setup.host_public_key = host_public.trim().to_owned();
        let sshd = upstream(&setup, vec!["ed25519"], Vec::new());
        let sshr = setup.start(Path::new(SSHR), &user("alice", &sshd, &[&public], ""));

        // A known_hosts with only that key, checked strictly, and no other algorithm
        // allowed: ssh logs in only if sshr signs the exchange with that very key.
        let known_hosts = keys.path().join("known_hosts");
        let host_line: Vec<&str> = host_public.split_whitespace().take(2).collect();
        fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{} {}\n", sshr.port(), host_line.join(" ")),
        )
        .unwrap();
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-v", "-p", &sshr.port().to_string()])
            .args(["-o", "StrictHostKeyChecking=yes", "-o"])
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "HostKeyAlgorithms=ecdsa-sha2-nistp521"])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i"])
            .arg(&key)
            .args(["alice@127.0.0.1", "echo", "through-sshr"]);
        let out = run_bounded(&mut cmd, Stdio::null(), Duration::from_secs(30)).unwrap();
        assert!(logged_in(&out), "short {short}: {}", explain(&out, &sshr));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let fp = fingerprint(&host_key.with_extension("pub"));
        assert!(
            stderr.contains(&format!("Server host key: ecdsa-sha2-nistp521 {fp}")),
            "{stderr}"
        );
        assert!(stderr.contains("Host '[127.0.0.1]:"), "{stderr}");
    }
}

#[test]
fn upstream_with_only_an_ecdsa_p521_host_key() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = client_key(keys.path(), "id_ed25519", "ed25519", None);
    // The proxy logs in there with a P-521 key too: the upstream leg signs with P-521
    // and verifies P-521.
    let mut setup = SshrSetup::new();
    let upstream_key = setup.dir.path().join("upstream_ecdsa521");
    setup.upstream_public_key = short_scalar_p521_key(&upstream_key);
    setup.upstream_key = upstream_key;
    let sshd = upstream(
        &setup,
        vec!["ecdsa521"],
        vec!["HostKeyAlgorithms ecdsa-sha2-nistp521".into()],
    );
    let pin = sshd.host_public_keys[0].clone();
    assert!(pin.starts_with("ecdsa-sha2-nistp521 "), "{pin}");
    let pin_fp = fingerprint(&sshd.path("host_0_ecdsa521.pub"));
    let tables = format!(
        "{}{}",
        user("alice", &sshd, &[&public], ""),
        user(
            "pinned",
            &sshd,
            &[&public],
            &format!("upstream_host_key = {pin:?}")
        )
    );
    let sshr = setup.start(Path::new(SSHR), &tables);

    for name in ["alice", "pinned"] {
        let out = login(&sshr, &key, name, &[]);
        assert!(logged_in(&out), "{name}: {}", explain(&out, &sshr));
    }
    let log = sshr.log();
    assert!(
        log.lines()
            .any(|l| l.contains("upstream host key matches the pin") && l.contains(&pin_fp)),
        "{log}"
    );
    let sshd_log = sshd.log();
    assert!(
        sshd_log.contains("kex: host key algorithm: ecdsa-sha2-nistp521")
            && sshd_log.contains("Accepted publickey for root from 127.0.0.1")
            && sshd_log.contains("ECDSA SHA256:"),
        "sshd log:\n{sshd_log}"
    );
}

#[test]
fn upstream_rsa_1024_host_key_is_refused_only_when_more_is_required() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = client_key(keys.path(), "id_ed25519", "ed25519", None);
    for (required, accepted) in [("", true), ("required_rsa_size = 2048\n", false)] {
        let setup = SshrSetup::new();
        let sshd = upstream(
            &setup,
            vec!["rsa1024"],
            vec!["HostKeyAlgorithms rsa-sha2-512,rsa-sha2-256".into()],
        );
        let tables = format!("{required}\n{}", user("alice", &sshd, &[&public], ""));
        let sshr = setup.start(Path::new(SSHR), &tables);
        let out = login(&sshr, &key, "alice", &[]);
        assert_eq!(logged_in(&out), accepted, "{}", explain(&out, &sshr));
        if !accepted {
            let log = sshr.log();
            assert!(
                log.contains("RSA key of 1024 bits is smaller than the required 2048 bits"),
                "{log}"
            );
        }
    }
}

#[test]
fn unusable_inline_key_lines_are_skipped_and_the_good_key_logs_in() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = client_key(keys.path(), "id_ed25519", "ed25519", None);
    let setup = SshrSetup::new();
    let sshd = upstream(&setup, vec!["ed25519"], Vec::new());
    let garbage = "ssh-ed25519 AAAAnot-a-key!! someone@laptop";
    // A DSA key (ssh-keygen 9.2 still makes them), a type sshr does not support.
    let unknown_type = include_str!("../protocol/tests/data/hostkey/dsa.pub").trim();
    let sshr = setup.start(
        Path::new(SSHR),
        &user("alice", &sshd, &[garbage, unknown_type, &public], ""),
    );

    // Started, with one warning per skipped line, naming its line in the file.
    let config = fs::read_to_string(&sshr.config_path).unwrap();
    let line_of = |text: &str| {
        1 + config
            .lines()
            .position(|l| l.contains(text))
            .expect("line in the config")
    };
    let log = sshr.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(SKIPPED)).collect();
    assert_eq!(warnings.len(), 2, "{log}");
    for (warning, text, entry, reason) in [
        (
            warnings[0],
            garbage,
            1,
            "invalid public key: invalid base64",
        ),
        (warnings[1], unknown_type, 2, "unsupported key type ssh-dss"),
    ] {
        assert!(warning.contains("WARN"), "{warning}");
        assert!(
            warning.contains("user=\"alice\"")
                && warning.contains(&format!("line={} ", line_of(text)))
                && warning.contains(&format!("entry={entry} "))
                && warning.contains(reason),
            "{warning}"
        );
        assert!(!warning.contains("AAAA"), "key text in the log: {warning}");
    }
    let out = login(&sshr, &key, "alice", &[]);
    assert!(logged_in(&out), "{}", explain(&out, &sshr));
}
