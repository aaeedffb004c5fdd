//! The server's configuration file, in two stages: TOML into raw serde shapes
//! (unknown keys refused), then meaning checks that need the whole file (paths
//! mounted twice, reserved paths, plugin names). Every error names the file,
//! line and column and what was expected; all problems are collected before the
//! server refuses to start.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// The path prefix reserved for the server's own endpoints (health, metrics, push).
pub const RESERVED_PREFIX: &str = "/_/";

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("{}", ConfigProblems(problems))]
    Invalid {
        /// Every problem found, in file order.
        problems: Vec<ConfigProblem>,
    },
}

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The config file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

struct ConfigProblems<'a>(&'a [ConfigProblem]);

impl fmt::Display for ConfigProblems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// A config file's text, for turning byte spans into line and column.
pub struct SourceFile {
    path: PathBuf,
    text: String,
}

impl SourceFile {
    /// Wraps already-read text (used by tests and `check`).
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        SourceFile {
            path: path.into(),
            text: text.into(),
        }
    }

    /// Reads a config file.
    ///
    /// # Errors
    /// [`LoadConfigError::Read`] if it cannot be read.
    pub fn read(path: &Path) -> Result<Self, LoadConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(SourceFile::new(path, text))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn problem(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigProblem {
        let offset = span.map_or(0, |s| s.start.min(self.text.len()));
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigProblem {
            path: self.path.clone(),
            line,
            column,
            message: message.into(),
        }
    }

    /// The 1-based line of a byte offset.
    fn line_of(&self, offset: usize) -> usize {
        self.problem(Some(offset..offset), "").line
    }
}

/// A number of bytes, written as an integer or a string such as `"16 MiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"16 MiB\", \"512 KiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse::<bytesize::ByteSize>().map(|s| ByteSize(s.as_u64())).map_err(|_| {
                    E::custom(format!(
                        "invalid size {v:?}: expected a size such as \"16 MiB\", \"512 KiB\" or a number of bytes"
                    ))
                })
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A duration written as a string such as `"30s"`, `"500ms"` or `"2m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"500ms\" or \"2m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(v).map(HumanDuration).map_err(|e| {
                    E::custom(format!(
                        "invalid duration {v:?} ({e}): expected a duration such as \"30s\", \"500ms\" or \"2m\""
                    ))
                })
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// Stage 1: the file's shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    push: RawPush,
    #[serde(default)]
    health: RawEndpoint,
    #[serde(default)]
    metrics: RawEndpoint,
    #[serde(default)]
    app: Vec<RawApp>,
}

/// A status endpoint: where, and who may ask.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    path: Option<Spanned<String>>,
    allowed_ips: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPush {
    path: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    token_env: Option<Spanned<String>>,
    allowed_ips: Option<Vec<Spanned<String>>>,
    trusted_proxies: Option<Vec<Spanned<String>>>,
    max_body: Option<Spanned<ByteSize>>,
    max_batch: Option<Spanned<usize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<SocketAddr>>,
    plugin_dir: Option<PathBuf>,
    static_dir: Option<PathBuf>,
    max_message_size: Option<Spanned<ByteSize>>,
    max_frame_size: Option<Spanned<ByteSize>>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    allowed_origins: Option<Vec<String>>,
    handshake_timeout: Option<Spanned<HumanDuration>>,
    ping_interval: Option<Spanned<HumanDuration>>,
    close_timeout: Option<Spanned<HumanDuration>>,
    write_timeout: Option<Spanned<HumanDuration>>,
    shutdown_grace: Option<Spanned<HumanDuration>>,
    outbound_queue: Option<Spanned<usize>>,
    outbound_queue_bytes: Option<Spanned<ByteSize>>,
    read_buffer_size: Option<Spanned<ByteSize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    path: Option<Spanned<String>>,
    paths: Option<Vec<Spanned<String>>>,
    plugin: Spanned<String>,
    ping_payload: Option<String>,
    #[serde(default)]
    subprotocols: Vec<String>,
    allowed_origins: Option<Vec<String>>,
    info_headers: Option<Vec<String>>,
    #[serde(default)]
    config: Option<Spanned<toml::Table>>,
}

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
    /// The apps to mount, in file order.
    pub apps: Vec<AppConfig>,
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
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Largest request body, in bytes (larger: 413).
    pub max_body: usize,
    /// Most pushes in one batch request.
    pub max_batch: usize,
}

/// Where a status endpoint is served and who may ask.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Its path.
    pub path: String,
    /// Addresses allowed to ask (the rest get 403).
    pub allowed_ips: Vec<ipnet::IpNet>,
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
    pub allowed_origins: Vec<String>,
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
    /// Most messages queued for one connection; beyond, it is closed (slow consumer).
    pub outbound_queue: usize,
    /// Most bytes queued for one connection; beyond, it is closed (slow consumer).
    pub outbound_queue_bytes: usize,
    /// Read buffer per WebSocket connection.
    pub read_buffer_size: usize,
}

/// One mounted app.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// The app's first path, which also names it in logs and messages.
    pub path: String,
    /// Every URL path the one app instance is mounted on (`path`, or `paths`).
    pub paths: Vec<String>,
    /// Line of the (first) path, for messages.
    pub line: usize,
    /// Payload of the keepalive pings sent to this app's clients (empty by default).
    pub ping_payload: String,
    /// The plugin's name (`chat` → `lib<chat>.so` in `plugin_dir`) or a path to a plugin file.
    pub plugin: String,
    /// The plugin file this resolves to.
    pub plugin_file: PathBuf,
    /// Subprotocols the server may choose on the app's behalf, in preference order.
    pub subprotocols: Vec<String>,
    /// Origins allowed for this app (overrides the server's list).
    pub allowed_origins: Vec<String>,
    /// Handshake headers kept for `Host::info` (lowercase).
    pub info_headers: Vec<String>,
    /// The `[app.config]` table, as JSON text for the plugin.
    pub config_json: String,
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
            toml::from_str(&source.text).map_err(|e| LoadConfigError::Invalid {
                problems: vec![source.problem(e.span(), e.message().trim_end_matches('\n'))],
            })?;
        let mut problems = Vec::new();
        let config = validate(raw, source, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(LoadConfigError::Invalid { problems })
        }
    }
}

/// The directory relative paths in the config are resolved against.
fn base_dir(source: &SourceFile) -> PathBuf {
    match source.path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The directory of the running executable: where `cargo build` puts the plugins too.
fn executable_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_owned))
        .unwrap_or_else(|| PathBuf::from("."))
}

fn validate(raw: RawConfig, source: &SourceFile, problems: &mut Vec<ConfigProblem>) -> Config {
    let base = base_dir(source);
    let s = raw.server;
    let duration =
        |value: Option<Spanned<HumanDuration>>, default: Duration, problems: &mut Vec<_>| {
            match value {
                Some(v) if v.get_ref().0.is_zero() => {
                    problems.push(
                        source.problem(Some(v.span()), "a duration here must be greater than zero"),
                    );
                    default
                }
                Some(v) => v.into_inner().0,
                None => default,
            }
        };
    let size = |value: Option<Spanned<ByteSize>>, default: u64, min: u64, problems: &mut Vec<_>| {
        match value {
            Some(v) if v.get_ref().0 < min => {
                problems.push(source.problem(
                    Some(v.span()),
                    format!("a size here must be at least {min} bytes"),
                ));
                default as usize
            }
            Some(v) => usize::try_from(v.into_inner().0).unwrap_or(usize::MAX),
            None => default as usize,
        }
    };

    let max_message_size = size(s.max_message_size, 16 << 20, 1, problems);
    let max_frame_size = size(s.max_frame_size, max_message_size as u64, 1, problems);
    let outbound_queue = match s.outbound_queue {
        Some(v) if *v.get_ref() == 0 => {
            problems.push(source.problem(Some(v.span()), "outbound_queue must be at least 1"));
            1024
        }
        Some(v) => v.into_inner(),
        None => 1024,
    };
    let server = ServerConfig {
        listen: s.listen.map_or(
            SocketAddr::from(([127, 0, 0, 1], 8080)),
            Spanned::into_inner,
        ),
        plugin_dir: s
            .plugin_dir
            .map_or_else(executable_dir, |dir| base.join(dir)),
        static_dir: s.static_dir.map(|dir| base.join(dir)),
        max_message_size,
        max_frame_size: max_frame_size.min(max_message_size),
        max_connections: s.max_connections.unwrap_or(10_000),
        max_connections_per_ip: s.max_connections_per_ip.unwrap_or(0),
        allowed_origins: s.allowed_origins.unwrap_or_default(),
        handshake_timeout: duration(s.handshake_timeout, Duration::from_secs(5), problems),
        ping_interval: duration(s.ping_interval, Duration::from_secs(30), problems),
        close_timeout: duration(s.close_timeout, Duration::from_secs(5), problems),
        write_timeout: duration(s.write_timeout, Duration::from_secs(10), problems),
        shutdown_grace: duration(s.shutdown_grace, Duration::from_secs(10), problems),
        outbound_queue,
        outbound_queue_bytes: size(s.outbound_queue_bytes, 64 << 20, 1, problems),
        read_buffer_size: size(s.read_buffer_size, 4096, 256, problems),
    };

    let mut first_mount: HashMap<String, usize> = HashMap::new();
    let mut apps = Vec::new();
    for app in raw.app {
        let spanned_paths = match (app.path, app.paths) {
            (Some(path), None) => vec![path],
            (None, Some(paths)) if !paths.is_empty() => paths,
            (Some(path), Some(_)) => {
                problems.push(
                    source.problem(Some(path.span()), "give an app `path` or `paths`, not both"),
                );
                continue;
            }
            _ => {
                problems.push(source.problem(
                    Some(app.plugin.span()),
                    "this app has no `path` (or `paths = [...]` to mount one instance on several paths)",
                ));
                continue;
            }
        };
        let line = source.line_of(spanned_paths[0].span().start);
        let mut paths = Vec::new();
        for spanned in spanned_paths {
            let span = spanned.span();
            let path = spanned.into_inner();
            if let Some(problem) = app_path_problem(&path) {
                problems.push(source.problem(Some(span), problem));
            } else if let Some(first) = first_mount.get(&path) {
                problems.push(source.problem(
                    Some(span),
                    format!("app path {path:?} is mounted twice (first at line {first})"),
                ));
            } else {
                first_mount.insert(path.clone(), source.line_of(span.start));
            }
            paths.push(path);
        }
        let path = paths[0].clone();

        let plugin_span = app.plugin.span();
        let plugin = app.plugin.into_inner();
        let plugin_file = if plugin.is_empty() {
            problems.push(source.problem(Some(plugin_span), "plugin name is empty"));
            PathBuf::new()
        } else if plugin.contains('/') || plugin.ends_with(std::env::consts::DLL_SUFFIX) {
            base.join(&plugin)
        } else {
            server.plugin_dir.join(plugin_file_name(&plugin))
        };

        let config_json = match app.config {
            Some(table) => match serde_json::to_string(table.get_ref()) {
                Ok(json) => json,
                Err(e) => {
                    problems.push(source.problem(
                        Some(table.span()),
                        format!("app config cannot be passed to the plugin as JSON: {e}"),
                    ));
                    String::new()
                }
            },
            None => "{}".to_owned(),
        };

        apps.push(AppConfig {
            path,
            paths,
            line,
            ping_payload: app.ping_payload.unwrap_or_default(),
            plugin,
            plugin_file,
            subprotocols: app.subprotocols,
            allowed_origins: app
                .allowed_origins
                .unwrap_or_else(|| server.allowed_origins.clone()),
            info_headers: app
                .info_headers
                .map(|names| names.iter().map(|n| n.to_ascii_lowercase()).collect())
                .unwrap_or_else(|| DEFAULT_INFO_HEADERS.iter().map(|&n| n.to_owned()).collect()),
            config_json,
        });
    }

    let push = validate_push(raw.push, source, &apps, problems);
    let health = validate_endpoint(
        raw.health,
        "health",
        "/_/health",
        &["0.0.0.0/0", "::/0"],
        source,
        problems,
    );
    let metrics = validate_endpoint(
        raw.metrics,
        "metrics",
        "/_/metrics",
        &["127.0.0.0/8", "::1"],
        source,
        problems,
    );
    let taken: Vec<&str> = apps
        .iter()
        .flat_map(|a| a.paths.iter().map(String::as_str))
        .collect();
    for (name, path) in [
        ("push", &push.path),
        ("health", &health.path),
        ("metrics", &metrics.path),
    ] {
        if name != "push" && taken.contains(&path.as_str()) {
            problems.push(source.problem(
                None,
                format!("{name}.path {path:?} is also the path of an app"),
            ));
        }
    }
    if push.path == health.path || push.path == metrics.path || health.path == metrics.path {
        problems.push(source.problem(None, "push.path, health.path and metrics.path must differ"));
    }
    Config {
        source: source.path.clone(),
        server,
        push,
        health,
        metrics,
        apps,
    }
}

/// An allow-list of addresses and networks from the config, or `default`;
/// every entry that does not parse is a located problem.
fn ip_nets(
    list: Option<Vec<Spanned<String>>>,
    default: &[&str],
    source: &SourceFile,
    problems: &mut Vec<ConfigProblem>,
) -> Vec<ipnet::IpNet> {
    let Some(list) = list else {
        return default.iter().filter_map(|n| parse_ip_net(n)).collect();
    };
    list.into_iter()
        .filter_map(|item| {
            let net = parse_ip_net(item.get_ref());
            if net.is_none() {
                problems.push(source.problem(
                    Some(item.span()),
                    format!(
                        "{:?} is not an IP address or network (expected \"127.0.0.1\", \"::1\" or \"10.0.0.0/8\")",
                        item.get_ref()
                    ),
                ));
            }
            net
        })
        .collect()
}

fn validate_endpoint(
    raw: RawEndpoint,
    name: &str,
    default_path: &str,
    default_ips: &[&str],
    source: &SourceFile,
    problems: &mut Vec<ConfigProblem>,
) -> EndpointConfig {
    let path = match raw.path {
        Some(path) if !path.get_ref().starts_with('/') => {
            problems.push(source.problem(
                Some(path.span()),
                format!("{name}.path {:?} must start with '/'", path.get_ref()),
            ));
            default_path.to_owned()
        }
        Some(path) => path.into_inner(),
        None => default_path.to_owned(),
    };
    let allowed_ips = ip_nets(raw.allowed_ips, default_ips, source, problems);
    EndpointConfig { path, allowed_ips }
}

fn validate_push(
    raw: RawPush,
    source: &SourceFile,
    apps: &[AppConfig],
    problems: &mut Vec<ConfigProblem>,
) -> PushConfig {
    let path = match raw.path {
        Some(path) => {
            let span = path.span();
            let path = path.into_inner();
            if !path.starts_with('/') {
                problems.push(source.problem(
                    Some(span),
                    format!("push path {path:?} must start with '/'"),
                ));
            } else if let Some(app) = apps.iter().find(|a| a.paths.contains(&path)) {
                problems.push(source.problem(
                    Some(span),
                    format!(
                        "push path {path:?} is also the path of an app (line {})",
                        app.line
                    ),
                ));
            }
            path
        }
        None => DEFAULT_PUSH_PATH.to_owned(),
    };
    let token = match (raw.token, raw.token_env) {
        (Some(token), Some(env)) => {
            problems.push(source.problem(
                Some(env.span()),
                "set push.token or push.token_env, not both",
            ));
            Some(token.into_inner())
        }
        (Some(token), None) if token.get_ref().is_empty() => {
            problems.push(source.problem(
                Some(token.span()),
                "push.token is empty (leave it out to use the IP allow-list alone)",
            ));
            None
        }
        (Some(token), None) => Some(token.into_inner()),
        (None, Some(env)) => match std::env::var(env.get_ref()) {
            Ok(token) if !token.is_empty() => Some(token),
            _ => {
                problems.push(source.problem(
                    Some(env.span()),
                    format!("push.token_env names the environment variable {}, which is not set or empty", env.get_ref()),
                ));
                None
            }
        },
        (None, None) => None,
    };
    let allowed_ips = ip_nets(raw.allowed_ips, &["127.0.0.0/8", "::1"], source, problems);
    let trusted_proxies = ip_nets(raw.trusted_proxies, &[], source, problems);
    let max_body = match raw.max_body {
        Some(v) if v.get_ref().0 == 0 => {
            problems.push(source.problem(Some(v.span()), "push.max_body must be at least 1 byte"));
            1 << 20
        }
        Some(v) => usize::try_from(v.into_inner().0).unwrap_or(usize::MAX),
        None => 1 << 20,
    };
    let max_batch = match raw.max_batch {
        Some(v) if *v.get_ref() == 0 => {
            problems.push(source.problem(Some(v.span()), "push.max_batch must be at least 1"));
            1000
        }
        Some(v) => v.into_inner(),
        None => 1000,
    };
    PushConfig {
        path,
        token,
        allowed_ips,
        trusted_proxies,
        max_body,
        max_batch,
    }
}

/// What is wrong with an app path, if anything.
fn app_path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        Some(format!("app path {path:?} must start with '/'"))
    } else if path.starts_with(RESERVED_PREFIX) || path == "/_" {
        Some(format!(
            "app path {path:?} is reserved for the server's own endpoints ({RESERVED_PREFIX}...)"
        ))
    } else if path.contains(['?', '#', ' ']) {
        Some(format!(
            "app path {path:?} may not contain '?', '#' or spaces"
        ))
    } else {
        None
    }
}

/// `chat` → `libchat.so` (the platform's shared-library naming).
pub fn plugin_file_name(name: &str) -> String {
    format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// Whether an `Origin` header value passes an allow-list (empty list: any origin).
pub fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
}

/// Whether an address is loopback (used for default allow-lists).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
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
                "sb.toml:6:8: app path \"/chat\" is mounted twice (first at line 2)",
                "sb.toml:10:8: app path \"nope\" must start with '/'",
                "sb.toml:14:8: app path \"/_/push\" is reserved for the server's own endpoints (/_/...)",
            ]
        );
    }

    #[test]
    fn app_config_becomes_json_and_plugin_names_become_files() {
        let config = parse(
            "[server]\nplugin_dir = \"plugins\"\n[[app]]\npath = \"/chat\"\nplugin = \"chat\"\n[app.config]\nhistory = 50\n",
        )
        .unwrap();
        let app = &config.apps[0];
        assert_eq!(app.config_json, r#"{"history":50}"#);
        assert_eq!(
            app.plugin_file,
            PathBuf::from(".")
                .join("plugins")
                .join(plugin_file_name("chat"))
        );
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
            vec!["sb.toml:2:8: push path \"/chat\" is also the path of an app (line 4)"]
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
    fn origins_are_matched_case_insensitively() {
        assert!(origin_allowed(&[], "http://x"));
        let list = vec!["https://a.example".to_owned()];
        assert!(origin_allowed(&list, "https://A.example"));
        assert!(!origin_allowed(&list, "https://b.example"));
    }
}
