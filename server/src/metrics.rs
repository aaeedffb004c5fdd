//! Prometheus metrics, through `prometheus-client`, served at `/_/metrics`.
//!
//! Counters are atomic handles: each app resolves its label set once, when it
//! is mounted ([`AppMetrics`]), so counting a message costs one atomic add and
//! no label lookup. Families looked up per event are used only for rare events
//! (rejections, callback failures, push results).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels naming an app (by its first path).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    /// The app's path.
    pub app: String,
}

/// Labels of a refused connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why it was refused (`origin`, `version`, `app`, `limit_total`, ...).
    pub reason: String,
}

/// Labels of a failed plugin callback.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallbackLabels {
    /// The app's path.
    pub app: String,
    /// The callback (`on_message`, ...).
    pub callback: String,
}

/// Labels of a push request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// The HTTP status answered.
    pub status: String,
}

/// Labels of a reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `applied` or `refused`.
    pub result: String,
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    connections_open: Family<AppLabels, Gauge>,
    connections_accepted: Family<AppLabels, Counter>,
    connections_rejected: Family<ReasonLabels, Counter>,
    messages_in: Family<AppLabels, Counter>,
    bytes_in: Family<AppLabels, Counter>,
    messages_out: Family<AppLabels, Counter>,
    bytes_out: Family<AppLabels, Counter>,
    queue_drops: Family<AppLabels, Counter>,
    callback_errors: Family<CallbackLabels, Counter>,
    callback_panics: Family<CallbackLabels, Counter>,
    push_requests: Family<StatusLabels, Counter>,
    handshake_seconds: Histogram,
    reloads: Family<ResultLabels, Counter>,
    plugin_libraries: Gauge,
    memory_budget_used: Gauge,
    memory_budget_refusals: Counter,
    slow_callbacks: Family<AppLabels, Counter>,
    cluster: ClusterMetrics,
}

/// The backplane's counters (registered only when `[cluster]` is set).
#[derive(Clone, Debug)]
pub struct ClusterMetrics {
    /// Messages published to Redis, by kind.
    pub published: Family<KindLabels, Counter>,
    /// Messages received from other nodes over Redis, by kind.
    pub received: Family<KindLabels, Counter>,
    /// Messages for other nodes not published, by reason.
    pub dropped: Family<ReasonLabels, Counter>,
    /// Times the connection to Redis was lost and made again.
    pub reconnects: Counter,
    /// 1 while Redis is reachable.
    pub redis_up: Gauge,
    /// Other nodes heard from within `node_timeout`.
    pub nodes: Gauge,
    /// From a message's publication on one node to its delivery on another.
    pub delivery_seconds: Histogram,
}

/// Labels of a backplane message.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `deliver`, `membership`, `push`, `heartbeat`, ...
    pub kind: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// One app's counters, resolved once.
#[derive(Clone, Debug, Default)]
pub struct AppMetrics {
    /// Open WebSocket connections.
    pub open: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Connections accepted (upgraded).
    pub accepted: Counter<u64, AtomicU64>,
    /// Messages received.
    pub messages_in: Counter<u64, AtomicU64>,
    /// Payload bytes received.
    pub bytes_in: Counter<u64, AtomicU64>,
    /// Messages written.
    pub messages_out: Counter<u64, AtomicU64>,
    /// Payload bytes written.
    pub bytes_out: Counter<u64, AtomicU64>,
    /// Messages refused because a client's outbound queue was full.
    pub queue_drops: Counter<u64, AtomicU64>,
    /// Callbacks that ran longer than `slow_callback`.
    pub slow_callbacks: Counter<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric of a single node, registered.
    pub fn new() -> Self {
        Metrics::with_cluster(false)
    }

    /// Every metric, registered, the backplane's too when `cluster` is set.
    pub fn with_cluster(cluster: bool) -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        let metrics = Metrics {
            connections_open: Family::default(),
            connections_accepted: Family::default(),
            connections_rejected: Family::default(),
            messages_in: Family::default(),
            bytes_in: Family::default(),
            messages_out: Family::default(),
            bytes_out: Family::default(),
            queue_drops: Family::default(),
            callback_errors: Family::default(),
            callback_panics: Family::default(),
            push_requests: Family::default(),
            // 50 µs .. ~1.6 s
            handshake_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            reloads: Family::default(),
            plugin_libraries: Gauge::default(),
            memory_budget_used: Gauge::default(),
            memory_budget_refusals: Counter::default(),
            slow_callbacks: Family::default(),
            cluster: ClusterMetrics {
                published: Family::default(),
                received: Family::default(),
                dropped: Family::default(),
                reconnects: Counter::default(),
                redis_up: Gauge::default(),
                nodes: Gauge::default(),
                // 50 µs .. ~1.6 s
                delivery_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            },
            registry: Registry::default(),
        };
        registry.register(
            "connections_open",
            "Open WebSocket connections",
            metrics.connections_open.clone(),
        );
        registry.register(
            "connections_accepted",
            "WebSocket connections accepted",
            metrics.connections_accepted.clone(),
        );
        registry.register(
            "connections_rejected",
            "Connections and handshakes refused, by reason",
            metrics.connections_rejected.clone(),
        );
        registry.register(
            "messages_in",
            "Messages received from clients",
            metrics.messages_in.clone(),
        );
        registry.register(
            "bytes_in",
            "Payload bytes received from clients",
            metrics.bytes_in.clone(),
        );
        registry.register(
            "messages_out",
            "Messages written to clients",
            metrics.messages_out.clone(),
        );
        registry.register(
            "bytes_out",
            "Payload bytes written to clients",
            metrics.bytes_out.clone(),
        );
        registry.register(
            "outbound_queue_drops",
            "Messages refused because a client's outbound queue was full",
            metrics.queue_drops.clone(),
        );
        registry.register(
            "plugin_callback_errors",
            "Plugin callbacks that returned an error",
            metrics.callback_errors.clone(),
        );
        registry.register(
            "plugin_callback_panics",
            "Plugin callbacks that panicked",
            metrics.callback_panics.clone(),
        );
        registry.register(
            "push_requests",
            "Push API requests, by HTTP status",
            metrics.push_requests.clone(),
        );
        registry.register(
            "slow_callbacks",
            "Plugin callbacks that ran longer than slow_callback (they hold a runtime worker)",
            metrics.slow_callbacks.clone(),
        );
        registry.register(
            "reloads",
            "Reloads, by result (applied, refused)",
            metrics.reloads.clone(),
        );
        registry.register(
            "plugin_libraries_mapped",
            "Plugin libraries mapped (one per distinct plugin file loaded; never unloaded)",
            metrics.plugin_libraries.clone(),
        );
        registry.register(
            "memory_budget_used_bytes",
            "Bytes held in messages being received and queued, all connections together",
            metrics.memory_budget_used.clone(),
        );
        registry.register(
            "memory_budget_refusals",
            "Messages refused because the memory budget was spent",
            metrics.memory_budget_refusals.clone(),
        );
        registry.register(
            "handshake_seconds",
            "Time from the upgrade request to the 101 response",
            metrics.handshake_seconds.clone(),
        );
        if cluster {
            let c = &metrics.cluster;
            registry.register(
                "cluster_published",
                "Messages this node published to Redis, by kind",
                c.published.clone(),
            );
            registry.register(
                "cluster_received",
                "Messages this node received from other nodes over Redis, by kind",
                c.received.clone(),
            );
            registry.register(
                "cluster_dropped",
                "Messages for other nodes that were not published, by reason",
                c.dropped.clone(),
            );
            registry.register(
                "cluster_redis_reconnects",
                "Times the connection to Redis was lost and made again",
                c.reconnects.clone(),
            );
            registry.register(
                "cluster_redis_up",
                "1 while Redis is reachable",
                c.redis_up.clone(),
            );
            registry.register(
                "cluster_nodes",
                "Other nodes heard from within node_timeout",
                c.nodes.clone(),
            );
            registry.register(
                "cluster_delivery_seconds",
                "From a message's publication on one node to its delivery on this one",
                c.delivery_seconds.clone(),
            );
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The backplane's handles.
    pub fn cluster(&self) -> &ClusterMetrics {
        &self.cluster
    }

    /// The counters of the app mounted at `app`.
    pub fn for_app(&self, app: &str) -> AppMetrics {
        let labels = AppLabels {
            app: app.to_owned(),
        };
        AppMetrics {
            open: self.connections_open.get_or_create(&labels).clone(),
            accepted: self.connections_accepted.get_or_create(&labels).clone(),
            messages_in: self.messages_in.get_or_create(&labels).clone(),
            bytes_in: self.bytes_in.get_or_create(&labels).clone(),
            messages_out: self.messages_out.get_or_create(&labels).clone(),
            bytes_out: self.bytes_out.get_or_create(&labels).clone(),
            queue_drops: self.queue_drops.get_or_create(&labels).clone(),
            slow_callbacks: self.slow_callbacks.get_or_create(&labels).clone(),
        }
    }

    /// A connection or handshake was refused.
    pub fn rejected(&self, reason: &str) {
        self.connections_rejected
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A plugin callback failed.
    pub fn callback_failed(&self, app: &str, callback: &str, panicked: bool) {
        let labels = CallbackLabels {
            app: app.to_owned(),
            callback: callback.to_owned(),
        };
        if panicked {
            self.callback_panics.get_or_create(&labels).inc();
        } else {
            self.callback_errors.get_or_create(&labels).inc();
        }
    }

    /// A push request was answered with `status`.
    pub fn push_answered(&self, status: u16) {
        self.push_requests
            .get_or_create(&StatusLabels {
                status: status.to_string(),
            })
            .inc();
    }

    /// A reload was applied or refused.
    pub fn reloaded(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.reloads
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// The memory budget's handles (used bytes, refusals).
    pub fn memory_budget(&self) -> (Gauge, Counter) {
        (
            self.memory_budget_used.clone(),
            self.memory_budget_refusals.clone(),
        )
    }

    /// How many plugin libraries are mapped now.
    pub fn set_plugin_libraries(&self, mapped: usize) {
        self.plugin_libraries
            .set(i64::try_from(mapped).unwrap_or(i64::MAX));
    }

    /// A handshake took `elapsed`.
    pub fn handshake(&self, elapsed: Duration) {
        self.handshake_seconds.observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text format of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_handles_count_into_the_rendered_families() {
        let metrics = Metrics::new();
        let app = metrics.for_app("/echo");
        app.messages_in.inc();
        app.bytes_in.inc_by(5);
        app.open.inc();
        metrics.rejected("origin");
        metrics.callback_failed("/echo", "on_message", true);
        metrics.push_answered(404);
        metrics.handshake(Duration::from_micros(300));
        let text = metrics.render();
        assert!(
            text.contains("switchboard_messages_in_total{app=\"/echo\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("switchboard_bytes_in_total{app=\"/echo\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("switchboard_connections_open{app=\"/echo\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("switchboard_connections_rejected_total{reason=\"origin\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "switchboard_plugin_callback_panics_total{app=\"/echo\",callback=\"on_message\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("switchboard_push_requests_total{status=\"404\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("switchboard_handshake_seconds_count 1"),
            "{text}"
        );
    }
}
