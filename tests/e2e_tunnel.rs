//! SSH VPN tunnels (`ssh -w`) through sshr, as in the operator's how-to
//! (shared/seeds/000): a PC outside a locked-down lab opens a tunnel to the lab's SSH
//! server, and a lab host reaches an outside host through it.
//!
//! Five network namespaces, made per test and removed by a drop guard even when the
//! test fails (names carry the pid; leftovers of killed runs are swept at start):
//!
//! ```text
//!  pc ──10.200.1.0/24── px (sshr) ──10.200.2.0/24── srv (sshd) ──10.200.3.0/24── lab
//!   └──10.200.4.0/24── out
//!  tunnel: pc tun0 192.168.6.2 <-> srv tun0 192.168.6.1   (tap: 192.168.7.2/24, .1/24)
//! ```
//!
//! `px` does not forward, so before the tunnel the lab host cannot reach `out`; the
//! upstream's authorized_keys line (`tunnel="0",command="..."`) sets up the lab side as in
//! the how-to, the client's `LocalCommand` the PC side. Routes stand in for the how-to's
//! masquerade so that the test needs no firewall tooling.
//!
//! Needs root and /dev/net/tun (skipped with a message otherwise), `ip`, `ping`,
//! `python3`, `sshd` and `ssh`. A missing program fails the test with its package's
//! name (`.ci/run` installs them all): without `ping` (iputils-ping) every probe would
//! read as "unreachable", failing the tunnel checks with a misleading message and
//! making the check that the topology does not leak pass without proving anything.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sshr_testsupport::{keygen, metric_value, run_bounded, tail, TempDir};

const SSHR: &str = env!("CARGO_BIN_EXE_sshr");
const NS_PREFIX: &str = "sshr-e2e-";
/// Bytes sent from the lab host to the outside host through the tunnel.
const TRANSFER_BYTES: u64 = 64 << 20;
const OUTSIDE: &str = "10.200.4.2";
const SSHR_ADDR: &str = "10.200.1.2";
const SSHR_PORT: u16 = 2222;
const METRICS_PORT: u16 = 9222;

/// Why this machine cannot run these tests, if it cannot: probed once per process.
fn skip_reason() -> Option<&'static str> {
    static REASON: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    REASON.get_or_init(probe_machine).as_deref()
}

fn probe_machine() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: network namespaces and tun devices need root".into());
    }
    // A container may have no tun device, or one it may not open (device cgroup).
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        return Some(format!("cannot open /dev/net/tun ({e})"));
    }
    // Without `ip`, require_programs fails the test with the package's name instead.
    if installed("ip") {
        // A container without CAP_SYS_ADMIN cannot make network namespaces.
        let probe = format!("sshr-probe-{}", std::process::id());
        let (made, out) = sh(&["ip", "netns", "add", &probe]);
        if !made {
            return Some(format!(
                "cannot create network namespaces: {}",
                out.trim().lines().next().unwrap_or("ip netns add failed")
            ));
        }
        sh(&["ip", "netns", "delete", &probe]);
    }
    None
}

/// Returns from the test, with one line on the terminal (written past the test
/// harness's output capture, so that `scripts/test` can count it), when the machine
/// cannot run it. `cargo test` counts such a test as passed.
macro_rules! skip_unless_able {
    () => {
        if let Some(reason) = skip_reason() {
            let test = std::thread::current().name().unwrap_or("?").to_owned();
            let line = format!("SKIPPED {test}: {reason}\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            return;
        }
    };
}

/// Programs the tests run, each with the Debian package that provides it.
const PROGRAMS: [(&str, &str); 5] = [
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("python3", "python3"),
    ("ssh", "openssh-client"),
    ("/usr/sbin/sshd", "openssh-server"),
];

/// Whether `program` (a path, or a name looked up in `PATH`) is an executable file.
fn installed(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
}

/// Fails the test, naming the packages to install, when a program it runs is missing.
fn require_programs() {
    let missing: Vec<String> = PROGRAMS
        .iter()
        .filter(|(program, _)| !installed(program))
        .map(|(program, package)| format!("{program} (Debian package {package})"))
        .collect();
    assert!(
        missing.is_empty(),
        "the tunnel tests need programs that are not installed: {}; .ci/run installs them",
        missing.join(", ")
    );
}

/// Runs a command to completion (bounded), returns whether it succeeded and its output.
fn sh(args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(args[0]);
    cmd.args(&args[1..]);
    match run_bounded(&mut cmd, Stdio::null(), Duration::from_secs(30)) {
        Ok(out) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        ),
        Err(e) => (false, e),
    }
}

/// Like [`sh`], panicking on failure.
fn must(args: &[&str]) -> String {
    let (ok, out) = sh(args);
    assert!(ok, "{args:?} failed: {out}");
    out
}

/// Deletes namespaces left by earlier runs that were killed before their guard ran.
fn sweep_stale_namespaces() {
    let (_, list) = sh(&["ip", "netns", "list"]);
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            delete_namespace(name);
        }
    }
}

fn delete_namespace(name: &str) {
    let (_, pids) = sh(&["ip", "netns", "pids", name]);
    for pid in pids.split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            // SAFETY: plain syscall; the pid belongs to a process in our namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = sh(&["ip", "netns", "del", name]);
}

/// The five hosts, their processes and files; everything goes away on drop.
struct Lab {
    prefix: String,
    dir: TempDir,
    children: Vec<Child>,
}

/// A host of the lab network.
#[derive(Clone, Copy)]
#[allow(clippy::enum_variant_names)] // "lab host" is the how-to's name for it
enum Host {
    Pc,
    Proxy,
    Server,
    LabHost,
    Outside,
}

impl Host {
    const ALL: [Host; 5] = [
        Host::Pc,
        Host::Proxy,
        Host::Server,
        Host::LabHost,
        Host::Outside,
    ];

    fn short(self) -> &'static str {
        match self {
            Host::Pc => "pc",
            Host::Proxy => "px",
            Host::Server => "srv",
            Host::LabHost => "lab",
            Host::Outside => "out",
        }
    }
}

impl Lab {
    fn new(tag: &str) -> Lab {
        require_programs();
        sweep_stale_namespaces();
        let lab = Lab {
            prefix: format!("{NS_PREFIX}{}-{tag}", std::process::id()),
            dir: tempfile::Builder::new()
                .prefix("sshr-tunnel")
                .tempdir()
                .unwrap(),
            children: Vec::new(),
        };
        for host in Host::ALL {
            must(&["ip", "netns", "add", &lab.ns(host)]);
            must(&["ip", "-n", &lab.ns(host), "link", "set", "lo", "up"]);
        }
        lab.link(Host::Pc, "10.200.1.1/24", Host::Proxy, "10.200.1.2/24");
        lab.link(Host::Proxy, "10.200.2.1/24", Host::Server, "10.200.2.2/24");
        lab.link(
            Host::Server,
            "10.200.3.1/24",
            Host::LabHost,
            "10.200.3.2/24",
        );
        lab.link(Host::Pc, "10.200.4.1/24", Host::Outside, "10.200.4.2/24");
        // The lab host's way out is its SSH server; the outside host answers the lab's
        // network through the PC (in the how-to both ends masquerade instead).
        lab.ip(Host::LabHost, "route add default via 10.200.3.1");
        lab.ip(Host::Outside, "route add 10.200.3.0/24 via 10.200.4.1");
        for host in [Host::Pc, Host::Server] {
            lab.exec(host, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        }
        // The proxy's namespace must not route: only the tunnel may connect the lab.
        lab.exec(Host::Proxy, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        lab
    }

    fn ns(&self, host: Host) -> String {
        format!("{}-{}", self.prefix, host.short())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn link(&self, a: Host, a_addr: &str, b: Host, b_addr: &str) {
        let (a_if, b_if) = (format!("to-{}", b.short()), format!("to-{}", a.short()));
        must(&[
            "ip",
            "link",
            "add",
            &a_if,
            "netns",
            &self.ns(a),
            "type",
            "veth",
            "peer",
            "name",
            &b_if,
            "netns",
            &self.ns(b),
        ]);
        for (host, ifname, addr) in [(a, &a_if, a_addr), (b, &b_if, b_addr)] {
            self.ip(host, &format!("addr add {addr} dev {ifname}"));
            self.ip(host, &format!("link set {ifname} up"));
        }
    }

    fn ip(&self, host: Host, args: &str) {
        let mut argv = vec!["ip", "-n"];
        let ns = self.ns(host);
        argv.push(&ns);
        argv.extend(args.split_whitespace());
        must(&argv);
    }

    fn command(&self, host: Host, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(host)]).args(argv);
        cmd
    }

    fn exec(&self, host: Host, argv: &[&str]) -> String {
        let ns = self.ns(host);
        let mut full = vec!["ip", "netns", "exec", &ns];
        full.extend_from_slice(argv);
        must(&full)
    }

    /// Starts a long-running process on `host` (`ip netns exec` execs it, so killing
    /// the child kills the process), its output going to `log`. Returns its index for
    /// [`Lab::stop`].
    fn spawn(&mut self, host: Host, argv: &[&str], log: &str, env: &[(&str, &str)]) -> usize {
        let log = fs::File::create(self.path(log)).unwrap();
        let mut cmd = self.command(host, argv);
        cmd.envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"));
        self.children.push(child);
        self.children.len() - 1
    }

    /// Stops a process started with [`Lab::spawn`].
    fn stop(&mut self, index: usize) {
        let child = &mut self.children[index];
        let _ = child.kill();
        let _ = child.wait();
    }

    fn log(&self, name: &str) -> String {
        fs::read(self.path(name))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn logs(&self) -> String {
        ["client.log", "sshr.log", "sshd.log"]
            .iter()
            .map(|f| format!("--- {f}:\n{}\n", tail(&self.log(f), 40)))
            .collect()
    }

    /// Waits until `host` accepts TCP connections on `addr:port`.
    fn wait_for_port(&self, host: Host, addr: &str, port: u16) {
        let probe = format!("exec 3<>/dev/tcp/{addr}/{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let ns = self.ns(host);
        while !sh(&["ip", "netns", "exec", &ns, "bash", "-c", &probe]).0 {
            assert!(
                Instant::now() < deadline,
                "nothing listens on {addr}:{port}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether one ping from `from` to `to` is answered. A ping that could not be run
    /// fails the test: `ip netns exec` exits 1 then, as ping does when unanswered.
    fn ping(&self, from: Host, to: &str) -> bool {
        let (answered, out) = sh(&[
            "ip",
            "netns",
            "exec",
            &self.ns(from),
            "ping",
            "-n",
            "-c",
            "1",
            "-W",
            "1",
            to,
        ]);
        assert!(
            answered || !out.contains("exec of \"ping\" failed"),
            "cannot run ping in {}: {out}",
            self.ns(from)
        );
        answered
    }

    /// Waits up to `limit` for the lab host's ping to the outside host to give `want`.
    fn wait_for_ping(&self, want: bool, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.ping(Host::LabHost, OUTSIDE) == want {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Prometheus text of sshr's endpoint (inside the proxy's namespace).
    fn metrics(&self) -> String {
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/{METRICS_PORT}; \
             printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"
        );
        self.exec(Host::Proxy, &["bash", "-c", &script])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut child in self.children.drain(..).rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for host in Host::ALL {
            delete_namespace(&self.ns(host));
        }
    }
}

/// The tunnel mode under test and its addresses.
#[derive(Clone, Copy)]
struct Mode {
    /// `Tunnel` option value.
    tunnel: &'static str,
    /// Policy name in sshr's configuration.
    policy: &'static str,
    device: &'static str,
    /// Address configuration of the lab's end and of the PC's end.
    server_addr: &'static str,
    client_addr: &'static str,
    server_ip: &'static str,
    client_ip: &'static str,
}

const POINT_TO_POINT: Mode = Mode {
    tunnel: "point-to-point",
    policy: "point-to-point",
    device: "tun0",
    server_addr: "192.168.6.1 peer 192.168.6.2",
    client_addr: "192.168.6.2 peer 192.168.6.1",
    server_ip: "192.168.6.1",
    client_ip: "192.168.6.2",
};

const ETHERNET: Mode = Mode {
    tunnel: "ethernet",
    policy: "ethernet",
    device: "tap0",
    server_addr: "192.168.7.1/24",
    client_addr: "192.168.7.2/24",
    server_ip: "192.168.7.1",
    client_ip: "192.168.7.2",
};

/// Keys, sshd in the lab's server namespace and sshr in the proxy's, as in the how-to
/// with sshr between the PC and the lab.
struct Proxied {
    lab: Lab,
    user_key: PathBuf,
}

fn start(tag: &str, mode: Mode) -> Proxied {
    let mut lab = Lab::new(tag);
    let key = |name: &str| {
        let path = lab.path(name);
        keygen(&path, "ed25519", None);
        path
    };
    let (host_key, upstream_key, user_key, proxy_key) = (
        key("sshd_host"),
        key("upstream"),
        key("user"),
        key("sshr_host"),
    );
    let public = |p: &Path| {
        fs::read_to_string(p.with_extension("pub"))
            .unwrap()
            .trim()
            .to_owned()
    };

    // The lab's sshd: sshr's upstream key may open tun0/tap0 and, as in the how-to, a
    // forced command addresses the lab's end and routes the destination into it.
    let forced = format!(
        "ip addr add {addr} dev {dev}; ip link set {dev} up; \
         ip route add {OUTSIDE}/32 via {peer} dev {dev}",
        addr = mode.server_addr,
        dev = mode.device,
        peer = mode.client_ip,
    );
    fs::write(
        lab.path("authorized_keys"),
        format!(
            "tunnel=\"0\",command=\"{forced}\" {}\n",
            public(&upstream_key)
        ),
    )
    .unwrap();
    fs::write(
        lab.path("sshd_config"),
        format!(
            "HostKey {}\nListenAddress 10.200.2.2:22\nPidFile none\nAuthorizedKeysFile {}\n\
             StrictModes no\nUsePAM no\nPermitRootLogin yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitTunnel yes\nLogLevel DEBUG1\n",
            host_key.display(),
            lab.path("authorized_keys").display(),
        ),
    )
    .unwrap();
    fs::create_dir_all("/run/sshd").unwrap();
    let sshd_config = lab.path("sshd_config").display().to_string();
    lab.spawn(
        Host::Server,
        &["/usr/sbin/sshd", "-D", "-e", "-f", &sshd_config],
        "sshd.log",
        &[],
    );
    lab.wait_for_port(Host::Proxy, "10.200.2.2", 22);

    // sshr: alice may open tunnels of this mode, bob has the default (deny).
    let user_line = public(&user_key);
    fs::write(
        lab.path("sshr.toml"),
        format!(
            r#"listen = ["{SSHR_ADDR}:{SSHR_PORT}"]
host_keys = ["{}"]
upstream_key = "{}"
workers = 1
metrics_listen = "127.0.0.1:{METRICS_PORT}"

[tunnels]
report_interval_secs = 1
max_duration_secs = 2
max_bytes = 16777216

[[users]]
name = "alice"
upstream = "10.200.2.2:22"
upstream_user = "root"
tunnel = "{}"
authorized_keys = ["{user_line}"]

[[users]]
name = "bob"
upstream = "10.200.2.2:22"
upstream_user = "root"
authorized_keys = ["{user_line}"]
"#,
            proxy_key.display(),
            upstream_key.display(),
            mode.policy,
        ),
    )
    .unwrap();
    let sshr_config = lab.path("sshr.toml").display().to_string();
    lab.spawn(
        Host::Proxy,
        &[SSHR, "--config", &sshr_config],
        "sshr.log",
        &[("RUST_LOG", "info")],
    );
    lab.wait_for_port(Host::Pc, SSHR_ADDR, SSHR_PORT);
    Proxied { lab, user_key }
}

/// `ssh` on the PC, through sshr, with a clean configuration; `Tunnel` is given before
/// `-w`, which would otherwise set point-to-point (the first value of an option wins).
fn ssh_args(user_key: &Path, user: &str, mode: Mode, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = [
        "ssh",
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "LogLevel=INFO",
        "-o",
        "ExitOnForwardFailure=yes",
        "-p",
        &SSHR_PORT.to_string(),
        "-i",
        &user_key.display().to_string(),
        "-o",
        &format!("Tunnel={}", mode.tunnel),
        "-w",
        "0:0",
        "-T",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().cloned());
    args.push(format!("{user}@{SSHR_ADDR}"));
    args
}

const RECEIVER: &str = r#"
import hashlib, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
s.settimeout(60)
c, _ = s.accept()
c.settimeout(60)
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    h.update(b)
    n += len(b)
print(n, h.hexdigest(), flush=True)
c.close()
"#;

const SENDER: &str = r#"
import hashlib, os, socket, sys, time
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
deadline = time.time() + 10
while True:
    try:
        s = socket.create_connection((host, port), timeout=5)
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.1)
s.settimeout(60)
h, left = hashlib.sha256(), size
while left:
    b = os.urandom(min(left, 1 << 20))
    s.sendall(b)
    h.update(b)
    left -= len(b)
s.shutdown(socket.SHUT_WR)
while s.recv(4096):
    pass
print(size, h.hexdigest(), flush=True)
"#;

/// Sends [`TRANSFER_BYTES`] from the lab host to the outside host; returns what each
/// side saw (byte count and SHA-256).
fn transfer(lab: &mut Lab) -> (String, String) {
    fs::write(lab.path("receiver.py"), RECEIVER).unwrap();
    fs::write(lab.path("sender.py"), SENDER).unwrap();
    let receiver = lab.path("receiver.py").display().to_string();
    let sender = lab.path("sender.py").display().to_string();
    lab.spawn(
        Host::Outside,
        &["python3", &receiver, OUTSIDE, "5001"],
        "receiver.log",
        &[],
    );
    let mut cmd = lab.command(
        Host::LabHost,
        &[
            "python3",
            &sender,
            OUTSIDE,
            "5001",
            &TRANSFER_BYTES.to_string(),
        ],
    );
    let sent = run_bounded(&mut cmd, Stdio::null(), Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("transfer: {e}\n{}", lab.logs()));
    assert!(
        sent.status.success(),
        "sender failed: {}\n{}",
        String::from_utf8_lossy(&sent.stderr),
        lab.logs()
    );
    // The receiver prints once it has read everything (the sender waited for that).
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.log("receiver.log").trim().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    (
        String::from_utf8_lossy(&sent.stdout).trim().to_owned(),
        lab.log("receiver.log").trim().to_owned(),
    )
}

/// The log lines of sshr that contain every one of `words`.
fn lines_with(log: &str, words: &[&str]) -> Vec<String> {
    log.lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_owned)
        .collect()
}

/// `name=VALUE` in a log line, as a number.
fn field(line: &str, name: &str) -> Option<u64> {
    let key = format!(" {name}=");
    let at = line.find(&key)? + key.len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn tunnel_through_sshr(tag: &str, mode: Mode) {
    let started = Instant::now();
    let Proxied { mut lab, user_key } = start(tag, mode);

    assert!(
        !lab.ping(Host::LabHost, OUTSIDE),
        "the lab host reaches the outside host before any tunnel: the topology leaks"
    );

    // The how-to's client side: tun0/tap0 addressed by LocalCommand, and a route to the
    // lab's network through it.
    let local = format!(
        "LocalCommand=ip addr add {addr} dev {dev}; ip link set {dev} up; \
         ip route add 10.200.3.0/24 via {peer} dev {dev}",
        addr = mode.client_addr,
        dev = mode.device,
        peer = mode.server_ip,
    );
    let extra = [
        "-o".to_string(),
        "PermitLocalCommand=yes".into(),
        "-o".into(),
        local,
    ];
    let args = ssh_args(&user_key, "alice", mode, &extra);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let client = lab.spawn(Host::Pc, &argv, "client.log", &[]);

    assert!(
        lab.wait_for_ping(true, Duration::from_secs(20)),
        "the lab host cannot reach the outside host through the {} tunnel\n{}",
        mode.tunnel,
        lab.logs()
    );
    // The PC's end answers too (the tunnel itself, not only the routes).
    assert!(lab.ping(Host::Server, mode.client_ip), "{}", lab.logs());

    let (sent, received) = transfer(&mut lab);
    assert!(
        sent.starts_with(&format!("{TRANSFER_BYTES} ")),
        "sender: {sent:?}"
    );
    assert_eq!(
        sent,
        received,
        "the {} MiB transfer through the tunnel arrived damaged\n{}",
        TRANSFER_BYTES >> 20,
        lab.logs()
    );

    // Audit: the open record, periodic records and both alerts, while it is open.
    std::thread::sleep(Duration::from_millis(1200));
    let log = lab.log("sshr.log");
    let mode_field = format!("mode={}", mode.tunnel);
    assert_eq!(
        lines_with(
            &log,
            &["tunnel opened", "user=\"alice\"", &mode_field, "unit=0"]
        )
        .len(),
        1,
        "{}",
        lab.logs()
    );
    let reports = lines_with(&log, &["tunnel open ", "user=\"alice\"", "duration_s="]);
    assert!(!reports.is_empty(), "no periodic tunnel records\n{log}");
    let last = reports.last().unwrap();
    assert!(
        field(last, "bytes_upstream_to_client").unwrap_or(0) >= TRANSFER_BYTES,
        "the periodic record does not count the transfer: {last}"
    );
    for alert in ["tunnels.max_duration_secs", "tunnels.max_bytes"] {
        let alerts = lines_with(&log, &["WARN", "tunnel alert", alert, "user=\"alice\""]);
        assert_eq!(alerts.len(), 1, "alert {alert} once:\n{log}");
    }
    let metrics = lab.metrics();
    assert_eq!(
        metric_value(&metrics, "sshr_tunnels_open"),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        metric_value(&metrics, "sshr_tunnel_bytes_total").unwrap_or(0.0) >= TRANSFER_BYTES as f64,
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "sshr_tunnel_alerts_total"),
        Some(2.0),
        "{metrics}"
    );
    assert!(
        metrics.contains("# HELP sshr_tunnels_open SSH tunnels (ssh -w) open now"),
        "tunnel metrics carry their descriptions:\n{metrics}"
    );

    // Stopping the client tears the path down on both ends.
    lab.stop(client);
    assert!(
        lab.wait_for_ping(false, Duration::from_secs(10)),
        "the lab host still reaches the outside host after the client stopped\n{}",
        lab.logs()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed = loop {
        let closed = lines_with(&lab.log("sshr.log"), &["tunnel closed", "user=\"alice\""]);
        if !closed.is_empty() || Instant::now() > deadline {
            break closed;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(closed.len(), 1, "{}", lab.logs());
    assert!(closed[0].contains(&mode_field), "{}", closed[0]);
    assert!(field(&closed[0], "duration_ms").is_some(), "{}", closed[0]);
    assert!(
        field(&closed[0], "bytes_upstream_to_client").unwrap_or(0) >= TRANSFER_BYTES,
        "{}",
        closed[0]
    );
    assert!(
        field(&closed[0], "bytes_client_to_upstream").unwrap_or(0) > 0,
        "{}",
        closed[0]
    );
    assert_eq!(metric_value(&lab.metrics(), "sshr_tunnels_open"), Some(0.0));
    let (_, links) = sh(&[
        "ip",
        "-n",
        &lab.ns(Host::Server),
        "link",
        "show",
        mode.device,
    ]);
    assert!(
        links.contains("does not exist"),
        "the lab's {} outlived the session: {links}",
        mode.device
    );
    eprintln!(
        "{} tunnel through sshr: ok in {:.1} s",
        mode.tunnel,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn point_to_point_tunnel_through_sshr() {
    skip_unless_able!();
    tunnel_through_sshr("tun", POINT_TO_POINT);
}

#[test]
fn ethernet_tunnel_through_sshr() {
    skip_unless_able!();
    tunnel_through_sshr("tap", ETHERNET);
}

#[test]
fn tunnels_outside_the_policy_are_refused_and_logged() {
    skip_unless_able!();
    let p = start("deny", POINT_TO_POINT);
    let run = |user: &str, mode: Mode| {
        let args = ssh_args(&p.user_key, user, mode, &["-N".to_string()]);
        let mut cmd = p.lab.command(
            Host::Pc,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let out = run_bounded(&mut cmd, Stdio::null(), Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}\n{}", p.lab.logs()));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // bob has no `tunnel` key: the default, deny.
    let (code, stderr) = run("bob", POINT_TO_POINT);
    assert_eq!(code, Some(255), "{stderr}");
    assert!(
        stderr.contains(
            "administratively prohibited: sshr: tunnels are not allowed for this account"
        ),
        "the client is told why: {stderr}"
    );
    // alice may open point-to-point tunnels only.
    let (code, stderr) = run("alice", ETHERNET);
    assert_eq!(code, Some(255), "{stderr}");
    assert!(
        stderr.contains("sshr: tunnels are not allowed for this account"),
        "{stderr}"
    );
    let log = p.lab.log("sshr.log");
    let refused = lines_with(
        &log,
        &["WARN", "tunnel refused: not allowed for this account"],
    );
    assert_eq!(refused.len(), 2, "{log}");
    assert!(
        refused[0].contains("user=\"bob\"") && refused[0].contains("policy=deny"),
        "{}",
        refused[0]
    );
    assert!(
        refused[1].contains("user=\"alice\"")
            && refused[1].contains("mode=ethernet")
            && refused[1].contains("policy=point-to-point"),
        "{}",
        refused[1]
    );
    // Never forwarded: the upstream saw no tunnel request.
    let sshd = p.lab.log("sshd.log");
    assert!(!sshd.contains("tun@openssh.com"), "{sshd}");
    assert_eq!(
        metric_value(&p.lab.metrics(), "sshr_tunnels_refused_total"),
        Some(2.0)
    );
}
