//! One app mounted on its paths: its settings from the config, its
//! connections and groups, and the app instance currently serving them.
//!
//! A reload in `migrate` mode replaces the instance and keeps everything else,
//! so connections keep their ids, groups and handshake data. To swap
//! instances safely the mount has a gate that every callback passes:
//!
//! - a connection's own callbacks (`on_open`, `on_message`) raise the
//!   connection's `in_callback` flag, then look at `paused`; the reload sets
//!   `paused`, then waits until every connection's flag and the shared
//!   in-flight count are down. Either side sees the other (both use SeqCst),
//!   so after the wait no callback runs and none can start;
//! - rarer callbacks (`on_handshake`, `on_push`, `on_close`, `on_error`,
//!   which run outside a registered connection's task or after it left the
//!   registry) count themselves in one shared counter instead;
//! - a paused caller waits for `resume` without reading further frames, so a
//!   connection's messages stay in order in its socket and go to the new
//!   instance: none lost, none delivered twice, none to the old instance after
//!   it was asked for its state.
//!
//! The fast path costs a flag store, a load of `paused` and a load of the
//! instance generation (a connection keeps its own `Arc` of the instance and
//! fetches the current one only when the generation moved).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::coarse_clock;
use crate::config::AppConfig;
use crate::limits::LogLimiter;
use crate::metrics::{AppMetrics, Metrics};
use crate::plugin::instance::AppInstance;
use crate::registry::Registry;

/// Settings of one mount, from its `[[app]]` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSettings {
    /// Subprotocols the server may choose for the app, in preference order.
    pub subprotocols: Vec<String>,
    /// Which pages may open WebSockets.
    pub allowed_origins: crate::config::OriginPolicy,
    /// Handshake headers kept for `Host::info`.
    pub info_headers: Vec<String>,
    /// Payload of keepalive pings (empty by default).
    pub ping_payload: String,
    /// Every path the app is mounted on.
    pub paths: Vec<String>,
    /// What one client may send per second.
    pub rate_limits: crate::rate::RateLimits,
    /// permessage-deflate, if the app has it on.
    pub compression: Option<crate::config::DeflateSettings>,
}

impl MountSettings {
    /// The settings an `[[app]]` block gives its mount.
    pub fn from_config(config: &AppConfig) -> Self {
        MountSettings {
            subprotocols: config.subprotocols.clone(),
            allowed_origins: config.allowed_origins.clone(),
            info_headers: config.info_headers.clone(),
            ping_payload: config.ping_payload.clone(),
            paths: config.paths.clone(),
            rate_limits: config.rate_limits,
            compression: config.compression,
        }
    }
}

/// A connection task's view of the current instance: refreshed only when
/// the mount's instance generation moves.
#[derive(Debug)]
pub struct InstanceCache {
    generation: u64,
    instance: Arc<AppInstance>,
}

/// A shared callback's place in flight (see [`MountedApp::enter_shared`]).
pub struct SharedCall<'a> {
    mount: &'a MountedApp,
    instance: Arc<AppInstance>,
}

impl SharedCall<'_> {
    /// The instance to call.
    pub fn instance(&self) -> &AppInstance {
        &self.instance
    }
}

impl Drop for SharedCall<'_> {
    fn drop(&mut self) {
        self.mount.shared_in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// One app on its paths.
pub struct MountedApp {
    name: Arc<str>,
    registry: Arc<Registry>,
    app_metrics: AppMetrics,
    settings: ArcSwap<MountSettings>,
    /// The instance serving the app; replaced only while paused.
    current: Mutex<Arc<AppInstance>>,
    generation: AtomicU64,
    paused: AtomicBool,
    resumed: tokio::sync::Notify,
    /// Callbacks in flight that are not a registered connection's own.
    shared_in_flight: AtomicUsize,
    /// Instances this mount has had after its first.
    reloads: AtomicU64,
    /// Callbacks longer than this are counted and logged.
    slow_callback_ms: u64,
    slow_log: LogLimiter,
}

impl std::fmt::Debug for MountedApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountedApp")
            .field("name", &self.name)
            .finish()
    }
}

impl MountedApp {
    /// Mounts `instance` for one `[[app]]` block over `registry`.
    pub fn new(
        config: &AppConfig,
        registry: Arc<Registry>,
        instance: AppInstance,
        metrics: &Metrics,
        slow_callback: Duration,
    ) -> Self {
        MountedApp {
            name: config.name.as_str().into(),
            registry,
            app_metrics: metrics.for_app(&config.name),
            settings: ArcSwap::from_pointee(MountSettings::from_config(config)),
            current: Mutex::new(Arc::new(instance)),
            generation: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            resumed: tokio::sync::Notify::new(),
            shared_in_flight: AtomicUsize::new(0),
            reloads: AtomicU64::new(0),
            slow_callback_ms: u64::try_from(slow_callback.as_millis()).unwrap_or(u64::MAX),
            slow_log: LogLimiter::new(Duration::from_secs(1)),
        }
    }

    /// Counts and (at most once a second) logs a callback that began at
    /// `started_ms` on the coarse clock, if it ran too long.
    fn timed(&self, callback: &'static str, started_ms: u64) {
        let took = coarse_clock::now_ms().saturating_sub(started_ms);
        if took > self.slow_callback_ms {
            self.app_metrics.slow_callbacks.inc();
            if let Some(held_back) = self.slow_log.allow() {
                tracing::warn!(
                    app = %self.name,
                    callback,
                    took_ms = took,
                    held_back,
                    "a plugin callback ran longer than slow_callback: it held a runtime worker, and every connection on it waited"
                );
            }
        }
    }

    /// The app's name (`AppConfig::name`: unique, its first path by default).
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Its metrics handles.
    pub fn metrics(&self) -> &AppMetrics {
        &self.app_metrics
    }

    /// Its open connections and groups.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Its settings now (a reload may change them for new connections).
    pub fn settings(&self) -> Arc<MountSettings> {
        self.settings.load_full()
    }

    /// Replaces its settings (for connections that open from now on).
    pub fn set_settings(&self, settings: MountSettings) {
        self.settings.store(Arc::new(settings));
    }

    /// The instance serving the app now.
    pub fn instance(&self) -> Arc<AppInstance> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many times a reload replaced its instance.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// A fresh cache of the current instance, for a connection task.
    pub fn instance_cache(&self) -> InstanceCache {
        let generation = self.generation.load(Ordering::Acquire);
        InstanceCache {
            generation,
            instance: self.instance(),
        }
    }

    /// Runs `f`, a callback of the connection whose `in_callback` flag this
    /// is, on the current instance; waits first while the mount is paused.
    pub async fn call<T, F: FnOnce(&AppInstance) -> T>(
        &self,
        in_callback: &AtomicBool,
        cache: &mut InstanceCache,
        f: F,
    ) -> T {
        let mut f = f;
        loop {
            match self.try_call(in_callback, cache, f) {
                Ok(result) => return result,
                Err(back) => f = back,
            }
            self.wait_resumed().await;
        }
    }

    /// [`call`](Self::call) without waiting: `Err(f)` while the mount is
    /// paused. The connection task's hot path, which then needs no future.
    pub fn try_call<T, F: FnOnce(&AppInstance) -> T>(
        &self,
        in_callback: &AtomicBool,
        cache: &mut InstanceCache,
        f: F,
    ) -> Result<T, F> {
        in_callback.store(true, Ordering::SeqCst);
        if self.paused.load(Ordering::SeqCst) {
            in_callback.store(false, Ordering::SeqCst);
            return Err(f);
        }
        let generation = self.generation.load(Ordering::Acquire);
        if generation != cache.generation {
            *cache = InstanceCache {
                generation,
                instance: self.instance(),
            };
        }
        let started = coarse_clock::now_ms();
        let result = f(&cache.instance);
        in_callback.store(false, Ordering::Release);
        self.timed("connection callback", started);
        Ok(result)
    }

    /// Runs `f`, a callback that is not a registered connection's own
    /// (handshake, push, close, error), on the current instance; waits first
    /// while the mount is paused.
    pub async fn call_shared<T>(&self, f: impl FnOnce(&AppInstance) -> T) -> T {
        let call = self.enter_shared().await;
        let started = coarse_clock::now_ms();
        let result = f(call.instance());
        self.timed("shared callback", started);
        result
    }

    /// Waits while the mount is paused, then holds a place among the shared
    /// callbacks in flight until the returned guard is dropped: for callers
    /// that borrow data they cannot hold across an `.await`.
    pub async fn enter_shared(&self) -> SharedCall<'_> {
        loop {
            self.shared_in_flight.fetch_add(1, Ordering::SeqCst);
            if !self.paused.load(Ordering::SeqCst) {
                break;
            }
            self.shared_in_flight.fetch_sub(1, Ordering::SeqCst);
            self.wait_resumed().await;
        }
        SharedCall {
            mount: self,
            instance: self.instance(),
        }
    }

    async fn wait_resumed(&self) {
        let notified = self.resumed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.paused.load(Ordering::SeqCst) {
            notified.await;
        }
    }

    /// Stops new callbacks and waits until none is running: from then on the
    /// instance can be asked for its state and replaced. Waits at most
    /// `limit` (a callback that blocks would hold a reload forever); `false`
    /// if callbacks were still running then, and the mount is resumed.
    pub async fn pause(&self, limit: Duration) -> bool {
        self.paused.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let busy =
                self.shared_in_flight.load(Ordering::SeqCst) > 0 || self.registry.any_in_callback();
            if !busy {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                self.resume();
                return false;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    /// Puts `instance` in place of the current one (call while paused) and
    /// returns the one it replaced.
    pub fn replace_instance(&self, instance: AppInstance) -> Arc<AppInstance> {
        let old = std::mem::replace(
            &mut *self.current.lock().unwrap_or_else(|e| e.into_inner()),
            Arc::new(instance),
        );
        self.generation.fetch_add(1, Ordering::Release);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        old
    }

    /// Lets callbacks run again, on whatever instance is current.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.resumed.notify_waiters();
    }

    /// Shuts the app down for good: every later registry call fails with
    /// `SHUT_DOWN`; then the instance's `on_shutdown`.
    pub fn shut_down(&self) {
        self.registry.shut_down();
        self.instance().shut_down();
    }
}
