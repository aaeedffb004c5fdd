//! Switchboard: a WebSocket application server whose apps are plugins.
//!
//! One process speaks HTTP/1.1 and WebSocket (RFC 6455). Apps are shared
//! libraries built against `switchboard-plugin-api`, mounted on URL paths by
//! the TOML config.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, checked, with file:line:column errors.
//! - [`server`]: the running state (mounted apps, limits, shutdown) and `run`.
//! - [`listener`]: the accept loop; one tracing span per connection.
//! - [`limits`]: connection limits in total and per IP address.
//! - [`http`]: hyper on each connection; routing by path.
//! - [`upgrade`]: RFC 6455 handshake checks, the app's verdict, the 101.
//! - [`connection`]: one WebSocket: reads, writes, pings, close handshake.
//! - [`inbound`]: replies that reuse the received buffer instead of copying it.
//! - [`metrics`]: Prometheus metrics, counted with atomic handles.
//! - [`outbox`]: one connection's bounded outbound queue and close request.
//! - [`registry`]: one app's connections and groups.
//! - [`push`]: the push API, for backends to reach connections, groups, apps.
//! - [`static_files`]: the pages under `static_dir`.
//! - [`plugin`]: loading plugin files, the `Host` given to apps, calling apps.

pub mod config;
pub mod connection;
pub mod http;
pub mod inbound;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod outbox;
pub mod plugin;
pub mod push;
pub mod registry;
pub mod server;
pub mod static_files;
pub mod upgrade;
