//! Stage 2 of reading a config: meaning. Defaults are applied, values are
//! checked (one helper per kind of check: positive durations, lower bounds,
//! endpoint paths, address lists, the push token), and the checks that need
//! the whole file run once: app paths mounted twice, paths reserved for the
//! server, and the server's own endpoints clashing with each other or an app.
//! Every problem is collected, located, before the caller refuses the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::mounts::Located;
use super::raw::{RawAdmin, RawApp, RawCluster, RawConfig, RawEndpoint, RawPush, RawServer};
use super::source::{ConfigProblem, SourceFile};
use super::units::{ByteSize, HumanDuration};
use super::DeflateSettings;
use super::{
    parse_ip_net, AdminConfig, AppConfig, ClusterConfig, Config, EndpointConfig, PluginSpec,
    PushConfig, ReloadMode, ServerConfig, TlsConfig, DEFAULT_INFO_HEADERS, RESERVED_PREFIX,
};
use crate::rate::RateLimits;

/// The longest timeout or interval the config accepts.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Connections one address may hold unless the config says otherwise: enough
/// for any browser (a few tabs of a few apps each), too few for one machine
/// to take every slot of the server.
pub(super) const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 256;

/// Messages per second one client may send unless the config says otherwise:
/// far more than a person types or a page sends, far fewer than a flood.
pub(super) const DEFAULT_MESSAGE_RATE: u64 = 1000;

/// Bytes per second one client may send unless the config says otherwise.
pub(super) const DEFAULT_BYTE_RATE: u64 = 64 << 20;

/// Messages smaller than this go uncompressed: deflating a message costs a
/// fixed 10 µs or so (resetting the compressor, building its Huffman trees)
/// before it saves anything, and a 400-byte JSON message shrinks by only a
/// third on its own (docs/performance.md).
pub(super) const DEFAULT_COMPRESSION_THRESHOLD: usize = 1024;

/// 4 KiB windows: a client that keeps its compression context makes the
/// server keep this much of what it sent (32 KiB at 15 bits), and priming the
/// decompressor with it is on every message's path. A JSON message of a few
/// KiB compresses as well with it as with 32 KiB.
pub(super) const DEFAULT_COMPRESSION_WINDOW_BITS: u8 = 12;

/// `compression = "on" | "off"`; `default` when absent.
fn compression_switch(
    value: Option<Spanned<String>>,
    default: bool,
    key: &str,
    check: &mut Checker<'_>,
) -> bool {
    match value {
        None => default,
        Some(value) => match value.get_ref().as_str() {
            "on" => true,
            "off" => false,
            other => {
                check.report(
                    Some(value.span()),
                    format!("{key} = {other:?}: expected \"on\" or \"off\""),
                );
                default
            }
        },
    }
}

/// A byte range in the config file.
type Span = std::ops::Range<usize>;

/// The problems found so far, and the file they are located in.
struct Checker<'a> {
    source: &'a SourceFile,
    problems: &'a mut Vec<ConfigProblem>,
}

impl Checker<'_> {
    fn report(&mut self, span: Option<Span>, message: impl Into<String>) {
        self.problems.push(self.source.problem(span, message));
    }

    /// A duration that must be greater than zero.
    /// A duration greater than zero and at most [`MAX_DURATION`] (a larger
    /// one would overflow the clock arithmetic of every connection).
    fn positive_duration(
        &mut self,
        value: Option<Spanned<HumanDuration>>,
        default: Duration,
    ) -> Duration {
        match value {
            Some(v) if v.get_ref().0.is_zero() => {
                self.report(Some(v.span()), "a duration here must be greater than zero");
                default
            }
            Some(v) if v.get_ref().0 > MAX_DURATION => {
                self.report(
                    Some(v.span()),
                    "a duration here must be at most a day (\"24h\")",
                );
                default
            }
            Some(v) => v.into_inner().0,
            None => default,
        }
    }

    /// A size of at least `min` bytes.
    fn size_at_least(
        &mut self,
        value: Option<Spanned<ByteSize>>,
        min: u64,
        default: u64,
        name: &str,
    ) -> usize {
        let bytes = match value {
            Some(v) if v.get_ref().0 < min => {
                let unit = if min == 1 { "byte" } else { "bytes" };
                self.report(
                    Some(v.span()),
                    format!("{name} must be at least {min} {unit}"),
                );
                default
            }
            Some(v) => v.into_inner().0,
            None => default,
        };
        usize::try_from(bytes).unwrap_or(usize::MAX)
    }

    /// A count of at least `min`.
    fn count_at_least(
        &mut self,
        value: Option<Spanned<usize>>,
        min: usize,
        default: usize,
        name: &str,
    ) -> usize {
        match value {
            Some(v) if *v.get_ref() < min => {
                self.report(Some(v.span()), format!("{name} must be at least {min}"));
                default
            }
            Some(v) => v.into_inner(),
            None => default,
        }
    }

    /// The path of one of the server's endpoints: starts with `/`.
    fn endpoint_path(
        &mut self,
        value: Option<Spanned<String>>,
        name: &str,
        default: &str,
    ) -> (String, Option<Span>) {
        match value {
            Some(path) if !path.get_ref().starts_with('/') => {
                self.report(
                    Some(path.span()),
                    format!("{name} {:?} must start with '/'", path.get_ref()),
                );
                (default.to_owned(), None)
            }
            Some(path) => {
                let span = path.span();
                (path.into_inner(), Some(span))
            }
            None => (default.to_owned(), None),
        }
    }

    /// An allow-list of addresses and networks, or `default`; every entry that
    /// does not parse is a problem.
    fn ip_nets(
        &mut self,
        list: Option<Vec<Spanned<String>>>,
        default: &[&str],
    ) -> Vec<ipnet::IpNet> {
        let Some(list) = list else {
            return default.iter().filter_map(|n| parse_ip_net(n)).collect();
        };
        list.into_iter()
            .filter_map(|item| {
                let net = parse_ip_net(item.get_ref());
                if net.is_none() {
                    self.report(
                        Some(item.span()),
                        format!(
                            "{:?} is not an IP address or network (expected \"127.0.0.1\", \"::1\" or \"10.0.0.0/8\")",
                            item.get_ref()
                        ),
                    );
                }
                net
            })
            .collect()
    }
}

/// The directory relative paths in the config are resolved against.
fn base_dir(source: &SourceFile) -> PathBuf {
    match source.path().parent() {
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

/// Checks a whole file's raw shape and builds the typed config.
pub(super) fn validate(
    raw: RawConfig,
    source: &SourceFile,
    problems: &mut Vec<ConfigProblem>,
) -> Config {
    let mut check = Checker { source, problems };
    let base = base_dir(source);
    let server = validate_server(raw.server, &base, &mut check);
    let config_keys = super::app_config::key_positions(source);
    let (mut apps, located): (Vec<AppConfig>, Vec<Located>) = raw
        .app
        .into_iter()
        .enumerate()
        .filter_map(|(index, app)| {
            let keys = config_keys.get(index).cloned().unwrap_or_default();
            validate_app(app, keys, &server, &base, &mut check)
        })
        .unzip();
    let names = super::mounts::check(&located, check.source, check.problems);
    for (app, name) in apps.iter_mut().zip(names) {
        app.name = name;
    }
    let (push, push_span, push_trusted) = validate_push(raw.push, &mut check);
    let mut server = server;
    server.trusted_proxies.extend(push_trusted);
    let (health, health_span) = validate_endpoint(
        raw.health,
        "health",
        "/_/health",
        &["127.0.0.0/8", "::1"],
        &mut check,
    );
    let (metrics, metrics_span) = validate_endpoint(
        raw.metrics,
        "metrics",
        "/_/metrics",
        &["127.0.0.0/8", "::1"],
        &mut check,
    );
    let (app_list, apps_span) = validate_endpoint(
        raw.app_list,
        "app_list",
        "/_/apps",
        &["0.0.0.0/0", "::/0"],
        &mut check,
    );
    let (admin, admin_span) = validate_admin(raw.admin, &mut check);
    check_endpoint_clashes(
        &[
            ("admin.path", &admin.endpoint.path, admin_span),
            ("push.path", &push.path, push_span),
            ("health.path", &health.path, health_span),
            ("metrics.path", &metrics.path, metrics_span),
            ("app_list.path", &app_list.path, apps_span),
        ],
        &apps,
        &mut check,
    );
    let log = validate_log(raw.log, &mut check);
    let cluster = raw.cluster.map(|c| validate_cluster(c, &mut check));
    Config {
        log,
        cluster,
        source: source.path().to_owned(),
        server,
        push,
        health,
        metrics,
        app_list,
        admin,
        apps,
    }
}

fn validate_server(s: RawServer, base: &Path, check: &mut Checker<'_>) -> ServerConfig {
    let source = check.source;
    let listen = s.listen.map_or(
        SocketAddr::from(([127, 0, 0, 1], 8080)),
        Spanned::into_inner,
    );
    let max_message_size = check.size_at_least(s.max_message_size, 1, 16 << 20, "max_message_size");
    let max_frame_size = check.size_at_least(
        s.max_frame_size,
        1,
        max_message_size as u64,
        "max_frame_size",
    );
    ServerConfig {
        listen,
        plugin_dir: s
            .plugin_dir
            .map_or_else(executable_dir, |dir| base.join(dir)),
        static_dir: s.static_dir.map(|dir| base.join(dir)),
        max_message_size,
        max_frame_size: max_frame_size.min(max_message_size),
        max_connections: s.max_connections.unwrap_or(10_000),
        max_connections_per_ip: s
            .max_connections_per_ip
            .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_IP),
        allowed_origins: s.allowed_origins.unwrap_or_default(),
        handshake_timeout: check.positive_duration(s.handshake_timeout, Duration::from_secs(5)),
        ping_interval: check.positive_duration(s.ping_interval, Duration::from_secs(30)),
        close_timeout: check.positive_duration(s.close_timeout, Duration::from_secs(5)),
        write_timeout: check.positive_duration(s.write_timeout, Duration::from_secs(10)),
        shutdown_grace: check.positive_duration(s.shutdown_grace, Duration::from_secs(10)),
        outbound_queue: check.count_at_least(s.outbound_queue, 1, 1024, "outbound_queue"),
        outbound_queue_bytes: check.size_at_least(
            s.outbound_queue_bytes,
            1,
            64 << 20,
            "outbound_queue_bytes",
        ),
        read_buffer_size: check.size_at_least(s.read_buffer_size, 256, 4096, "read_buffer_size"),
        memory_budget: check.size_at_least(s.memory_budget, 1 << 20, 512 << 20, "memory_budget"),
        runtime_dir: s.runtime_dir.map_or_else(
            || crate::runtime_dir::default_for(source.path()),
            |dir| base.join(dir),
        ),
        watch: s.watch.unwrap_or(false),
        trusted_proxies: check.ip_nets(s.trusted_proxies, &[]),
        slow_callback: check.positive_duration(s.slow_callback, Duration::from_millis(50)),
        rate_limits: RateLimits {
            messages: s.message_rate.unwrap_or(DEFAULT_MESSAGE_RATE),
            bytes: s.byte_rate.map_or(DEFAULT_BYTE_RATE, |b| b.into_inner().0),
        },
        compression: {
            let on = compression_switch(s.compression, true, "compression", check);
            let threshold = s
                .compression_threshold
                .map_or(DEFAULT_COMPRESSION_THRESHOLD, |b| {
                    usize::try_from(b.into_inner().0).unwrap_or(usize::MAX)
                });
            let window_bits = match s.compression_window_bits {
                None => DEFAULT_COMPRESSION_WINDOW_BITS,
                Some(bits) if (8..=15).contains(bits.get_ref()) => bits.into_inner(),
                Some(bits) => {
                    check.report(
                        Some(bits.span()),
                        format!(
                            "compression_window_bits = {}: expected 8 to 15 (a window of 2^bits bytes)",
                            bits.get_ref()
                        ),
                    );
                    DEFAULT_COMPRESSION_WINDOW_BITS
                }
            };
            on.then_some(DeflateSettings {
                threshold,
                window_bits,
                client_context_takeover: s.compression_client_context_takeover.unwrap_or(false),
            })
        },
        tls: s.tls.map(|tls| {
            let listen_plain = &listen;
            let listen = tls.listen.map(|listen| {
                if *listen.get_ref() == *listen_plain && listen_plain.port() != 0 {
                    check.report(
                        Some(listen.span()),
                        "server.tls.listen is the same as server.listen: leave it out to serve TLS on listen instead",
                    );
                }
                listen.into_inner()
            });
            TlsConfig {
                cert: base.join(tls.cert),
                key: base.join(tls.key),
                listen,
            }
        }),
    }
}

fn validate_app(
    app: RawApp,
    config_keys: Vec<(String, Span)>,
    server: &ServerConfig,
    base: &Path,
    check: &mut Checker<'_>,
) -> Option<(AppConfig, Located)> {
    let spanned_paths = match (app.path, app.paths) {
        (Some(path), None) => vec![path],
        (None, Some(paths)) if !paths.is_empty() => paths,
        (Some(path), Some(_)) => {
            check.report(Some(path.span()), "give an app `path` or `paths`, not both");
            return None;
        }
        _ => {
            check.report(
                Some(app.plugin.span()),
                "this app has no `path` (or `paths = [...]` to mount one instance on several paths)",
            );
            return None;
        }
    };
    let line = check.source.line_of(spanned_paths[0].span().start);
    let mut paths = Vec::new();
    let mut located = Located {
        paths: Vec::new(),
        subprotocols: app
            .subprotocols
            .iter()
            .map(|p| (p.get_ref().clone(), p.span()))
            .collect(),
        name: app.name.as_ref().map(|n| (n.get_ref().clone(), n.span())),
    };
    for spanned in spanned_paths {
        let span = spanned.span();
        let path = spanned.into_inner();
        if let Some(problem) = super::mounts::path_problem(&path, RESERVED_PREFIX) {
            check.report(Some(span), problem);
        } else {
            located.paths.push((path.clone(), span));
        }
        paths.push(path);
    }

    let plugin_span = app.plugin.span();
    let plugin = app.plugin.into_inner();
    let plugin = if plugin.is_empty() {
        check.report(Some(plugin_span), "plugin name is empty");
        PluginSpec::Named(plugin)
    } else if plugin.contains('/') || plugin.ends_with(std::env::consts::DLL_SUFFIX) {
        PluginSpec::File(base.join(&plugin))
    } else {
        PluginSpec::Named(plugin)
    };

    let (config_json, config_line) = match app.config {
        Some(table) => {
            let table_line = check.source.line_of(table.span().start);
            match serde_json::to_string(table.get_ref()) {
                Ok(json) => (json, table_line),
                Err(e) => {
                    check.report(
                        Some(table.span()),
                        format!("app config cannot be passed to the plugin as JSON: {e}"),
                    );
                    (String::new(), table_line)
                }
            }
        }
        None => ("{}".to_owned(), line),
    };

    let reload = match app.reload {
        None => ReloadMode::Migrate,
        Some(mode) => match mode.get_ref().as_str() {
            "migrate" => ReloadMode::Migrate,
            "drain" => ReloadMode::Drain,
            "restart" => ReloadMode::Restart,
            other => {
                check.report(
                    Some(mode.span()),
                    format!("reload = {other:?}: expected \"migrate\", \"drain\" or \"restart\""),
                );
                ReloadMode::Migrate
            }
        },
    };
    let drain_timeout = check.positive_duration(app.drain_timeout, Duration::from_secs(30));
    // The server's compression settings, unless the app turns it off (or on,
    // when the server's default is off).
    let compression = match compression_switch(
        app.compression,
        server.compression.is_some(),
        "compression",
        check,
    ) {
        false => None,
        true => Some(server.compression.unwrap_or(DeflateSettings {
            threshold: DEFAULT_COMPRESSION_THRESHOLD,
            window_bits: DEFAULT_COMPRESSION_WINDOW_BITS,
            client_context_takeover: false,
        })),
    };
    let rate_limits = RateLimits {
        messages: app.message_rate.unwrap_or(server.rate_limits.messages),
        bytes: app
            .byte_rate
            .map_or(server.rate_limits.bytes, |b| b.into_inner().0),
    };
    let app = AppConfig {
        name: String::new(),
        reload,
        drain_timeout,
        rate_limits,
        compression,
        path: paths[0].clone(),
        paths,
        line,
        ping_payload: app.ping_payload.unwrap_or_default(),
        plugin,
        subprotocols: app
            .subprotocols
            .into_iter()
            .map(Spanned::into_inner)
            .collect(),
        allowed_origins: app
            .allowed_origins
            .unwrap_or_else(|| server.allowed_origins.clone()),
        info_headers: app
            .info_headers
            .map(|names| names.iter().map(|n| n.to_ascii_lowercase()).collect())
            .unwrap_or_else(|| DEFAULT_INFO_HEADERS.iter().map(|&n| n.to_owned()).collect()),
        config_json,
        config_line,
        config_keys: config_keys
            .into_iter()
            .map(|(key, span)| (key, check.source.position(span.start)))
            .collect(),
    };
    Some((app, located))
}

fn validate_endpoint(
    raw: RawEndpoint,
    name: &str,
    default_path: &str,
    default_ips: &[&str],
    check: &mut Checker<'_>,
) -> (EndpointConfig, Option<Span>) {
    let (path, span) = check.endpoint_path(raw.path, &format!("{name}.path"), default_path);
    let allowed_ips = check.ip_nets(raw.allowed_ips, default_ips);
    (EndpointConfig { path, allowed_ips }, span)
}

/// `[admin]`: loopback only by default; other addresses only with a token.
fn validate_admin(raw: RawAdmin, check: &mut Checker<'_>) -> (AdminConfig, Option<Span>) {
    let ips_span = raw
        .allowed_ips
        .as_ref()
        .and_then(|ips| ips.first().map(Spanned::span));
    let (endpoint, span) = validate_endpoint(
        RawEndpoint {
            path: raw.path,
            allowed_ips: raw.allowed_ips,
        },
        "admin",
        "/_/admin",
        &["127.0.0.0/8", "::1"],
        check,
    );
    let token = match raw.token {
        Some(token) if token.get_ref().len() < 16 => {
            check.report(
                Some(token.span()),
                "admin.token must be at least 16 characters",
            );
            None
        }
        Some(token) => Some(token.into_inner()),
        None => None,
    };
    let beyond_loopback = endpoint
        .allowed_ips
        .iter()
        .any(|net| !net.network().is_loopback());
    if beyond_loopback && token.is_none() {
        check.report(
            ips_span,
            "admin.allowed_ips lets other machines in: set admin.token too",
        );
    }
    (AdminConfig { endpoint, token }, span)
}

/// `[push]`, and the proxies its old `trusted_proxies` key names (they now
/// count for every check, as `[server] trusted_proxies`).
fn validate_push(
    raw: RawPush,
    check: &mut Checker<'_>,
) -> (PushConfig, Option<Span>, Vec<ipnet::IpNet>) {
    let (path, span) = check.endpoint_path(raw.path, "push.path", super::DEFAULT_PUSH_PATH);
    let token = match (raw.token, raw.token_env) {
        (Some(token), Some(env)) => {
            check.report(
                Some(env.span()),
                "set push.token or push.token_env, not both",
            );
            Some(token.into_inner())
        }
        (Some(token), None) if token.get_ref().is_empty() => {
            check.report(
                Some(token.span()),
                "push.token is empty (leave it out to use the IP allow-list alone)",
            );
            None
        }
        (Some(token), None) => Some(token.into_inner()),
        (None, Some(env)) => match std::env::var(env.get_ref()) {
            Ok(token) if !token.is_empty() => Some(token),
            _ => {
                check.report(
                    Some(env.span()),
                    format!(
                        "push.token_env names the environment variable {}, which is not set or empty",
                        env.get_ref()
                    ),
                );
                None
            }
        },
        (None, None) => None,
    };
    let push = PushConfig {
        path,
        token,
        allowed_ips: check.ip_nets(raw.allowed_ips, &["127.0.0.0/8", "::1"]),
        max_body: check.size_at_least(raw.max_body, 1, 1 << 20, "push.max_body"),
        max_batch: check.count_at_least(raw.max_batch, 1, 1000, "push.max_batch"),
        body_timeout: check.positive_duration(raw.body_timeout, Duration::from_secs(10)),
    };
    let trusted = check.ip_nets(raw.trusted_proxies, &[]);
    (push, span, trusted)
}

fn validate_cluster(raw: RawCluster, check: &mut Checker<'_>) -> ClusterConfig {
    let redis_span = raw.redis.span();
    let redis = raw.redis.into_inner();
    if let Err(error) = redis::Client::open(redis.as_str()) {
        check.report(
            Some(redis_span),
            format!("cluster.redis = {redis:?} is not a Redis URL (redis://host:port/db): {error}"),
        );
    }
    let name_ok = |name: &str| {
        !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let node_id_given = raw.node_id.is_some();
    let node_id = match raw.node_id {
        Some(id) if !name_ok(id.get_ref()) => {
            check.report(
                Some(id.span()),
                "cluster.node_id must be 1-64 letters, digits, '-', '_' or '.'",
            );
            id.into_inner()
        }
        Some(id) => id.into_inner(),
        None => generated_node_id(),
    };
    let prefix = match raw.prefix {
        Some(prefix) if !name_ok(prefix.get_ref()) => {
            check.report(
                Some(prefix.span()),
                "cluster.prefix must be 1-64 letters, digits, '-', '_' or '.'",
            );
            prefix.into_inner()
        }
        Some(prefix) => prefix.into_inner(),
        None => "switchboard".to_owned(),
    };
    let heartbeat = check.positive_duration(raw.heartbeat, Duration::from_secs(1));
    let timeout_span = raw.node_timeout.as_ref().map(Spanned::span);
    let node_timeout = check.positive_duration(raw.node_timeout, Duration::from_secs(5));
    if node_timeout < heartbeat * 2 {
        check.report(
            timeout_span,
            format!(
                "cluster.node_timeout ({node_timeout:?}) must be at least twice cluster.heartbeat ({heartbeat:?}), or live nodes would be taken for gone"
            ),
        );
    }
    ClusterConfig {
        redis,
        node_id,
        node_id_given,
        prefix,
        heartbeat,
        node_timeout,
        request_timeout: check.positive_duration(raw.request_timeout, Duration::from_secs(2)),
        queue: check.count_at_least(raw.queue, 16, 65_536, "cluster.queue"),
    }
}

/// A node id for a config that names none: the host's name (when it is a
/// plain one) and eight random hex digits, so two processes never share one.
fn generated_node_id() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 48
                && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    match host {
        Some(host) => format!("{host}-{}", &random[..8]),
        None => format!("node-{}", &random[..8]),
    }
}

fn validate_log(raw: super::raw::RawLog, check: &mut Checker<'_>) -> super::LogConfig {
    let json = match raw.format {
        None => false,
        Some(format) => match format.get_ref().as_str() {
            "text" => false,
            "json" => true,
            other => {
                check.report(
                    Some(format.span()),
                    format!("log.format = {other:?}: expected \"text\" or \"json\""),
                );
                false
            }
        },
    };
    let level = match raw.level {
        None => "info".to_owned(),
        Some(level) => {
            if tracing_subscriber::EnvFilter::try_new(level.get_ref()).is_err() {
                check.report(
                    Some(level.span()),
                    format!(
                        "log.level = {:?} is not a filter such as \"info\" or \"warn,switchboard=debug\"",
                        level.get_ref()
                    ),
                );
            }
            level.into_inner()
        }
    };
    super::LogConfig { json, level }
}

/// The server's own endpoints must differ from each other and from every app path.
fn check_endpoint_clashes(
    endpoints: &[(&str, &String, Option<Span>)],
    apps: &[AppConfig],
    check: &mut Checker<'_>,
) {
    for (i, (name, path, span)) in endpoints.iter().enumerate() {
        // An app on a reserved path is reported already.
        let reserved = path.starts_with(RESERVED_PREFIX);
        if let Some(app) = apps.iter().find(|a| !reserved && a.paths.contains(path)) {
            check.report(
                span.clone(),
                format!(
                    "{name} {path:?} is also the path of an app (line {})",
                    app.line
                ),
            );
        }
        if let Some((other, ..)) = endpoints[..i].iter().find(|(_, p, _)| p == path) {
            check.report(span.clone(), format!("{name} {path:?} is also {other}"));
        }
    }
}
