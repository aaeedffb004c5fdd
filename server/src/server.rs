//! The running server's state: the apps mounted from a config, the settings
//! and limits every connection shares, the metrics, and the shutdown machinery
//! (a cancellation token every task watches and a tracker every task is
//! spawned on, so shutdown can wait for them). Serving it is the listener's job.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use switchboard_plugin_api::ConnId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{AppConfig, Config};
use crate::connection::ConnectionSettings;
use crate::limits::ConnectionLimits;
use crate::metrics::Metrics;
use crate::plugin::host::ServerFacts;
use crate::plugin::loader::{plugin_file, NewAppError};
use crate::plugin::{LoadPluginError, MountedApp, Plugin};

/// Where in the config an app is declared, for messages: `file:line: app /path`
/// (with a column when it points inside the app's table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppLocation {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, when the location is a key inside the app's table.
    pub column: Option<usize>,
    /// The app's (first) path.
    pub app: String,
}

impl fmt::Display for AppLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)?;
        if let Some(column) = self.column {
            write!(f, ":{column}")?;
        }
        write!(f, ": app {}", self.app)
    }
}

/// One reason the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartProblem {
    /// A plugin file the config names cannot be loaded.
    #[error("{location}: {source}")]
    LoadPlugin {
        /// The app that names it.
        location: AppLocation,
        /// Why.
        #[source]
        source: LoadPluginError,
    },
    /// An app's constructor refused (its config, a failure, a panic).
    #[error("{location}: {source}")]
    NewApp {
        /// The app, or the `[app.config]` key the refusal is about.
        location: AppLocation,
        /// The refusal.
        #[source]
        source: NewAppError,
    },
}

/// Why the server refused to start: every problem found, each naming its file.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct StartError {
    /// Every problem, in config order.
    pub problems: Vec<StartProblem>,
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
    /// App path → its demo page under `static_dir`, found at start.
    pages: HashMap<String, String>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    started: Instant,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("apps", &self.apps.keys())
            .finish()
    }
}

/// Where a constructor's refusal points: the `[app.config]` key it names
/// (the SDK's config errors name one), else the app.
fn refusal_location(source: &std::path::Path, app: &AppConfig, error: &NewAppError) -> AppLocation {
    let key = switchboard_plugin_api::sdk::config_error_key(&error.message);
    let (line, column) = match key.and_then(|key| app.config_position(key)) {
        Some((line, column)) => (line, Some(column)),
        None => (app.line, None),
    };
    AppLocation {
        file: source.to_owned(),
        line,
        column,
        app: app.path.clone(),
    }
}

/// Each app's demo page: `<plugin name>.html` under `static_dir`, if it exists.
fn demo_pages<'a>(
    config: &Config,
    apps: impl Iterator<Item = &'a Arc<MountedApp>>,
) -> HashMap<String, String> {
    let Some(dir) = &config.server.static_dir else {
        return HashMap::new();
    };
    apps.filter_map(|app| {
        let page = format!("{}.html", app.plugin().manifest().name);
        dir.join(&page)
            .is_file()
            .then(|| (app.path().to_string(), format!("/{page}")))
    })
    .collect()
}

impl Server {
    /// Loads every plugin the config names and builds every app; refuses to
    /// start (with every problem) rather than start half-configured.
    ///
    /// # Errors
    /// Every plugin file that cannot be loaded and every app whose constructor
    /// refused, each with the config file, line and app path.
    pub fn build(config: Config) -> Result<Server, StartError> {
        let mut problems = Vec::new();
        let mut loaded: HashMap<PathBuf, Option<Arc<Plugin>>> = HashMap::new();
        let mut plugins = Vec::new();
        let mut apps = HashMap::new();
        let facts = Arc::new(ServerFacts {
            listen: OnceLock::new(),
            push_path: config.push.path.clone(),
        });
        let metrics = Arc::new(Metrics::new());
        let connection_settings = Arc::new(ConnectionSettings::new(&config.server));
        for app in &config.apps {
            let location = AppLocation {
                file: config.source.clone(),
                line: app.line,
                column: None,
                app: app.path.clone(),
            };
            let file = plugin_file(&config.server.plugin_dir, &app.plugin);
            let plugin = loaded
                .entry(file.clone())
                .or_insert_with(|| match Plugin::load(&file) {
                    Ok(plugin) => {
                        let plugin = Arc::new(plugin);
                        plugins.push(plugin.clone());
                        Some(plugin)
                    }
                    Err(source) => {
                        problems.push(StartProblem::LoadPlugin { location, source });
                        None
                    }
                });
            let Some(plugin) = plugin.clone() else {
                continue;
            };
            match MountedApp::new(
                app,
                plugin,
                connection_settings.max_message_size,
                facts.clone(),
                metrics.clone(),
            ) {
                Ok(mounted) => {
                    let mounted = Arc::new(mounted);
                    for path in &app.paths {
                        apps.insert(path.clone(), mounted.clone());
                    }
                }
                Err(source) => problems.push(StartProblem::NewApp {
                    location: refusal_location(&config.source, app, &source),
                    source,
                }),
            }
        }
        if !problems.is_empty() {
            for app in apps.values() {
                app.shut_down();
            }
            return Err(StartError { problems });
        }
        let pages = demo_pages(&config, apps.values());
        Ok(Server {
            pages,
            connection_settings,
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

    /// Every mounted app once (an app on several paths too), sorted by path.
    pub fn apps(&self) -> Vec<&Arc<MountedApp>> {
        let mut apps: Vec<_> = self.apps.values().collect();
        apps.sort_by(|a, b| a.path().cmp(b.path()));
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

    /// The `/_/health` document. `status` is `ok`, `degraded` when an app's
    /// callbacks keep failing (each app says which), or `stopping`.
    pub fn health(&self) -> serde_json::Value {
        let mut degraded = false;
        let apps: serde_json::Map<String, serde_json::Value> = self
            .apps()
            .into_iter()
            .map(|app| {
                let app_degraded = app.is_degraded();
                degraded |= app_degraded;
                (
                    app.path().to_string(),
                    serde_json::json!({
                        "status": if app_degraded { "degraded" } else { "ok" },
                        "plugin": app.plugin().manifest().name,
                        "plugin_version": app.plugin().manifest().version,
                        "paths": app.settings().paths,
                        "connections": app.registry().len(),
                        "last_failure": app.last_failure(),
                    }),
                )
            })
            .collect();
        let status = if self.shutdown.is_cancelled() {
            "stopping"
        } else if degraded {
            "degraded"
        } else {
            "ok"
        };
        serde_json::json!({
            "status": status,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "open_tcp_connections": self.limits.open(),
            "apps": apps,
            "plugins": self.plugins.iter().map(|p| p.manifest()).collect::<Vec<_>>(),
        })
    }

    /// The `/_/apps` document, for pages that list the apps: each app's
    /// paths, plugin, description and its demo page under `static_dir`
    /// (`<plugin>.html`), if there is one.
    pub fn app_list(&self) -> serde_json::Value {
        let apps: Vec<serde_json::Value> = self
            .apps()
            .into_iter()
            .map(|app| {
                let manifest = app.plugin().manifest();
                serde_json::json!({
                    "path": app.path().to_string(),
                    "paths": app.settings().paths,
                    "plugin": manifest.name,
                    "version": manifest.version,
                    "description": manifest.description,
                    "page": self.pages.get(&**app.path()),
                })
            })
            .collect();
        serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "apps": apps })
    }
}
