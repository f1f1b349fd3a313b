//! The paper's Table 2 and Figure 9, side by side with real OpenSSH on loopback: `ssh
//! host uname` and scp uploads of 1, 10, 20, 50 and 100 MB, straight to `sshd` versus
//! through sshr, alternated in the same run; prints medians, the added milliseconds and
//! the ratio.
//!
//! A real `sshd` (OpenSSH, started by `sshr-testsupport` on a free loopback port with its
//! own keys) and the `sshr` binary of this build (`target/release/sshr`, or `SSHR_BIN`) in
//! front of it, with the upstream host key pinned and the default log level (info), as an
//! operator would run it. Both paths use the same client settings, so that the figure is
//! the proxy's and not an algorithm's: `-o KexAlgorithms=curve25519-sha256 -o
//! Ciphers=aes128-gcm@openssh.com` (override with `SSHR_OVERHEAD_KEX` and
//! `SSHR_OVERHEAD_CIPHER`). Every run of the direct path is paired with one through sshr,
//! the order flipping each round; one unrecorded warm-up round comes first.
//!
//! `cargo bench --bench overhead` with no settings reproduces the README's table (its
//! `ssh host uname` and scp 100 MB rows are rows of this one): median of 9 rounds, with
//! OpenSSH's ProxyJump as the third column. Environment:
//! * `SSHR_OVERHEAD_RUNS` rounds per test (default 9; the median is reported);
//! * `SSHR_OVERHEAD_SIZES` scp sizes in MB (default `1,10,20,50,100`);
//! * `SSHR_OVERHEAD_PROXYJUMP=0` leaves out the third column, OpenSSH's own ProxyJump
//!   (through the same sshd), the stock alternative;
//! * `SSHR_OVERHEAD_DOWNLOAD=1` copies from the server instead of to it;
//! * `SSHR_OVERHEAD_WARM=0` turns sshr's warm upstream connections off
//!   (`[warm_upstreams] per_upstream = 0`): every login then waits for sshd's
//!   connection set-up, as the first login to a server does;
//! * `SSHR_OVERHEAD_OPENSSH10=1` uses OpenSSH 10 for the client (`ssh`, `scp`) and the
//!   server (`sshd`, chrooted), from the Debian sid root of `scripts/openssh10-root`
//!   (`tests/support/src/openssh10.rs`), and `mlkem768x25519-sha256` as the client's key
//!   exchange, which sshr then also negotiates with the OpenSSH 10 server: the set-up
//!   with post-quantum key exchange on both legs;
//! * `SSHR_OVERHEAD_PROVIDERS=1` measures instead `ssh host uname` with the user in each
//!   kind of user directory, one sshr per kind in front of the same sshd: the static
//!   `[[users]]` table, `sqlite`, `postgres` (a throwaway PostgreSQL cluster, as the
//!   tests start it) and `http` (`examples/providers/http_directory.py` over the same
//!   rows in SQLite). Every login asks its directory (`cache_ttl_secs = 0`).
//!
//! Needs root, `/usr/sbin/sshd`, `ssh`, `scp`, `ssh-keygen`. Under `cargo test --benches`
//! (no `--bench` argument) it does nothing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use sshr_testsupport::openssh10::{self, RootDir};
use sshr_testsupport::{keygen, run_bounded, ssh_command, Sshd, SshdOptions, SshrSetup};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn public_key(path: &Path) -> String {
    fs::read_to_string(path.with_extension("pub"))
        .expect("public key")
        .trim()
        .to_owned()
}

fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

/// How a client reaches the server.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route {
    Direct,
    Sshr,
    ProxyJump,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Sshr => "sshr",
            Route::ProxyJump => "ProxyJump",
        }
    }
}

/// The server: the machine's OpenSSH, or OpenSSH 10 in its chroot.
enum Server {
    Machine(Sshd),
    OpenSsh10(openssh10::Sshd),
}

impl Server {
    fn port(&self) -> u16 {
        match self {
            Server::Machine(s) => s.port,
            Server::OpenSsh10(s) => s.port,
        }
    }

    fn host_public_key(&self) -> &str {
        match self {
            Server::Machine(s) => &s.host_public_keys[0],
            Server::OpenSsh10(s) => &s.host_public_keys[0],
        }
    }
}

struct Rig {
    dir: sshr_testsupport::TempDir,
    sshd: Server,
    sshr: sshr_testsupport::Sshr,
    key: PathBuf,
    kex: String,
    cipher: String,
    /// The client programs: the machine's `ssh` and `scp`, or OpenSSH 10's launchers.
    ssh: PathBuf,
    scp: PathBuf,
    /// Where uploads land on the server (a fresh directory of the test's own), as this
    /// process sees it and as the server does (they differ in the OpenSSH 10 chroot).
    remote_dir: PathBuf,
    remote_dir_on_server: PathBuf,
    _root_dir: Option<RootDir>,
}

impl Rig {
    fn start() -> Rig {
        let dir = tempfile::Builder::new()
            .prefix("sshr-overhead")
            .tempdir()
            .expect("temporary directory");
        let openssh10 = env_or("SSHR_OVERHEAD_OPENSSH10", "0") == "1";
        // OpenSSH 10's sshd reads its keys and writes uploads inside its root.
        let root_dir = openssh10.then(|| RootDir::new("sshr-overhead"));
        let key = match &root_dir {
            Some(root) => root.path("id_ed25519"),
            None => dir.path().join("id_ed25519"),
        };
        keygen(&key, "ed25519", None);
        let setup = SshrSetup::new();
        // LogLevel INFO, not the support crate's DEBUG1 (sshd keeps the first value, so
        // it goes in front): no extra logging cost on either path.
        let options = SshdOptions {
            host_keys: vec!["ed25519"],
            extra: vec!["MaxStartups 100".into()],
            authorized_keys: vec![setup.upstream_public_key.clone(), public_key(&key)],
        };
        let sshd = if openssh10 {
            let mut options = options;
            options.extra.insert(0, "LogLevel INFO".into());
            Server::OpenSsh10(openssh10::Sshd::start(options))
        } else {
            Server::Machine(Sshd::start_with_overrides(options, &["LogLevel INFO"]))
        };
        let binary = PathBuf::from(
            std::env::var("SSHR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sshr").to_owned()),
        );
        let warm = if env_or("SSHR_OVERHEAD_WARM", "1") == "0" {
            "[warm_upstreams]\nper_upstream = 0\n\n"
        } else {
            ""
        };
        let tables = format!(
            "{warm}[[users]]\nname = \"bench\"\nupstream = \"127.0.0.1:{}\"\nupstream_user = \"root\"\n\
             authorized_keys = [{}]\nupstream_host_key = {}\n",
            sshd.port(),
            toml_str(&public_key(&key)),
            toml_str(sshd.host_public_key()),
        );
        let sshr = setup.start(&binary, &tables);
        let (remote_dir, remote_dir_on_server) = match &root_dir {
            Some(root) => (root.path("remote"), root.inner("remote")),
            None => (dir.path().join("remote"), dir.path().join("remote")),
        };
        fs::create_dir_all(&remote_dir).unwrap();
        let (ssh, scp) = if openssh10 {
            openssh10::write_launchers(dir.path())
        } else {
            ("ssh".into(), "scp".into())
        };
        let default_kex = if openssh10 {
            openssh10::MLKEM768X25519
        } else {
            "curve25519-sha256"
        };
        Rig {
            dir,
            sshd,
            sshr,
            key,
            kex: env_or("SSHR_OVERHEAD_KEX", default_kex),
            cipher: env_or("SSHR_OVERHEAD_CIPHER", "aes128-gcm@openssh.com"),
            ssh,
            scp,
            remote_dir,
            remote_dir_on_server,
            _root_dir: root_dir,
        }
    }

    /// `ssh`/`scp` with the common options, aimed at `path`; returns the command and the
    /// destination `user@host`.
    fn command(&self, program: &Path, path: Route) -> (Command, &'static str) {
        let (port, login) = match path {
            Route::Direct | Route::ProxyJump => (self.sshd.port(), "root@127.0.0.1"),
            Route::Sshr => (self.sshr.port(), "bench@127.0.0.1"),
        };
        let program = program.to_str().expect("client program path is UTF-8");
        let mut cmd = ssh_command(program, port, Some(&self.key));
        cmd.args(["-o", &format!("KexAlgorithms={}", self.kex)])
            .args(["-o", &format!("Ciphers={}", self.cipher)]);
        if path == Route::ProxyJump {
            // The jump host is the same sshd; the inner ssh gets the same options.
            let jump = format!(
                "{} -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                 -o BatchMode=yes -o LogLevel=ERROR -o IdentitiesOnly=yes -i {} \
                 -o KexAlgorithms={} -o Ciphers={} -p {} -W %h:%p root@127.0.0.1",
                self.ssh.display(),
                self.key.display(),
                self.kex,
                self.cipher,
                self.sshd.port()
            );
            cmd.args(["-o", &format!("ProxyCommand={jump}")]);
        }
        (cmd, login)
    }

    /// Wall-clock time of `ssh host uname`.
    fn uname(&self, path: Route) -> Duration {
        let (mut cmd, login) = self.command(&self.ssh, path);
        cmd.arg(login).arg("uname");
        let t = Instant::now();
        let out = run_bounded(&mut cmd, Stdio::null(), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{}: {e}", path.name()));
        let elapsed = t.elapsed();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "Linux",
            "{}: ssh uname failed: {}{}",
            path.name(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        elapsed
    }

    /// Wall-clock time of one scp of `file` (upload, or download with `download`).
    fn scp(&self, path: Route, file: &Path, download: bool) -> Duration {
        let (mut cmd, login) = self.command(&self.scp, path);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let remote = self.remote_dir.join(&name);
        let remote_on_server = self.remote_dir_on_server.join(&name);
        let local_copy = self.dir.path().join(format!("{name}.back"));
        if download {
            // The file is on the server side already (same machine): copy it back here.
            fs::copy(file, &remote).unwrap();
            cmd.arg(format!("{login}:{}", remote_on_server.display()))
                .arg(&local_copy);
        } else {
            cmd.arg(file)
                .arg(format!("{login}:{}", remote_on_server.display()));
        }
        let t = Instant::now();
        let out = run_bounded(&mut cmd, Stdio::null(), Duration::from_secs(300))
            .unwrap_or_else(|e| panic!("{}: {e}", path.name()));
        let elapsed = t.elapsed();
        assert!(
            out.status.success(),
            "{}: scp failed: {}",
            path.name(),
            String::from_utf8_lossy(&out.stderr)
        );
        let landed = if download { &local_copy } else { &remote };
        let size = fs::metadata(landed).map(|m| m.len()).unwrap_or(0);
        assert_eq!(
            size,
            fs::metadata(file).unwrap().len(),
            "{}: size",
            path.name()
        );
        let _ = fs::remove_file(&remote);
        let _ = fs::remove_file(&local_copy);
        elapsed
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Incompressible test data (scp does not compress by default, but be safe).
fn make_file(dir: &Path, mb: u64) -> PathBuf {
    let path = dir.join(format!("data-{mb}MB"));
    let mut f = fs::File::create(&path).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::from_seed([mb as u8; 32]);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mb {
        rng.fill_bytes(&mut buf);
        f.write_all(&buf).unwrap();
    }
    path
}

struct Row {
    test: String,
    /// Median per path, in the order of `paths`.
    medians: Vec<Duration>,
    bytes: Option<u64>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("overhead: run with `cargo bench --bench overhead` (skipped)");
        return;
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        eprintln!("overhead: /usr/sbin/sshd not found, skipped (apt-get install openssh-server)");
        return;
    }
    let runs: usize = env_or("SSHR_OVERHEAD_RUNS", "9")
        .parse()
        .unwrap_or(9)
        .max(1);
    let sizes: Vec<u64> = env_or("SSHR_OVERHEAD_SIZES", "1,10,20,50,100")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let download = env_or("SSHR_OVERHEAD_DOWNLOAD", "0") == "1";
    let mut paths = vec![Route::Direct, Route::Sshr];
    if env_or("SSHR_OVERHEAD_PROXYJUMP", "1") != "0" {
        paths.push(Route::ProxyJump);
    }

    let rig = Rig::start();
    if env_or("SSHR_OVERHEAD_PROVIDERS", "0") == "1" {
        providers(&rig, runs);
        return;
    }
    let files: Vec<(u64, PathBuf)> = sizes
        .iter()
        .map(|&mb| (mb, make_file(rig.dir.path(), mb)))
        .collect();
    eprintln!(
        "overhead: sshd on {}, sshr on {}; {runs} round(s); client: KexAlgorithms={} Ciphers={}",
        rig.sshd.port(),
        rig.sshr.port(),
        rig.kex,
        rig.cipher
    );

    // One round of everything: `order` flips between rounds so that neither path always
    // runs first (page cache, CPU frequency).
    let round = |flip: bool| -> Vec<Vec<Duration>> {
        let mut order = paths.clone();
        if flip {
            order.reverse();
        }
        let mut tests: Vec<Vec<Duration>> = Vec::new();
        let mut per_test = |f: &dyn Fn(Route) -> Duration| {
            let mut t = vec![Duration::ZERO; paths.len()];
            for p in &order {
                let i = paths.iter().position(|x| x == p).unwrap();
                t[i] = f(*p);
            }
            tests.push(t);
        };
        per_test(&|p| rig.uname(p));
        for (_, file) in &files {
            per_test(&|p| rig.scp(p, file, download));
        }
        tests
    };
    let _ = round(false);
    let mut samples: Vec<Vec<Vec<Duration>>> = Vec::new();
    for r in 0..runs {
        samples.push(round(r % 2 == 1));
        eprintln!("overhead: round {}/{runs} done", r + 1);
    }

    let mut rows = Vec::new();
    let names: Vec<(String, Option<u64>)> = std::iter::once(("ssh host uname".to_owned(), None))
        .chain(files.iter().map(|(mb, _)| {
            (
                format!(
                    "scp {mb} MB {}",
                    if download { "download" } else { "upload" }
                ),
                Some(mb * 1024 * 1024),
            )
        }))
        .collect();
    for (ti, (test, bytes)) in names.into_iter().enumerate() {
        let medians = (0..paths.len())
            .map(|pi| {
                let mut v: Vec<Duration> = samples.iter().map(|s| s[ti][pi]).collect();
                median(&mut v)
            })
            .collect();
        rows.push(Row {
            test,
            medians,
            bytes,
        });
    }

    println!();
    println!(
        "## sshr overhead vs direct OpenSSH (median of {runs}; client KexAlgorithms={} Ciphers={})",
        rig.kex, rig.cipher
    );
    println!();
    let mut header =
        "| test | direct ms | via sshr ms | added ms | sshr / direct | overhead |".to_owned();
    let mut rule = "| --- | ---: | ---: | ---: | ---: | ---: |".to_owned();
    if paths.contains(&Route::ProxyJump) {
        header += " ProxyJump ms | ProxyJump added ms | ProxyJump / direct |";
        rule += " ---: | ---: | ---: |";
    }
    header += " direct MB/s | via sshr MB/s |";
    rule += " ---: | ---: |";
    println!("{header}");
    println!("{rule}");
    for r in &rows {
        let (d, s) = (ms(r.medians[0]), ms(r.medians[1]));
        let mut line = format!(
            "| {} | {:.1} | {:.1} | {:+.1} | {:.3} | {:+.1} % |",
            r.test,
            d,
            s,
            s - d,
            s / d,
            (s / d - 1.0) * 100.0
        );
        if paths.contains(&Route::ProxyJump) {
            let j = ms(r.medians[2]);
            line += &format!(" {:.1} | {:+.1} | {:.3} |", j, j - d, j / d);
        }
        match r.bytes {
            Some(b) => {
                line += &format!(
                    " {:.0} | {:.0} |",
                    b as f64 / 1e6 / (d / 1e3),
                    b as f64 / 1e6 / (s / 1e3)
                )
            }
            None => line += " | |",
        }
        println!("{line}");
    }
    println!();
    println!(
        "Each scp time includes the whole `scp` run (its own SSH set-up); the added time of \
         a transfer is therefore the set-up overhead plus the relay's."
    );
}

/// `SSHR_OVERHEAD_PROVIDERS=1`: the set-up latency each kind of directory adds, as
/// `ssh host uname` straight to sshd and through one sshr per kind, alternated.
fn providers(rig: &Rig, runs: usize) {
    use sshr::providers::schema::SCHEMA;
    let Server::Machine(sshd) = &rig.sshd else {
        panic!("SSHR_OVERHEAD_PROVIDERS=1 runs with the machine's OpenSSH only");
    };
    let user_sql = format!(
        "INSERT INTO users (name, upstream, upstream_user, upstream_host_key) \
         VALUES ('bench', '127.0.0.1:{}', 'root', '{}');\n\
         INSERT INTO user_keys (name, key) VALUES ('bench', '{}');",
        sshd.port,
        sshd.host_public_keys[0],
        public_key(&rig.key)
    );
    // SQLite, written as an operator's script would.
    let db = rig.dir.path().join("users.db");
    let status = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
        ])
        .arg(&db)
        .arg(format!("{SCHEMA}\n{user_sql}"))
        .status()
        .expect("python3");
    assert!(status.success(), "cannot write {}", db.display());
    // PostgreSQL, if installed.
    let pg = sshr_testsupport::postgres::Postgres::start();
    if let Some(pg) = &pg {
        pg.execute(&format!("{SCHEMA}\n{user_sql}"));
    }
    // The example HTTP directory over the SQLite file.
    let http_port = sshr_testsupport::free_listen_port();
    let mut http = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/providers/http_directory.py"
        ))
        .arg(&db)
        .arg(http_port.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("python3");
    assert!(sshr_testsupport::wait_for_port(
        ([127, 0, 0, 1], http_port).into(),
        Duration::from_secs(10)
    ));

    let binary = PathBuf::from(
        std::env::var("SSHR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sshr").to_owned()),
    );
    let mut kinds: Vec<(&str, String)> = vec![
        (
            "sqlite",
            format!(
                "kind = \"sqlite\"\npath = {}\n",
                toml_str(&db.display().to_string())
            ),
        ),
        (
            "http",
            format!("kind = \"http\"\nurl = \"http://127.0.0.1:{http_port}/\"\n"),
        ),
    ];
    if let Some(pg) = &pg {
        kinds.insert(
            1,
            (
                "postgres",
                format!("kind = \"postgres\"\nurl = {}\n", toml_str(&pg.url())),
            ),
        );
    }
    let mut proxies = Vec::new();
    for (name, provider) in &kinds {
        let setup = SshrSetup::new();
        // This proxy may log in upstream too.
        let mut keys = fs::OpenOptions::new()
            .append(true)
            .open(sshd.path("authorized_keys"))
            .unwrap();
        writeln!(keys, "{}", setup.upstream_public_key).unwrap();
        let sshr = setup.start(&binary, &format!("[[providers]]\n{provider}"));
        proxies.push((*name, sshr));
    }
    let mut ports: Vec<(&str, u16, &str)> = vec![
        ("direct", sshd.port, "root@127.0.0.1"),
        ("static", rig.sshr.port(), "bench@127.0.0.1"),
    ];
    ports.extend(
        proxies
            .iter()
            .map(|(n, s)| (*n, s.port(), "bench@127.0.0.1")),
    );
    let uname = |name: &str, port: u16, login: &str| -> Duration {
        let mut cmd = ssh_command("ssh", port, Some(&rig.key));
        cmd.args(["-o", &format!("KexAlgorithms={}", rig.kex)])
            .args(["-o", &format!("Ciphers={}", rig.cipher)])
            .arg(login)
            .arg("uname");
        let t = Instant::now();
        let out = run_bounded(&mut cmd, Stdio::null(), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            out.status.success(),
            "{name}: ssh uname failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    };
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); ports.len()];
    for round in 0..=runs {
        let mut order: Vec<usize> = (0..ports.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (name, port, login) = ports[i];
            let t = uname(name, port, login);
            // Round 0 warms up (and fills the warm upstream pools) unrecorded.
            if round > 0 {
                samples[i].push(t);
            }
        }
        eprintln!("overhead: providers round {round}/{runs} done");
    }
    let _ = http.kill();
    let _ = http.wait();
    let medians: Vec<f64> = samples.iter_mut().map(|v| ms(median(v))).collect();
    // The proxy's own measure of each lookup (`lookup_us` of its "authenticated" log
    // lines): the directory's share of the set-up, free of the client's noise.
    let lookup_us = |log: String| -> Option<u64> {
        let mut v: Vec<u64> = log
            .lines()
            .filter(|l| l.contains("authenticated; relaying"))
            .filter_map(|l| {
                l.split("lookup_us=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    };
    let mut lookups = vec![None, lookup_us(rig.sshr.log())];
    lookups.extend(proxies.iter().map(|(_, s)| lookup_us(s.log())));
    println!();
    println!(
        "## ssh host uname by user directory (median of {runs}; client KexAlgorithms={} Ciphers={})",
        rig.kex, rig.cipher
    );
    println!();
    println!("| path | ms | added vs direct ms | / direct | added vs static ms | lookup µs (median, proxy log) |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (i, (name, _, _)) in ports.iter().enumerate() {
        println!(
            "| {name} | {:.1} | {:+.1} | {:.3} | {} | {} |",
            medians[i],
            medians[i] - medians[0],
            medians[i] / medians[0],
            if i == 0 {
                String::new()
            } else {
                format!("{:+.2}", medians[i] - medians[1])
            },
            lookups[i].map_or(String::new(), |us| us.to_string())
        );
    }
    if pg.is_none() {
        println!("\n(PostgreSQL is not installed: no postgres row.)");
    }
}
