//! One app instance mounted on its path: the plugin's app object, its settings
//! from the config, its connections, and the calls into its callbacks.
//!
//! A callback that returns an error or panics (the panic is caught inside the
//! plugin by the SDK) is logged here with the app's path and returned as a
//! [`CallbackFailure`]; the connection code then closes that one connection
//! with 1011 and every other connection carries on.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use abi_stable::std_types::{RResult, RStr};
use switchboard_plugin_api::abi::{
    AppBox, CallbackError, HandshakeRequest, HandshakeResponse, MessageRef, PushRequest,
    PushVerdict,
};
use switchboard_plugin_api::ConnId;

use crate::config::AppConfig;
use crate::metrics::{AppMetrics, Metrics};
use crate::plugin::host::{AppHost, ServerFacts};
use crate::plugin::loader::{NewAppError, Plugin};
use crate::registry::Registry;

/// Failures of one callback in a row, with no success of that callback
/// between, after which `/_/health` reports the app as degraded.
pub const DEGRADED_AFTER_FAILURES: u32 = 5;

/// The callbacks whose failures are counted, each on its own: a poisoned lock
/// can fail every `on_open` while `on_handshake` and `on_close` succeed.
const CALLBACKS: [&str; 7] = [
    "on_handshake",
    "on_open",
    "on_message",
    "on_close",
    "on_error",
    "on_shutdown",
    "on_push",
];

/// A callback failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{callback} {}: {message}", if *panicked { "panicked" } else { "failed" })]
pub struct CallbackFailure {
    /// Which callback.
    pub callback: &'static str,
    /// Whether it panicked (rather than returned an error).
    pub panicked: bool,
    /// The error or panic message.
    pub message: String,
}

/// Settings of one mount, from its `[[app]]` block.
#[derive(Debug, Clone)]
pub struct MountSettings {
    /// Subprotocols the server may choose for the app, in preference order.
    pub subprotocols: Vec<String>,
    /// Origins allowed (empty: any).
    pub allowed_origins: Vec<String>,
    /// Handshake headers kept for `Host::info`.
    pub info_headers: Vec<String>,
    /// Payload of keepalive pings (empty by default).
    pub ping_payload: String,
    /// Every path the app is mounted on.
    pub paths: Vec<String>,
}

/// The most recent callback failure, for `/_/health`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastFailure {
    /// Which callback.
    pub callback: &'static str,
    /// Its error or panic message.
    pub message: String,
    /// Whether it panicked.
    pub panicked: bool,
    /// When, in seconds since the Unix epoch.
    pub at_unix_seconds: u64,
}

/// How an app's callbacks have been doing lately.
#[derive(Debug, Default)]
struct CallbackHealth {
    /// Per callback (as in [`CALLBACKS`]): failures since its last success.
    failures_in_a_row: [AtomicU32; CALLBACKS.len()],
    last_failure: Mutex<Option<LastFailure>>,
}

/// One app instance on its path.
pub struct MountedApp {
    path: Arc<str>,
    plugin: Arc<Plugin>,
    app: AppBox,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    app_metrics: AppMetrics,
    settings: MountSettings,
    health: CallbackHealth,
}

impl std::fmt::Debug for MountedApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountedApp")
            .field("path", &self.path)
            .field("plugin", &self.plugin.path())
            .finish()
    }
}

impl MountedApp {
    /// Builds the app instance for one `[[app]]` block; messages it sends are
    /// limited to `max_message_size`.
    ///
    /// # Errors
    /// The plugin constructor refused its config, failed or panicked.
    pub fn new(
        config: &AppConfig,
        plugin: Arc<Plugin>,
        max_message_size: usize,
        facts: Arc<ServerFacts>,
        metrics: Arc<Metrics>,
    ) -> Result<MountedApp, NewAppError> {
        let path: Arc<str> = config.path.as_str().into();
        let registry = Arc::new(Registry::new(max_message_size));
        let host = AppHost::new(registry.clone(), path.clone(), facts);
        let app = plugin.new_app(host.into_abi(), &config.config_json)?;
        let app_metrics = metrics.for_app(&config.path);
        Ok(MountedApp {
            metrics,
            app_metrics,
            path,
            plugin,
            app,
            registry,
            settings: MountSettings {
                subprotocols: config.subprotocols.clone(),
                allowed_origins: config.allowed_origins.clone(),
                info_headers: config.info_headers.clone(),
                ping_payload: config.ping_payload.clone(),
                paths: config.paths.clone(),
            },
            health: CallbackHealth::default(),
        })
    }

    /// Whether a callback keeps failing: its last [`DEGRADED_AFTER_FAILURES`]
    /// calls or more failed, with no success since.
    pub fn is_degraded(&self) -> bool {
        self.health
            .failures_in_a_row
            .iter()
            .any(|f| f.load(Ordering::Relaxed) >= DEGRADED_AFTER_FAILURES)
    }

    /// The most recent callback failure, if any.
    pub fn last_failure(&self) -> Option<LastFailure> {
        self.health
            .last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The mount path.
    pub fn path(&self) -> &Arc<str> {
        &self.path
    }

    /// The plugin serving it.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// Its metrics handles.
    pub fn metrics(&self) -> &AppMetrics {
        &self.app_metrics
    }

    /// Its open connections and groups.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Its settings.
    pub fn settings(&self) -> &MountSettings {
        &self.settings
    }

    fn check<T>(
        &self,
        callback: &'static str,
        conn: Option<ConnId>,
        r: RResult<T, CallbackError>,
    ) -> Result<T, CallbackFailure> {
        let index = CALLBACKS.iter().position(|c| *c == callback).unwrap_or(0);
        let failures = &self.health.failures_in_a_row[index];
        if r.is_ok() {
            // A load first: the common case writes nothing to the shared line.
            if failures.load(Ordering::Relaxed) != 0 {
                failures.store(0, Ordering::Relaxed);
            }
        }
        r.into_result().map_err(|e| {
            let failure = CallbackFailure { callback, panicked: e.panicked, message: e.message.into_string() };
            failures.fetch_add(1, Ordering::Relaxed);
            *self.health.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(LastFailure {
                callback,
                message: failure.message.clone(),
                panicked: failure.panicked,
                at_unix_seconds: SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            });
            let app = &*self.path;
            let conn = conn.map(|c| c.to_string());
            self.metrics.callback_failed(app, callback, failure.panicked);
            if failure.panicked {
                tracing::error!(app = %app, conn, callback, panic = %failure.message, "plugin callback panicked");
            } else {
                tracing::warn!(app = %app, conn, callback, error = %failure.message, "plugin callback failed");
            }
            failure
        })
    }

    /// Asks the app whether to accept a handshake.
    ///
    /// # Errors
    /// The callback failed.
    pub fn on_handshake(
        &self,
        request: &HandshakeRequest<'_>,
    ) -> Result<HandshakeResponse, CallbackFailure> {
        self.check(
            "on_handshake",
            Some(request.conn),
            self.app.on_handshake(request),
        )
    }

    /// Tells the app a connection is open.
    ///
    /// # Errors
    /// The callback failed.
    pub fn on_open(&self, conn: ConnId) -> Result<(), CallbackFailure> {
        self.check("on_open", Some(conn), self.app.on_open(conn))
    }

    /// Hands the app a message.
    ///
    /// # Errors
    /// The callback failed.
    pub fn on_message(&self, conn: ConnId, message: MessageRef<'_>) -> Result<(), CallbackFailure> {
        self.check("on_message", Some(conn), self.app.on_message(conn, message))
    }

    /// Tells the app a connection closed (failures are only logged).
    pub fn on_close(&self, conn: ConnId, code: u16, reason: &str) {
        let _ = self.check(
            "on_close",
            Some(conn),
            self.app.on_close(conn, code, RStr::from_str(reason)),
        );
    }

    /// Tells the app a connection failed (failures are only logged).
    pub fn on_error(&self, conn: ConnId, error: &str) {
        let _ = self.check(
            "on_error",
            Some(conn),
            self.app.on_error(conn, RStr::from_str(error)),
        );
    }

    /// Asks the app what to do with a push from a backend.
    ///
    /// # Errors
    /// The callback failed.
    pub fn on_push(&self, push: &PushRequest<'_>) -> Result<PushVerdict, CallbackFailure> {
        self.check("on_push", push.client.into_option(), self.app.on_push(push))
    }

    /// Shuts the app down: from now on every host call fails with `SHUT_DOWN`
    /// (also inside `on_shutdown`, so threads of the plugin see it at once);
    /// then `on_shutdown`.
    pub fn shut_down(&self) {
        self.registry.shut_down();
        let _ = self.check("on_shutdown", None, self.app.on_shutdown());
    }
}
