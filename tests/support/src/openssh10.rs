//! OpenSSH 10.x, client and server, for the tests that need a newer OpenSSH than the
//! machine's (Debian 12 has 9.2, without `mlkem768x25519-sha256`).
//!
//! The programs come from a Debian unstable root that `scripts/openssh10-root` makes once
//! (`scripts/test` calls it as root) in `target/openssh10-root`, or in
//! `$SSHR_OPENSSH10_ROOT` (an absolute path) when that is set. They run chrooted into
//! it: sshd 10 re-executes `/usr/lib/openssh/sshd-session` and `sshd-auth` from its own
//! file system, and the programs need the root's libraries (its OpenSSL), not the
//! machine's.
//! The root has the device nodes they open (`/dev/null`, `/dev/urandom`), made when it is
//! made, so nothing is mounted here; they do not need `/proc`.
//!
//! Every file a chrooted program reads (keys, sshd_config, authorized_keys) lives in a
//! [`RootDir`], a temporary directory in the root's `/tmp`, removed on drop. [`Sshd`]
//! logs in as root (the root's `/etc/passwd` has root and sshd's privilege separation
//! account), like [`crate::Sshd`]. Needs root (chroot).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_listen_port, keygen, wait_for_port, SshdOptions, TempDir};

/// The file `scripts/openssh10-root` writes last in the root (its first line is the
/// root's `ssh -V`): without it the root is missing or half made.
pub const READY_MARKER: &str = ".sshr-openssh10-ready";

/// The key exchange OpenSSH 10 prefers and 9.2 lacks.
pub const MLKEM768X25519: &str = "mlkem768x25519-sha256";

/// What OpenSSH 10.1 and later print when the key exchange is not post-quantum (the
/// client's `WarnWeakCrypto`), common to both of the forms its `ssh` has ("** WARNING:
/// connection is not using a post-quantum key exchange algorithm." and a longer one that
/// names the connection and the algorithm).
pub const NOT_POST_QUANTUM: &str = "is not using a post-quantum key exchange algorithm";

/// The OpenSSH 10 root. Panics, naming the command that makes it, when it is missing or
/// half made.
pub fn root() -> PathBuf {
    let root = match std::env::var_os("SSHR_OPENSSH10_ROOT") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/openssh10-root"),
    };
    let root = fs::canonicalize(&root).unwrap_or(root);
    assert!(
        root.join(READY_MARKER).is_file(),
        "no OpenSSH 10 root at {} (no {READY_MARKER} in it): make it, as root, with \
         `scripts/openssh10-root` (or `scripts/test --install`, which runs it)",
        root.display()
    );
    root
}

/// The root's `ssh -V`, as `scripts/openssh10-root` recorded it ("OpenSSH_10.x...").
pub fn version() -> String {
    let marker = fs::read_to_string(root().join(READY_MARKER)).unwrap_or_default();
    marker.lines().next().unwrap_or_default().to_owned()
}

/// The key exchange an OpenSSH log reports: the value of its first `kex: algorithm: `
/// line (`ssh -v`'s stderr, or sshd's at `LogLevel DEBUG1`, where the line ends in
/// ` [preauth]`).
pub fn negotiated_kex(log: &str) -> Option<&str> {
    log.lines().find_map(|line| {
        let (_, rest) = line.split_once("kex: algorithm: ")?;
        rest.split_whitespace().next()
    })
}

/// A temporary directory inside the root (in its `/tmp`), for the files the chrooted
/// programs read; removed on drop.
pub struct RootDir {
    root: PathBuf,
    dir: TempDir,
}

impl RootDir {
    /// A new directory named `prefix` and random characters.
    pub fn new(prefix: &str) -> RootDir {
        let root = root();
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(root.join("tmp"))
            .unwrap_or_else(|e| panic!("make a directory in {}/tmp: {e}", root.display()));
        RootDir { root, dir }
    }

    /// This directory, as this process sees it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file `name` of this directory, as this process sees it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The same file as the chrooted programs see it (`/tmp/...`).
    pub fn inner(&self, name: &str) -> PathBuf {
        inner_path(&self.root, &self.path(name))
    }
}

/// `path` (a file inside `root`) as seen from inside `root`.
fn inner_path(root: &Path, path: &Path) -> PathBuf {
    let rest = path
        .strip_prefix(root)
        .unwrap_or_else(|_| panic!("{} is not inside {}", path.display(), root.display()));
    Path::new("/").join(rest)
}

/// The root's `program` (an absolute path inside it), chrooted.
fn chrooted(root: &Path, program: &str) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.arg(root).arg(program);
    cmd
}

/// How to start the root's `ssh` outside the chroot, as [`crate::peers::Client::OpenSsh`]
/// takes it: the root's dynamic loader with the root's libraries, then its `ssh`. The
/// client execs nothing from its own file system, so it runs against the machine's files
/// (keys, known_hosts) like the system's `ssh`; only its code and libraries (glibc,
/// OpenSSL) are the root's.
pub fn ssh_program() -> Vec<std::ffi::OsString> {
    let root = root();
    let libraries = ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"]
        .iter()
        .map(|dir| root.join(dir).display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    vec![
        root.join("lib64/ld-linux-x86-64.so.2").into(),
        "--library-path".into(),
        libraries.into(),
        root.join("usr/bin/ssh").into(),
    ]
}

/// Shell scripts in `dir` that start the root's `ssh` and `scp` as [`ssh_program`] does,
/// for what takes a single program path (`scp -S`, a benchmark's command line): returns
/// the paths of `openssh10-ssh` and `openssh10-scp` (which runs its `ssh` through the
/// first one, not the machine's).
pub fn write_launchers(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    let mut program = ssh_program();
    let ssh = dir.join("openssh10-ssh");
    let scp = dir.join("openssh10-scp");
    let root_ssh = program.pop().expect("ssh_program ends with ssh");
    let loader: Vec<String> = program.iter().map(|a| quote(a)).collect();
    let root_scp = Path::new(&root_ssh).with_file_name("scp");
    for (path, body) in [
        (&ssh, format!("{} {}", loader.join(" "), quote(&root_ssh))),
        (
            &scp,
            format!(
                "{} {} -S {}",
                loader.join(" "),
                quote(root_scp.as_os_str()),
                quote(ssh.as_os_str())
            ),
        ),
    ] {
        fs::write(path, format!("#!/bin/sh\nexec {body} \"$@\"\n")).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    (ssh, scp)
}

/// The root's `ssh` with a clean configuration: no configuration files, no known_hosts,
/// batch mode, no agent, and otherwise its defaults (its key exchange list, and
/// `LogLevel INFO`, at which it prints the [`NOT_POST_QUANTUM`] warning). `identity` is
/// a private key in a [`RootDir`] (this process's path to it). Add `-v` to see the
/// negotiation ([`negotiated_kex`]), then the destination and the remote command.
pub fn ssh_command(port: u16, identity: Option<&Path>) -> Command {
    let root = root();
    let mut cmd = chrooted(&root, "/usr/bin/ssh");
    cmd.env_remove("SSH_AUTH_SOCK").env_remove("DISPLAY");
    cmd.args(["-F", "/dev/null"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "BatchMode=yes"])
        .args(["-o", "ConnectTimeout=10"])
        .arg("-p")
        .arg(port.to_string());
    match identity {
        Some(key) => {
            cmd.arg("-i")
                .arg(inner_path(&root, key))
                .args(["-o", "IdentitiesOnly=yes"]);
        }
        None => {
            cmd.args(["-o", "PubkeyAuthentication=no"]);
        }
    }
    cmd
}

/// A running OpenSSH 10 `sshd -D` on loopback, chrooted into the root, with the
/// configuration of [`crate::Sshd`] (generated host keys, root login with the keys of
/// `SshdOptions::authorized_keys`, `LogLevel DEBUG1` to [`Sshd::log`]; the lines of
/// `SshdOptions::extra` come first and override these). On drop it and
/// every process it started (sessions in progress) are killed, and its directory removed.
pub struct Sshd {
    pub port: u16,
    /// Host public keys, as OpenSSH lines, in the order of `SshdOptions::host_keys`.
    pub host_public_keys: Vec<String>,
    dir: RootDir,
    child: Child,
}

impl Sshd {
    pub fn start(opts: SshdOptions) -> Sshd {
        let dir = RootDir::new("sshr-sshd10");
        let mut config = String::new();
        let mut host_public_keys = Vec::new();
        for (i, kind) in opts.host_keys.iter().enumerate() {
            let name = format!("host_{i}_{kind}");
            let path = dir.path(&name);
            match *kind {
                "ecdsa384" => keygen(&path, "ecdsa", Some(384)),
                "ecdsa" => keygen(&path, "ecdsa", Some(256)),
                "rsa" => keygen(&path, "rsa", Some(2048)),
                k => keygen(&path, k, None),
            }
            config.push_str(&format!("HostKey {}\n", dir.inner(&name).display()));
            host_public_keys.push(
                fs::read_to_string(path.with_extension("pub"))
                    .unwrap()
                    .trim()
                    .to_owned(),
            );
        }
        fs::write(
            dir.path("authorized_keys"),
            opts.authorized_keys.join("\n") + "\n",
        )
        .unwrap();
        // sshd keeps the first value of a keyword: the caller's lines come before the
        // defaults below and override them.
        for line in &opts.extra {
            config.push_str(line);
            config.push('\n');
        }
        let port = free_listen_port();
        config.push_str(&format!(
            "ListenAddress 127.0.0.1:{port}\n\
             PidFile none\n\
             AuthorizedKeysFile {}\n\
             StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             LogLevel DEBUG1\n\
             Subsystem sftp internal-sftp\n",
            dir.inner("authorized_keys").display()
        ));
        fs::write(dir.path("sshd_config"), config).unwrap();
        let log = fs::File::create(dir.path("sshd.log")).unwrap();
        let child = chrooted(&dir.root, "/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(dir.inner("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start chroot (coreutils)");
        let sshd = Sshd {
            port,
            host_public_keys,
            dir,
            child,
        };
        assert!(
            wait_for_port(sshd.addr(), Duration::from_secs(10)),
            "OpenSSH 10 sshd did not start; log:\n{}",
            sshd.log()
        );
        sshd
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Everything sshd (and its sessions) logged so far.
    pub fn log(&self) -> String {
        fs::read(self.dir.path("sshd.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Stopped, the listener forks no new session while its descendants are
        // collected; they are killed before it, while their parent links still lead to it.
        let pid = self.child.id();
        // SAFETY: kill has no memory preconditions; `pid` is our unreaped child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        for descendant in descendants(pid) {
            // SAFETY: as above; a descendant that exited meanwhile gets ESRCH at worst
            // (its pid is not reused before its parent, in this tree, reaps it).
            unsafe { libc::kill(descendant as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every live descendant of `pid`, from the parent links in `/proc/<pid>/stat`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if let Some(parent) = parent {
                parent_of.push((child, parent));
            }
        }
    }
    let mut found = vec![pid];
    let mut next = 0;
    // Each pass adds only processes not yet found, so this ends within the process count.
    while next < found.len() {
        let parent = found[next];
        next += 1;
        for &(child, p) in &parent_of {
            if p == parent && !found.contains(&child) {
                found.push(child);
            }
        }
    }
    found.remove(0);
    found
}
