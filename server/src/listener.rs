//! Serving a bound listener: the accept loop (connection limits, one tracing
//! span per connection, handing each connection to HTTP) and the shutdown
//! sequence that ends it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{field, Instrument};

use crate::connection::going_away;
use crate::server::Server;

/// Serves on `listener` until `stop` resolves, then shuts down in three
/// stages: stop accepting; ask every connection to close (1001) and wait up
/// to `shutdown_grace`; call every app's `on_shutdown`.
pub async fn serve(server: Arc<Server>, listener: TcpListener, stop: impl Future<Output = ()>) {
    tokio::select! {
        () = accept_loop(listener, server.clone()) => {}
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
async fn accept_loop(listener: TcpListener, server: Arc<Server>) {
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
        let slot = server.limits().acquire(peer.ip());
        if let Err(limit) = &slot {
            server.metrics().rejected(limit.label());
            tracing::warn!(%peer, %limit, "connection refused");
        }
        let span = tracing::info_span!("conn", %peer, path = field::Empty, id = field::Empty);
        let task = crate::http::serve_connection(stream, peer, server.clone(), slot);
        server.tracker().spawn(task.instrument(span));
    }
}
