//! The push API: backends (PHP, Python, shell, anything that speaks HTTP)
//! send messages to a connection by its id, to a group of an app, or to every
//! connection of an app, with `POST /_/push` and a JSON body.
//!
//! The checks run in this order: method (405), client address against the
//! allow-list (403; `X-Forwarded-For` is believed only from trusted proxies),
//! bearer token (401), body size (413), JSON (400, naming the field). Each push
//! then goes through the owning app's `on_push`, which may deliver, replace or
//! veto it (409), and is delivered like a `Host` call. A batch (a JSON array)
//! answers every push separately in one 200 response.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use abi_stable::std_types::{ROption, RSlice, RStr};
use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use switchboard_plugin_api::abi::{
    MessageRef, OwnedMessage, PushAction, PushRequest, PushTargetKind,
};
use switchboard_plugin_api::ConnId;
use tokio_tungstenite::tungstenite::Message;

use crate::config::PushConfig;
use crate::http::json_response;
use crate::outbox::QueueError;
use crate::plugin::MountedApp;
use crate::registry::RegistryError;
use crate::server::Server;

/// Why a push was not delivered; each carries its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The request or one push in it is malformed.
    #[error("{message}")]
    BadRequest {
        /// The JSON field at fault (`to.client`, `message`, ...), empty for the whole body.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No such connection, or no app on that path.
    #[error("{0}")]
    NotFound(String),
    /// The app refused the push.
    #[error("vetoed by the app: {0}")]
    Vetoed(String),
    /// The message is larger than `max_message_size`.
    #[error("message of {0} bytes is larger than the server's max_message_size")]
    TooLarge(usize),
    /// The client's queue is full (it is being closed as a slow consumer).
    #[error("the client's outbound queue is full; it is being disconnected")]
    QueueFull,
    /// The app's `on_push` failed.
    #[error("the app failed to handle the push")]
    AppFailed,
}

impl PushError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            PushError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            PushError::NotFound(_) => StatusCode::NOT_FOUND,
            PushError::Vetoed(_) => StatusCode::CONFLICT,
            PushError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            PushError::QueueFull => StatusCode::SERVICE_UNAVAILABLE,
            PushError::AppFailed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON error body.
    pub fn body(&self) -> Value {
        let mut body = json!({ "error": self.to_string(), "delivered": 0 });
        if let PushError::BadRequest { field, .. } = self {
            if !field.is_empty() {
                body["field"] = json!(field);
            }
        }
        body
    }

    fn bad(field: &str, message: impl Into<String>) -> Self {
        PushError::BadRequest {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Who one push is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Client(ConnId),
    Group(String, String),
    App(String),
}

/// One parsed push.
#[derive(Debug)]
struct Push {
    target: Target,
    message: Message,
}

fn error_response(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message, "delivered": 0 }))
}

/// The address a push comes from: the peer, or, when the peer is a trusted
/// proxy, the right-most `X-Forwarded-For` entry that is not a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, config: &PushConfig) -> IpAddr {
    let trusted = |ip: &IpAddr| config.trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| entry.trim().parse().ok())
        .collect();
    forwarded
        .iter()
        .rev()
        .find(|ip| !trusted(ip))
        .or(forwarded.first())
        .copied()
        .unwrap_or(peer)
}

/// Compares without stopping at the first difference, so timing does not
/// tell how much of a guessed token was right.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Answers one push API request (and counts it by status).
pub async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    server: &Arc<Server>,
) -> Response<Full<Bytes>> {
    let response = answer(request, peer, server).await;
    server.metrics().push_answered(response.status().as_u16());
    response
}

async fn answer(
    request: Request<Incoming>,
    peer: SocketAddr,
    server: &Arc<Server>,
) -> Response<Full<Bytes>> {
    let config = &server.config().push;
    if request.method() != Method::POST {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "the push API takes POST requests",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let ip = client_ip(peer.ip(), request.headers(), config);
    if !config.allowed_ips.iter().any(|net| net.contains(&ip)) {
        tracing::warn!(%ip, "push refused: address not allowed");
        return error_response(
            StatusCode::FORBIDDEN,
            &format!("pushes from {ip} are not allowed (push.allowed_ips)"),
        );
    }
    if let Some(token) = &config.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same_token(given.as_bytes(), token.as_bytes()) {
            let mut response = error_response(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required (Authorization: Bearer <token>)",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the body is larger than push.max_body ({} bytes)",
                config.max_body
            ),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > config.max_body) {
        return too_large();
    }
    let body = match Limited::new(request.into_body(), config.max_body)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(error)
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return too_large()
        }
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {error}"),
            )
        }
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("the body is not valid JSON: {error}"),
            )
        }
    };
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return error_response(StatusCode::BAD_REQUEST, "an empty batch");
            }
            if items.len() > config.max_batch {
                return error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!(
                        "{} pushes in one batch; at most {} (push.max_batch)",
                        items.len(),
                        config.max_batch
                    ),
                );
            }
            let mut delivered = 0;
            let results: Vec<Value> = items
                .iter()
                .map(|item| match push_one(item, server) {
                    Ok(n) => {
                        delivered += n;
                        json!({ "status": 200, "delivered": n })
                    }
                    Err(error) => {
                        let mut body = error.body();
                        body["status"] = json!(error.status().as_u16());
                        body
                    }
                })
                .collect();
            json_response(
                StatusCode::OK,
                &json!({ "delivered": delivered, "results": results }),
            )
        }
        item => match push_one(&item, server) {
            Ok(delivered) => json_response(StatusCode::OK, &json!({ "delivered": delivered })),
            Err(error) => json_response(error.status(), &error.body()),
        },
    }
}

fn push_one(item: &Value, server: &Server) -> Result<u64, PushError> {
    let push = parse(item, server)?;
    if push.message.len() > server.config().server.max_message_size {
        return Err(PushError::TooLarge(push.message.len()));
    }
    deliver(push, server)
}

fn parse(item: &Value, server: &Server) -> Result<Push, PushError> {
    let Value::Object(fields) = item else {
        return Err(PushError::bad(
            "",
            "each push is a JSON object with \"to\" and \"message\" (or \"binary\")",
        ));
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "to" | "message" | "binary"))
    {
        return Err(PushError::bad(
            unknown,
            format!("unknown field {unknown:?} (expected to, message, binary)"),
        ));
    }
    let target = parse_target(fields, server)?;
    let message = match (fields.get("message"), fields.get("binary")) {
        (Some(_), Some(_)) => {
            return Err(PushError::bad(
                "binary",
                "give \"message\" or \"binary\", not both",
            ))
        }
        (None, None) => {
            return Err(PushError::bad(
                "message",
                "missing \"message\" (or \"binary\")",
            ))
        }
        (Some(Value::String(text)), None) => Message::text(text.as_str()),
        (Some(value), None) => Message::text(value.to_string()),
        (None, Some(Value::String(encoded))) => {
            match base64::engine::general_purpose::STANDARD.decode(encoded) {
                Ok(bytes) => Message::binary(bytes),
                Err(error) => {
                    return Err(PushError::bad(
                        "binary",
                        format!("not valid base64: {error}"),
                    ))
                }
            }
        }
        (None, Some(_)) => return Err(PushError::bad("binary", "\"binary\" is a base64 string")),
    };
    Ok(Push { target, message })
}

fn text_field<'a>(to: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, PushError> {
    match to.get(name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(PushError::bad(
            &format!("to.{name}"),
            format!("\"to.{name}\" is a string"),
        )),
    }
}

fn parse_target(fields: &Map<String, Value>, server: &Server) -> Result<Target, PushError> {
    let Some(Value::Object(to)) = fields.get("to") else {
        return Err(PushError::bad("to", "missing \"to\": {\"client\": id} or {\"app\": path} or {\"app\": path, \"group\": name}"));
    };
    if let Some(unknown) = to
        .keys()
        .find(|k| !matches!(k.as_str(), "client" | "app" | "group"))
    {
        return Err(PushError::bad(
            &format!("to.{unknown}"),
            format!("unknown field {unknown:?} in \"to\" (expected client, app, group)"),
        ));
    }
    match (
        text_field(to, "client")?,
        text_field(to, "app")?,
        text_field(to, "group")?,
    ) {
        (Some(client), None, None) => client
            .parse()
            .map(Target::Client)
            .map_err(|e| PushError::bad("to.client", format!("{client:?} is {e}"))),
        (Some(_), _, _) => Err(PushError::bad(
            "to.client",
            "\"to.client\" cannot be combined with \"to.app\" or \"to.group\"",
        )),
        (None, Some(app), group) => {
            if server.app(app).is_none() {
                return Err(PushError::NotFound(format!("no app is mounted at {app:?}")));
            }
            Ok(match group {
                Some(group) => Target::Group(app.to_owned(), group.to_owned()),
                None => Target::App(app.to_owned()),
            })
        }
        (None, None, Some(_)) => Err(PushError::bad(
            "to.group",
            "\"to.group\" needs \"to.app\" (groups belong to an app)",
        )),
        (None, None, None) => Err(PushError::bad("to", "\"to\" needs \"client\" or \"app\"")),
    }
}

fn message_ref(message: &Message) -> MessageRef<'_> {
    match message {
        Message::Text(text) => MessageRef::Text(RStr::from_str(text.as_str())),
        Message::Binary(bytes) => MessageRef::Binary(RSlice::from_slice(bytes)),
        _ => MessageRef::Binary(RSlice::from_slice(&[])),
    }
}

/// Asks the owning app, then delivers.
fn deliver(push: Push, server: &Server) -> Result<u64, PushError> {
    let (app, kind, client, group) = match &push.target {
        Target::Client(id) => {
            let app = server
                .app_of(*id)
                .ok_or_else(|| PushError::NotFound(format!("no open connection {id}")))?;
            (app, PushTargetKind::CLIENT, ROption::RSome(*id), "")
        }
        Target::Group(path, group) => (
            app_at(server, path)?,
            PushTargetKind::GROUP,
            ROption::RNone,
            group.as_str(),
        ),
        Target::App(path) => (
            app_at(server, path)?,
            PushTargetKind::APP,
            ROption::RNone,
            "",
        ),
    };
    let verdict = app
        .on_push(&PushRequest {
            kind,
            client,
            group: RStr::from_str(group),
            message: message_ref(&push.message),
        })
        .map_err(|_| PushError::AppFailed)?;
    let message = match verdict.action {
        PushAction::DELIVER => push.message,
        PushAction::REPLACE => match verdict.replacement.into_option() {
            Some(OwnedMessage::Text(text)) => Message::text(text.into_string()),
            Some(OwnedMessage::Binary(bytes)) => Message::binary(bytes.into_vec()),
            None => push.message,
        },
        PushAction::VETO => return Err(PushError::Vetoed(verdict.reason.into_string())),
        _ => {
            tracing::error!(app = %app.path(), "on_push answered an unknown action");
            return Err(PushError::AppFailed);
        }
    };
    let registry = app.registry();
    let delivered = match push.target {
        Target::Client(id) => registry.send(id, message).map(|()| 1),
        Target::Group(_, group) => registry.publish(&group, &message, None),
        Target::App(_) => registry.broadcast(&message, None),
    };
    delivered.map_err(|error| match error {
        RegistryError::Queue(QueueError::Full) => PushError::QueueFull,
        RegistryError::UnknownConnection(id) => {
            PushError::NotFound(format!("no open connection {id}"))
        }
        RegistryError::Queue(QueueError::Closed) => {
            PushError::NotFound("the connection closed".to_owned())
        }
        RegistryError::ShutDown => PushError::NotFound("the app is shut down".to_owned()),
    })
}

fn app_at(server: &Server, path: &str) -> Result<Arc<MountedApp>, PushError> {
    server
        .app(path)
        .cloned()
        .ok_or_else(|| PushError::NotFound(format!("no app is mounted at {path:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(trusted: &[&str]) -> PushConfig {
        PushConfig {
            path: "/_/push".into(),
            token: None,
            allowed_ips: vec![],
            trusted_proxies: trusted
                .iter()
                .filter_map(|t| crate::config::parse_ip_net(t))
                .collect(),
            max_body: 1024,
            max_batch: 10,
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 10.0.0.2"),
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(proxy, &headers, &config(&[])),
            proxy,
            "untrusted peer: its own address"
        );
        assert_eq!(
            client_ip(proxy, &headers, &config(&["10.0.0.0/8"])),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(proxy, &HeaderMap::new(), &config(&["10.0.0.0/8"])),
            proxy
        );
    }

    #[test]
    fn tokens_are_compared_whole() {
        assert!(same_token(b"secret", b"secret"));
        assert!(!same_token(b"secreT", b"secret"));
        assert!(!same_token(b"secret!", b"secret"));
    }
}
