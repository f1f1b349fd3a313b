//! The `sshr` daemon: the proxy with the static user table of its configuration file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sshr::config::Config;
use sshr::keys;
use sshr::providers::StaticTable;

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

    /// Check the configuration and key files, print a summary and exit (0 if usable).
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

/// `--check-config`: everything `run` would check, without writing any file.
fn check(config: &Config) -> Result<(), String> {
    let key_files = config
        .host_keys
        .iter()
        .chain(std::iter::once(&config.upstream_key));
    for path in key_files {
        match keys::check_key_file(path).map_err(|e| e.to_string())? {
            Some(key) => println!("key {}: {}", path.display(), key.fingerprint()),
            None => println!("key {}: absent, will be generated at start", path.display()),
        }
    }
    // Reads the authorized_keys files and warns about missing ones, as a start would.
    let table = StaticTable::from_config(config);
    println!(
        "{}: OK ({} listen address(es), {} user(s), {} worker(s))",
        config.origin,
        config.listen.len(),
        table.len(),
        config.worker_count()
    );
    Ok(())
}
