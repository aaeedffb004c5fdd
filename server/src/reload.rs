//! Reloading: new plugin builds and a new config without dropping a client.
//!
//! A reload re-reads and validates the config and loads every plugin it names
//! (through private copies; an unchanged file reuses its library) before it
//! changes anything. Then, per app (apps are matched by their name, which is
//! their first path unless the config says otherwise):
//!
//! - new apps are mounted; apps that are gone are unmounted (1001, then
//!   `on_shutdown`);
//! - apps whose plugin file and `[app.config]` are unchanged keep their
//!   instance (their other settings apply to new connections);
//! - apps with a changed plugin or `[app.config]` get a new instance, by their
//!   `reload` mode: `migrate` pauses the app, takes the old instance's
//!   `save_state`, builds the new one from it over the same connections and
//!   groups, resumes every connection on it (`on_resume`) and shuts the old
//!   one down; `drain` leaves open connections on the old instance (until they
//!   close, or `drain_timeout`, then 1012) and sends new ones to the new;
//!   `restart` closes the old connections with 1012.
//!
//! Any failure before the switch (config, plugin, constructor, an app whose
//! callbacks do not finish) refuses the whole reload: paused apps resume on
//! their old instance, new instances are shut down, nothing else changed.
//! Settings that need a new process (`listen`, `runtime_dir`) are reported
//! and kept.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{AppConfig, Config, LoadConfigError, ReloadMode};
use crate::outbox::CloseRequest;
use crate::plugin::store::StoredPlugin;
use crate::plugin::{AppInstance, MountedApp};
use crate::server::{AppLocation, Routes, Server, StartError, StartProblem};

/// How long a reload waits for an app's running callbacks to finish.
const PAUSE_LIMIT: Duration = Duration::from_secs(5);

/// The server warns each time the count of mapped plugin libraries crosses a
/// multiple of this (libraries are never unloaded; see docs/operations.md for
/// what each costs).
pub const MAPPED_LIBRARIES_WARNING: usize = 64;

/// Close code for connections a reload ends: Service Restart.
const SERVICE_RESTART: u16 = 1012;

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// Apps mounted by this reload.
    pub added: Vec<String>,
    /// Apps unmounted.
    pub removed: Vec<String>,
    /// Apps that got a new instance, with the mode used.
    pub reloaded: Vec<(String, String)>,
    /// Apps left as they were.
    pub unchanged: Vec<String>,
    /// Settings that changed in the file but need a restart to apply.
    pub needs_restart: Vec<String>,
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |items: &[String]| {
            if items.is_empty() {
                "none".to_owned()
            } else {
                items.join(", ")
            }
        };
        let reloaded: Vec<String> = self
            .reloaded
            .iter()
            .map(|(app, mode)| format!("{app} ({mode})"))
            .collect();
        write!(
            f,
            "added: {}; removed: {}; reloaded: {}; unchanged: {}",
            list(&self.added),
            list(&self.removed),
            list(&reloaded),
            list(&self.unchanged)
        )?;
        if !self.needs_restart.is_empty() {
            write!(f, "; needs a restart: {}", self.needs_restart.join(", "))?;
        }
        Ok(())
    }
}

/// Why a reload was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config file is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] LoadConfigError),
    /// Plugins or apps could not be loaded or built.
    #[error("{0}")]
    Apps(#[from] StartError),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// What happens to one app of the new config.
enum Plan {
    Add,
    Keep(Arc<MountedApp>),
    Replace(Arc<MountedApp>, ReloadMode),
}

/// What was built for one app before the switch.
enum Built {
    Added(Arc<MountedApp>),
    Kept(Arc<MountedApp>),
    Migrated {
        mount: Arc<MountedApp>,
        instance: Box<AppInstance>,
    },
    Replaced {
        old: Arc<MountedApp>,
        new: Arc<MountedApp>,
        mode: ReloadMode,
    },
}

/// Reloads `server` from the config file at `config_path`.
///
/// # Errors
/// Why the reload was refused; then nothing changed.
pub async fn reload(server: &Arc<Server>, config_path: &Path) -> Result<ReloadReport, ReloadError> {
    let _one_at_a_time = server.reload_lock().lock().await;
    if server.shutdown_token().is_cancelled() {
        return Err(ReloadError::ShuttingDown);
    }
    let mapped_before = server.store().mapped();
    let result = apply(server, config_path).await;
    server.metrics().reloaded(result.is_ok());
    server
        .metrics()
        .set_plugin_libraries(server.store().mapped());
    match &result {
        Ok(report) => {
            tracing::info!(%report, "reload applied");
            let mapped = server.store().mapped();
            if mapped / MAPPED_LIBRARIES_WARNING > mapped_before / MAPPED_LIBRARIES_WARNING {
                tracing::warn!(
                    mapped,
                    "{mapped} plugin libraries are mapped: each reload of a changed plugin maps one more, released only by a restart (docs/operations.md)"
                );
            }
        }
        Err(error) => tracing::error!("reload refused, nothing changed: {error}"),
    }
    result
}

async fn apply(server: &Arc<Server>, config_path: &Path) -> Result<ReloadReport, ReloadError> {
    let old_routes = server.routes();
    let old = &old_routes.config;
    let path = config_path.to_owned();
    let mut config = tokio::task::spawn_blocking(move || Config::load(&path))
        .await
        .map_err(|_| ReloadError::ShuttingDown)??;
    let mut report = ReloadReport::default();
    if config.server.listen != old.server.listen {
        report.needs_restart.push(format!(
            "server.listen ({} -> {})",
            old.server.listen, config.server.listen
        ));
        config.server.listen = old.server.listen;
    }
    if config.server.runtime_dir != old.server.runtime_dir {
        report.needs_restart.push("server.runtime_dir".to_owned());
        config.server.runtime_dir = old.server.runtime_dir.clone();
    }
    let comparable = |cluster: &Option<crate::config::ClusterConfig>| {
        cluster.clone().map(|mut c| {
            if !c.node_id_given {
                c.node_id.clear();
            }
            c
        })
    };
    if comparable(&config.cluster) != comparable(&old.cluster) {
        report.needs_restart.push("cluster".to_owned());
    }
    // The node keeps the cluster it joined at start (and its node id).
    config.cluster = old.cluster.clone();
    if config.server.watch != old.server.watch {
        report.needs_restart.push("server.watch".to_owned());
        config.server.watch = old.server.watch;
    }
    // Listeners are set up at start: TLS on or off, or on another address,
    // needs a restart; a renewed certificate does not.
    let tls_listeners = |tls: &Option<crate::config::TlsConfig>| tls.as_ref().map(|t| t.listen);
    if tls_listeners(&config.server.tls) != tls_listeners(&old.server.tls) {
        report
            .needs_restart
            .push("server.tls (listeners)".to_owned());
        config.server.tls = old.server.tls.clone();
    }
    let renewed = match (&config.server.tls, server.tls()) {
        (Some(settings), Some(_)) => {
            let (cert, key) = (settings.cert.clone(), settings.key.clone());
            let loaded = tokio::task::spawn_blocking(move || crate::tls::load(&cert, &key))
                .await
                .map_err(|_| ReloadError::ShuttingDown)?
                .map_err(|error| StartError {
                    problems: vec![StartProblem::Tls(error)],
                })?;
            Some(loaded)
        }
        _ => None,
    };
    let config = Arc::new(config);
    let plugins = load_plugins(server, &config).await?;
    let plans: Vec<Plan> = config
        .apps
        .iter()
        .zip(&plugins)
        .map(|(app, plugin)| match old_routes.app_named(&app.name) {
            None => Plan::Add,
            Some(mount) => {
                let instance = mount.instance();
                if instance.plugin().hash == plugin.hash
                    && instance.config_json() == app.config_json
                {
                    Plan::Keep(mount.clone())
                } else {
                    Plan::Replace(mount.clone(), app.reload)
                }
            }
        })
        .collect();

    let built = build(server, &config, plans, plugins).await?;

    // The switch: nothing below can fail.
    let mut mounts = Vec::new();
    for (app, built) in config.apps.iter().zip(built) {
        match built {
            Built::Added(mount) => {
                report.added.push(app.name.clone());
                mounts.push(mount);
            }
            Built::Kept(mount) => {
                mount.set_settings(crate::plugin::mount::MountSettings::from_config(app));
                report.unchanged.push(app.name.clone());
                mounts.push(mount);
            }
            Built::Migrated { mount, instance } => {
                migrate(&mount, *instance);
                mount.set_settings(crate::plugin::mount::MountSettings::from_config(app));
                report
                    .reloaded
                    .push((app.name.clone(), ReloadMode::Migrate.name().to_owned()));
                mounts.push(mount);
            }
            Built::Replaced { old, new, mode } => {
                retire(server, old, mode, app, &config);
                report
                    .reloaded
                    .push((app.name.clone(), mode.name().to_owned()));
                mounts.push(new);
            }
        }
    }
    for gone in old_routes
        .apps()
        .into_iter()
        .filter(|old| !config.apps.iter().any(|app| *app.name == **old.name()))
    {
        report.removed.push(gone.name().to_string());
        let going_away = CloseRequest {
            code: 1001,
            reason: "app removed".to_owned(),
        };
        close_then_shut_down(server, gone, going_away, config.server.close_timeout);
    }
    server.limits().set(
        config.server.max_connections,
        config.server.max_connections_per_ip,
    );
    server
        .memory_budget()
        .set_limit(config.server.memory_budget);
    *server
        .facts()
        .push_path
        .write()
        .unwrap_or_else(|e| e.into_inner()) = config.push.path.clone();
    if let (Some(tls), Some(renewed)) = (server.tls(), renewed) {
        tls.replace(renewed);
    }
    server.set_routes(Routes::new(config, mounts));
    Ok(report)
}

/// Loads (or finds already loaded) the plugin of every app, off the async
/// workers; every failure is reported.
async fn load_plugins(
    server: &Arc<Server>,
    config: &Arc<Config>,
) -> Result<Vec<StoredPlugin>, ReloadError> {
    let (server, config) = (server.clone(), config.clone());
    tokio::task::spawn_blocking(move || {
        let builder = server.builder(config.server.max_message_size);
        let mut plugins = Vec::new();
        let mut problems = Vec::new();
        for app in &config.apps {
            match builder.plugin(&config, app) {
                Ok(plugin) => plugins.push(plugin),
                Err(problem) => problems.push(*problem),
            }
        }
        if problems.is_empty() {
            Ok(plugins)
        } else {
            Err(ReloadError::Apps(StartError { problems }))
        }
    })
    .await
    .map_err(|_| ReloadError::ShuttingDown)?
}

/// Builds every new instance and mount; on any failure, undoes what it built
/// and resumes what it paused.
async fn build(
    server: &Arc<Server>,
    config: &Config,
    plans: Vec<Plan>,
    plugins: Vec<StoredPlugin>,
) -> Result<Vec<Built>, ReloadError> {
    let builder = server.builder(config.server.max_message_size);
    let mut built = Vec::new();
    let mut problems = Vec::new();
    for ((app, plan), plugin) in config.apps.iter().zip(plans).zip(plugins) {
        let outcome = match plan {
            Plan::Add => {
                let registry = builder.registry(app);
                builder
                    .instance(config, app, plugin, registry.clone(), None)
                    .map(|instance| {
                        Built::Added(Arc::new(MountedApp::new(
                            app,
                            registry,
                            instance,
                            server.metrics(),
                            config.server.slow_callback,
                        )))
                    })
            }
            Plan::Keep(mount) => Ok(Built::Kept(mount)),
            Plan::Replace(mount, ReloadMode::Migrate) => {
                migrate_build(&builder, config, app, plugin, mount).await
            }
            Plan::Replace(old, mode) => {
                let registry = builder.registry(app);
                builder
                    .instance(config, app, plugin, registry.clone(), None)
                    .map(|instance| Built::Replaced {
                        old,
                        new: Arc::new(MountedApp::new(
                            app,
                            registry,
                            instance,
                            server.metrics(),
                            config.server.slow_callback,
                        )),
                        mode,
                    })
            }
        };
        match outcome {
            Ok(done) => built.push(done),
            Err(problem) => problems.push(*problem),
        }
    }
    if problems.is_empty() {
        return Ok(built);
    }
    for undone in built {
        match undone {
            Built::Added(mount) => mount.shut_down(),
            Built::Replaced { new, .. } => new.shut_down(),
            Built::Migrated { mount, instance } => {
                instance.shut_down();
                mount.resume();
            }
            Built::Kept(_) => {}
        }
    }
    Err(ReloadError::Apps(StartError { problems }))
}

/// Pauses the app, takes its state and builds its successor over the same
/// connections; the app stays paused until the switch (or the undo).
async fn migrate_build(
    builder: &crate::server::Builder<'_>,
    config: &Config,
    app: &AppConfig,
    plugin: StoredPlugin,
    mount: Arc<MountedApp>,
) -> Result<Built, Box<StartProblem>> {
    let location = || AppLocation::of(&config.source, app);
    if !mount.pause(PAUSE_LIMIT).await {
        return Err(Box::new(StartProblem::NewApp {
            location: location(),
            source: crate::plugin::loader::NewAppError {
                plugin: plugin.plugin.path().to_owned(),
                message: format!(
                    "its callbacks did not finish within {PAUSE_LIMIT:?}, so it cannot be migrated now"
                ),
            },
        }));
    }
    let state = match mount.instance().save_state() {
        Ok(state) => state,
        Err(failure) => {
            mount.resume();
            return Err(Box::new(StartProblem::NewApp {
                location: location(),
                source: crate::plugin::loader::NewAppError {
                    plugin: plugin.plugin.path().to_owned(),
                    message: format!("the running instance could not save its state: {failure}"),
                },
            }));
        }
    };
    match builder.instance(
        config,
        app,
        plugin,
        mount.registry().clone(),
        state.as_deref(),
    ) {
        Ok(instance) => Ok(Built::Migrated {
            mount,
            instance: Box::new(instance),
        }),
        Err(problem) => {
            mount.resume();
            Err(problem)
        }
    }
}

/// Puts the new instance in place of the paused app's, hands it every open
/// connection, lets the connections go on, and shuts the old instance down.
fn migrate(mount: &MountedApp, instance: AppInstance) {
    let old = mount.replace_instance(instance);
    let new = mount.instance();
    for conn in mount.registry().ids().unwrap_or_default() {
        if new.on_resume(conn).is_err() {
            let _ = mount.registry().close(
                conn,
                CloseRequest {
                    code: 1011,
                    reason: "internal error".to_owned(),
                },
            );
        }
    }
    mount.resume();
    old.shut_down();
}

/// Ends an app replaced in `drain` or `restart` mode.
fn retire(
    server: &Arc<Server>,
    old: Arc<MountedApp>,
    mode: ReloadMode,
    app: &AppConfig,
    config: &Config,
) {
    let restart = CloseRequest {
        code: SERVICE_RESTART,
        reason: "service restart".to_owned(),
    };
    match mode {
        ReloadMode::Drain => {
            server.draining().push(old.clone());
            let (server, drain) = (server.clone(), app.drain_timeout);
            let close_timeout = config.server.close_timeout;
            server.clone().tracker().spawn(async move {
                let deadline = tokio::time::Instant::now() + drain;
                while !old.registry().is_empty() && tokio::time::Instant::now() < deadline {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                        () = server.shutdown_token().cancelled() => break,
                    }
                }
                old.registry().close_all(&restart);
                wait_empty(&old, close_timeout).await;
                server.draining().retain(|d| !Arc::ptr_eq(d, &old));
                old.shut_down();
            });
        }
        ReloadMode::Restart | ReloadMode::Migrate => {
            close_then_shut_down(server, old, restart, config.server.close_timeout);
        }
    }
}

/// Asks every connection of `mount` to close, then (once they are gone, or
/// after `close_timeout` and a margin) shuts its instance down.
fn close_then_shut_down(
    server: &Arc<Server>,
    mount: Arc<MountedApp>,
    close: CloseRequest,
    close_timeout: Duration,
) {
    mount.registry().close_all(&close);
    server.tracker().spawn(async move {
        wait_empty(&mount, close_timeout).await;
        mount.shut_down();
    });
}

async fn wait_empty(mount: &MountedApp, close_timeout: Duration) {
    let deadline = tokio::time::Instant::now() + close_timeout + Duration::from_secs(1);
    while !mount.registry().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
