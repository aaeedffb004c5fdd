//! End-to-end tests: the real `switchboard` binary with the real plugins,
//! spoken to by a WebSocket client library, raw TCP and HTTP.
//! Build the workspace first: `cargo build --workspace && cargo test --workspace`.

// Echo of every payload size and kind through the echo plugin.
mod echo;
// The commands bot, command by command.
mod commands;
// RFC 6455 behaviour: fragmentation, ping/pong, close handshake and close codes.
mod protocol;
// permessage-deflate: negotiation, compressed frames, bad and hostile input.
mod compression;
// HTTP answers: 404, 426, 405, 400, subprotocols, malformed requests, limits.
mod http;
// Config and plugin errors, `check` and `plugins`.
mod startup;
// Plugins built against other plugin-api versions: a newer one is served.
mod compat;
// Reload by signal, command and watching; migrate, drain, restart; refusals.
mod reload;
// Apps chosen by subprotocol on a shared path; path patterns and captures.
mod routing;
// wss and https without a proxy.
mod tls;
// Limits against absurd settings, floods, slow bodies, links, header spellings.
mod hardening;
// The client address through trusted proxies, for every check.
mod proxies;
// nginx in front, as docs/operations.md configures it.
mod nginx;
// Many clients on several apps at once; shutdown.
mod concurrency;
// Every Host call, through the test-kit plugin.
mod host_api;
// Handshake hook, per-app config, crash isolation, delivery guarantees.
mod platform;
// The chat, locks and clock apps with several clients.
mod apps;
// The plugin author's path: build the template, install it, mount it.
mod template;
// The push API and the backend examples (curl, Python, PHP).
mod push;
// Three nodes sharing one Redis: deliveries, pushes, failures.
mod cluster;
// The example apps on three nodes.
mod cluster_apps;
// phpWebSocketServer compatibility: the hub app with browser-like and PHP-like clients.
mod hub;
// Static pages from static_dir.
mod pages;
// /_/metrics (parsed as Prometheus text) and /_/health.
mod metrics;
// The demo pages and the JavaScript client in headless Chromium (tests/browser).
mod browser;

mod kit;
mod util;
