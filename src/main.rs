//! The `sshr` daemon: the proxy with the static user table of its configuration file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use sshr::config::Config;
use sshr::keys::{self, KeyFileError};
use sshr::providers::StaticTable;
use sshr_protocol::hostkey::PublicKey;

/// SSH reverse proxy: routes each login to its upstream server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). Without it, the built-in configuration is used:
    /// listen on 127.0.0.1:2222, keys under ./keys, one example user.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,

    /// Number of worker threads (shards); overrides `workers` of the configuration.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,

    /// Check the configuration, the key files (or that they can be generated) and that
    /// every address can be listened on; print a summary and exit (0 if usable).
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    sshr::logging::init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // One line, for humans and for process supervisors' logs alike.
            eprintln!("sshr: {}", message.replace('\n', " "));
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let config = match &cli.config {
        Some(path) => Config::load(path),
        None => Config::builtin(),
    }
    .map_err(|e| e.to_string())?;

    if cli.check_config {
        return check(&config);
    }

    let mut server = sshr::Server::new(config);
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
    let upstream = &config.upstream_key;
    report_key(
        upstream,
        keys::check_upstream_key_file(upstream),
        &mut problems,
    );

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
    println!(
        "{}: OK ({} listen address(es), {} user(s), {} worker(s))",
        config.origin,
        config.listen.len(),
        table.len(),
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
