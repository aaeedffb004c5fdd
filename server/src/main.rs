//! The `switchboard` command: parses the command line, sets up logging, and
//! reports errors with their context. Everything else lives in the library.

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchboard::config::Config;
use switchboard::plugin::loader::plugin_files;
use switchboard::plugin::Plugin;
use switchboard::server::Server;
use tracing_subscriber::EnvFilter;

/// A WebSocket application server whose apps are plugins.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The config file.
    #[arg(short, long, global = true, default_value = "config/switchboard.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the apps of the config file (the default).
    Serve,
    /// Check the config file and load every plugin and app, then exit without serving.
    Check,
    /// List the plugin files in a directory with their manifests, or why each cannot load.
    Plugins {
        /// The directory (default: the config's plugin_dir).
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SWITCHBOARD_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config),
        Command::Check => check(&cli.config),
        Command::Plugins { dir } => plugins(&cli.config, dir),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(config_path: &Path) -> anyhow::Result<Server> {
    let config = Config::load(config_path).context("invalid configuration")?;
    Server::build(config).context("cannot start")
}

fn serve(config_path: &Path) -> anyhow::Result<ExitCode> {
    let server = Arc::new(load(config_path)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listen = server.config().server.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        server.set_listening(addr);
        for app in server.apps() {
            let manifest = app.plugin().manifest();
            tracing::info!(
                paths = %app.settings().paths.join(", "),
                plugin = %manifest.name,
                version = %manifest.version,
                file = %app.plugin().path().display(),
                "app mounted"
            );
        }
        // The one line on stdout: scripts and tests read the bound port from it.
        println!("switchboard listening on http://{addr}");
        std::io::stdout().flush().ok();
        switchboard::listener::serve(server, listener, shutdown_signal()).await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

fn check(config_path: &Path) -> anyhow::Result<ExitCode> {
    let server = load(config_path)?;
    for app in server.apps() {
        let manifest = app.plugin().manifest();
        println!(
            "{} -> {} {} ({})",
            app.settings().paths.join(", "),
            manifest.name,
            manifest.version,
            app.plugin().path().display()
        );
        app.shut_down();
    }
    println!(
        "{}: ok, {} app(s)",
        config_path.display(),
        server.apps().len()
    );
    Ok(ExitCode::SUCCESS)
}

fn plugins(config_path: &Path, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = match dir {
        Some(dir) => dir,
        None => {
            Config::load(config_path)
                .context("invalid configuration (give a directory to skip it)")?
                .server
                .plugin_dir
        }
    };
    let files = plugin_files(&dir)
        .with_context(|| format!("cannot list plugin directory {}", dir.display()))?;
    let mut failed = false;
    for file in &files {
        match Plugin::load(file) {
            Ok(plugin) => {
                let m = plugin.manifest();
                println!(
                    "{}: {} {} (plugin-api {}): {}",
                    file.display(),
                    m.name,
                    m.version,
                    m.api_version,
                    m.description
                );
            }
            Err(error) => {
                failed = true;
                println!("{error}");
            }
        }
    }
    if files.is_empty() {
        println!(
            "no plugin files (lib*{}) in {}",
            std::env::consts::DLL_SUFFIX,
            dir.display()
        );
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
