//! HTTP/1.1 on one accepted connection (hyper), and routing by path: a mounted
//! app's path is a WebSocket endpoint, the push path (`/_/push`) is the push
//! API, `/_/health`, `/_/metrics` and `/_/apps` report the server's state,
//! `/_/admin` is the operator's page,
//! files under `static_dir` are pages (also on an app's path, for requests
//! that are not upgrades), anything else is 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::EndpointConfig;
use crate::limits::{ConnectionSlot, LimitExceeded};
use crate::response::{self, FullResponse};
use crate::server::Server;

/// Largest HTTP request head accepted (request line and headers).
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// Most request headers accepted.
const MAX_HEADERS: usize = 100;

/// Serves HTTP on one accepted connection until it closes or is upgraded.
/// `slot` is the connection's place under the limits, or the limit that refused it
/// (every request then gets 503).
pub async fn serve_connection<S>(
    io: S,
    peer: SocketAddr,
    server: Arc<Server>,
    slot: Result<ConnectionSlot, LimitExceeded>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slot = slot.map(Arc::new);
    // Set once this connection answered 101: it is becoming a WebSocket.
    let upgrading = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let service = {
        let (server, upgrading) = (server.clone(), upgrading.clone());
        service_fn(move |request| {
            let (server, slot, upgrading) = (server.clone(), slot.clone(), upgrading.clone());
            async move {
                let response = route::<S>(request, peer, &server, &slot).await;
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    upgrading.store(true, std::sync::atomic::Ordering::Release);
                }
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(server.config().server.handshake_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .max_headers(MAX_HEADERS);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = server.shutdown_token().cancelled() => {
            // An idle keep-alive connection closes now. One whose 101 is on
            // its way is left to finish becoming a WebSocket, which then
            // closes with 1001 like every other: cut here, its client would
            // see the connection reset instead.
            if !upgrading.load(std::sync::atomic::Ordering::Acquire) {
                connection.as_mut().graceful_shutdown();
            }
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "http connection ended with an error");
    }
}

async fn route<S>(
    request: Request<Incoming>,
    peer: SocketAddr,
    server: &Arc<Server>,
    slot: &Result<Arc<ConnectionSlot>, LimitExceeded>,
) -> FullResponse
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slot = match slot {
        Ok(slot) => slot.clone(),
        Err(limit) => {
            let mut response =
                response::text(StatusCode::SERVICE_UNAVAILABLE, format!("{limit}\n"));
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    // Every check below judges this address (`client_addr.rs`).
    let client = match crate::client_addr::client_addr(
        peer,
        request.headers(),
        &server.config().server.trusted_proxies,
    ) {
        Ok(client) => client,
        Err(error) => {
            tracing::debug!(%error, "refused");
            return response::text(StatusCode::FORBIDDEN, format!("{error}\n"));
        }
    };
    let path = request.uri().path().to_owned();
    let wants_websocket = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("websocket"));
    // A plain GET on a path that is both an app's and a page's gets the page.
    if !wants_websocket {
        if let Some(root) = &server.config().server.static_dir {
            if !path.starts_with(crate::config::RESERVED_PREFIX) {
                if let Some(page) = crate::static_files::serve(root, &request).await {
                    return page;
                }
            }
        }
    }
    let routes = server.routes();
    match routes.lookup(&path) {
        Some(Ok(matched)) => {
            return crate::upgrade::upgrade::<S>(request, peer, client, server, matched, slot)
                .await;
        }
        Some(Err(capture)) => {
            return response::text(StatusCode::BAD_REQUEST, format!("{capture}\n"));
        }
        None => {}
    }
    let config = &routes.config;
    if crate::admin::is_admin_path(&config.admin, &path) {
        return crate::admin::handle(request, client, server).await;
    }
    if path == config.push.path {
        return crate::push::handle(request, client, server).await;
    }
    if path == config.health.path {
        return guarded(&config.health, client, || {
            response::json(StatusCode::OK, &server.health())
        });
    }
    if path == config.app_list.path {
        return guarded(&config.app_list, client, || {
            response::json(StatusCode::OK, &server.app_list())
        });
    }
    if path == config.metrics.path {
        return guarded(&config.metrics, client, || {
            response::with_type(
                StatusCode::OK,
                server.metrics().render().into(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        });
    }
    response::text(StatusCode::NOT_FOUND, "not found\n")
}

/// Answers a status endpoint for the addresses its config allows, 403 for others.
fn guarded(
    endpoint: &EndpointConfig,
    peer: SocketAddr,
    answer: impl FnOnce() -> FullResponse,
) -> FullResponse {
    if endpoint.allows(peer.ip()) {
        answer()
    } else {
        response::not_allowed_from(&endpoint.path, peer.ip())
    }
}
