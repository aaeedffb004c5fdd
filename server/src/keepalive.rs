//! Keepalive for every connection from one task, instead of a timer per
//! connection: every `ping_interval` it sweeps every app's connections; one
//! heard from since the previous sweep (any frame counts) gets a ping through
//! its outbox, one silent since is dropped (1006, "ping timeout"). So a client
//! that stops answering is dropped between one and two intervals after its
//! last frame, as before, while an idle connection holds no timer and its
//! task is not woken between pings.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::registry::Registry;

/// Sweeps the registries `registries` returns every `interval()` (read
/// again each time: a reload may change it) until `shutdown`.
pub async fn run(
    interval: impl Fn() -> Duration,
    registries: impl Fn() -> Vec<Arc<Registry>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval()) => {}
        }
        for registry in registries() {
            registry.sweep();
        }
    }
}
