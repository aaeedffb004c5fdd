//! Serving a bound listener: the accept loop (connection limits, one tracing
//! span per connection, handing each connection to HTTP) and the shutdown
//! sequence that ends it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::net::TcpListener;
use tracing::{field, Instrument};

use crate::connection::going_away;
use crate::server::Server;

/// A bound listener and whether it speaks TLS.
#[derive(Debug)]
pub struct Bound {
    /// The listener.
    pub listener: TcpListener,
    /// Whether connections start with a TLS handshake (`[server.tls]`).
    pub tls: bool,
}

/// Serves on `listeners` until `stop` resolves, then shuts down in three
/// stages: stop accepting; ask every connection to close (1001) and wait up
/// to `shutdown_grace`; call every app's `on_shutdown`.
pub async fn serve(server: Arc<Server>, listeners: Vec<Bound>, stop: impl Future<Output = ()>) {
    let (config_of, mounts_of) = (server.clone(), server.clone());
    server.tracker().spawn(crate::keepalive::run(
        move || config_of.config().server.ping_interval,
        move || {
            mounts_of
                .all_mounts()
                .iter()
                .map(|mount| mount.registry().clone())
                .collect()
        },
        server.shutdown_token().clone(),
    ));
    let accepting = join_all(
        listeners
            .into_iter()
            .map(|bound| accept_loop(bound, server.clone())),
    );
    tokio::select! {
        _ = accepting => {}
        () = stop => tracing::info!("shutting down"),
    }
    server.shutdown_token().cancel();
    let going_away = going_away();
    let draining = server.draining().clone();
    for app in server.apps().iter().chain(&draining) {
        app.registry().close_all(&going_away);
    }
    let tracker = server.tracker();
    tracker.close();
    let grace = server.config().server.shutdown_grace;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            remaining = tracker.len(),
            "shutdown grace period over; dropping remaining connections"
        );
    }
    // Draining apps are shut down by their drain tasks, which the tracker waited for.
    for app in server.apps() {
        app.shut_down();
    }
}

/// Accepts connections until the server shuts down.
async fn accept_loop(bound: Bound, server: Arc<Server>) {
    let Bound { listener, tls } = bound;
    // Refusals are counted in the metrics; the log gets one line a second.
    let refusals = crate::limits::LogLimiter::new(Duration::from_secs(1));
    let mut backoff = Duration::from_millis(5);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff = Duration::from_millis(5);
                    accepted
                }
                Err(error) => {
                    // Out of file descriptors or memory: wait and retry instead of spinning.
                    tracing::error!(%error, "accept failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            () = server.shutdown_token().cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        // A trusted proxy's clients are counted by their own address, per request.
        let proxied = server
            .config()
            .server
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&peer.ip()));
        let slot = if proxied {
            server.limits().acquire_total()
        } else {
            server.limits().acquire(peer.ip())
        };
        if let Err(limit) = &slot {
            server.metrics().rejected(limit.label());
            if let Some(held_back) = refusals.allow() {
                tracing::warn!(%peer, %limit, held_back, "connection refused (held_back: refusals not logged in the last second)");
            }
        }
        let span = tracing::debug_span!("conn", %peer, path = field::Empty, id = field::Empty);
        if tls {
            let tracker = server.tracker().clone();
            let server = server.clone();
            let task = async move {
                let Some(tls) = server.tls() else { return };
                // The handshake timeout covers the TLS handshake too.
                let limit = server.config().server.handshake_timeout;
                match tokio::time::timeout(limit, tls.acceptor().accept(stream)).await {
                    Ok(Ok(stream)) => {
                        crate::http::serve_connection(stream, peer, server, slot).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            };
            tracker.spawn(task.instrument(span));
        } else {
            let task = crate::http::serve_connection(stream, peer, server.clone(), slot);
            server.tracker().spawn(task.instrument(span));
        }
    }
}
