//! The running server: the apps mounted from a config, the shared settings and
//! limits, and the shutdown machinery (a cancellation token every task watches
//! and a tracker every task is spawned on, so shutdown can wait for them).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use switchboard_plugin_api::ConnId;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::connection::ConnectionSettings;
use crate::limits::ConnectionLimits;
use crate::metrics::Metrics;
use crate::plugin::host::ServerFacts;
use crate::plugin::{MountedApp, Plugin};

/// Why the server refused to start: every problem found, each naming its file.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct StartError {
    /// One line per problem.
    pub problems: Vec<String>,
}

/// The server's state, shared by every connection.
pub struct Server {
    config: Config,
    apps: HashMap<String, Arc<MountedApp>>,
    plugins: Vec<Arc<Plugin>>,
    facts: Arc<ServerFacts>,
    metrics: Arc<Metrics>,
    connection_settings: Arc<ConnectionSettings>,
    limits: Arc<ConnectionLimits>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    started: Instant,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("apps", &self.apps.keys())
            .finish()
    }
}

impl Server {
    /// Loads every plugin the config names and builds every app; refuses to
    /// start (with every problem) rather than start half-configured.
    ///
    /// # Errors
    /// Every plugin file that cannot be loaded and every app whose constructor
    /// refused, each with the config file, line and app path.
    pub fn build(config: Config) -> Result<Server, StartError> {
        let source = config.source.display().to_string();
        let mut problems = Vec::new();
        let mut loaded: HashMap<PathBuf, Option<Arc<Plugin>>> = HashMap::new();
        let mut plugins = Vec::new();
        let mut apps = HashMap::new();
        let facts = Arc::new(ServerFacts {
            listen: OnceLock::new(),
            push_path: config.push.path.clone(),
        });
        let metrics = Arc::new(Metrics::new());
        for app in &config.apps {
            let where_ = format!("{source}:{}: app {}", app.line, app.path);
            let plugin =
                loaded.entry(app.plugin_file.clone()).or_insert_with(|| {
                    match Plugin::load(&app.plugin_file) {
                        Ok(plugin) => {
                            let plugin = Arc::new(plugin);
                            plugins.push(plugin.clone());
                            Some(plugin)
                        }
                        Err(error) => {
                            problems.push(format!("{where_}: {error}"));
                            None
                        }
                    }
                });
            let Some(plugin) = plugin.clone() else {
                continue;
            };
            match MountedApp::new(
                app,
                plugin,
                config.server.max_message_size,
                facts.clone(),
                metrics.clone(),
            ) {
                Ok(mounted) => {
                    tracing::info!(app = %app.path, plugin = %mounted.plugin().manifest().name, "app mounted");
                    let mounted = Arc::new(mounted);
                    for path in &app.paths {
                        apps.insert(path.clone(), mounted.clone());
                    }
                }
                Err(message) => problems.push(format!(
                    "{where_}: plugin {} refused to start: {message}",
                    app.plugin_file.display()
                )),
            }
        }
        if !problems.is_empty() {
            for app in apps.values() {
                app.shut_down();
            }
            return Err(StartError { problems });
        }
        Ok(Server {
            connection_settings: Arc::new(ConnectionSettings::new(&config.server)),
            limits: ConnectionLimits::new(
                config.server.max_connections,
                config.server.max_connections_per_ip,
            ),
            config,
            apps,
            plugins,
            facts,
            metrics,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            started: Instant::now(),
        })
    }

    /// Records the address the server listens on (for `Host::server_info`).
    pub fn set_listening(&self, addr: std::net::SocketAddr) {
        let _ = self.facts.listen.set(addr);
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The configuration it runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The app mounted on `path`.
    pub fn app(&self, path: &str) -> Option<&Arc<MountedApp>> {
        self.apps.get(path)
    }

    /// The app holding an open connection (apps are few, so each is asked).
    pub fn app_of(&self, id: ConnId) -> Option<Arc<MountedApp>> {
        self.apps
            .values()
            .find(|app| app.registry().get(id).is_ok())
            .cloned()
    }

    /// Every mounted app, sorted by path.
    pub fn apps(&self) -> Vec<&Arc<MountedApp>> {
        let mut apps: Vec<_> = self.apps.values().collect();
        apps.sort_by(|a, b| a.path().cmp(b.path()));
        // An app mounted on several paths is listed once.
        apps.dedup_by(|a, b| Arc::ptr_eq(a, b));
        apps
    }

    /// Every loaded plugin.
    pub fn plugins(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    /// Settings every WebSocket connection shares.
    pub fn connection_settings(&self) -> &Arc<ConnectionSettings> {
        &self.connection_settings
    }

    /// The connection limits.
    pub fn limits(&self) -> &Arc<ConnectionLimits> {
        &self.limits
    }

    /// Cancelled when the server starts shutting down.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Every connection task is spawned here.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// The `/_/health` document.
    pub fn health(&self) -> serde_json::Value {
        let apps: serde_json::Map<String, serde_json::Value> = self
            .apps()
            .into_iter()
            .map(|app| {
                (
                    app.path().to_string(),
                    serde_json::json!({
                        "plugin": app.plugin().manifest().name,
                        "paths": app.settings().paths,
                        "connections": app.registry().len(),
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "status": if self.shutdown.is_cancelled() { "stopping" } else { "ok" },
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "open_tcp_connections": self.limits.open(),
            "apps": apps,
            "plugins": self.plugins.iter().map(|p| p.manifest()).collect::<Vec<_>>(),
        })
    }

    /// Serves on `listener` until `stop` resolves, then shuts down in three
    /// stages: stop accepting; ask every connection to close (1001) and wait up
    /// to `shutdown_grace`; call every app's `on_shutdown`.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let accept = crate::listener::accept_loop(listener, self.clone());
        tokio::select! {
            () = accept => {}
            () = stop => tracing::info!("shutting down"),
        }
        self.shutdown.cancel();
        let going_away = crate::connection::going_away();
        for app in self.apps() {
            app.registry().close_all(&going_away);
        }
        self.tracker.close();
        if tokio::time::timeout(self.config.server.shutdown_grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.tracker.len(),
                "shutdown grace period over; dropping remaining connections"
            );
        }
        for app in self.apps() {
            app.shut_down();
        }
    }
}
