//! The `sshr` daemon: the proxy with the static user table of its configuration file,
//! and `sshr db`, which manages the users of a `kind = "sqlite"` provider.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sshr::config::{Config, PostgresUrl, ProviderKind};
use sshr::keys::{self, KeyFileError};
use sshr::providers::sqlite::{Admin, KeysAdded, Listing, NewUser, UpstreamChange};
use sshr::providers::StaticTable;
use sshr_protocol::hostkey::PublicKey;

/// `--version`: the version and what this binary was built with (`-V`: the version).
fn long_version() -> &'static str {
    static INFO: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    INFO.get_or_init(sshr::build_info)
}

/// Largest key file or standard input `sshr db` reads (an authorized_keys file of a
/// thousand RSA keys is under 1 MiB).
const MAX_KEY_INPUT: u64 = 4 * 1024 * 1024;

/// SSH reverse proxy: routes each login to its upstream server.
///
/// Without a subcommand, runs the proxy.
#[derive(Parser, Debug)]
#[command(version, long_version = long_version(), about)]
struct Cli {
    /// Configuration file (TOML). Without it, the built-in configuration is used:
    /// listen on 127.0.0.1:2222, keys under ./keys, one example user, and the users of
    /// ./sshr.db (see `sshr db`).
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// Number of worker threads (shards); overrides `workers` of the configuration.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,

    /// Check the configuration, the key files (or that they can be generated) and that
    /// every address can be listened on; print a summary and exit (0 if usable).
    #[arg(long)]
    check_config: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage the users of a `kind = "sqlite"` provider, without writing SQL.
    ///
    /// A running proxy sees every change at the next login. Every change is checked as
    /// a login would check it (address, key lines, host keys), so a mistake is refused
    /// here rather than failing logins.
    ///
    /// The database is `--db PATH`, else the `path` of the first `kind = "sqlite"`
    /// provider of `--config FILE` (or of the built-in configuration).
    ///
    /// A user has one server per target: its default one (logins as `alice`) and named
    /// ones (logins as `alice+web2`, with the configuration's `target_separator`). With
    /// several targets and no default, the client is offered the list.
    #[command(verbatim_doc_comment)]
    Db(DbCommand),
}

#[derive(Args, Debug)]
struct DbCommand {
    /// The database file (default: the first `kind = "sqlite"` provider's `path`).
    #[arg(long, value_name = "PATH", global = true)]
    db: Option<PathBuf>,

    #[command(subcommand)]
    action: DbAction,
}

#[derive(Subcommand, Debug)]
enum DbAction {
    /// Create the database file with its tables (in WAL mode), or add the tables an
    /// existing one lacks. Its directory must exist.
    Init,

    /// Add a user's server: its default one, or with --target a named one. The first
    /// one creates the database if it does not exist yet.
    ///
    /// Example: `sshr db add-user alice 10.0.0.5:22 --key-file alice.pub`
    AddUser {
        /// The login name clients use.
        name: String,
        /// The server, as host:port (IPv6 in brackets: [2001:db8::5]:22).
        upstream: String,
        /// Add this named target (`alice+web2`) instead of the default server.
        #[arg(long, short = 't', value_name = "TARGET")]
        target: Option<String>,
        /// The user name on the server (default: NAME).
        #[arg(long, short = 'u', value_name = "USER")]
        upstream_user: Option<String>,
        /// Pin the server's host key (an OpenSSH public key line, e.g. from
        /// `ssh-keyscan` or /etc/ssh/ssh_host_ed25519_key.pub); repeat for several.
        /// Without it, any host key is accepted and logged.
        #[arg(long, value_name = "KEY")]
        host_key: Vec<String>,
        /// Which SSH tunnels (`ssh -w`) the user may open there (default: the
        /// configuration's `tunnels.default`).
        #[arg(long, value_name = "POLICY", value_parser = ["deny", "point-to-point", "ethernet", "any"])]
        tunnel: Option<String>,
        /// Also add the keys of this authorized_keys file (`-`: standard input).
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
    },

    /// Add a public key a user may log in with (to all its servers).
    ///
    /// Example: `sshr db add-key alice - < id_ed25519.pub`
    AddKey {
        /// The user (it must have been added with add-user).
        name: String,
        /// The key, as a line of authorized_keys (`ssh-ed25519 AAAA... comment`,
        /// without options), or `-` to read lines from standard input.
        key: String,
    },

    /// Show the users, their servers and the fingerprints of their keys.
    List {
        /// Only this user.
        name: Option<String>,
    },

    /// Remove a user: its servers and keys, or with --target only one server.
    RemoveUser {
        /// The user.
        name: String,
        /// Remove only this target (`''`: the default server). The keys are removed
        /// with the user's last server.
        #[arg(long, short = 't', value_name = "TARGET")]
        target: Option<String>,
    },

    /// Remove a key from a user.
    RemoveKey {
        /// The user.
        name: String,
        /// The key's fingerprint (`SHA256:...`, as `list` and `ssh-keygen -lf` show it)
        /// or its authorized_keys line.
        key: String,
    },

    /// Move a user's server to another address (and optionally user name or host key).
    ///
    /// Example: `sshr db set-upstream alice 10.0.0.6:22 --target web2`
    SetUpstream {
        /// The user.
        name: String,
        /// The new address, as host:port.
        upstream: String,
        /// Move this named target instead of the default server.
        #[arg(long, short = 't', value_name = "TARGET")]
        target: Option<String>,
        /// Also change the user name on the server.
        #[arg(long, short = 'u', value_name = "USER")]
        upstream_user: Option<String>,
        /// Pin this host key instead of the current pin; repeat for several. Without it
        /// (and without --unpin) the pin is kept: give the new server's key when it has
        /// another one.
        #[arg(long, value_name = "KEY", conflicts_with = "unpin")]
        host_key: Vec<String>,
        /// Accept any host key from now on.
        #[arg(long)]
        unpin: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sshr::logging::init();
    // Taken (and the variables removed) before any thread starts, whatever the command.
    let listen_fds = match sshr::ListenFds::from_env() {
        Ok(fds) => fds,
        Err(message) => {
            eprintln!("sshr: {message}");
            return ExitCode::from(1);
        }
    };
    let result = match cli.command {
        Some(Command::Db(_)) if cli.workers.is_some() || cli.check_config => {
            Err("--workers and --check-config are options of the proxy, not of `sshr db`".into())
        }
        Some(Command::Db(db)) => run_db(cli.config.as_deref(), db),
        None => run(cli, listen_fds),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // One line, for humans and for process supervisors' logs alike.
            eprintln!("sshr: {}", message.replace('\n', " "));
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli, listen_fds: sshr::ListenFds) -> Result<(), String> {
    let config = load_config(cli.config.as_deref())?;

    if cli.check_config {
        return check(&config);
    }

    let mut server = sshr::Server::new(config).listen_fds(listen_fds);
    if let Some(workers) = cli.workers {
        server = server.workers(workers.into());
    }
    server.run().map_err(|e| e.to_string())
}

/// `--check-config`: everything a start would find wrong, leaving no file behind and
/// holding no port: key files (present and usable, or absent and writable), listen
/// addresses and the metrics address (free and local). Reports every problem at once.
fn check(config: &Config) -> Result<(), String> {
    let mut problems = Vec::new();
    for path in &config.host_keys {
        report_key(path, keys::check_key_file(path), &mut problems);
    }
    for upstream in &config.upstream_keys {
        report_key(
            upstream,
            keys::check_upstream_key_file(upstream),
            &mut problems,
        );
    }

    // Held until every address is tried, so that two settings naming one address clash
    // here as they would at start.
    let mut bound = Vec::new();
    for &addr in &config.listen {
        match sshr::bind_reuseport(addr) {
            Ok(socket) => bound.push(socket),
            Err(e) => problems.push(format!("cannot listen on {addr} (`listen`): {e}")),
        }
    }
    if let Some(addr) = config.metrics_listen {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            problems.push(format!("cannot listen on {addr} (`metrics_listen`): {e}"));
        }
    }
    drop(bound);

    // Reads the authorized_keys files and warns about missing ones, as a start would.
    let table = StaticTable::from_config(config);
    if !problems.is_empty() {
        return Err(format!("{}: {}", config.origin, problems.join("; ")));
    }
    // Providers are listed, not opened: opening one would create its SQLite file.
    for (index, p) in config.providers.iter().enumerate() {
        let place = match &p.kind {
            ProviderKind::Sqlite { path } => match path.exists() {
                true => format!("{}", path.display()),
                false => format!("{} (absent, created at start)", path.display()),
            },
            ProviderKind::Postgres {
                url: PostgresUrl::File(path),
                ..
            } => format!("url from {}", path.display()),
            ProviderKind::Postgres { .. } => "url in the configuration".to_string(),
            ProviderKind::Http { url, .. } => url.clone(),
            ProviderKind::Command { argv, .. } => argv[0].clone(),
            _ => String::new(),
        };
        println!("provider {}: {} {place}", index + 1, p.kind.name());
    }
    println!(
        "{}: OK ({} listen address(es), {} user(s) in the table, {} provider(s), {} worker(s))",
        config.origin,
        config.listen.len(),
        table.len(),
        config.providers.len(),
        config.worker_count()
    );
    Ok(())
}

fn report_key(
    path: &Path,
    checked: Result<Option<PublicKey>, KeyFileError>,
    problems: &mut Vec<String>,
) {
    match checked {
        Ok(Some(key)) => println!("key {}: {}", path.display(), key.fingerprint()),
        Ok(None) => println!("key {}: absent, will be generated at start", path.display()),
        Err(e) => problems.push(e.to_string()),
    }
}

fn load_config(path: Option<&Path>) -> Result<Config, String> {
    match path {
        Some(path) => Config::load(path),
        None => Config::builtin(),
    }
    .map_err(|e| e.to_string())
}

/// `sshr db ...`.
fn run_db(config: Option<&Path>, db: DbCommand) -> Result<(), String> {
    let path = match db.db {
        Some(path) => path,
        None => sqlite_path(&load_config(config)?)?,
    };
    if let DbAction::Init = db.action {
        let (admin, created) = Admin::init(&path).map_err(|e| e.to_string())?;
        if created {
            println!("created {}", admin.path().display());
        } else {
            println!("{}: tables present", admin.path().display());
        }
        return Ok(());
    }
    // The first user of a new proxy creates its database, as the daemon's first start
    // would; every other change needs the file to exist (a typo in --db must not create
    // an empty one).
    let mut admin = if matches!(db.action, DbAction::AddUser { .. }) && !path.exists() {
        let (admin, _) = Admin::init(&path).map_err(|e| e.to_string())?;
        println!("created {}", admin.path().display());
        admin
    } else {
        Admin::open(&path).map_err(|e| e.to_string())?
    };
    match db.action {
        DbAction::Init => unreachable!("handled above"),
        DbAction::AddUser {
            name,
            upstream,
            target,
            upstream_user,
            host_key,
            tunnel,
            key_file,
        } => {
            // A name holding the separator could never be logged in to: `a+b` is read
            // as account `a`, server `b`.
            let separator = load_config(config).ok().and_then(|c| c.target_separator);
            if let Some(sep) = separator.filter(|sep| name.contains(*sep)) {
                return Err(format!(
                    "user name {name:?} contains the target separator {sep:?}: a login as it would name server {:?} of user {:?}",
                    name.split_once(sep).map_or("", |(_, t)| t),
                    name.split_once(sep).map_or("", |(u, _)| u),
                ));
            }
            let keys = match &key_file {
                Some(file) => key_lines(file)?,
                None => Vec::new(),
            };
            let user = NewUser {
                name,
                target: target.unwrap_or_default(),
                upstream,
                upstream_user,
                host_keys: host_key,
                tunnel,
                keys,
            };
            let added = admin.add_user(&user).map_err(|e| e.to_string())?;
            println!(
                "added {} ({}): {} as {}",
                user.name,
                server_name(&user.target),
                user.upstream,
                user.upstream_user.as_deref().unwrap_or(&user.name)
            );
            print_keys(&user.name, &added);
        }
        DbAction::AddKey { name, key } => {
            let lines = if key == "-" {
                key_lines(Path::new("-"))?
            } else {
                vec![key]
            };
            let added = admin.add_keys(&name, &lines).map_err(|e| e.to_string())?;
            print_keys(&name, &added);
        }
        DbAction::List { name } => {
            let users = admin.list(name.as_deref()).map_err(|e| e.to_string())?;
            if users.is_empty() {
                println!("no users in {}", admin.path().display());
            }
            for user in &users {
                print_listing(user);
            }
        }
        DbAction::RemoveUser { name, target } => {
            let removed = admin
                .remove_user(&name, target.as_deref())
                .map_err(|e| e.to_string())?;
            println!(
                "removed {name}: {} server(s), {} key line(s)",
                removed.servers, removed.keys
            );
        }
        DbAction::RemoveKey { name, key } => {
            let removed = admin.remove_key(&name, &key).map_err(|e| e.to_string())?;
            println!("removed {removed} key line(s) of {name}");
        }
        DbAction::SetUpstream {
            name,
            upstream,
            target,
            upstream_user,
            host_key,
            unpin,
        } => {
            let target = target.unwrap_or_default();
            let change = UpstreamChange {
                upstream,
                upstream_user,
                host_keys: if unpin {
                    Some(Vec::new())
                } else if host_key.is_empty() {
                    None
                } else {
                    Some(host_key)
                },
            };
            admin
                .set_upstream(&name, &target, &change)
                .map_err(|e| e.to_string())?;
            println!(
                "{name} ({}) now goes to {}",
                server_name(&target),
                change.upstream
            );
        }
    }
    Ok(())
}

/// The `path` of the first `kind = "sqlite"` provider of `config`.
fn sqlite_path(config: &Config) -> Result<PathBuf, String> {
    config
        .providers
        .iter()
        .find_map(|p| match &p.kind {
            ProviderKind::Sqlite { path } => Some(path.clone()),
            _ => None,
        })
        .ok_or_else(|| {
            format!(
                "{} has no `kind = \"sqlite\"` provider: pass --db PATH, or add a \
                 [[providers]] entry with kind = \"sqlite\" and its path",
                config.origin
            )
        })
}

/// The lines of an authorized_keys file, or of standard input for `-`.
fn key_lines(file: &Path) -> Result<Vec<String>, String> {
    let shown = if file == Path::new("-") {
        "standard input".to_string()
    } else {
        file.display().to_string()
    };
    let mut text = String::new();
    let read = if file == Path::new("-") {
        std::io::stdin()
            .take(MAX_KEY_INPUT + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(MAX_KEY_INPUT + 1).read_to_string(&mut text))
    };
    read.map_err(|e| format!("cannot read keys from {shown}: {e}"))?;
    if text.len() as u64 > MAX_KEY_INPUT {
        return Err(format!(
            "{shown}: more than {MAX_KEY_INPUT} bytes, not an authorized_keys file"
        ));
    }
    Ok(text.lines().map(str::to_owned).collect())
}

fn server_name(target: &str) -> String {
    if target.is_empty() {
        "default server".into()
    } else {
        format!("target {target}")
    }
}

fn print_keys(name: &str, keys: &KeysAdded) {
    for fingerprint in &keys.added {
        println!("{name}: added key {fingerprint}");
    }
    for fingerprint in &keys.present {
        println!("{name}: already has key {fingerprint}");
    }
}

fn print_listing(user: &Listing) {
    println!("{}", user.name);
    if user.servers.is_empty() {
        println!("  (no server: its keys are unused)");
    }
    for server in &user.servers {
        let target = if server.target.is_empty() {
            "(default)"
        } else {
            &server.target
        };
        let mut line = format!(
            "  server {target}: {} as {}",
            server.upstream, server.upstream_user
        );
        match &server.upstream_host_key {
            Some(keys) => {
                let pinned: Vec<String> = keys
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| match PublicKey::from_openssh(l.trim()) {
                        Ok(key) => key.fingerprint(),
                        Err(_) => "(unusable key)".into(),
                    })
                    .collect();
                line.push_str(&format!(", host key {}", pinned.join(" ")));
            }
            None => line.push_str(", host key not pinned"),
        }
        if let Some(tunnel) = &server.tunnel {
            line.push_str(&format!(", tunnel {tunnel}"));
        }
        println!("{line}");
    }
    for key in &user.keys {
        match &key.fingerprint {
            Some(fingerprint) => println!("  key {fingerprint} {}", key.comment),
            None => println!("  key unusable ({})", key.comment),
        }
    }
}
