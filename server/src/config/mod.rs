//! The server's configuration file, in two stages: TOML into raw serde shapes
//! (`raw`, unknown keys refused), then meaning (`validate`: defaults, value
//! checks, paths mounted twice, reserved paths, endpoint clashes). Sizes and
//! durations are written in human units (`units`). Every error names the
//! file, line and column and what was expected (`source`); all problems are
//! collected before the server refuses to start.

mod app_config;
mod mounts;
mod raw;
mod source;
mod units;
mod validate;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use raw::RawConfig;
pub use source::{ConfigProblem, LoadConfigError, SourceFile};
pub use units::{ByteSize, HumanDuration, OriginPolicy};

/// The path prefix reserved for the server's own endpoints (health, metrics, push).
pub const RESERVED_PREFIX: &str = "/_/";

/// Stage 2: the validated, typed configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file this came from.
    pub source: PathBuf,
    /// Server-wide settings.
    pub server: ServerConfig,
    /// The push API.
    pub push: PushConfig,
    /// `/_/health`.
    pub health: EndpointConfig,
    /// `/_/metrics`.
    pub metrics: EndpointConfig,
    /// `/_/apps` (`[app_list]`): the mounted apps and their pages, for the index page.
    pub app_list: EndpointConfig,
    /// `/_/admin` (`[admin]`): the operator's page.
    pub admin: AdminConfig,
    /// The apps to mount, in file order.
    pub apps: Vec<AppConfig>,
    /// `[log]`: how the server logs.
    pub log: LogConfig,
    /// `[cluster]`: the Redis backplane shared with other nodes, if set.
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: this node's place among several sharing one Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The Redis URL (`redis://[:password@]host:port/db`).
    pub redis: String,
    /// This node's name among the nodes (default: generated at start).
    pub node_id: String,
    /// Whether the config named the node (a generated id differs each load).
    pub node_id_given: bool,
    /// Prefix of every Redis channel, so several clusters can share a Redis.
    pub prefix: String,
    /// How often this node says it is alive.
    pub heartbeat: Duration,
    /// A node not heard from for this long is gone: its connections leave
    /// every other node's view.
    pub node_timeout: Duration,
    /// How long a push forwarded to another node may take to be answered.
    pub request_timeout: Duration,
    /// Most messages waiting to be published to Redis; beyond, sends to
    /// other nodes fail (queue full) rather than grow memory.
    pub queue: usize,
}

/// How the server logs (`[log]`); `SWITCHBOARD_LOG` overrides the level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// One JSON object per line (for log collectors) rather than text.
    pub json: bool,
    /// The level filter, in tracing's `EnvFilter` syntax (`info`, `warn,switchboard=debug`).
    pub level: String,
}

/// The push API's settings (`[push]`).
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// The endpoint's path.
    pub path: String,
    /// The bearer token backends must send, if any.
    pub token: Option<String>,
    /// Addresses allowed to push (default: loopback only).
    pub allowed_ips: Vec<ipnet::IpNet>,
    /// Largest request body, in bytes (larger: 413).
    pub max_body: usize,
    /// Most pushes in one batch request.
    pub max_batch: usize,
    /// How long a backend may take to send the request body (then 408).
    pub body_timeout: Duration,
}

/// Where a status endpoint is served and who may ask.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Its path.
    pub path: String,
    /// Addresses allowed to ask (the rest get 403).
    pub allowed_ips: Vec<ipnet::IpNet>,
}

impl EndpointConfig {
    /// Whether a client at `ip` may ask.
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        self.allowed_ips.iter().any(|net| net.contains(&ip))
    }
}

/// The operator's page (`[admin]`).
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Its path (the page; its data under `<path>/state`, reload at `<path>/reload`).
    pub endpoint: EndpointConfig,
    /// A token the operator must give (`?token=` or `Authorization: Bearer`), if set.
    pub token: Option<String>,
}

/// The default push path.
pub const DEFAULT_PUSH_PATH: &str = "/_/push";

/// Parses `10.0.0.0/8`, `127.0.0.1` or `::1` (a single address is a /32 or /128).
pub fn parse_ip_net(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

/// Server-wide settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port, reported on stdout).
    pub listen: SocketAddr,
    /// Where `lib<name>.so` plugin files are found.
    pub plugin_dir: PathBuf,
    /// Where the static pages are served from (none when unset).
    pub static_dir: Option<PathBuf>,
    /// Largest message a client may send, in bytes (larger: close 1009).
    pub max_message_size: usize,
    /// Largest single frame a client may send, in bytes.
    pub max_frame_size: usize,
    /// Most TCP connections open at once (HTTP and WebSocket); more get 503.
    pub max_connections: usize,
    /// Most TCP connections open at once from one IP address; 0 = unlimited.
    pub max_connections_per_ip: usize,
    /// Origins allowed to open WebSockets (empty = any); apps may override.
    pub allowed_origins: OriginPolicy,
    /// Time a client has to send its HTTP request headers.
    pub handshake_timeout: Duration,
    /// How often idle connections are pinged; a connection that has sent
    /// nothing by the next ping is dropped.
    pub ping_interval: Duration,
    /// How long to wait for the client's reply to a close frame.
    pub close_timeout: Duration,
    /// How long a write may wait for a client that does not read; then it is dropped.
    pub write_timeout: Duration,
    /// How long shutdown waits for connections to close.
    pub shutdown_grace: Duration,
    /// Most messages queued for one connection; beyond, it is closed (slow consumer)
    /// unless the connection is paced (then what does not fit is dropped).
    pub outbound_queue: usize,
    /// Most bytes queued for one connection; beyond, it is closed (slow consumer).
    pub outbound_queue_bytes: usize,
    /// Read buffer per WebSocket connection.
    pub read_buffer_size: usize,
    /// Bytes all connections together may hold in messages being received
    /// and queued (see `memory_budget`).
    pub memory_budget: usize,
    /// Where the server keeps its plugin copies and control socket.
    pub runtime_dir: PathBuf,
    /// Reload by itself when the config or a plugin file changes.
    pub watch: bool,
    /// TLS (`[server.tls]`), if set.
    pub tls: Option<TlsConfig>,
    /// A plugin callback that runs longer is counted and logged.
    pub slow_callback: Duration,
    /// What one client may send per second, by default (apps may override).
    pub rate_limits: crate::rate::RateLimits,
    /// permessage-deflate for apps that do not say (`compression = "on"`,
    /// the default); `None`: off.
    pub compression: Option<DeflateSettings>,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` is believed about the
    /// client's address, for every check (`push.trusted_proxies` adds to it).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// permessage-deflate settings of one app (`compression*` in `[server]`,
/// `compression` per app).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateSettings {
    /// Messages smaller than this are sent uncompressed.
    pub threshold: usize,
    /// The largest window (8..=15) the server uses, and asks clients to use.
    pub window_bits: u8,
    /// Let clients keep their compression context between messages even
    /// when they offer not to (better compression of what they send; the
    /// server keeps a window per sending client). Off: a client that offers
    /// `client_no_context_takeover` is asked to use it.
    pub client_context_takeover: bool,
}

/// `[server.tls]`: a certificate chain and key (PEM files) that make `listen`
/// speak TLS, or, with its own `listen`, add a TLS listener beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
    /// Where the TLS listener listens; `None`: on `[server] listen`, instead of plain.
    pub listen: Option<SocketAddr>,
}

/// One mounted app.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The app's name, unique in the file: its `name`, else its first path,
    /// else (on a path it shares with other apps) `path#first-subprotocol`.
    /// It names the app in logs, metrics, `/_/health`, and across reloads.
    pub name: String,
    /// The app's first path, which also names it in logs and messages.
    pub path: String,
    /// Every URL path the one app instance is mounted on (`path`, or `paths`).
    pub paths: Vec<String>,
    /// Line of the (first) path, for messages.
    pub line: usize,
    /// Payload of the keepalive pings sent to this app's clients (empty by default).
    pub ping_payload: String,
    /// The plugin: a name (`chat`, found in `plugin_dir`) or a file.
    pub plugin: PluginSpec,
    /// Subprotocols the server may choose on the app's behalf, in preference order.
    pub subprotocols: Vec<String>,
    /// Origins allowed for this app (overrides the server's list).
    pub allowed_origins: OriginPolicy,
    /// Handshake headers kept for `Host::info` (lowercase).
    pub info_headers: Vec<String>,
    /// The `[app.config]` table, as JSON text for the plugin.
    pub config_json: String,
    /// What a reload that replaces the app's instance does with its connections.
    pub reload: ReloadMode,
    /// Under `drain`: how long old connections may stay on the old instance.
    pub drain_timeout: Duration,
    /// What one client of this app may send per second.
    pub rate_limits: crate::rate::RateLimits,
    /// permessage-deflate for this app's connections; `None`: off.
    pub compression: Option<DeflateSettings>,
    /// Line of the `[app.config]` table (of the app when it has none).
    pub config_line: usize,
    /// Every key path of `[app.config]` (`history`, `rooms[0].name`) with its
    /// line and column.
    pub config_keys: Vec<(String, (usize, usize))>,
}

impl AppConfig {
    /// The line and column of a key of `[app.config]`, named as the SDK names
    /// config keys in its errors; an empty key is the table itself.
    pub fn config_position(&self, key: &str) -> Option<(usize, usize)> {
        if key.is_empty() {
            return Some((self.config_line, 1));
        }
        self.config_keys
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, position)| *position)
    }
}

/// What a reload that replaces an app's instance does with its open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadMode {
    /// Hand the old instance's state and every connection to the new instance.
    Migrate,
    /// Leave open connections on the old instance until they close (or
    /// `drain_timeout`, then 1012); new connections go to the new instance.
    Drain,
    /// Close every connection with 1012 (Service Restart).
    Restart,
}

impl ReloadMode {
    /// Its name in the config.
    pub fn name(self) -> &'static str {
        match self {
            ReloadMode::Migrate => "migrate",
            ReloadMode::Drain => "drain",
            ReloadMode::Restart => "restart",
        }
    }
}

/// Which plugin an app runs, as the config names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PluginSpec {
    /// A plugin name (`chat`): its file is found in `plugin_dir`.
    Named(String),
    /// A plugin file (the config wrote a path), resolved against the config's directory.
    File(PathBuf),
}

/// Headers kept for `Host::info` unless an app lists its own.
pub const DEFAULT_INFO_HEADERS: &[&str] = &[
    "user-agent",
    "origin",
    "cookie",
    "x-forwarded-for",
    "accept-language",
];

impl Config {
    /// Reads and validates a config file.
    ///
    /// # Errors
    /// Every problem found, located.
    pub fn load(path: &Path) -> Result<Config, LoadConfigError> {
        Config::parse(&SourceFile::read(path)?)
    }

    /// Validates already-read config text.
    ///
    /// # Errors
    /// Every problem found, located.
    pub fn parse(source: &SourceFile) -> Result<Config, LoadConfigError> {
        let raw: RawConfig =
            toml::from_str(source.text()).map_err(|e| LoadConfigError::Invalid {
                problems: vec![source.problem(e.span(), e.message().trim_end_matches('\n'))],
            })?;
        let mut problems = Vec::new();
        let config = validate::validate(raw, source, &mut problems);
        // In file order, whichever check found them.
        problems.sort_by_key(|p| (p.line, p.column));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(LoadConfigError::Invalid { problems })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Vec<String>> {
        Config::parse(&SourceFile::new("sb.toml", text)).map_err(|e| match e {
            LoadConfigError::Invalid { problems } => {
                problems.iter().map(|p| p.to_string()).collect()
            }
            other => vec![other.to_string()],
        })
    }

    #[test]
    fn defaults_apply_to_an_empty_file() {
        let config = parse("").unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.server.max_message_size, 16 << 20);
        assert!(config.apps.is_empty());
        assert_eq!(config.server.max_connections_per_ip, 256);
        let allowed = |ip: &str| {
            config
                .health
                .allowed_ips
                .iter()
                .any(|net| net.contains(&ip.parse::<IpAddr>().unwrap()))
        };
        assert!(allowed("127.0.0.1") && allowed("::1"));
        assert!(!allowed("192.0.2.1"), "health is loopback only by default");
    }

    #[test]
    fn app_config_keys_are_located_in_the_toml_file() {
        let config = parse(
            "[[app]]\npath = \"/chat\"\nplugin = \"chat\"\n[app.config]\nhistory = 50\nrooms = [{ name = \"a\" }]\n\n[[app]]\npath = \"/echo\"\nplugin = \"echo\"\n",
        )
        .unwrap();
        let chat = &config.apps[0];
        assert_eq!(chat.config_position("history"), Some((5, 1)));
        assert_eq!(chat.config_position("rooms[0].name"), Some((6, 12)));
        assert_eq!(chat.config_position(""), Some((4, 1)));
        assert_eq!(chat.config_position("nope"), None);
        assert_eq!(config.apps[1].config_position(""), Some((9, 1)));
    }

    #[test]
    fn sizes_and_durations_are_read_in_human_units() {
        let config = parse(
            "[server]\nmax_message_size = \"1 MiB\"\nping_interval = \"1500ms\"\nread_buffer_size = 8192\n",
        )
        .unwrap();
        assert_eq!(config.server.max_message_size, 1 << 20);
        assert_eq!(config.server.max_frame_size, 1 << 20);
        assert_eq!(config.server.ping_interval, Duration::from_millis(1500));
        assert_eq!(config.server.read_buffer_size, 8192);
    }

    #[test]
    fn unknown_keys_are_located() {
        let problems =
            parse("[server]\nlisten = \"127.0.0.1:0\"\nmax_conections = 5\n").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("sb.toml:3:1: unknown field `max_conections`"),
            "{problems:?}"
        );
    }

    #[test]
    fn compression_is_on_by_default_and_set_per_server_and_app() {
        let config = parse(
            "[server]\ncompression_threshold = \"2 KiB\"\ncompression_window_bits = 12\n\n[[app]]\npath = \"/a\"\nplugin = \"echo\"\n\n[[app]]\npath = \"/b\"\nplugin = \"echo\"\ncompression = \"off\"\n",
        )
        .unwrap();
        let on = DeflateSettings {
            threshold: 2048,
            window_bits: 12,
            client_context_takeover: false,
        };
        assert_eq!(config.server.compression, Some(on));
        assert_eq!(config.apps[0].compression, Some(on));
        assert_eq!(config.apps[1].compression, None);
        let defaults = parse("").unwrap().server.compression.unwrap();
        assert_eq!((defaults.threshold, defaults.window_bits), (1024, 12));

        let problems =
            parse("[server]\ncompression = \"maybe\"\ncompression_window_bits = 7\n").unwrap_err();
        assert!(
            problems[0]
                .starts_with("sb.toml:2:15: compression = \"maybe\": expected \"on\" or \"off\""),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("sb.toml:3:27: compression_window_bits = 7: expected 8 to 15"),
            "{problems:?}"
        );
    }

    #[test]
    fn bad_values_are_located_and_explained() {
        let problems = parse("[server]\nmax_message_size = \"lots\"\n").unwrap_err();
        assert!(
            problems[0].starts_with("sb.toml:2:20: invalid size \"lots\""),
            "{problems:?}"
        );
        let problems = parse("[server]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(
            problems[0].starts_with("sb.toml:2:10: invalid socket address"),
            "{problems:?}"
        );
        let problems = parse("[server]\nping_interval = \"soon\"\n").unwrap_err();
        assert!(
            problems[0].starts_with("sb.toml:2:17: invalid duration \"soon\""),
            "{problems:?}"
        );
    }

    #[test]
    fn every_app_problem_is_reported_at_once() {
        let problems = parse(
            "[[app]]\npath = \"/chat\"\nplugin = \"chat\"\n\n[[app]]\npath = \"/chat\"\nplugin = \"echo\"\n\n[[app]]\npath = \"nope\"\nplugin = \"echo\"\n\n[[app]]\npath = \"/_/push\"\nplugin = \"echo\"\n",
        )
        .unwrap_err();
        assert_eq!(
            problems,
            vec![
                "sb.toml:6:8: app path \"/chat\" is mounted twice (first at line 2); apps share a path only when they list `subprotocols`, and at most one without them is the path's default",
                "sb.toml:10:8: app path \"nope\" must start with '/'",
                "sb.toml:14:8: app path \"/_/push\" is reserved for the server's own endpoints (/_/...)",
            ]
        );
    }

    #[test]
    fn app_config_becomes_json_and_plugins_are_named_or_files() {
        let config = parse(
            "[server]\nplugin_dir = \"plugins\"\n[[app]]\npath = \"/chat\"\nplugin = \"chat\"\n[app.config]\nhistory = 50\n",
        )
        .unwrap();
        let app = &config.apps[0];
        assert_eq!(app.config_json, r#"{"history":50}"#);
        assert_eq!(app.plugin, PluginSpec::Named("chat".into()));
        assert_eq!(config.server.plugin_dir, PathBuf::from(".").join("plugins"));
        assert_eq!(app.line, 4);
    }

    #[test]
    fn push_settings_are_checked() {
        let config = parse("").unwrap();
        assert_eq!(config.push.path, "/_/push");
        assert!(config
            .push
            .allowed_ips
            .iter()
            .any(|n| n.contains(&"127.0.0.1".parse::<IpAddr>().unwrap())));
        assert!(config.push.token.is_none());
        let problems = parse(
            "[push]\ntoken_env = \"SWITCHBOARD_TEST_UNSET_VARIABLE\"\nallowed_ips = [\"10.0.0.0/8\", \"nope\"]\n",
        )
        .unwrap_err();
        assert_eq!(
            problems,
            vec![
                "sb.toml:2:13: push.token_env names the environment variable SWITCHBOARD_TEST_UNSET_VARIABLE, which is not set or empty",
                "sb.toml:3:30: \"nope\" is not an IP address or network (expected \"127.0.0.1\", \"::1\" or \"10.0.0.0/8\")",
            ]
        );
        let problems =
            parse("[push]\npath = \"/chat\"\n[[app]]\npath = \"/chat\"\nplugin = \"chat\"\n")
                .unwrap_err();
        assert_eq!(
            problems,
            vec!["sb.toml:2:8: push.path \"/chat\" is also the path of an app (line 4)"]
        );
    }

    #[test]
    fn one_app_may_be_mounted_on_several_paths() {
        let config = parse("[[app]]\npaths = [\"/\", \"/web\", \"/php\"]\nplugin = \"hub\"\nping_payload = \"ping!\"\n").unwrap();
        assert_eq!(config.apps[0].paths, vec!["/", "/web", "/php"]);
        assert_eq!(config.apps[0].ping_payload, "ping!");
        let problems =
            parse("[[app]]\npaths = [\"/a\", \"/a\"]\nplugin = \"hub\"\n[[app]]\nplugin = \"x\"\n")
                .unwrap_err();
        assert_eq!(
            problems,
            vec![
                "sb.toml:2:16: app path \"/a\" is mounted twice (first at line 2)",
                "sb.toml:5:10: this app has no `path` (or `paths = [...]` to mount one instance on several paths)",
            ]
        );
    }

    #[test]
    fn the_servers_own_endpoints_may_not_clash() {
        let problems = parse("[health]\npath = \"/_/push\"\n[app_list]\npath = \"/x\"\n[[app]]\npath = \"/x\"\nplugin = \"echo\"\n").unwrap_err();
        assert_eq!(
            problems,
            vec![
                "sb.toml:2:8: health.path \"/_/push\" is also push.path",
                "sb.toml:4:8: app_list.path \"/x\" is also the path of an app (line 6)",
            ]
        );
    }
}
