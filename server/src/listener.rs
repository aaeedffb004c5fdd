//! The accept loop: takes TCP connections, applies the connection limits, gives
//! each connection its tracing span and hands it to HTTP.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{field, Instrument};

use crate::server::Server;

/// Accepts connections until the server shuts down.
pub async fn accept_loop(listener: TcpListener, server: Arc<Server>) {
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
