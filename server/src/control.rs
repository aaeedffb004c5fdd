//! What asks a running server to reload: `SIGHUP`, the control socket that
//! `switchboard reload` talks to, and (with `--watch` or `watch = true`) a
//! file watcher on the config and plugin files.
//!
//! The control socket is a Unix socket in the runtime directory (mode 0700,
//! so only the server's user can use it). A client writes one line,
//! `reload`, and reads one line of JSON: `{"ok":true,"report":{...}}` or
//! `{"ok":false,"error":"..."}`.
//!
//! The watcher reloads once the watched files have been quiet for
//! [`WATCH_QUIET`], so a build that writes a plugin in several steps gives
//! one reload.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::config::Config;
use crate::plugin::loader::plugin_file;
use crate::reload::reload;
use crate::runtime_dir::control_socket;
use crate::server::Server;

/// How long the watched files must be quiet before the watcher reloads.
pub const WATCH_QUIET: Duration = Duration::from_millis(300);

/// Longest request line on the control socket.
const MAX_REQUEST: u64 = 256;

/// Starts every reload trigger for `server`, serving the config at
/// `config_path`; they stop when the server shuts down.
///
/// # Errors
/// The control socket or the file watcher cannot be set up.
pub fn start(server: &Arc<Server>, config_path: &Path, watch: bool) -> std::io::Result<()> {
    let config_path = config_path.to_owned();
    spawn_sighup(server.clone(), config_path.clone());
    spawn_control_socket(server.clone(), config_path.clone())?;
    if watch {
        spawn_watcher(server.clone(), config_path)?;
    }
    Ok(())
}

fn spawn_sighup(server: Arc<Server>, config_path: PathBuf) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload with `switchboard reload`");
            return;
        };
        let tracker = server.tracker().clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    received = hangups.recv() => if received.is_none() { return },
                    () = server.shutdown_token().cancelled() => return,
                }
                tracing::info!("SIGHUP: reloading");
                let _ = reload(&server, &config_path).await;
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (server, config_path);
}

fn spawn_control_socket(server: Arc<Server>, config_path: PathBuf) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let path = control_socket(&server.config().server.runtime_dir);
        let listener = tokio::net::UnixListener::bind(&path)?;
        let tracker = server.tracker().clone();
        tracker.spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(error) => {
                            tracing::warn!(%error, "control socket accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    () = server.shutdown_token().cancelled() => break,
                };
                // One request at a time: reloads are serialised anyway.
                answer(stream, &server, &config_path).await;
            }
            let _ = std::fs::remove_file(&path);
        });
    }
    #[cfg(not(unix))]
    let _ = (server, config_path);
    Ok(())
}

#[cfg(unix)]
async fn answer(stream: tokio::net::UnixStream, server: &Arc<Server>, config_path: &Path) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let request = tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST)).read_line(&mut line),
    )
    .await;
    let reply = match (request, line.trim()) {
        (Ok(Ok(_)), "reload") => match reload(server, config_path).await {
            Ok(report) => json!({ "ok": true, "report": report }),
            Err(error) => json!({ "ok": false, "error": error.to_string() }),
        },
        (Ok(Ok(_)), other) => {
            json!({ "ok": false, "error": format!("unknown command {other:?} (expected reload)") })
        }
        _ => return,
    };
    let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
    let _ = write.shutdown().await;
}

/// The files a config makes the server read: the config and every plugin file.
fn watched_files(config_path: &Path, config: &Config) -> HashSet<PathBuf> {
    let mut files: HashSet<PathBuf> = config
        .apps
        .iter()
        .map(|app| absolute(&plugin_file(&config.server.plugin_dir, &app.plugin)))
        .collect();
    files.insert(absolute(config_path));
    files
}

/// A file's absolute path with its directory resolved (the file itself may
/// not exist, between a build's steps).
fn absolute(file: &Path) -> PathBuf {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    match file.file_name() {
        Some(name) => dir.join(name),
        None => dir,
    }
}

/// Watches the directories of `files` not watched yet (non-recursively: a
/// file replaced by a rename is seen through its directory).
fn watch_dirs(
    watcher: &mut notify::RecommendedWatcher,
    watched: &mut HashSet<PathBuf>,
    files: &HashSet<PathBuf>,
) {
    use notify::{RecursiveMode, Watcher};
    for dir in files.iter().filter_map(|f| f.parent()) {
        if watched.insert(dir.to_owned()) {
            if let Err(error) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), %error, "cannot watch");
            }
        }
    }
}

fn spawn_watcher(server: Arc<Server>, config_path: PathBuf) -> std::io::Result<()> {
    use notify::EventKind;

    let files = Arc::new(Mutex::new(watched_files(&config_path, &server.config())));
    let (changed, mut changes) = tokio::sync::mpsc::channel::<()>(1);
    let interesting = files.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
        ) {
            return;
        }
        let files = interesting.lock().unwrap_or_else(|e| e.into_inner());
        if event.paths.iter().any(|path| files.contains(path)) {
            // Full means a reload is due already.
            let _ = changed.try_send(());
        }
    })
    .map_err(std::io::Error::other)?;
    let mut watched_dirs = HashSet::new();
    let initial = files.lock().unwrap_or_else(|e| e.into_inner()).clone();
    watch_dirs(&mut watcher, &mut watched_dirs, &initial);
    tracing::info!("watching the config and plugin files; a change reloads");
    let tracker = server.tracker().clone();
    tracker.spawn(async move {
        loop {
            tokio::select! {
                received = changes.recv() => if received.is_none() { return },
                () = server.shutdown_token().cancelled() => return,
            }
            // Wait for the files to be quiet.
            loop {
                tokio::select! {
                    () = tokio::time::sleep(WATCH_QUIET) => break,
                    received = changes.recv() => if received.is_none() { return },
                }
            }
            tracing::info!("a watched file changed: reloading");
            if reload(&server, &config_path).await.is_ok() {
                let now = watched_files(&config_path, &server.config());
                watch_dirs(&mut watcher, &mut watched_dirs, &now);
                *files.lock().unwrap_or_else(|e| e.into_inner()) = now;
            }
        }
    });
    Ok(())
}
