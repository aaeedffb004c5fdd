//! Stage 1 of reading a config: the file's shape, as serde sees it. Unknown
//! keys are refused here (with their line and column); values keep their
//! spans so that stage 2 (`validate`) can locate its problems too.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::units::{ByteSize, HumanDuration, OriginPolicy};

/// Stage 1: the file's shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) push: RawPush,
    #[serde(default)]
    pub(super) health: RawEndpoint,
    #[serde(default)]
    pub(super) metrics: RawEndpoint,
    #[serde(default)]
    pub(super) app_list: RawEndpoint,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) log: RawLog,
    pub(super) cluster: Option<RawCluster>,
    #[serde(default)]
    pub(super) app: Vec<RawApp>,
}

/// `[cluster]`: several nodes sharing deliveries through Redis.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) redis: Spanned<String>,
    pub(super) node_id: Option<Spanned<String>>,
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) heartbeat: Option<Spanned<HumanDuration>>,
    pub(super) node_timeout: Option<Spanned<HumanDuration>>,
    pub(super) request_timeout: Option<Spanned<HumanDuration>>,
    pub(super) queue: Option<Spanned<usize>>,
}

/// A status endpoint: where, and who may ask.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    pub(super) path: Option<Spanned<String>>,
    pub(super) allowed_ips: Option<Vec<Spanned<String>>>,
}

/// `[admin]`: the operator's page.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) path: Option<Spanned<String>>,
    pub(super) allowed_ips: Option<Vec<Spanned<String>>>,
    pub(super) token: Option<Spanned<String>>,
}

/// `[log]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<Spanned<String>>,
    pub(super) level: Option<Spanned<String>>,
}

/// `[push]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPush {
    pub(super) path: Option<Spanned<String>>,
    pub(super) token: Option<Spanned<String>>,
    pub(super) token_env: Option<Spanned<String>>,
    pub(super) allowed_ips: Option<Vec<Spanned<String>>>,
    pub(super) trusted_proxies: Option<Vec<Spanned<String>>>,
    pub(super) max_body: Option<Spanned<ByteSize>>,
    pub(super) max_batch: Option<Spanned<usize>>,
    pub(super) body_timeout: Option<Spanned<HumanDuration>>,
}

/// `[server]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<Spanned<SocketAddr>>,
    pub(super) plugin_dir: Option<PathBuf>,
    pub(super) static_dir: Option<PathBuf>,
    pub(super) max_message_size: Option<Spanned<ByteSize>>,
    pub(super) max_frame_size: Option<Spanned<ByteSize>>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_ip: Option<usize>,
    pub(super) allowed_origins: Option<OriginPolicy>,
    pub(super) handshake_timeout: Option<Spanned<HumanDuration>>,
    pub(super) ping_interval: Option<Spanned<HumanDuration>>,
    pub(super) close_timeout: Option<Spanned<HumanDuration>>,
    pub(super) write_timeout: Option<Spanned<HumanDuration>>,
    pub(super) shutdown_grace: Option<Spanned<HumanDuration>>,
    pub(super) outbound_queue: Option<Spanned<usize>>,
    pub(super) outbound_queue_bytes: Option<Spanned<ByteSize>>,
    pub(super) read_buffer_size: Option<Spanned<ByteSize>>,
    pub(super) memory_budget: Option<Spanned<ByteSize>>,
    pub(super) runtime_dir: Option<PathBuf>,
    pub(super) watch: Option<bool>,
    pub(super) tls: Option<RawTls>,
    pub(super) trusted_proxies: Option<Vec<Spanned<String>>>,
    pub(super) slow_callback: Option<Spanned<HumanDuration>>,
    pub(super) message_rate: Option<u64>,
    pub(super) byte_rate: Option<Spanned<ByteSize>>,
    pub(super) compression: Option<Spanned<String>>,
    pub(super) compression_threshold: Option<Spanned<ByteSize>>,
    pub(super) compression_window_bits: Option<Spanned<u8>>,
    pub(super) compression_client_context_takeover: Option<bool>,
}

/// `[server.tls]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) listen: Option<Spanned<SocketAddr>>,
}

/// One `[[app]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApp {
    pub(super) path: Option<Spanned<String>>,
    pub(super) paths: Option<Vec<Spanned<String>>>,
    pub(super) plugin: Spanned<String>,
    pub(super) ping_payload: Option<String>,
    #[serde(default)]
    pub(super) subprotocols: Vec<Spanned<String>>,
    pub(super) name: Option<Spanned<String>>,
    pub(super) allowed_origins: Option<OriginPolicy>,
    pub(super) info_headers: Option<Vec<String>>,
    #[serde(default)]
    pub(super) config: Option<Spanned<toml::Table>>,
    pub(super) reload: Option<Spanned<String>>,
    pub(super) message_rate: Option<u64>,
    pub(super) byte_rate: Option<Spanned<ByteSize>>,
    pub(super) drain_timeout: Option<Spanned<HumanDuration>>,
    pub(super) compression: Option<Spanned<String>>,
}
