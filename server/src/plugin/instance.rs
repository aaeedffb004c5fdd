//! One instance of an app: the object a plugin's constructor built, the
//! plugin it came from, its own host handle's shut-down switch, and the calls
//! into its callbacks.
//!
//! A callback that returns an error or panics (the panic is caught inside the
//! plugin by the SDK) is logged here with the app's path and returned as a
//! [`CallbackFailure`]; the connection code then closes that one connection
//! with 1011 and every other connection carries on. A reload may replace an
//! app's instance while its connections stay (see [`super::mount`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use abi_stable::std_types::{ROption, RResult, RSlice, RStr};
use switchboard_plugin_api::abi::{
    AppBox, CallbackError, HandshakeRequest, HandshakeResponse, MessageRef, PushRequest,
    PushVerdict,
};
use switchboard_plugin_api::ConnId;

use crate::metrics::Metrics;
use crate::plugin::host::{AppHost, ServerFacts};
use crate::plugin::loader::NewAppError;
use crate::plugin::store::StoredPlugin;
use crate::registry::Registry;

/// Failures of one callback in a row, with no success of that callback
/// between, after which `/_/health` reports the app as degraded.
pub const DEGRADED_AFTER_FAILURES: u32 = 5;

/// The callbacks whose failures are counted, each on its own: a poisoned lock
/// can fail every `on_open` while `on_handshake` and `on_close` succeed.
const CALLBACKS: [&str; 10] = [
    "on_handshake",
    "on_open",
    "on_message",
    "on_close",
    "on_error",
    "on_shutdown",
    "on_push",
    "save_state",
    "on_resume",
    "on_lost",
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
    /// The last [`RECENT_FAILURES`] failures, oldest first.
    recent_failures: Mutex<VecDeque<LastFailure>>,
}

/// How many failures an instance remembers (for `/_/admin`).
pub const RECENT_FAILURES: usize = 20;

/// One app instance: what a plugin's constructor returned.
pub struct AppInstance {
    app_path: Arc<str>,
    plugin: StoredPlugin,
    config_json: String,
    app: AppBox,
    /// Set when this instance is shut down: its host handle refuses from then on.
    shut_down: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    health: CallbackHealth,
}

impl std::fmt::Debug for AppInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppInstance")
            .field("app", &self.app_path)
            .field("plugin", &self.plugin.plugin.path())
            .finish()
    }
}

/// What building an instance needs besides the plugin.
pub struct InstanceContext<'a> {
    /// The app's name (logs, metrics).
    pub app_path: Arc<str>,
    /// The app's connections and groups (shared with the instance it replaces
    /// under `migrate`).
    pub registry: Arc<Registry>,
    /// Facts for `Host::server_info`.
    pub facts: Arc<ServerFacts>,
    /// The server's metrics.
    pub metrics: Arc<Metrics>,
    /// The `[app.config]` table as JSON.
    pub config_json: &'a str,
    /// What the instance it replaces saved, if anything.
    pub saved_state: Option<&'a [u8]>,
}

impl AppInstance {
    /// Builds an instance of `plugin` with a host handle of its own.
    ///
    /// # Errors
    /// The plugin constructor refused its config, failed or panicked.
    pub fn new(plugin: StoredPlugin, context: InstanceContext<'_>) -> Result<Self, NewAppError> {
        let shut_down = Arc::new(AtomicBool::new(false));
        let host = AppHost::new(
            context.registry,
            context.app_path.clone(),
            context.facts,
            shut_down.clone(),
        );
        let state = match context.saved_state {
            Some(bytes) => ROption::RSome(RSlice::from_slice(bytes)),
            None => ROption::RNone,
        };
        let app = plugin
            .plugin
            .new_app(host.into_abi(), context.config_json, state)?;
        Ok(AppInstance {
            app_path: context.app_path,
            config_json: context.config_json.to_owned(),
            plugin,
            app,
            shut_down,
            metrics: context.metrics,
            health: CallbackHealth::default(),
        })
    }

    /// The plugin it came from.
    pub fn plugin(&self) -> &StoredPlugin {
        &self.plugin
    }

    /// The `[app.config]` it was built with, as JSON.
    pub fn config_json(&self) -> &str {
        &self.config_json
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
            .recent_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .back()
            .cloned()
    }

    /// The last few callback failures, oldest first.
    pub fn recent_failures(&self) -> Vec<LastFailure> {
        self.health
            .recent_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
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
            {
                let mut recent = self.health.recent_failures.lock().unwrap_or_else(|e| e.into_inner());
                if recent.len() == RECENT_FAILURES {
                    recent.pop_front();
                }
                recent.push_back(LastFailure {
                    callback,
                    message: failure.message.clone(),
                    panicked: failure.panicked,
                    at_unix_seconds: SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                });
            }
            let app = &*self.app_path;
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

    /// Asks the instance for the state its successor should start from.
    ///
    /// # Errors
    /// The callback failed.
    pub fn save_state(&self) -> Result<Option<Vec<u8>>, CallbackFailure> {
        self.check("save_state", None, self.app.save_state())
            .map(|state| state.into_option().map(|bytes| bytes.into_vec()))
    }

    /// Hands the instance a connection its predecessor opened.
    ///
    /// # Errors
    /// The callback failed.
    pub fn on_resume(&self, conn: ConnId) -> Result<(), CallbackFailure> {
        self.check("on_resume", Some(conn), self.app.on_resume(conn))
    }

    /// Tells the app a connection of another node is lost (failures are only logged).
    pub fn on_lost(&self, conn: ConnId) {
        let _ = self.check("on_lost", Some(conn), self.app.on_lost(conn));
    }

    /// Shuts the instance down: from now on its host handle answers
    /// `SHUT_DOWN` (already inside `on_shutdown`, so the plugin's threads see
    /// it at once); then `on_shutdown`.
    pub fn shut_down(&self) {
        self.shut_down.store(true, Ordering::Release);
        let _ = self.check("on_shutdown", None, self.app.on_shutdown());
    }
}
