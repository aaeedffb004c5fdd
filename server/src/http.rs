//! HTTP/1.1 on one accepted connection (hyper), and routing by path: a mounted
//! app's path is a WebSocket endpoint, the push path (`/_/push`) is the push
//! API, `/_/health` reports the server's state, files under `static_dir` are
//! pages (also on an app's path, for requests that are not upgrades), anything
//! else is 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use switchboard_plugin_api::ConnId;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tracing::{field, Instrument, Span};

use crate::connection::{self, OpenConnection};
use crate::limits::{ConnectionSlot, LimitExceeded};
use crate::outbox::outbox;
use crate::plugin::MountedApp;
use crate::registry::Connection;
use crate::server::Server;
use crate::upgrade::{self, RejectHandshake};

/// Largest HTTP request head accepted (request line and headers).
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// Most request headers accepted.
const MAX_HEADERS: usize = 100;

/// A plain-text response.
pub fn text_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

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
    let service = {
        let server = server.clone();
        service_fn(move |request| {
            let (server, slot) = (server.clone(), slot.clone());
            async move { Ok::<_, Infallible>(route::<S>(request, peer, &server, &slot).await) }
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
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "http connection ended with an error");
    }
}

async fn route<S>(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    server: &Arc<Server>,
    slot: &Result<Arc<ConnectionSlot>, LimitExceeded>,
) -> Response<Full<Bytes>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slot = match slot {
        Ok(slot) => slot.clone(),
        Err(limit) => {
            let mut response = text_response(StatusCode::SERVICE_UNAVAILABLE, format!("{limit}\n"));
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
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
    if let Some(app) = server.app(&path) {
        let app = app.clone();
        let started = std::time::Instant::now();
        return match upgrade_to_websocket::<S>(&mut request, peer, server, app, slot) {
            Ok(response) => {
                server.metrics().handshake(started.elapsed());
                response
            }
            Err(rejection) => {
                server.metrics().rejected(rejection.reason());
                tracing::debug!(
                    reason = rejection.reason(),
                    status = rejection.status().as_u16(),
                    "handshake refused"
                );
                rejection.into_response()
            }
        };
    }
    if path == server.config().push.path {
        return crate::push::handle(request, peer, server).await;
    }
    match path.as_str() {
        _ if path == server.config().health.path => guarded(&server.config().health, peer, || {
            json_response(StatusCode::OK, &server.health())
        }),
        _ if path == server.config().metrics.path => {
            guarded(&server.config().metrics, peer, || {
                let mut response = text_response(StatusCode::OK, server.metrics().render());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            })
        }
        _ => text_response(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Answers a status endpoint for the addresses its config allows, 403 for others.
fn guarded(
    endpoint: &crate::config::EndpointConfig,
    peer: SocketAddr,
    answer: impl FnOnce() -> Response<Full<Bytes>>,
) -> Response<Full<Bytes>> {
    if endpoint
        .allowed_ips
        .iter()
        .any(|net| net.contains(&peer.ip()))
    {
        answer()
    } else {
        text_response(
            StatusCode::FORBIDDEN,
            format!("{} is not allowed from {}\n", endpoint.path, peer.ip()),
        )
    }
}

fn upgrade_to_websocket<S>(
    request: &mut Request<Incoming>,
    peer: SocketAddr,
    server: &Arc<Server>,
    app: Arc<MountedApp>,
    slot: Arc<ConnectionSlot>,
) -> Result<Response<Full<Bytes>>, RejectHandshake>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upgrade = upgrade::check_request(request)?;
    upgrade::check_origin(request, &app)?;
    if server.shutdown_token().is_cancelled() {
        return Err(RejectHandshake::ShuttingDown);
    }
    let id = ConnId::from_bytes(*uuid::Uuid::new_v4().as_bytes());
    let span = Span::current();
    span.record("path", field::display(app.path()))
        .record("id", field::display(id));
    let accepted = upgrade::ask_app(&app, id, peer, request, &upgrade)?;
    let response = upgrade::switching_protocols(&upgrade, &accepted);

    let kept = &app.settings().info_headers;
    let headers = request
        .headers()
        .iter()
        .filter(|(name, _)| kept.iter().any(|k| k == name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let config = &server.config().server;
    let (outbox, receiver) = outbox(
        config.outbound_queue,
        config.outbound_queue_bytes,
        app.metrics().queue_drops.clone(),
    );
    let open = OpenConnection {
        app,
        connection: Arc::new(Connection {
            id,
            outbox,
            peer,
            path: request.uri().path().into(),
            one_frame_per_write: std::sync::atomic::AtomicBool::new(false),
            frame_pause_micros: std::sync::atomic::AtomicU64::new(0),
            query: request.uri().query().unwrap_or("").to_owned(),
            headers,
            subprotocol: accepted.subprotocol,
            connected_at: SystemTime::now(),
            data: accepted.data,
        }),
        outbox: receiver,
        settings: server.connection_settings().clone(),
        shutdown: server.shutdown_token().clone(),
        slot,
    };
    let on_upgrade = hyper::upgrade::on(request);
    server.tracker().spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => run_websocket::<S>(upgraded, open).await,
                Err(error) => tracing::debug!(%error, "upgrade did not complete"),
            }
        }
        .instrument(span),
    );
    Ok(response)
}

/// Turns the upgraded connection back into the accepted stream type when it can
/// (so WebSocket I/O skips hyper's boxed wrapper), then serves the WebSocket.
async fn run_websocket<S>(upgraded: hyper::upgrade::Upgraded, open: OpenConnection)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = Some(open.settings.websocket);
    match upgraded.downcast::<TokioIo<S>>() {
        Ok(parts) => {
            // Copy the leftover bytes and drop `read_buf`: it is a view into
            // hyper's whole read buffer and would keep it alive for the
            // connection's lifetime.
            let hyper::upgrade::Parts { io, read_buf, .. } = parts;
            let leftover = read_buf.to_vec();
            drop(read_buf);
            let ws = WebSocketStream::from_partially_read(
                io.into_inner(),
                leftover,
                Role::Server,
                config,
            )
            .await;
            // Boxed, so the task does not also carry the fallback branch's states.
            Box::pin(connection::serve(ws, open)).await;
        }
        Err(upgraded) => {
            let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, config)
                .await;
            Box::pin(connection::serve(ws, open)).await;
        }
    }
}
