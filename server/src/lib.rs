//! Switchboard: a WebSocket application server whose apps are plugins.
//!
//! One process speaks HTTP/1.1 and WebSocket (RFC 6455). Apps are shared
//! libraries built against `switchboard-plugin-api`, mounted on URL paths by
//! the TOML config.
//!
//! # Layout
//!
//! Modules are listed from the top down: each uses only modules listed after
//! it, never one before (`tests/module_graph.rs` reads this list and holds the
//! crate to it), so a request flows down the list and nothing calls back up.
//!
//! - [`listener`]: serving a bound listener: the accept loop, one tracing span
//!   per connection, and the shutdown sequence.
//! - [`control`]: what asks for a reload: SIGHUP, the control socket, `--watch`.
//! - [`cluster_apps`]: this node's apps as the other nodes of a cluster reach them.
//! - [`http`]: hyper on each connection; routing by path.
//! - [`admin`]: the operator's page `/_/admin`: apps, rates, failures, reload.
//! - [`upgrade`]: RFC 6455 handshake checks, the app's verdict, the 101, and
//!   the WebSocket session that follows (registry entry, stream, task).
//! - [`push`]: the push API, for backends to reach connections, groups, apps.
//! - [`static_files`]: the pages under `static_dir`.
//! - [`reload`]: new plugin builds and config without dropping a client.
//! - [`server`]: the running server's state: mounted apps, shared settings,
//!   limits, metrics, shutdown token and task tracker; `/_/health`.
//! - [`routes`]: what the server serves now: the config, its apps, and the
//!   path table (exact paths, patterns, apps chosen by subprotocol).
//! - [`connection`]: one WebSocket: reads, writes, pings, close handshake.
//! - [`websocket`]: the RFC 6455 protocol on a connection: frames, reading
//!   and writing messages with as few copies and buffers as it can.
//! - [`keepalive`]: one task pings every connection and drops the silent ones.
//! - [`plugin`]: loading plugin files, the `Host` given to apps, calling apps.
//! - [`cluster`]: several nodes sharing deliveries through Redis (`[cluster]`),
//!   and `cluster::deliver`, the node's one delivery path over `Registry::deliver`.
//! - [`registry`]: one app's connections and groups, and the one delivery path
//!   (`Registry::deliver`) that `Host` calls and the push API share.
//! - [`outbox`]: one connection's bounded outbound queue and close request.
//! - [`memory_budget`]: one budget of bytes for messages being received and
//!   queued, all connections together.
//! - [`callback_scope`]: which connection's callback runs on this thread and
//!   which message it handles.
//! - [`limits`]: connection limits in total and per IP address.
//! - [`client_addr`]: the client's address for every check, through trusted proxies.
//! - [`metrics`]: Prometheus metrics, counted with atomic handles.
//! - [`config`]: the TOML file, checked, with file:line:column errors.
//! - [`rate`]: per-connection message and byte rate limits.
//! - [`coarse_clock`]: a millisecond clock read with one atomic load.
//! - [`runtime_dir`]: where the server keeps plugin copies and its control socket.
//! - [`tls`]: rustls for wss/https: PEM files, ALPN, a certificate a reload can renew.
//! - [`response`]: the server's own plain-text and JSON responses.

#![forbid(unsafe_code)]

pub mod admin;
pub mod callback_scope;
pub mod client_addr;
pub mod cluster;
pub mod cluster_apps;
pub mod coarse_clock;
pub mod config;
pub mod connection;
pub mod control;
pub mod http;
pub mod keepalive;
pub mod limits;
pub mod listener;
pub mod memory_budget;
pub mod metrics;
pub mod outbox;
pub mod plugin;
pub mod push;
pub mod rate;
pub mod registry;
pub mod reload;
pub mod response;
pub mod routes;
pub mod runtime_dir;
pub mod server;
pub mod static_files;
pub mod tls;
pub mod upgrade;
pub mod websocket;
