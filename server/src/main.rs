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
use switchboard::{control, runtime_dir};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: an idle connection's few small
/// allocations cost 1.5 KiB of resident memory with it against 2.1 KiB with
/// glibc's (whose per-thread arenas and caches keep more around), and it is
/// no slower per message (docs/performance.md). Plugins keep their own
/// allocator: what crosses the ABI is freed by the side that allocated it
/// (abi_stable's types carry their drop function).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A WebSocket application server whose apps are plugins.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The config file.
    #[arg(short, long, global = true, default_value = "config/switchboard.toml")]
    config: PathBuf,
    /// Reload by itself when the config or a plugin file changes (also
    /// `watch = true` in `[server]`): for development.
    #[arg(long, global = true)]
    watch: bool,
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
    /// Ask the server serving the config file to reload it and its plugins,
    /// and print what changed (exits non-zero when the reload is refused).
    Reload,
}

/// Sets up logging: `[log]` of the config when it reads (text or JSON, and
/// a level), `SWITCHBOARD_LOG` over the level, to stderr.
fn init_logging(config_path: &Path) {
    let log = Config::load(config_path).map(|c| c.log).ok();
    let level = log.as_ref().map_or("info", |l| l.level.as_str());
    let filter = EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .unwrap_or_else(|_| EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if log.is_some_and(|l| l.json) {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.config);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.config, cli.watch),
        Command::Reload => reload(&cli.config),
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

fn serve(config_path: &Path, watch: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path).context("invalid configuration")?;
    let runtime_dir = config.server.runtime_dir.clone();
    let watch = watch || config.server.watch;
    runtime_dir::prepare(&runtime_dir).context("cannot start")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // The runtime first: in a cluster, apps may read shared state (in Redis)
    // from their constructors.
    let server = match Server::build(config, Some(runtime.handle())) {
        Ok(server) => Arc::new(server),
        Err(error) => {
            let _ = std::fs::remove_dir_all(&runtime_dir);
            return Err(anyhow::Error::new(error).context("cannot start"));
        }
    };
    let served = serve_on(&runtime, server, config_path, watch);
    let _ = std::fs::remove_dir_all(&runtime_dir);
    served
}

fn serve_on(
    runtime: &tokio::runtime::Runtime,
    server: Arc<Server>,
    config_path: &Path,
    watch: bool,
) -> anyhow::Result<ExitCode> {
    runtime.block_on(async move {
        let config = server.config();
        if let Some(cluster) = server.cluster() {
            cluster.start(switchboard::cluster_apps::ClusterApps::new(&server));
            tracing::info!(
                node = %cluster.node_id(),
                "cluster: joined through Redis"
            );
        }
        // `listen` speaks TLS when [server.tls] has no listen of its own.
        let mut wanted = vec![(config.server.listen, false)];
        if let Some(tls) = &config.server.tls {
            match tls.listen {
                Some(listen) => wanted.push((listen, true)),
                None => wanted[0].1 = true,
            }
        }
        let mut listeners = Vec::new();
        let mut lines = Vec::new();
        for (listen, tls) in wanted {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let addr = listener.local_addr().context("reading the bound address")?;
            if listeners.is_empty() {
                server.set_listening(addr);
            }
            lines.push(format!(
                "switchboard listening on {}://{addr}",
                if tls { "https" } else { "http" }
            ));
            listeners.push(switchboard::listener::Bound { listener, tls });
        }
        for app in server.apps() {
            let instance = app.instance();
            let plugin = &instance.plugin().plugin;
            let manifest = plugin.manifest();
            tracing::info!(
                paths = %app.settings().paths.join(", "),
                plugin = %manifest.name,
                version = %manifest.version,
                file = %plugin.path().display(),
                "app mounted"
            );
        }
        control::start(&server, config_path, watch).context("cannot set up reloading")?;
        let stop = shutdown_signal().context("cannot handle SIGTERM")?;
        // The lines on stdout (one per listener, the plain one first): scripts
        // and tests read the bound ports from them.
        for line in lines {
            println!("{line}");
        }
        std::io::stdout().flush().ok();
        switchboard::listener::serve(server.clone(), listeners, stop).await;
        if let Some(cluster) = server.cluster() {
            cluster.leave().await;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// A future that resolves on Ctrl-C or SIGTERM. The handlers are installed
/// now, not when the future is first polled: the listening lines go out
/// before that, and a SIGTERM in between would kill the process outright.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// A future that resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

fn check(config_path: &Path) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(config_path).context("invalid configuration")?;
    // Plugin copies go to a directory of this run, not the server's.
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    config.server.runtime_dir = scratch.path().to_owned();
    let cluster = config.cluster.clone();
    // Apps are built as the server builds them: in a cluster, connected.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    if let Some(cluster) = &cluster {
        runtime
            .block_on(switchboard::cluster::Cluster::ping(cluster))
            .context("cannot start")?;
    }
    let server = Server::build(config, Some(runtime.handle())).context("cannot start")?;
    if let Some(cluster) = cluster {
        println!(
            "cluster: Redis at {} answers; this node is {:?}",
            switchboard::cluster::redacted(&cluster.redis),
            cluster.node_id
        );
    }
    for app in server.apps() {
        let instance = app.instance();
        let plugin = &instance.plugin().plugin;
        let manifest = plugin.manifest();
        println!(
            "{} -> {} {} ({})",
            app.settings().paths.join(", "),
            manifest.name,
            manifest.version,
            plugin.path().display()
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

/// `switchboard reload`: asks the server serving the config file, through the
/// control socket in its runtime directory, and prints its answer.
fn reload(config_path: &Path) -> anyhow::Result<ExitCode> {
    use std::io::{BufRead, BufReader};
    // A broken config still names a server to ask, which then says why.
    let dir = match std::fs::read_to_string(config_path) {
        Ok(text) => runtime_dir::named_in(config_path, &text),
        Err(_) => runtime_dir::default_for(config_path),
    };
    let socket = runtime_dir::control_socket(&dir);
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).with_context(|| {
        format!(
            "no switchboard is serving {} (nothing answers on {})",
            config_path.display(),
            socket.display()
        )
    })?;
    stream
        .write_all(b"reload\n")
        .context("asking the server to reload")?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .context("reading the server's answer")?;
    let answer: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("unexpected answer {line:?}"))?;
    if answer["ok"] == true {
        let report = &answer["report"];
        let list = |key: &str| -> String {
            let items: Vec<String> = report[key]
                .as_array()
                .into_iter()
                .flatten()
                .map(|item| match item {
                    serde_json::Value::Array(pair) => format!(
                        "{} ({})",
                        pair[0].as_str().unwrap_or(""),
                        pair[1].as_str().unwrap_or("")
                    ),
                    other => other.as_str().unwrap_or("").to_owned(),
                })
                .collect();
            if items.is_empty() {
                "none".to_owned()
            } else {
                items.join(", ")
            }
        };
        println!("reloaded {}", config_path.display());
        println!("added: {}", list("added"));
        println!("removed: {}", list("removed"));
        println!("reloaded: {}", list("reloaded"));
        println!("unchanged: {}", list("unchanged"));
        if report["needs_restart"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            println!("needs a restart (not applied): {}", list("needs_restart"));
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: reload refused, nothing changed: {}",
            answer["error"].as_str().unwrap_or("(no reason given)")
        );
        Ok(ExitCode::FAILURE)
    }
}
