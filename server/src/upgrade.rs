//! The WebSocket upgrade: RFC 6455 §4.2 checks on the HTTP request, the app's
//! `on_handshake` decision, the `101 Switching Protocols` response, and the
//! session that follows: the connection's registry entry and outbox, the
//! upgraded stream, and its connection task.
//! Every refusal is a [`RejectHandshake`] that carries its HTTP status and body.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::websocket::WebSocket;
use abi_stable::std_types::{RSlice, RStr};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use switchboard_plugin_api::abi::{Acceptance, HandshakeRequest, HeaderRef, Rejection};
use switchboard_plugin_api::ConnId;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::{field, Instrument, Span};

use crate::config::OriginPolicy;
use crate::connection::{self, OpenConnection};
use crate::limits::ConnectionSlot;
use crate::memory_budget::{BudgetedIo, MemoryBudget};
use crate::outbox::outbox;
use crate::plugin::{AppInstance, MountedApp};
use crate::registry::{Connection, HandshakeFacts};
use crate::response::{self, FullResponse};
use crate::routes::{Matched, NoAppForOffer};
use crate::server::Server;

/// Answers a request on an app's path: the 101 (and the connection's task,
/// spawned to run once hyper hands over the stream), or the refusal.
pub async fn upgrade<S>(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    client: SocketAddr,
    server: &Arc<Server>,
    matched: Matched<'_>,
    slot: Arc<ConnectionSlot>,
) -> FullResponse
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = std::time::Instant::now();
    match accept::<S>(&mut request, peer, client, server, matched, slot).await {
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
    }
}

async fn accept<S>(
    request: &mut Request<Incoming>,
    peer: SocketAddr,
    client: SocketAddr,
    server: &Arc<Server>,
    matched: Matched<'_>,
    slot: Arc<ConnectionSlot>,
) -> Result<FullResponse, RejectHandshake>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upgrade = check_request(request)?;
    let app = matched
        .apps
        .select(&upgrade.subprotocols)
        .map_err(RejectHandshake::NoAppForOffer)?
        .clone();
    let params = matched.params;
    check_origin(request, &app)?;
    let without_cookies = is_cross_origin_under_any(request, &app);
    if without_cookies && request.headers().contains_key(header::COOKIE) {
        tracing::debug!(
            "cross-origin handshake under allowed_origins = \"any\": cookies kept from the app"
        );
    }
    // Through a trusted proxy: the client counts against the per-address
    // limit by the address the proxy reported.
    let client_slot = if client.ip() == peer.ip() {
        None
    } else {
        Some(Box::new(
            server
                .limits()
                .acquire_for_address(client.ip())
                .map_err(RejectHandshake::Limit)?,
        ))
    };
    if server.shutdown_token().is_cancelled() {
        return Err(RejectHandshake::ShuttingDown);
    }
    let id = server.new_conn_id();
    let span = Span::current();
    span.record("path", field::display(app.name()))
        .record("id", field::display(id));
    let accepted = {
        let call = app.enter_shared().await;
        let seen = AppView {
            params: &params,
            without_cookies,
        };
        ask_app(&app, call.instance(), id, client, request, &upgrade, seen)?
    };
    let mut response = switching_protocols(&upgrade, &accepted);
    let settings = app.settings();
    // permessage-deflate, when the app has it on and the client offers it.
    let deflate = settings.compression.as_ref().and_then(|ours| {
        let offers = request
            .headers()
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|value| value.to_str().ok());
        crate::websocket::deflate::negotiate(offers, ours)
    });
    if let Some((_, answer)) = &deflate {
        if let Ok(value) = HeaderValue::try_from(answer.as_str()) {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
    }

    let kept = &settings.info_headers;
    let headers = request
        .headers()
        .iter()
        .filter(|(name, _)| kept.iter().any(|k| k == name.as_str()))
        .filter(|(name, _)| !(without_cookies && *name == header::COOKIE))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let config = &server.config().server;
    let (outbox, receiver) = outbox(
        config.outbound_queue,
        config.outbound_queue_bytes,
        app.metrics().queue_drops.clone(),
        server.memory_budget().clone(),
    );
    let handshake = HandshakeFacts {
        peer: client,
        path: request.uri().path().into(),
        query: request.uri().query().unwrap_or("").to_owned(),
        headers,
        subprotocol: accepted.subprotocol,
        data: accepted.data,
        params,
        extensions: deflate
            .as_ref()
            .map_or_else(Box::default, |(_, answer)| answer.as_str().into()),
    };
    let open = OpenConnection {
        app,
        connection: Arc::new(Connection::new(id, outbox, handshake)),
        outbox: receiver,
        settings: server.connection_settings().clone(),
        shutdown: server.shutdown_token().clone(),
        slot,
        client_slot,
    };
    let on_upgrade = hyper::upgrade::on(request);
    let budget = server.memory_budget().clone();
    let tracker = server.tracker().clone();
    let agreed = deflate.map(|(agreed, _)| agreed);
    // This task only waits for hyper to hand the stream over; the connection
    // then gets a task of its own, and this one (with what it held) is freed.
    server.tracker().spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => spawn_websocket::<S>(&tracker, upgraded, open, budget, agreed),
                Err(error) => tracing::debug!(%error, "upgrade did not complete"),
            }
        }
        .instrument(span),
    );
    Ok(response)
}

/// Turns the upgraded connection back into the accepted stream type when it can
/// (so WebSocket I/O skips hyper's boxed wrapper), and spawns the task that
/// serves the WebSocket, in the current (connection's) span.
fn spawn_websocket<S>(
    tracker: &tokio_util::task::TaskTracker,
    upgraded: hyper::upgrade::Upgraded,
    open: OpenConnection,
    budget: MemoryBudget,
    deflate: Option<crate::websocket::deflate::Agreed>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = open.settings.read_limits;
    let span = Span::current();
    match upgraded.downcast::<TokioIo<S>>() {
        Ok(parts) => {
            // Copy the leftover bytes and drop `read_buf`: it is a view into
            // hyper's whole read buffer and would keep it alive for the
            // connection's lifetime.
            let hyper::upgrade::Parts { io, read_buf, .. } = parts;
            let leftover = read_buf.to_vec();
            drop(read_buf);
            let (io, received) = BudgetedIo::new(io.into_inner(), budget);
            let ws = WebSocket::new(io, &leftover, limits, deflate.as_ref());
            tracker.spawn(connection::serve(ws, open, received).instrument(span));
        }
        Err(upgraded) => {
            let (io, received) = BudgetedIo::new(TokioIo::new(upgraded), budget);
            let ws = WebSocket::new(io, &[], limits, deflate.as_ref());
            tracker.spawn(connection::serve(ws, open, received).instrument(span));
        }
    }
}

/// Whether an `Origin` header value passes a policy, for a request to `host`.
pub fn origin_allowed(policy: &OriginPolicy, origin: &str, host: &str) -> bool {
    match policy {
        OriginPolicy::Any => true,
        OriginPolicy::SameOrigin => same_origin(origin, host),
        OriginPolicy::List(allowed) => allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin)),
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the host of the `Host` header.
pub fn same_origin(origin: &str, host: &str) -> bool {
    let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    !host.is_empty() && authority.eq_ignore_ascii_case(host)
}

/// Why a WebSocket upgrade was refused; each carries its response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectHandshake {
    /// Not a GET.
    #[error("a WebSocket handshake must be a GET request")]
    MethodNotAllowed,
    /// HTTP/1.0 or older.
    #[error("a WebSocket handshake needs HTTP/1.1")]
    HttpVersion,
    /// No `Upgrade: websocket` / `Connection: upgrade`: a plain HTTP request on an app path.
    #[error("this is a WebSocket endpoint: send a WebSocket upgrade request (Upgrade: websocket, Connection: Upgrade, Sec-WebSocket-Version: 13)")]
    NotWebSocket,
    /// `Sec-WebSocket-Version` is not 13.
    #[error("unsupported Sec-WebSocket-Version (this server speaks version 13)")]
    VersionNotSupported,
    /// `Sec-WebSocket-Key` missing or not 16 bytes in base64.
    #[error("missing or invalid Sec-WebSocket-Key (expected 16 bytes in base64)")]
    BadKey,
    /// The `Origin` is not in the allow-list.
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The app refused the connection.
    #[error("{body}")]
    ByApp {
        /// The app's status.
        status: StatusCode,
        /// The app's body.
        body: String,
        /// The app's extra headers.
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// The app's `on_handshake` failed or answered something invalid.
    #[error("the app failed to handle the handshake")]
    AppFailed,
    /// A connection limit, for the address a proxy reported.
    #[error("{0}")]
    Limit(crate::limits::LimitExceeded),
    /// Several apps share the path and none takes the offered subprotocols.
    #[error("{}", no_app_message(.0))]
    NoAppForOffer(NoAppForOffer),
}

fn no_app_message(no_app: &NoAppForOffer) -> String {
    let offered = if no_app.offered.is_empty() {
        "no subprotocol was offered".to_owned()
    } else {
        format!("no app here speaks {}", no_app.offered.join(", "))
    };
    format!(
        "{offered}; this path serves the subprotocols {} (Sec-WebSocket-Protocol)",
        no_app.served.join(", ")
    )
}

impl RejectHandshake {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            RejectHandshake::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            RejectHandshake::HttpVersion | RejectHandshake::BadKey => StatusCode::BAD_REQUEST,
            RejectHandshake::NotWebSocket | RejectHandshake::VersionNotSupported => {
                StatusCode::UPGRADE_REQUIRED
            }
            RejectHandshake::OriginNotAllowed => StatusCode::FORBIDDEN,
            RejectHandshake::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            RejectHandshake::ByApp { status, .. } => *status,
            RejectHandshake::AppFailed => StatusCode::INTERNAL_SERVER_ERROR,
            RejectHandshake::NoAppForOffer(_) => StatusCode::BAD_REQUEST,
            RejectHandshake::Limit(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            RejectHandshake::MethodNotAllowed => "method",
            RejectHandshake::HttpVersion => "http_version",
            RejectHandshake::NotWebSocket => "not_websocket",
            RejectHandshake::VersionNotSupported => "version",
            RejectHandshake::BadKey => "key",
            RejectHandshake::OriginNotAllowed => "origin",
            RejectHandshake::ShuttingDown => "shutting_down",
            RejectHandshake::ByApp { .. } => "app",
            RejectHandshake::AppFailed => "app_failed",
            RejectHandshake::NoAppForOffer(_) => "subprotocol",
            RejectHandshake::Limit(limit) => limit.label(),
        }
    }

    /// The HTTP response for the client.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        let mut response = response::text(status, format!("{self}\n"));
        let headers = response.headers_mut();
        match self {
            RejectHandshake::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            RejectHandshake::NotWebSocket | RejectHandshake::VersionNotSupported => {
                headers.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            }
            RejectHandshake::ByApp { headers: extra, .. } => {
                for (name, value) in extra {
                    headers.append(name, value);
                }
            }
            _ => {}
        }
        response
    }
}

/// Whether a comma-separated header contains `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A syntactically valid `Sec-WebSocket-Key`: 16 bytes in base64 is 22
/// alphabet characters and `==`.
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

/// A request that passed the RFC 6455 checks.
#[derive(Debug)]
pub struct UpgradeRequest {
    /// `Sec-WebSocket-Key`.
    pub key: HeaderValue,
    /// Offered subprotocols, in the client's order.
    pub subprotocols: Vec<String>,
}

/// Checks that a request is a WebSocket handshake (RFC 6455 §4.2.1).
///
/// # Errors
/// The first failed check.
pub fn check_request<B>(request: &Request<B>) -> Result<UpgradeRequest, RejectHandshake> {
    let headers = request.headers();
    if !has_token(headers, &header::UPGRADE, "websocket")
        || !has_token(headers, &header::CONNECTION, "upgrade")
    {
        return Err(if request.method() == Method::GET {
            RejectHandshake::NotWebSocket
        } else {
            RejectHandshake::MethodNotAllowed
        });
    }
    if request.method() != Method::GET {
        return Err(RejectHandshake::MethodNotAllowed);
    }
    if request.version() < Version::HTTP_11 {
        return Err(RejectHandshake::HttpVersion);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(RejectHandshake::VersionNotSupported);
    }
    let key = match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if is_valid_key(key.as_bytes()) => key.clone(),
        _ => return Err(RejectHandshake::BadKey),
    };
    let subprotocols = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(UpgradeRequest { key, subprotocols })
}

/// Checks the `Origin` header against the app's allow-list. Requests without
/// an `Origin` (non-browser clients) pass.
///
/// # Errors
/// `OriginNotAllowed`.
pub fn check_origin<B>(request: &Request<B>, app: &MountedApp) -> Result<(), RejectHandshake> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    match request.headers().get(header::ORIGIN).map(|o| o.to_str()) {
        None => Ok(()),
        Some(Ok(origin)) if origin_allowed(&app.settings().allowed_origins, origin, host) => Ok(()),
        Some(_) => Err(RejectHandshake::OriginNotAllowed),
    }
}

/// Whether the handshake comes from a page of another site while the app
/// lets any origin in: its cookies are then kept from the app, so a cookie
/// cannot authenticate a connection another site opened in the user's browser.
fn is_cross_origin_under_any<B>(request: &Request<B>, app: &MountedApp) -> bool {
    if app.settings().allowed_origins != OriginPolicy::Any {
        return false;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|origin| !same_origin(origin, host))
}

/// What of the request the app sees beyond its headers.
#[derive(Debug, Clone, Copy)]
pub struct AppView<'a> {
    /// What the path pattern captured.
    pub params: &'a [(String, String)],
    /// Keep the `Cookie` header from the app (see `is_cross_origin_under_any`).
    pub without_cookies: bool,
}

/// What the app decided, checked.
#[derive(Debug)]
pub struct Accepted {
    /// The subprotocol to answer with.
    pub subprotocol: Option<String>,
    /// The app's per-connection data.
    pub data: String,
    /// Extra 101 headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

fn convert_headers(
    app: &MountedApp,
    headers: &[switchboard_plugin_api::abi::Header],
) -> Result<Vec<(HeaderName, HeaderValue)>, RejectHandshake> {
    headers
        .iter()
        .map(|h| {
            match (
                HeaderName::try_from(h.name.as_str()),
                HeaderValue::try_from(h.value.as_str()),
            ) {
                (Ok(name), Ok(value)) => Ok((name, value)),
                _ => {
                    tracing::error!(
                        app = %app.name(),
                        header = h.name.as_str(),
                        "on_handshake answered an invalid header"
                    );
                    Err(RejectHandshake::AppFailed)
                }
            }
        })
        .collect()
}

/// Asks the app about a handshake and checks its answer.
///
/// # Errors
/// The app's refusal, or `AppFailed` if it failed or answered something invalid.
pub fn ask_app<B>(
    app: &MountedApp,
    instance: &AppInstance,
    conn: ConnId,
    peer: SocketAddr,
    request: &Request<B>,
    upgrade: &UpgradeRequest,
    seen: AppView<'_>,
) -> Result<Accepted, RejectHandshake> {
    let param_refs: Vec<HeaderRef<'_>> = seen
        .params
        .iter()
        .map(|(name, value)| HeaderRef {
            name: RStr::from_str(name),
            value: RStr::from_str(value),
        })
        .collect();
    let peer = peer.to_string();
    let header_refs: Vec<HeaderRef<'_>> = request
        .headers()
        .iter()
        .filter(|(name, _)| !(seen.without_cookies && *name == header::COOKIE))
        .filter_map(|(name, value)| {
            Some(HeaderRef {
                name: RStr::from_str(name.as_str()),
                value: RStr::from_str(value.to_str().ok()?),
            })
        })
        .collect();
    let protocol_refs: Vec<RStr<'_>> = upgrade
        .subprotocols
        .iter()
        .map(|p| RStr::from_str(p))
        .collect();
    let handshake = HandshakeRequest {
        conn,
        peer: RStr::from_str(&peer),
        path: RStr::from_str(request.uri().path()),
        query: RStr::from_str(request.uri().query().unwrap_or("")),
        headers: RSlice::from_slice(&header_refs),
        subprotocols: RSlice::from_slice(&protocol_refs),
        params: RSlice::from_slice(&param_refs),
    };
    let response = instance
        .on_handshake(&handshake)
        .map_err(|_| RejectHandshake::AppFailed)?;
    match response {
        switchboard_plugin_api::abi::HandshakeResponse::Accept(Acceptance {
            subprotocol,
            data,
            headers,
        }) => {
            let subprotocol = match subprotocol.into_option() {
                Some(chosen) if upgrade.subprotocols.iter().any(|p| *p == *chosen) => {
                    Some(chosen.into_string())
                }
                Some(chosen) => {
                    tracing::error!(
                        app = %app.name(),
                        subprotocol = chosen.as_str(),
                        "on_handshake chose a subprotocol the client did not offer"
                    );
                    return Err(RejectHandshake::AppFailed);
                }
                None => upgrade
                    .subprotocols
                    .iter()
                    .find(|offered| app.settings().subprotocols.contains(offered))
                    .cloned(),
            };
            Ok(Accepted {
                subprotocol,
                data: data.into_string(),
                headers: convert_headers(app, &headers)?,
            })
        }
        switchboard_plugin_api::abi::HandshakeResponse::Reject(Rejection {
            status,
            body,
            headers,
        }) => {
            let Some(status) = StatusCode::from_u16(status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
            else {
                tracing::error!(
                    app = %app.name(),
                    status,
                    "on_handshake rejected with a status that is not 4xx or 5xx"
                );
                return Err(RejectHandshake::AppFailed);
            };
            Err(RejectHandshake::ByApp {
                status,
                body: body.into_string(),
                headers: convert_headers(app, &headers)?,
            })
        }
    }
}

/// The `101 Switching Protocols` response.
pub fn switching_protocols(upgrade: &UpgradeRequest, accepted: &Accepted) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = derive_accept_key(upgrade.key.as_bytes());
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::try_from(accept).expect("base64 is a valid header value"),
    );
    if let Some(protocol) = &accepted.subprotocol {
        if let Ok(value) = HeaderValue::try_from(protocol.as_str()) {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
    }
    for (name, value) in &accepted.headers {
        headers.append(name.clone(), value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(edit: impl FnOnce(http::request::Builder) -> http::request::Builder) -> Request<()> {
        let builder = Request::get("/echo")
            .header("upgrade", "websocket")
            .header("connection", "keep-alive, Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        edit(builder).body(()).unwrap()
    }

    #[test]
    fn a_valid_handshake_passes_and_lists_subprotocols_in_order() {
        let upgrade = check_request(&request(|b| {
            b.header("sec-websocket-protocol", "b.v1, a.v2")
                .header("sec-websocket-protocol", "c")
        }))
        .unwrap();
        assert_eq!(upgrade.subprotocols, vec!["b.v1", "a.v2", "c"]);
    }

    #[test]
    fn each_broken_handshake_gets_its_status() {
        let plain = Request::get("/echo").body(()).unwrap();
        assert_eq!(
            check_request(&plain).unwrap_err().status(),
            StatusCode::UPGRADE_REQUIRED
        );
        let post = Request::post("/echo").body(()).unwrap();
        assert_eq!(
            check_request(&post).unwrap_err().status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let v8 = request(|b| b.header("sec-websocket-version", "8"));
        let v8 = {
            let mut v8 = v8;
            v8.headers_mut()
                .insert("sec-websocket-version", HeaderValue::from_static("8"));
            v8
        };
        let rejection = check_request(&v8).unwrap_err();
        assert_eq!(rejection, RejectHandshake::VersionNotSupported);
        assert_eq!(
            rejection.into_response().headers()["sec-websocket-version"],
            "13"
        );
        let mut bad_key = request(|b| b);
        bad_key
            .headers_mut()
            .insert("sec-websocket-key", HeaderValue::from_static("short"));
        assert_eq!(
            check_request(&bad_key).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn origins_pass_their_policy() {
        assert!(origin_allowed(&OriginPolicy::Any, "http://x", "y"));
        let list = OriginPolicy::List(vec!["https://a.example".to_owned()]);
        assert!(origin_allowed(&list, "https://A.example", "y"));
        assert!(!origin_allowed(&list, "https://b.example", "y"));
        let same = OriginPolicy::SameOrigin;
        assert!(origin_allowed(
            &same,
            "http://localhost:8080",
            "localhost:8080"
        ));
        assert!(origin_allowed(&same, "https://Example.com", "example.com"));
        assert!(!origin_allowed(
            &same,
            "https://evil.example",
            "example.com"
        ));
        assert!(!origin_allowed(
            &same,
            "http://localhost:8081",
            "localhost:8080"
        ));
        assert!(!origin_allowed(&same, "null", ""));
    }

    #[test]
    fn accept_key_is_the_rfc_example() {
        let upgrade = check_request(&request(|b| b)).unwrap();
        let accepted = Accepted {
            subprotocol: None,
            data: String::new(),
            headers: Vec::new(),
        };
        let response = switching_protocols(&upgrade, &accepted);
        assert_eq!(
            response.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
