//! The running server's state: the config it serves and the apps mounted
//! from it (one snapshot, replaced whole by a reload), the plugin store, the
//! limits, metrics and the shutdown machinery (a cancellation token every
//! task watches and a tracker every task is spawned on, so shutdown can wait
//! for them). Serving it is the listener's job; changing it the reload's.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use switchboard_plugin_api::ConnId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::config::{AppConfig, Config};
use crate::connection::ConnectionSettings;
use crate::limits::ConnectionLimits;
use crate::memory_budget::MemoryBudget;
use crate::metrics::Metrics;
use crate::plugin::host::ServerFacts;
use crate::plugin::instance::InstanceContext;
use crate::plugin::loader::{plugin_file, NewAppError};
use crate::plugin::store::{PluginStore, StoredPlugin};
use crate::plugin::{AppInstance, LoadPluginError, MountedApp};
use crate::registry::Registry;
pub use crate::routes::Routes;
use crate::tls::Tls;

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

impl AppLocation {
    /// Where `app` is declared in the config file `file`.
    pub fn of(file: &Path, app: &AppConfig) -> Self {
        AppLocation {
            file: file.to_owned(),
            line: app.line,
            column: None,
            app: app.name.clone(),
        }
    }

    /// Where a constructor's refusal points: the `[app.config]` key it names
    /// (the SDK's config errors name one), else the app.
    pub fn of_refusal(file: &Path, app: &AppConfig, error: &NewAppError) -> Self {
        let key = switchboard_plugin_api::sdk::config_error_key(&error.message);
        match key.and_then(|key| app.config_position(key)) {
            Some((line, column)) => AppLocation {
                line,
                column: Some(column),
                ..AppLocation::of(file, app)
            },
            None => AppLocation::of(file, app),
        }
    }
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

/// One reason the server cannot start (or a reload cannot apply).
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
    /// The TLS certificate or key cannot be used.
    #[error("{0}")]
    Tls(#[from] crate::tls::LoadTlsError),
    /// The cluster's Redis cannot be used.
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::JoinError),
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
    routes: ArcSwap<Routes>,
    /// TLS, when `[server.tls]` is set.
    tls: Option<Tls>,
    store: PluginStore,
    /// Apps a reload replaced in `drain` mode, whose old connections are not
    /// all closed yet (the push API still finds their clients).
    draining: Mutex<Vec<Arc<MountedApp>>>,
    facts: Arc<ServerFacts>,
    metrics: Arc<Metrics>,
    limits: Arc<ConnectionLimits>,
    memory_budget: MemoryBudget,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    started: Instant,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("routes", &self.routes.load().apps())
            .finish()
    }
}

/// What building the apps of a config needs.
pub struct Builder<'a> {
    /// Where plugins are copied and loaded from.
    pub store: &'a PluginStore,
    /// Facts for `Host::server_info`.
    pub facts: &'a Arc<ServerFacts>,
    /// The server's metrics.
    pub metrics: &'a Arc<Metrics>,
    /// The largest message, for the registries.
    pub max_message_size: usize,
}

impl Builder<'_> {
    /// Loads the plugin an app names (a private copy, reused when unchanged).
    ///
    /// # Errors
    /// The plugin file cannot be loaded; located at the app.
    pub fn plugin(
        &self,
        config: &Config,
        app: &AppConfig,
    ) -> Result<StoredPlugin, Box<StartProblem>> {
        let file = plugin_file(&config.server.plugin_dir, &app.plugin);
        self.store.load(&file).map_err(|source| {
            Box::new(StartProblem::LoadPlugin {
                location: AppLocation::of(&config.source, app),
                source,
            })
        })
    }

    /// Builds an instance of an app over `registry`, from `saved_state` if given.
    ///
    /// # Errors
    /// The constructor refused; located at the app or the config key it names.
    pub fn instance(
        &self,
        config: &Config,
        app: &AppConfig,
        plugin: StoredPlugin,
        registry: Arc<Registry>,
        saved_state: Option<&[u8]>,
    ) -> Result<AppInstance, Box<StartProblem>> {
        AppInstance::new(
            plugin,
            InstanceContext {
                app_path: app.name.as_str().into(),
                registry,
                facts: self.facts.clone(),
                metrics: self.metrics.clone(),
                config_json: &app.config_json,
                saved_state,
            },
        )
        .map_err(|source| {
            Box::new(StartProblem::NewApp {
                location: AppLocation::of_refusal(&config.source, app, &source),
                source,
            })
        })
    }

    /// A new, empty registry for an app (whose changes the other nodes of a
    /// cluster are told of).
    pub fn registry(&self, app: &AppConfig) -> Arc<Registry> {
        Arc::new(match &self.facts.cluster {
            Some(cluster) => Registry::observed(self.max_message_size, cluster.observer(&app.name)),
            None => Registry::new(self.max_message_size),
        })
    }

    /// Loads the plugin and builds a new mount (with a new registry) for an app.
    ///
    /// # Errors
    /// The plugin cannot be loaded or its constructor refused.
    pub fn mount(&self, config: &Config, app: &AppConfig) -> Result<MountedApp, Box<StartProblem>> {
        let plugin = self.plugin(config, app)?;
        let registry = self.registry(app);
        let instance = self.instance(config, app, plugin, registry.clone(), None)?;
        Ok(MountedApp::new(
            app,
            registry,
            instance,
            self.metrics,
            config.server.slow_callback,
        ))
    }
}

impl Server {
    /// Loads every plugin the config names (through private copies in the
    /// config's runtime directory, which the caller has prepared) and builds
    /// every app; refuses to start (with every problem) rather than start
    /// half-configured.
    ///
    /// # Errors
    /// Every plugin file that cannot be loaded and every app whose constructor
    /// refused, each with the config file, line and app path.
    ///
    /// In a cluster, it first connects to Redis through `runtime` (apps may
    /// use shared state from their constructors); without a runtime the
    /// apps are built unconnected.
    pub fn build(
        config: Config,
        runtime: Option<&tokio::runtime::Handle>,
    ) -> Result<Server, StartError> {
        let store = PluginStore::new(config.server.runtime_dir.clone());
        let metrics = Arc::new(Metrics::with_cluster(config.cluster.is_some()));
        let mut problems = Vec::new();
        let cluster = config.cluster.clone().and_then(|settings| {
            let cluster =
                Cluster::new(settings, metrics.cluster().clone()).and_then(
                    |cluster| match runtime {
                        Some(runtime) => runtime.block_on(cluster.connect()).map(|()| cluster),
                        None => Ok(cluster),
                    },
                );
            cluster
                .map_err(|error| problems.push(StartProblem::Cluster(error)))
                .ok()
        });
        if !problems.is_empty() {
            return Err(StartError { problems });
        }
        let facts = Arc::new(ServerFacts {
            listen: OnceLock::new(),
            push_path: config.push.path.clone().into(),
            cluster,
            state: Default::default(),
        });
        let builder = Builder {
            store: &store,
            facts: &facts,
            metrics: &metrics,
            max_message_size: config.server.max_message_size,
        };
        let tls = match &config.server.tls {
            Some(settings) => match crate::tls::load(&settings.cert, &settings.key) {
                Ok(tls) => Some(Tls::new(tls)),
                Err(error) => {
                    problems.push(StartProblem::Tls(error));
                    None
                }
            },
            None => None,
        };
        let mut mounts = Vec::new();
        for app in &config.apps {
            match builder.mount(&config, app) {
                Ok(mount) => mounts.push(Arc::new(mount)),
                Err(problem) => problems.push(*problem),
            }
        }
        if !problems.is_empty() {
            for mount in &mounts {
                mount.shut_down();
            }
            return Err(StartError { problems });
        }
        let limits = ConnectionLimits::new(
            config.server.max_connections,
            config.server.max_connections_per_ip,
        );
        let (used, refusals) = metrics.memory_budget();
        let memory_budget = MemoryBudget::new(config.server.memory_budget, used, refusals);
        Ok(Server {
            tls,
            routes: ArcSwap::from_pointee(Routes::new(Arc::new(config), mounts)),
            store,
            draining: Mutex::new(Vec::new()),
            facts,
            metrics,
            limits,
            memory_budget,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            reloading: tokio::sync::Mutex::new(()),
            started: Instant::now(),
        })
    }

    /// What the server serves now.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// Puts new routes in place (a reload).
    pub fn set_routes(&self, routes: Routes) {
        self.routes.store(Arc::new(routes));
    }

    /// A builder for the apps of a reloaded config.
    pub fn builder(&self, max_message_size: usize) -> Builder<'_> {
        Builder {
            store: &self.store,
            facts: &self.facts,
            metrics: &self.metrics,
            max_message_size,
        }
    }

    /// TLS, when `[server.tls]` is set.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// What every app may learn about the server.
    pub fn facts(&self) -> &ServerFacts {
        &self.facts
    }

    /// The plugin store.
    pub fn store(&self) -> &PluginStore {
        &self.store
    }

    /// Held for the whole of a reload, so reloads never overlap.
    pub fn reload_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.reloading
    }

    /// Apps replaced in `drain` mode whose old connections are still open.
    pub fn draining(&self) -> std::sync::MutexGuard<'_, Vec<Arc<MountedApp>>> {
        self.draining.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the address the server listens on (for `Host::server_info`).
    pub fn set_listening(&self, addr: std::net::SocketAddr) {
        let _ = self.facts.listen.set(addr);
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The configuration it serves now.
    pub fn config(&self) -> Arc<Config> {
        self.routes.load().config.clone()
    }

    /// The app holding an open connection, a draining one included (apps
    /// are few, so each is asked).
    pub fn app_of(&self, id: ConnId) -> Option<Arc<MountedApp>> {
        let routes = self.routes.load();
        let found = routes
            .apps()
            .into_iter()
            .find(|app| app.registry().get(id).is_ok());
        found.or_else(|| {
            self.draining()
                .iter()
                .find(|app| app.registry().get(id).is_ok())
                .cloned()
        })
    }

    /// The id of a new connection (in a cluster, tagged as this node's).
    pub fn new_conn_id(&self) -> ConnId {
        match &self.facts.cluster {
            Some(cluster) => cluster.new_conn_id(),
            None => ConnId::from_bytes(*uuid::Uuid::new_v4().as_bytes()),
        }
    }

    /// The cluster this node is part of, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.facts.cluster.as_ref()
    }

    /// Every mount serving the app named `name`: the current one and any
    /// a reload left draining.
    pub fn mounts_named(&self, name: &str) -> Vec<Arc<MountedApp>> {
        let mut mounts: Vec<Arc<MountedApp>> = self
            .apps()
            .into_iter()
            .filter(|app| &**app.name() == name)
            .collect();
        mounts.extend(
            self.draining()
                .iter()
                .filter(|app| &**app.name() == name)
                .cloned(),
        );
        mounts
    }

    /// Every mount with open connections: the current ones and those draining.
    pub fn all_mounts(&self) -> Vec<Arc<MountedApp>> {
        let mut mounts = self.apps();
        mounts.extend(self.draining().iter().cloned());
        mounts
    }

    /// Every mounted app once, sorted by path.
    pub fn apps(&self) -> Vec<Arc<MountedApp>> {
        self.routes.load().apps()
    }

    /// Settings every new WebSocket connection takes.
    pub fn connection_settings(&self) -> Arc<ConnectionSettings> {
        self.routes.load().connection_settings.clone()
    }

    /// The connection limits.
    pub fn limits(&self) -> &Arc<ConnectionLimits> {
        &self.limits
    }

    /// What all connections together may hold in messages.
    pub fn memory_budget(&self) -> &MemoryBudget {
        &self.memory_budget
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
                let instance = app.instance();
                let stored = instance.plugin();
                let manifest = stored.plugin.manifest();
                let app_degraded = instance.is_degraded();
                degraded |= app_degraded;
                (
                    app.name().to_string(),
                    serde_json::json!({
                        "status": if app_degraded { "degraded" } else { "ok" },
                        "plugin": manifest.name,
                        "plugin_version": manifest.version,
                        "plugin_file": stored.plugin.path(),
                        "plugin_sha256": stored.hash,
                        "loaded_at_unix_seconds": unix_seconds(stored.loaded_at),
                        "reloads": app.reloads(),
                        "paths": app.settings().paths,
                        "subprotocols": app.settings().subprotocols,
                        "connections": app.registry().len(),
                        "last_failure": instance.last_failure(),
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
        let mut plugins: Vec<_> = self
            .apps()
            .iter()
            .map(|app| app.instance().plugin().plugin.manifest().clone())
            .collect();
        plugins.sort_by(|a, b| a.name.cmp(&b.name));
        plugins.dedup();
        let mut health = serde_json::json!({
            "status": status,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "open_tcp_connections": self.limits.open(),
            "apps": apps,
            "plugins": plugins,
            "plugin_libraries_mapped": self.store.mapped(),
        });
        if let Some(cluster) = self.cluster() {
            health["cluster"] = cluster.health();
        }
        health
    }

    /// The `/_/apps` document, for pages that list the apps: each app's
    /// paths, plugin, description and its demo page under `static_dir`
    /// (`<plugin>.html`), if there is one.
    pub fn app_list(&self) -> serde_json::Value {
        let routes = self.routes.load();
        let apps: Vec<serde_json::Value> = routes
            .apps()
            .into_iter()
            .map(|app| {
                let instance = app.instance();
                let manifest = instance.plugin().plugin.manifest();
                let settings = app.settings();
                serde_json::json!({
                    "name": app.name().to_string(),
                    "path": settings.paths.first(),
                    "paths": settings.paths,
                    "subprotocols": settings.subprotocols,
                    "plugin": manifest.name,
                    "version": manifest.version,
                    "description": manifest.description,
                    "page": routes.page(app.name()),
                })
            })
            .collect();
        serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "apps": apps })
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
