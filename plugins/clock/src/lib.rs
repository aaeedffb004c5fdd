//! `clock`: publishes the time to the group `ticks` every `interval_ms` from
//! a thread the plugin starts itself, which shows that the host handle works
//! from any thread at any time. Every client joins `ticks` on open; it can
//! send `pause` (leave the group) and `resume` (join again).
//!
//! The thread stops when the app shuts down: from then on host calls answer
//! `SHUT_DOWN`, and the stop flag is set in `on_shutdown`.
//!
//! On several nodes (a cluster) a publish reaches every node, so one clock
//! ticks for all: each instance tries to hold a lease in shared state
//! (`ticker`, renewed every tick, expiring after three intervals) and only
//! the holder publishes. When its node dies, another takes over within three
//! intervals. A reload hands the lease to the new instance (`save_state`).
//! Without Redis each node ticks for its own clients.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::json;
use switchboard_plugin_api::{
    export_app, App, ConnId, Context, Error, Host, HostErrorKind, Message,
};

/// The group every tick is published to.
const TICKS: &str = "ticks";

/// The `[app.config]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ClockConfig {
    /// Milliseconds between ticks (at least 10).
    interval_ms: u64,
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig { interval_ms: 1000 }
    }
}

struct Clock {
    host: Host,
    running: Arc<AtomicBool>,
    ticks: Arc<AtomicU64>,
    /// This instance's name in the lease.
    me: String,
}

/// The shared-state key of the lease on ticking.
const LEASE: &str = "ticker";

/// Whether this instance holds the lease (renewing or taking it). Without
/// shared state (Redis out of reach), every node ticks for its own clients.
fn hold_lease(host: &Host, me: &str, ttl: Duration) -> bool {
    let state = host.state();
    let held = state
        .swap(LEASE, Some(me), Some(me), Some(ttl))
        .and_then(|renewed| Ok(renewed || state.swap(LEASE, None, Some(me), Some(ttl))?));
    held.unwrap_or(true)
}

fn tick_message(n: u64) -> String {
    let now = chrono::Local::now();
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({ "type": "tick", "n": n, "time": now.format("%H:%M:%S").to_string(), "unix_ms": unix_ms }).to_string()
}

impl App for Clock {
    fn new(context: Context) -> Result<Self, Error> {
        let config: ClockConfig = context.config()?;
        if config.interval_ms < 10 {
            return Err(format!(
                "interval_ms must be at least 10 (got {})",
                config.interval_ms
            )
            .into());
        }
        // The previous instance's name and count (a reload): the lease and
        // the numbering go on.
        let saved: Option<(String, u64)> = context.saved_state_json(|_: &(String, u64)| true);
        let (me, count) = saved.unwrap_or_else(|| (uuid::Uuid::new_v4().to_string(), 0));
        let running = Arc::new(AtomicBool::new(true));
        let ticks = Arc::new(AtomicU64::new(count));
        let (host, flag, counter) = (context.host.clone(), running.clone(), ticks.clone());
        let name = me.clone();
        std::thread::Builder::new()
            .name("clock-ticker".into())
            .spawn(move || {
                let interval = Duration::from_millis(config.interval_ms);
                while flag.load(Ordering::Acquire) {
                    std::thread::sleep(interval);
                    if !hold_lease(&host, &name, interval * 3) {
                        continue;
                    }
                    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                    match host.publish(TICKS, tick_message(n).as_str()) {
                        Err(error) if error.kind() == HostErrorKind::SHUT_DOWN => break,
                        _ => {}
                    }
                }
            })?;
        Ok(Clock {
            host: context.host,
            running,
            ticks,
            me,
        })
    }

    fn on_open(&self, conn: ConnId) -> Result<(), Error> {
        self.host.join(conn, TICKS)?;
        self.host.send(
            conn,
            tick_message(self.ticks.load(Ordering::Relaxed)).as_str(),
        )?;
        Ok(())
    }

    fn on_message(&self, conn: ConnId, message: Message<'_>) -> Result<(), Error> {
        let subscribed = match message.as_text().map(str::trim) {
            Some("pause") => {
                self.host.leave(conn, TICKS)?;
                false
            }
            Some("resume") => {
                self.host.join(conn, TICKS)?;
                true
            }
            _ => {
                self.host.send_json(
                    conn,
                    &json!({ "type": "error", "message": "send pause or resume" }),
                )?;
                return Ok(());
            }
        };
        self.host
            .send_json(conn, &json!({ "type": "ok", "subscribed": subscribed }))?;
        Ok(())
    }

    fn save_state(&self) -> Result<Option<Vec<u8>>, Error> {
        let state = (self.me.clone(), self.ticks.load(Ordering::Relaxed));
        Ok(Some(serde_json::to_vec(&state)?))
    }

    fn on_shutdown(&self) {
        self.running.store(false, Ordering::Release);
    }
}

export_app!(Clock);
