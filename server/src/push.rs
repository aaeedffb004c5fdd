//! The push API: backends (PHP, Python, shell, anything that speaks HTTP)
//! send messages to a connection by its id, to a group of an app, or to every
//! connection of an app, with `POST /_/push` and a JSON body.
//!
//! The checks run in this order: method (405), client address against the
//! allow-list (403; the address is the one `client_addr.rs` decides for every
//! check),
//! bearer token (401), body size (413), JSON (400, naming the field). Each push
//! then goes through the owning app's `on_push`, which may deliver, replace or
//! veto it (409), and is delivered by [`Registry::deliver`], the path `Host`
//! calls take, with the same size limit and errors. A batch (a JSON array)
//! answers every push separately in one 200 response.

use std::net::SocketAddr;
use std::sync::Arc;

use abi_stable::std_types::{ROption, RSlice, RStr};
use base64::Engine;
use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_plugin_api::abi::{
    MessageRef, OwnedMessage, PushAction, PushRequest, PushTargetKind,
};
use switchboard_plugin_api::sdk::{bearer_token, tokens_match};
use switchboard_plugin_api::ConnId;
use tokio_tungstenite::tungstenite::Message;

use crate::cluster::{Cluster, ClusterError, DeliveryError, Holder};
use crate::plugin::MountedApp;
use crate::registry::{Audience, Registry, RegistryError};
use crate::response::{self, FullResponse};
use crate::server::Server;

/// Why a push was not delivered; each carries its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The request or one push in it is malformed.
    #[error("{message}")]
    BadRequest {
        /// The JSON field at fault (`to.client`, `message`, ...), empty for the whole push.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// No app on that path (and subprotocol).
    #[error("{0}")]
    NoApp(String),
    /// The app refused the push.
    #[error("vetoed by the app: {0}")]
    Vetoed(String),
    /// The app's `on_push` failed.
    #[error("the app failed to handle the push")]
    AppFailed,
    /// Delivery failed, as a `Host` call would have.
    #[error(transparent)]
    Delivery(#[from] RegistryError),
    /// The node holding the client cannot be reached (or no node holds it).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The node holding the client answered this (passed on as it is).
    #[error("{}", body["error"].as_str().unwrap_or("refused by the node holding the client"))]
    Forwarded {
        /// Its status.
        status: u16,
        /// Its JSON body.
        body: Value,
    },
}

impl PushError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            PushError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            PushError::NoApp(_) => StatusCode::NOT_FOUND,
            PushError::Vetoed(_) => StatusCode::CONFLICT,
            PushError::AppFailed => StatusCode::INTERNAL_SERVER_ERROR,
            PushError::Delivery(error) => match error {
                RegistryError::UnknownConnection(_) | RegistryError::ShutDown => {
                    StatusCode::NOT_FOUND
                }
                RegistryError::QueueFull => StatusCode::SERVICE_UNAVAILABLE,
                RegistryError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            },
            PushError::Cluster(ClusterError::UnknownConnection(_)) => StatusCode::NOT_FOUND,
            PushError::Cluster(_) => StatusCode::SERVICE_UNAVAILABLE,
            PushError::Forwarded { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
        }
    }

    /// The JSON error body.
    pub fn body(&self) -> Value {
        if let PushError::Forwarded { body, .. } = self {
            return body.clone();
        }
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

/// One push as the backend writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushBody {
    to: Option<TargetBody>,
    message: Option<Value>,
    binary: Option<String>,
}

/// `to` as the backend writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    client: Option<String>,
    app: Option<String>,
    subprotocol: Option<String>,
    group: Option<String>,
}

/// Who one push is for, within the app that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Client(ConnId),
    Group(String),
    App,
}

/// One checked push, with the app it goes to.
struct Push {
    app: Arc<MountedApp>,
    target: Target,
    message: Message,
}

fn error_response(status: StatusCode, message: &str) -> FullResponse {
    response::json(status, &json!({ "error": message, "delivered": 0 }))
}

/// Answers one push API request (and counts it by status).
pub async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    server: &Arc<Server>,
) -> FullResponse {
    let response = answer(request, peer, server).await;
    server.metrics().push_answered(response.status().as_u16());
    response
}

async fn answer(
    request: Request<Incoming>,
    peer: SocketAddr,
    server: &Arc<Server>,
) -> FullResponse {
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
    // `peer` is the client's address as `client_addr.rs` decided it.
    let ip = peer.ip();
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
            .and_then(bearer_token)
            .unwrap_or("");
        if !tokens_match(given, token) {
            return response::asking_for_bearer(error_response(
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required (Authorization: Bearer <token>)",
            ));
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
    let collected = tokio::time::timeout(
        config.body_timeout,
        Limited::new(request.into_body(), config.max_body).collect(),
    )
    .await;
    let Ok(collected) = collected else {
        return error_response(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the body did not arrive within push.body_timeout ({:?})",
                config.body_timeout
            ),
        );
    };
    let body = match collected {
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
            let mut results = Vec::with_capacity(items.len());
            for item in &items {
                results.push(match push_one(item, server).await {
                    Ok(n) => {
                        delivered += n;
                        json!({ "status": 200, "delivered": n })
                    }
                    Err(error) => {
                        let mut body = error.body();
                        body["status"] = json!(error.status().as_u16());
                        body
                    }
                });
            }
            response::json(
                StatusCode::OK,
                &json!({ "delivered": delivered, "results": results }),
            )
        }
        item => match push_one(&item, server).await {
            Ok(delivered) => response::json(StatusCode::OK, &json!({ "delivered": delivered })),
            Err(error) => response::json(error.status(), &error.body()),
        },
    }
}

async fn push_one(item: &Value, server: &Server) -> Result<u64, PushError> {
    let PushItem { to, message } = parse_item(item)?;
    if let (Some(cluster), Some(id)) = (server.cluster(), only_client(&to)) {
        if let Holder::Node(node) = cluster.holder(id)? {
            // The holder answers as if the backend had asked it.
            return match cluster.forward_push(&node, item.clone()).await? {
                (200, body) => Ok(body["delivered"].as_u64().unwrap_or(0)),
                (status, body) => Err(PushError::Forwarded { status, body }),
            };
        }
    }
    let (app, target) = parse_target(to, server)?;
    deliver(
        Push {
            app,
            target,
            message,
        },
        server.cluster().map(|c| &**c),
    )
    .await
}

/// The client a push is for when it names one alone (anything else is
/// checked, and refused, by `parse_target` on this node).
fn only_client(to: &TargetBody) -> Option<ConnId> {
    match to {
        TargetBody {
            client: Some(client),
            app: None,
            group: None,
            subprotocol: None,
        } => client.parse().ok(),
        _ => None,
    }
}

/// Answers one push that another node of the cluster forwarded here because
/// this node holds its client: the status and body the backend gets.
pub async fn answer_forwarded(item: &Value, server: &Server) -> (u16, Value) {
    match push_one(item, server).await {
        Ok(delivered) => (200, json!({ "delivered": delivered })),
        Err(error) => (error.status().as_u16(), error.body()),
    }
}

/// The JSON field a serde error is about, as the push API names fields.
fn field_of(path: &serde_path_to_error::Path) -> String {
    let field = path.to_string();
    if field == "." {
        String::new()
    } else {
        field
    }
}

/// One push of a request body, checked as far as it can be without the
/// server's apps (which `parse_target` looks up).
pub struct PushItem {
    to: TargetBody,
    message: Message,
}

/// Checks one push of a request body: its fields, and its message (text, any
/// JSON value, or base64 `binary`).
///
/// # Errors
/// A 400 naming the field at fault.
pub fn parse_item(item: &Value) -> Result<PushItem, PushError> {
    let body: PushBody = serde_path_to_error::deserialize(item).map_err(|error| {
        let field = field_of(error.path());
        if field.is_empty() && !item.is_object() {
            return PushError::bad(
                "",
                "each push is a JSON object with \"to\" and \"message\" (or \"binary\")",
            );
        }
        let message = match field.as_str() {
            "" => error.inner().to_string(),
            "to" => "\"to\" is an object: {\"client\": id} or {\"app\": path} or {\"app\": path, \"group\": name}".to_owned(),
            field => format!("{field:?}: {}", error.inner()),
        };
        PushError::bad(&field, message)
    })?;
    let Some(to) = body.to else {
        return Err(PushError::bad("to", "missing \"to\": {\"client\": id} or {\"app\": path} or {\"app\": path, \"group\": name}"));
    };
    let message = match (body.message, body.binary) {
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
        (Some(Value::String(text)), None) => Message::text(text),
        (Some(value), None) => Message::text(value.to_string()),
        (None, Some(encoded)) => match base64::engine::general_purpose::STANDARD.decode(encoded) {
            Ok(bytes) => Message::binary(bytes),
            Err(error) => {
                return Err(PushError::bad(
                    "binary",
                    format!("not valid base64: {error}"),
                ))
            }
        },
    };
    Ok(PushItem { to, message })
}

/// The app a push goes to and who in it.
fn parse_target(to: TargetBody, server: &Server) -> Result<(Arc<MountedApp>, Target), PushError> {
    if to.subprotocol.is_some() && to.app.is_none() {
        return Err(PushError::bad(
            "to.subprotocol",
            "\"to.subprotocol\" needs \"to.app\" (it picks one of the apps on that path)",
        ));
    }
    match (to.client, to.app, to.group) {
        (Some(client), None, None) => {
            let id: ConnId = client
                .parse()
                .map_err(|e| PushError::bad("to.client", format!("{client:?} is {e}")))?;
            let app = server
                .app_of(id)
                .ok_or(PushError::Delivery(RegistryError::UnknownConnection(id)))?;
            Ok((app, Target::Client(id)))
        }
        (Some(_), _, _) => Err(PushError::bad(
            "to.client",
            "\"to.client\" cannot be combined with \"to.app\" or \"to.group\"",
        )),
        (None, Some(path), group) => {
            let app = app_at(server, &path, to.subprotocol.as_deref())?;
            Ok((app, group.map_or(Target::App, Target::Group)))
        }
        (None, None, Some(_)) => Err(PushError::bad(
            "to.group",
            "\"to.group\" needs \"to.app\" (groups belong to an app)",
        )),
        (None, None, None) => Err(PushError::bad("to", "\"to\" needs \"client\" or \"app\"")),
    }
}

/// The app a push names: by path as the config writes it (a pattern too)
/// and, on a path several apps share, by subprotocol (else the path's default).
fn app_at(
    server: &Server,
    path: &str,
    subprotocol: Option<&str>,
) -> Result<Arc<MountedApp>, PushError> {
    let routes = server.routes();
    let Some(apps) = routes.at_path(path) else {
        return Err(PushError::NoApp(format!("no app is mounted at {path:?}")));
    };
    apps.named_by(subprotocol).cloned().ok_or_else(|| {
        let served = apps.subprotocols().join(", ");
        PushError::NoApp(match subprotocol {
            Some(protocol) => format!(
                "no app at {path:?} speaks the subprotocol {protocol:?} (it serves {served})"
            ),
            None => format!(
                "several apps share {path:?} and none is its default: name one with \"to.subprotocol\" ({served})"
            ),
        })
    })
}

fn message_ref(message: &Message) -> MessageRef<'_> {
    match message {
        Message::Text(text) => MessageRef::Text(RStr::from_str(text.as_str())),
        Message::Binary(bytes) => MessageRef::Binary(RSlice::from_slice(bytes)),
        _ => MessageRef::Binary(RSlice::from_slice(&[])),
    }
}

/// Asks the owning app, then delivers through the node's one delivery path
/// (in a cluster, a group or app push on every node).
async fn deliver(push: Push, cluster: Option<&Cluster>) -> Result<u64, PushError> {
    let Push {
        app,
        target,
        message,
    } = push;
    let registry: &Registry = app.registry();
    // Refused before the app sees it, as a `Host` call would be.
    registry.check_size(message.len())?;
    let (kind, client, group) = match &target {
        Target::Client(id) => (PushTargetKind::CLIENT, ROption::RSome(*id), ""),
        Target::Group(group) => (PushTargetKind::GROUP, ROption::RNone, group.as_str()),
        Target::App => (PushTargetKind::APP, ROption::RNone, ""),
    };
    let verdict = app
        .call_shared(|app| {
            app.on_push(&PushRequest {
                kind,
                client,
                group: RStr::from_str(group),
                message: message_ref(&message),
            })
        })
        .await
        .map_err(|_| PushError::AppFailed)?;
    let message = match verdict.action {
        PushAction::DELIVER => message,
        PushAction::REPLACE => match verdict.replacement.into_option() {
            Some(OwnedMessage::Text(text)) => Message::text(text.into_string()),
            Some(OwnedMessage::Binary(bytes)) => Message::binary(bytes.into_vec()),
            None => message,
        },
        PushAction::VETO => return Err(PushError::Vetoed(verdict.reason.into_string())),
        _ => {
            tracing::error!(app = %app.name(), "on_push answered an unknown action");
            return Err(PushError::AppFailed);
        }
    };
    let audience = match &target {
        Target::Client(id) => Audience::One(*id),
        Target::Group(group) => Audience::Group(group),
        Target::App => Audience::All,
    };
    Ok(crate::cluster::deliver(
        cluster,
        registry,
        app.name(),
        audience,
        message,
        None,
    )?)
}

impl From<DeliveryError> for PushError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::Here(e) => PushError::Delivery(e),
            DeliveryError::Elsewhere(e) => PushError::Cluster(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_named_by_their_path() {
        let error = serde_path_to_error::deserialize::<_, PushBody>(
            &json!({"to": {"app": "/a", "nope": 1}}),
        )
        .unwrap_err();
        assert_eq!(field_of(error.path()), "to.nope");
        let error =
            serde_path_to_error::deserialize::<_, PushBody>(&json!({"extra": 1})).unwrap_err();
        assert_eq!(field_of(error.path()), "extra");
        let error = serde_path_to_error::deserialize::<_, PushBody>(&json!({"to": {"client": 7}}))
            .unwrap_err();
        assert_eq!(field_of(error.path()), "to.client");
    }
}
