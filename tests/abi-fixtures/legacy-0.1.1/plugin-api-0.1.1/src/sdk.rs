//! The safe SDK: ordinary Rust types and traits on top of [`crate::abi`], so a
//! plugin never touches an abi_stable type.
//!
//! Unlike `abi`, this module is compiled into each plugin and may change freely
//! between versions. Its adapter wraps every callback in `catch_unwind`: a panic
//! in a plugin becomes an error value, and the server closes only the connection
//! concerned (with 1011) instead of the whole process aborting at the FFI boundary.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RSlice, RStr, RString, RVec},
};
use serde::{de::DeserializeOwned, Serialize};

use crate::abi::{self, AppBox, ConnId, HostBox, LogLevel};

/// The error type of app callbacks and constructors: any error converts into it with `?`.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A message, borrowed: what an app receives and what it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl<'a> Message<'a> {
    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&'a str> {
        match *self {
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
        }
    }

    /// The payload bytes, whatever the kind.
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
        }
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn to_abi(self) -> abi::MessageRef<'a> {
        match self {
            Message::Text(text) => abi::MessageRef::Text(RStr::from_str(text)),
            Message::Binary(bytes) => abi::MessageRef::Binary(RSlice::from_slice(bytes)),
        }
    }

    fn from_abi(message: abi::MessageRef<'a>) -> Self {
        match message {
            abi::MessageRef::Text(text) => Message::Text(text.as_str()),
            abi::MessageRef::Binary(bytes) => Message::Binary(bytes.as_slice()),
        }
    }
}

impl<'a> From<&'a str> for Message<'a> {
    fn from(text: &'a str) -> Self {
        Message::Text(text)
    }
}

impl<'a> From<&'a String> for Message<'a> {
    fn from(text: &'a String) -> Self {
        Message::Text(text)
    }
}

impl<'a> From<&'a [u8]> for Message<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Message::Binary(bytes)
    }
}

impl<'a> From<&'a Vec<u8>> for Message<'a> {
    fn from(bytes: &'a Vec<u8>) -> Self {
        Message::Binary(bytes)
    }
}

pub use crate::abi::HostErrorKind;

/// A host call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError {
    kind: HostErrorKind,
    message: String,
}

impl HostError {
    /// What kind of failure (compare with the `HostErrorKind` constants).
    pub fn kind(&self) -> HostErrorKind {
        self.kind
    }

    /// True when the connection is not (or no longer) open.
    pub fn is_unknown_connection(&self) -> bool {
        self.kind == HostErrorKind::UNKNOWN_CONNECTION
    }

    fn from_abi(error: abi::HostError) -> Self {
        HostError {
            kind: error.kind,
            message: error.message.into_string(),
        }
    }

    fn invalid(message: String) -> Self {
        HostError {
            kind: HostErrorKind::INVALID_ARGUMENT,
            message,
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HostError {}

/// The app's handle to the server. Cheap to clone; usable from any thread at
/// any time, including threads and timers the plugin starts itself. After the
/// app is shut down, every call returns an error.
#[derive(Clone)]
pub struct Host {
    inner: HostBox,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Host")
    }
}

fn except(conn: Option<ConnId>) -> ROption<ConnId> {
    conn.map_or(ROption::RNone, ROption::RSome)
}

impl Host {
    #[doc(hidden)]
    pub fn from_abi(inner: HostBox) -> Self {
        Host { inner }
    }

    /// Queues a message for one connection. Messages to one connection arrive in
    /// the order they were sent.
    ///
    /// # Errors
    /// `UNKNOWN_CONNECTION` if it is not open, `QUEUE_FULL` if the client does not
    /// read fast enough (the server then closes it), `SHUT_DOWN` after shutdown.
    pub fn send<'a>(&self, conn: ConnId, message: impl Into<Message<'a>>) -> Result<(), HostError> {
        self.inner
            .send(conn, message.into().to_abi())
            .into_result()
            .map_err(HostError::from_abi)
    }

    /// Serializes `value` as JSON and sends it as a text message.
    ///
    /// # Errors
    /// As [`Host::send`], or `INVALID_ARGUMENT` if `value` cannot be serialized.
    pub fn send_json<T: Serialize + ?Sized>(
        &self,
        conn: ConnId,
        value: &T,
    ) -> Result<(), HostError> {
        let text = serde_json::to_string(value).map_err(|e| HostError::invalid(e.to_string()))?;
        self.send(conn, Message::Text(&text))
    }

    /// Queues a message for every connection of this app; returns how many.
    ///
    /// # Errors
    /// `SHUT_DOWN` after shutdown.
    pub fn broadcast<'a>(&self, message: impl Into<Message<'a>>) -> Result<u64, HostError> {
        self.broadcast_except(None, message)
    }

    /// Queues a message for every connection of this app but one; returns how many.
    ///
    /// # Errors
    /// `SHUT_DOWN` after shutdown.
    pub fn broadcast_except<'a>(
        &self,
        skip: Option<ConnId>,
        message: impl Into<Message<'a>>,
    ) -> Result<u64, HostError> {
        self.inner
            .broadcast(message.into().to_abi(), except(skip))
            .into_result()
            .map_err(HostError::from_abi)
    }

    /// Closes a connection with a close code (1000, 1001, 1008, 1011, 3000-4999, ...)
    /// and a reason (at most 123 bytes), after the messages already queued for it.
    ///
    /// # Errors
    /// `UNKNOWN_CONNECTION`, `INVALID_ARGUMENT` for a code that may not be sent
    /// or a reason that is too long, `SHUT_DOWN` after shutdown.
    pub fn close(&self, conn: ConnId, code: u16, reason: &str) -> Result<(), HostError> {
        self.inner
            .close(conn, code, RStr::from_str(reason))
            .into_result()
            .map_err(HostError::from_abi)
    }

    /// The ids of every open connection of this app.
    ///
    /// # Errors
    /// `SHUT_DOWN` after shutdown.
    pub fn connections(&self) -> Result<Vec<ConnId>, HostError> {
        self.inner
            .connections()
            .into_result()
            .map(RVec::into_vec)
            .map_err(HostError::from_abi)
    }

    /// What the server knows of one open connection.
    ///
    /// # Errors
    /// `UNKNOWN_CONNECTION`, `SHUT_DOWN`.
    pub fn info(&self, conn: ConnId) -> Result<ConnInfo, HostError> {
        self.inner
            .info(conn)
            .into_result()
            .map(ConnInfo::from_abi)
            .map_err(HostError::from_abi)
    }

    /// Adds a connection to a group of this app. A closed connection leaves all its groups.
    ///
    /// # Errors
    /// `UNKNOWN_CONNECTION`, `SHUT_DOWN`.
    pub fn join(&self, conn: ConnId, group: &str) -> Result<(), HostError> {
        self.inner
            .join(conn, RStr::from_str(group))
            .into_result()
            .map_err(HostError::from_abi)
    }

    /// Removes a connection from a group.
    ///
    /// # Errors
    /// `UNKNOWN_CONNECTION`, `SHUT_DOWN`.
    pub fn leave(&self, conn: ConnId, group: &str) -> Result<(), HostError> {
        self.inner
            .leave(conn, RStr::from_str(group))
            .into_result()
            .map_err(HostError::from_abi)
    }

    /// Queues a message for every member of a group; returns how many.
    ///
    /// # Errors
    /// `SHUT_DOWN` after shutdown.
    pub fn publish<'a>(
        &self,
        group: &str,
        message: impl Into<Message<'a>>,
    ) -> Result<u64, HostError> {
        self.publish_except(group, None, message)
    }

    /// Queues a message for every member of a group but one; returns how many.
    ///
    /// # Errors
    /// `SHUT_DOWN` after shutdown.
    pub fn publish_except<'a>(
        &self,
        group: &str,
        skip: Option<ConnId>,
        message: impl Into<Message<'a>>,
    ) -> Result<u64, HostError> {
        self.inner
            .publish(RStr::from_str(group), message.into().to_abi(), except(skip))
            .into_result()
            .map_err(HostError::from_abi)
    }

    /// The members of a group (empty if nobody is in it).
    ///
    /// # Errors
    /// `SHUT_DOWN` after shutdown.
    pub fn members(&self, group: &str) -> Result<Vec<ConnId>, HostError> {
        self.inner
            .members(RStr::from_str(group))
            .into_result()
            .map(RVec::into_vec)
            .map_err(HostError::from_abi)
    }

    /// Writes a line to the server's log, tagged with the app and, inside a
    /// callback, the connection.
    pub fn log(&self, level: LogLevel, text: &str) {
        self.inner.log(level, RStr::from_str(text));
    }
}

/// What the server knows of one open connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// The connection's id.
    pub id: ConnId,
    /// The client's address, `ip:port`.
    pub peer: String,
    /// The mount path the client connected to.
    pub path: String,
    /// The raw query string of the handshake, without `?`.
    pub query: String,
    /// The handshake headers kept by the app's `info_headers` setting (lowercase names).
    pub headers: Vec<(String, String)>,
    /// The chosen subprotocol, if any.
    pub subprotocol: Option<String>,
    /// When the connection was opened.
    pub connected_at: SystemTime,
    /// The data the app attached when it accepted the handshake.
    pub data: String,
}

impl ConnInfo {
    fn from_abi(info: abi::ConnInfo) -> Self {
        ConnInfo {
            id: info.id,
            peer: info.peer.into_string(),
            path: info.path.into_string(),
            query: info.query.into_string(),
            headers: info
                .headers
                .into_iter()
                .map(|h| (h.name.into_string(), h.value.into_string()))
                .collect(),
            subprotocol: info.subprotocol.into_option().map(RString::into_string),
            connected_at: UNIX_EPOCH + Duration::from_millis(info.connected_at_ms),
            data: info.data.into_string(),
        }
    }

    /// The first value of a kept header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of a cookie, if the `cookie` header was kept.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .find_map(|(_, v)| find_cookie(v, name))
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        find_query_param(&self.query, name)
    }
}

fn find_cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"'))
    })
}

fn find_query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The WebSocket upgrade request, as `on_handshake` sees it.
pub struct Handshake<'a> {
    request: &'a abi::HandshakeRequest<'a>,
}

impl<'a> Handshake<'a> {
    /// The id the connection will have if accepted.
    pub fn conn(&self) -> ConnId {
        self.request.conn
    }

    /// The client's address, `ip:port`.
    pub fn peer(&self) -> &'a str {
        self.request.peer.as_str()
    }

    /// The request path.
    pub fn path(&self) -> &'a str {
        self.request.path.as_str()
    }

    /// The raw query string, without `?`.
    pub fn query(&self) -> &'a str {
        self.request.query.as_str()
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        find_query_param(self.query(), name)
    }

    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every header with a UTF-8 value, names lowercase.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.request
            .headers
            .as_slice()
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
    }

    /// The value of a cookie.
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.headers()
            .filter(|(n, _)| *n == "cookie")
            .find_map(|(_, v)| find_cookie(v, name))
    }

    /// The subprotocols offered, in the client's order of preference.
    pub fn subprotocols(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.request
            .subprotocols
            .as_slice()
            .iter()
            .map(|p| p.as_str())
    }

    /// Whether the client offered `protocol`.
    pub fn offers(&self, protocol: &str) -> bool {
        self.subprotocols().any(|p| p == protocol)
    }
}

/// The app accepts a handshake. `Accept::default()` accepts with no
/// subprotocol and no data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accept {
    subprotocol: Option<String>,
    data: String,
    headers: Vec<(String, String)>,
}

impl Accept {
    /// Accepts with no subprotocol (unless the app's config lists one the client offers).
    pub fn new() -> Self {
        Accept::default()
    }

    /// Chooses a subprotocol; it must be one the client offered.
    pub fn subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.subprotocol = Some(protocol.into());
        self
    }

    /// Attaches per-connection data, returned later by `Host::info`.
    pub fn data(mut self, data: impl Into<String>) -> Self {
        self.data = data.into();
        self
    }

    /// Adds a header to the 101 response.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The app refuses a handshake with an HTTP error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
}

impl Reject {
    /// Refuses with an HTTP status (400..=599) and a plain-text body.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Reject {
            status,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header to the refusal (for example `www-authenticate`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

fn abi_headers(headers: Vec<(String, String)>) -> RVec<abi::Header> {
    headers
        .into_iter()
        .map(|(name, value)| abi::Header {
            name: name.into(),
            value: value.into(),
        })
        .collect()
}

/// Who a push from a backend is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushTarget<'a> {
    /// One connection.
    Client(ConnId),
    /// Every member of a group.
    Group(&'a str),
    /// Every connection of the app.
    App,
}

/// A message a backend pushes through the push API, before delivery.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    /// Who it is for.
    pub target: PushTarget<'a>,
    /// The message.
    pub message: Message<'a>,
}

/// What the app does with a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushDecision {
    /// Deliver it as pushed.
    Deliver,
    /// Deliver this text instead.
    ReplaceText(String),
    /// Deliver these bytes instead.
    ReplaceBinary(Vec<u8>),
    /// Deliver nothing; the backend gets 409 with this reason.
    Veto(String),
}

/// What an app's constructor gets: the host handle and the app's `[app.config]` table.
pub struct Context {
    /// The app's handle to the server.
    pub host: Host,
    config_json: String,
}

impl Context {
    /// The app's config, deserialized (the `[app.config]` table of the server config;
    /// an empty table when there is none).
    ///
    /// # Errors
    /// The serde error, which the server reports with the app's path.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.config_json)
            .map_err(|e| format!("invalid app config: {e}").into())
    }

    /// The app's config as JSON text.
    pub fn config_json(&self) -> &str {
        &self.config_json
    }
}

/// A Switchboard app. Implement it, then export it with `export_app!`.
///
/// One instance serves every connection of one mount (`[[app]]` block): keep
/// shared state behind a `Mutex` or atomics. Callbacks for one connection come
/// in order and never at the same time; different connections are served
/// concurrently. Callbacks must not block: hand slow work to a thread of your
/// own and send the result through the [`Host`] when it is ready.
pub trait App: Send + Sync + Sized + 'static {
    /// Builds the app from its host handle and config.
    ///
    /// # Errors
    /// An error refuses start-up; the server prints it with the app's path.
    fn new(context: Context) -> Result<Self, Error>;

    /// Decides whether to accept a connection. Default: accept.
    ///
    /// # Errors
    /// A [`Reject`] answers the client with its HTTP status and body.
    fn on_handshake(&self, request: &Handshake<'_>) -> Result<Accept, Reject> {
        let _ = request;
        Ok(Accept::default())
    }

    /// The connection is open.
    ///
    /// # Errors
    /// An error closes the connection with 1011.
    fn on_open(&self, conn: ConnId) -> Result<(), Error> {
        let _ = conn;
        Ok(())
    }

    /// A message arrived.
    ///
    /// # Errors
    /// An error closes the connection with 1011.
    fn on_message(&self, conn: ConnId, message: Message<'_>) -> Result<(), Error> {
        let _ = (conn, message);
        Ok(())
    }

    /// The connection closed (called exactly once per opened connection).
    /// `code` is 1006 when the client vanished without a close frame.
    fn on_close(&self, conn: ConnId, code: u16, reason: &str) {
        let _ = (conn, code, reason);
    }

    /// The connection failed (protocol error, oversized message, I/O error);
    /// `on_close` follows.
    fn on_error(&self, conn: ConnId, error: &str) {
        let _ = (conn, error);
    }

    /// The app is being shut down: every connection is already closed, and
    /// host calls (from any thread) now fail with `SHUT_DOWN`. Stop your threads here.
    fn on_shutdown(&self) {}

    /// A backend pushes a message through the push API. Default: deliver it.
    /// Runs on the HTTP request's thread, possibly while a callback of the
    /// connection concerned runs on another.
    ///
    /// # Errors
    /// An error answers the backend with 500 and delivers nothing.
    fn on_push(&self, push: &Push<'_>) -> Result<PushDecision, Error> {
        let _ = push;
        Ok(PushDecision::Deliver)
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => (*text).to_owned(),
            Err(_) => "panic with a non-text payload".to_owned(),
        },
    }
}

/// Runs a callback, turning an error or a panic into a `CallbackError`.
fn guard<T>(f: impl FnOnce() -> Result<T, Error>) -> RResult<T, abi::CallbackError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(error)) => RResult::RErr(abi::CallbackError {
            panicked: false,
            message: error.to_string().into(),
        }),
        Err(payload) => RResult::RErr(abi::CallbackError {
            panicked: true,
            message: panic_message(payload).into(),
        }),
    }
}

/// Puts an SDK [`App`] behind the ABI's `App` trait object.
struct AppAdapter<T>(T);

impl<T: App> abi::App for AppAdapter<T> {
    fn on_handshake(
        &self,
        request: &abi::HandshakeRequest<'_>,
    ) -> RResult<abi::HandshakeResponse, abi::CallbackError> {
        guard(|| {
            let handshake = Handshake { request };
            Ok(match self.0.on_handshake(&handshake) {
                Ok(accept) => abi::HandshakeResponse::Accept(abi::Acceptance {
                    subprotocol: accept.subprotocol.map(RString::from).into(),
                    data: accept.data.into(),
                    headers: abi_headers(accept.headers),
                }),
                Err(reject) => abi::HandshakeResponse::Reject(abi::Rejection {
                    status: reject.status,
                    body: reject.body.into(),
                    headers: abi_headers(reject.headers),
                }),
            })
        })
    }

    fn on_open(&self, conn: ConnId) -> RResult<(), abi::CallbackError> {
        guard(|| self.0.on_open(conn))
    }

    fn on_message(
        &self,
        conn: ConnId,
        message: abi::MessageRef<'_>,
    ) -> RResult<(), abi::CallbackError> {
        guard(|| self.0.on_message(conn, Message::from_abi(message)))
    }

    fn on_close(
        &self,
        conn: ConnId,
        code: u16,
        reason: RStr<'_>,
    ) -> RResult<(), abi::CallbackError> {
        guard(|| {
            self.0.on_close(conn, code, reason.as_str());
            Ok(())
        })
    }

    fn on_error(&self, conn: ConnId, error: RStr<'_>) -> RResult<(), abi::CallbackError> {
        guard(|| {
            self.0.on_error(conn, error.as_str());
            Ok(())
        })
    }

    fn on_shutdown(&self) -> RResult<(), abi::CallbackError> {
        guard(|| {
            self.0.on_shutdown();
            Ok(())
        })
    }

    fn on_push(
        &self,
        push: &abi::PushRequest<'_>,
    ) -> RResult<abi::PushVerdict, abi::CallbackError> {
        guard(|| {
            let target = match (push.kind, push.client.into_option()) {
                (abi::PushTargetKind::CLIENT, Some(conn)) => PushTarget::Client(conn),
                (abi::PushTargetKind::GROUP, _) => PushTarget::Group(push.group.as_str()),
                _ => PushTarget::App,
            };
            let decision = self.0.on_push(&Push {
                target,
                message: Message::from_abi(push.message),
            })?;
            let (action, replacement, reason) = match decision {
                PushDecision::Deliver => (abi::PushAction::DELIVER, None, String::new()),
                PushDecision::ReplaceText(text) => (
                    abi::PushAction::REPLACE,
                    Some(abi::OwnedMessage::Text(text.into())),
                    String::new(),
                ),
                PushDecision::ReplaceBinary(bytes) => (
                    abi::PushAction::REPLACE,
                    Some(abi::OwnedMessage::Binary(bytes.into())),
                    String::new(),
                ),
                PushDecision::Veto(reason) => (abi::PushAction::VETO, None, reason),
            };
            Ok(abi::PushVerdict {
                action,
                replacement: replacement.into(),
                reason: reason.into(),
            })
        })
    }
}

/// Builds an app instance behind the ABI: the body of every plugin's constructor.
#[doc(hidden)]
pub fn new_app<T: App>(host: HostBox, config_json: RStr<'_>) -> RResult<AppBox, RString> {
    let context = Context {
        host: Host::from_abi(host),
        config_json: config_json.as_str().to_owned(),
    };
    match catch_unwind(AssertUnwindSafe(|| T::new(context))) {
        Ok(Ok(app)) => RResult::ROk(abi::App_TO::from_value(AppAdapter(app), TD_Opaque)),
        Ok(Err(error)) => RResult::RErr(error.to_string().into()),
        Err(payload) => {
            RResult::RErr(format!("constructor panicked: {}", panic_message(payload)).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_query_parameters_are_found() {
        assert_eq!(find_cookie("a=1; token=abc; b=2", "token"), Some("abc"));
        assert_eq!(find_cookie("a=1", "token"), None);
        assert_eq!(
            find_query_param("x=1&token=a%20b+c", "token").as_deref(),
            Some("a b c")
        );
        assert_eq!(find_query_param("", "token"), None);
    }

    #[test]
    fn guard_turns_errors_and_panics_into_values() {
        let err = guard::<()>(|| Err("nope".into()))
            .into_result()
            .unwrap_err();
        assert!(!err.panicked);
        assert_eq!(err.message.as_str(), "nope");
        let err = guard::<()>(|| panic!("boom {}", 1))
            .into_result()
            .unwrap_err();
        assert!(err.panicked);
        assert_eq!(err.message.as_str(), "boom 1");
    }

    #[test]
    fn message_reports_its_payload() {
        let text = Message::from("héllo");
        assert_eq!(text.as_text(), Some("héllo"));
        assert_eq!(text.len(), 6);
        assert!(Message::Binary(&[]).is_empty());
    }
}
