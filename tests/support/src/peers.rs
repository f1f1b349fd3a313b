//! Real SSH implementations other than OpenSSH's, for interop tests, all from Debian's
//! packages (`scripts/test` installs them):
//!
//! - clients ([`Client`]): OpenSSH `ssh` (any build: see [`Client::OpenSsh`]), PuTTY's
//!   `plink` and `pscp` (putty-tools), Dropbear's `dbclient` (dropbear-bin), paramiko
//!   (python3-paramiko), asyncssh (python3-asyncssh), a libssh client (libssh-dev, C,
//!   built by [`ClientKit::build`] with gcc) and a JSch client (libjsch-java, Java,
//!   built with javac from default-jdk-headless);
//! - servers: Dropbear ([`Dropbear`]) and an asyncssh server ([`AsyncsshServer`]).
//!
//! The scripted clients and the asyncssh server are the small programs of
//! `tests/support/peers/`. Every client runs one command with exec: its own stdin goes to
//! the command, the command's stdout and stderr come out on its own, and it exits with
//! the command's exit status (like `ssh host command`). Each checks the server's host
//! key against the keys it is given ([`Trust`]) and refuses any other.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::temp_account::TempAccount;
use crate::{free_listen_port, keygen, wait_for_port, TempDir};

/// The environment variable that carries a password to the scripted clients and to the
/// asyncssh server (never a command-line argument, which `ps` shows).
pub const PASSWORD_ENV: &str = "SSHR_PEER_PASSWORD";

/// The system Python, which has Debian's paramiko and asyncssh (a `python3` earlier on
/// PATH, such as pyenv's, may not).
const PYTHON: &str = "/usr/bin/python3";

/// JSch from libjsch-java.
const JSCH_JAR: &str = "/usr/share/java/jsch.jar";

/// The sources of the scripted peers.
fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// How a client proves who it is.
#[derive(Clone, Debug)]
pub enum Auth {
    /// The client's key of [`ClientKit`], in the client's own format.
    Key,
    /// This password, by the "password" method.
    Password(String),
    /// This password, as the answer to every keyboard-interactive prompt.
    KeyboardInteractive(String),
}

impl Auth {
    /// The method's name in SSH (RFC 4252).
    pub fn method(&self) -> &'static str {
        match self {
            Auth::Key => "publickey",
            Auth::Password(_) => "password",
            Auth::KeyboardInteractive(_) => "keyboard-interactive",
        }
    }
}

/// The host keys a client accepts for `127.0.0.1:<port>`, in the forms the clients read:
/// an OpenSSH known_hosts file (`[127.0.0.1]:port key`), Dropbear's (`127.0.0.1 key`,
/// under `$HOME/.ssh/`, no comments) and SHA256 fingerprints for PuTTY's `-hostkey`.
pub struct Trust {
    _dir: TempDir,
    known_hosts: PathBuf,
    /// `HOME` of every client: holds Dropbear's known_hosts, and keeps the clients away
    /// from the real home directory.
    home: PathBuf,
    fingerprints: Vec<String>,
}

impl Trust {
    /// Trust for a server on `127.0.0.1:port` with these host keys (OpenSSH lines).
    pub fn new(port: u16, host_public_keys: &[String]) -> Trust {
        let dir = tempfile::Builder::new()
            .prefix("sshr-trust")
            .tempdir()
            .unwrap();
        let home = dir.path().join("home");
        fs::create_dir_all(home.join(".ssh")).unwrap();
        let key_of = |line: &String| -> String {
            let mut fields = line.split_whitespace();
            let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
                panic!("not an OpenSSH public key line: {line}");
            };
            format!("{kind} {blob}")
        };
        let lines = |host: &str| -> String {
            host_public_keys
                .iter()
                .map(|line| format!("{host} {}\n", key_of(line)))
                .collect()
        };
        let known_hosts = dir.path().join("known_hosts");
        fs::write(&known_hosts, lines(&format!("[127.0.0.1]:{port}"))).unwrap();
        fs::write(home.join(".ssh/known_hosts"), lines("127.0.0.1")).unwrap();
        let out = Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(&known_hosts)
            .output()
            .expect("ssh-keygen");
        assert!(out.status.success(), "ssh-keygen -l failed");
        let fingerprints: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .collect();
        assert_eq!(fingerprints.len(), host_public_keys.len());
        Trust {
            _dir: dir,
            known_hosts,
            home,
            fingerprints,
        }
    }

    /// The OpenSSH known_hosts file.
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }
}

/// What the clients need that takes a moment to make, made once: the client keys in
/// every client's format, and the libssh and JSch clients compiled.
pub struct ClientKit {
    dir: TempDir,
    libssh_client: PathBuf,
    jsch_classes: PathBuf,
}

impl ClientKit {
    /// Generates the keys and compiles the C and Java clients. `Err` says what failed
    /// (a missing compiler or library), with its output.
    pub fn build() -> Result<ClientKit, String> {
        let dir = tempfile::Builder::new()
            .prefix("sshr-clients")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let path = |name: &str| dir.path().join(name);
        keygen(&path("id_ed25519"), "ed25519", None);
        // JSch 0.1.55 reads neither ed25519 keys nor the OpenSSH key format, and signs
        // with RSA only as ssh-rsa (SHA-1): an ECDSA key in PEM.
        run("ssh-keygen", |c| {
            c.args(["-q", "-N", "", "-C", "test", "-t", "ecdsa", "-b", "256"])
                .args(["-m", "PEM", "-f"])
                .arg(path("id_ecdsa_pem"))
        })?;
        run("puttygen", |c| {
            c.arg(path("id_ed25519"))
                .args(["-O", "private", "-o"])
                .arg(path("id_ed25519.ppk"))
        })?;
        run("dropbearconvert", |c| {
            c.args(["openssh", "dropbear"])
                .arg(path("id_ed25519"))
                .arg(path("id_ed25519.dropbear"))
        })?;
        let libssh_client = path("libssh_client");
        run("gcc", |c| {
            c.args(["-O1", "-Wall", "-o"])
                .arg(&libssh_client)
                .arg(peers_dir().join("libssh_client.c"))
                .arg("-lssh")
        })?;
        let jsch_classes = path("jsch");
        run("javac", |c| {
            c.arg("-d")
                .arg(&jsch_classes)
                .args(["-cp", JSCH_JAR])
                .arg(peers_dir().join("JschClient.java"))
        })?;
        Ok(ClientKit {
            dir,
            libssh_client,
            jsch_classes,
        })
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The public keys of the clients (OpenSSH lines): what a server must accept.
    pub fn public_keys(&self) -> Vec<String> {
        ["id_ed25519.pub", "id_ecdsa_pem.pub"]
            .iter()
            .map(|name| {
                fs::read_to_string(self.key(name))
                    .unwrap()
                    .trim()
                    .to_owned()
            })
            .collect()
    }
}

/// Runs a setup program; `Err` with its output if it fails.
fn run(program: &str, args: impl FnOnce(&mut Command) -> &mut Command) -> Result<(), String> {
    let mut command = Command::new(program);
    args(&mut command);
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Where and as whom a client logs in.
pub struct Login<'a> {
    pub port: u16,
    pub user: &'a str,
    pub auth: &'a Auth,
    pub trust: &'a Trust,
}

/// An SSH client program.
#[derive(Clone, Debug)]
pub enum Client {
    /// An OpenSSH `ssh`: `program` is how to start it, the program and any leading
    /// arguments (`["ssh"]` for the system's; a launcher and its arguments for another
    /// build). Given file paths must be valid for it as they are.
    OpenSsh {
        program: Vec<OsString>,
    },
    /// PuTTY: `plink` runs commands, `pscp` copies files ([`Client::upload`]).
    Putty,
    /// Dropbear's `dbclient`.
    Dbclient,
    Paramiko,
    Asyncssh,
    Libssh,
    Jsch,
}

impl Client {
    /// The system's OpenSSH client.
    pub fn openssh() -> Client {
        Client::OpenSsh {
            program: vec!["ssh".into()],
        }
    }

    /// A command that logs in and runs `remote` there, exiting with its exit status.
    /// `Err` when this client cannot use `login.auth` here (the OpenSSH, PuTTY and
    /// Dropbear clients log in with keys only: their password prompts need a terminal).
    pub fn exec(&self, kit: &ClientKit, login: &Login, remote: &str) -> Result<Command, String> {
        let port = login.port.to_string();
        let key_only = |client: &str| match login.auth {
            Auth::Key => Ok(()),
            other => Err(format!(
                "{client} logs in here with keys only, not {}",
                other.method()
            )),
        };
        let mut command = match self {
            Client::OpenSsh { program } => {
                key_only("ssh")?;
                let mut c = Command::new(&program[0]);
                c.args(&program[1..])
                    .args(["-F", "/dev/null", "-o", "BatchMode=yes"])
                    .args(["-o", "StrictHostKeyChecking=yes", "-o"])
                    .arg(option("UserKnownHostsFile", login.trust.known_hosts()))
                    .args(["-o", "GlobalKnownHostsFile=/dev/null"])
                    .args(["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"])
                    .args(["-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR", "-i"])
                    .arg(kit.key("id_ed25519"))
                    .args(["-p", &port, "-l", login.user, "127.0.0.1", remote]);
                c
            }
            Client::Putty => {
                key_only("plink")?;
                let mut c = Command::new("plink");
                c.args([
                    "-ssh", "-batch", "-noagent", "-P", &port, "-l", login.user, "-i",
                ])
                .arg(kit.key("id_ed25519.ppk"))
                .args(hostkey_args(login.trust))
                .args(["127.0.0.1", remote]);
                c
            }
            Client::Dbclient => {
                key_only("dbclient")?;
                let mut c = Command::new("dbclient");
                c.args(["-p", &port, "-l", login.user, "-i"])
                    .arg(kit.key("id_ed25519.dropbear"))
                    .args(["127.0.0.1", remote]);
                c
            }
            Client::Paramiko | Client::Asyncssh => {
                let script = if matches!(self, Client::Paramiko) {
                    "paramiko_client.py"
                } else {
                    "asyncssh_client.py"
                };
                let mut c = Command::new(PYTHON);
                c.arg(peers_dir().join(script));
                c
            }
            Client::Libssh => Command::new(&kit.libssh_client),
            Client::Jsch => {
                let mut c = Command::new("java");
                let classpath = format!("{JSCH_JAR}:{}", kit.jsch_classes.display());
                c.args(["-XX:+UseSerialGC", "-cp", &classpath, "JschClient"]);
                c
            }
        };
        if self.scripted() {
            command
                .args(["--port", &port, "--user", login.user, "--known-hosts"])
                .arg(login.trust.known_hosts());
            match login.auth {
                Auth::Key => {
                    let key = if matches!(self, Client::Jsch) {
                        "id_ecdsa_pem"
                    } else {
                        "id_ed25519"
                    };
                    command.arg("--key").arg(kit.key(key));
                }
                Auth::Password(password) => {
                    command.arg("--password").env(PASSWORD_ENV, password);
                }
                Auth::KeyboardInteractive(password) => {
                    command.arg("--kbdint").env(PASSWORD_ENV, password);
                }
            }
            command.arg(remote);
        }
        Ok(isolate(command, login.trust))
    }

    /// For a client with a file-copy program of its own (PuTTY's `pscp`): a command
    /// that copies `local` to `remote_path` on the server. `None` for the others.
    pub fn upload(
        &self,
        kit: &ClientKit,
        login: &Login,
        local: &Path,
        remote_path: &str,
    ) -> Option<Command> {
        match self {
            Client::Putty => {
                let mut c = Command::new("pscp");
                c.args(["-batch", "-noagent", "-q", "-P", &login.port.to_string()])
                    .args(["-l", login.user, "-i"])
                    .arg(kit.key("id_ed25519.ppk"))
                    .args(hostkey_args(login.trust))
                    .arg(local)
                    .arg(format!("127.0.0.1:{remote_path}"));
                Some(isolate(c, login.trust))
            }
            _ => None,
        }
    }

    /// The programs of `tests/support/peers/`, which share one command line.
    fn scripted(&self) -> bool {
        matches!(
            self,
            Client::Paramiko | Client::Asyncssh | Client::Libssh | Client::Jsch
        )
    }
}

/// `-o Name=path` for ssh.
fn option(name: &str, path: &Path) -> OsString {
    let mut s = OsString::from(format!("{name}="));
    s.push(path);
    s
}

/// PuTTY's host key pins: `-hostkey SHA256:...` for each trusted key.
fn hostkey_args(trust: &Trust) -> Vec<String> {
    trust
        .fingerprints
        .iter()
        .flat_map(|fp| ["-hostkey".to_owned(), fp.clone()])
        .collect()
}

/// A client run apart from the caller's session: `HOME` of its own, no agent, and a
/// new session with no controlling terminal, so that no client can ever stop to ask
/// something on /dev/tty (dbclient asks for a password there when its key is refused).
fn isolate(mut command: Command, trust: &Trust) -> Command {
    command
        .env("HOME", &trust.home)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("DISPLAY")
        .env_remove("SSH_ASKPASS");
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// A server process on a loopback port, its stderr in `server.log` of its directory;
/// killed and reaped on drop.
struct Daemon {
    port: u16,
    dir: TempDir,
    child: Child,
}

impl Daemon {
    /// Starts `command` (with stdin and stdout null and stderr to the log) and waits up
    /// to 20 s until it accepts connections on `port`.
    fn start(mut command: Command, port: u16, dir: TempDir, what: &str) -> Result<Daemon, String> {
        let log = fs::File::create(dir.path().join("server.log")).unwrap();
        // A process group of its own, so that the per-connection processes it forks
        // (Dropbear's sessions, the asyncssh server's commands) are stopped with it.
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        let mut daemon = Daemon { port, dir, child };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if !wait_for_port(addr, Duration::from_secs(20)) {
            let exited = daemon.child.try_wait().ok().flatten();
            return Err(format!(
                "{what} did not listen on {addr} (exit: {exited:?}); log:\n{}",
                daemon.log()
            ));
        }
        Ok(daemon)
    }

    fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.dir.path().join("server.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) with the negated pid of the group this Daemon created.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// A Dropbear server (`dropbear -F -E`) on loopback with an ed25519 host key. Local
/// accounts log in with their password or a key of their `~/.ssh/authorized_keys`
/// ([`TempAccount::authorize`]); it has no keyboard-interactive.
pub struct Dropbear {
    daemon: Daemon,
    /// Its host public key (OpenSSH line).
    pub host_public_key: String,
}

impl Dropbear {
    pub fn start() -> Result<Dropbear, String> {
        let dir = tempfile::Builder::new()
            .prefix("sshr-dropbear")
            .tempdir()
            .unwrap();
        let openssh_key = dir.path().join("host_ed25519");
        keygen(&openssh_key, "ed25519", None);
        let host_key = dir.path().join("host_ed25519.dropbear");
        run("dropbearconvert", |c| {
            c.args(["openssh", "dropbear"])
                .arg(&openssh_key)
                .arg(&host_key)
        })?;
        let host_public_key = fs::read_to_string(openssh_key.with_extension("pub"))
            .unwrap()
            .trim()
            .to_owned();
        let port = free_listen_port();
        let mut command = Command::new("dropbear");
        command
            .args(["-F", "-E", "-p", &format!("127.0.0.1:{port}"), "-r"])
            .arg(&host_key)
            .arg("-P")
            .arg(dir.path().join("dropbear.pid"));
        Ok(Dropbear {
            daemon: Daemon::start(command, port, dir, "dropbear")?,
            host_public_key,
        })
    }

    pub fn port(&self) -> u16 {
        self.daemon.port
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

/// The asyncssh server of `tests/support/peers/asyncssh_server.py` on loopback, with an
/// ed25519 host key. One account logs in: with a key of `authorized_keys`, or with its
/// password (by password or keyboard-interactive); commands run as that account.
pub struct AsyncsshServer {
    daemon: Daemon,
    /// Its host public key (OpenSSH line).
    pub host_public_key: String,
}

impl AsyncsshServer {
    pub fn start(account: &TempAccount, authorized_keys: &[String]) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("sshr-asyncssh")
            .tempdir()
            .unwrap();
        let host_key = dir.path().join("host_ed25519");
        keygen(&host_key, "ed25519", None);
        let host_public_key = fs::read_to_string(host_key.with_extension("pub"))
            .unwrap()
            .trim()
            .to_owned();
        let authorized = dir.path().join("authorized_keys");
        fs::write(&authorized, authorized_keys.join("\n") + "\n").unwrap();
        let port = free_listen_port();
        let mut command = Command::new(PYTHON);
        command
            .arg(peers_dir().join("asyncssh_server.py"))
            .args(["--port", &port.to_string(), "--host-key"])
            .arg(&host_key)
            .arg("--authorized-keys")
            .arg(&authorized)
            .args(["--account", &account.name])
            .env(PASSWORD_ENV, &account.password);
        Ok(AsyncsshServer {
            daemon: Daemon::start(command, port, dir, "the asyncssh server")?,
            host_public_key,
        })
    }

    pub fn port(&self) -> u16 {
        self.daemon.port
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }
}
