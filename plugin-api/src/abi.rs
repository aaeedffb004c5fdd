//! The frozen part of the interface: every type and trait object that crosses the
//! boundary between the server and a plugin's shared library.
//!
//! abi_stable compares the layout of everything reachable from [`PluginModule`]
//! when a plugin is loaded, and refuses a plugin built against an incompatible
//! version of this crate. Evolution rules (see abi_stable's `library_evolution` docs):
//!
//! - every addition bumps this crate's version (0.1.1 → 0.1.2), so that a
//!   version names exactly one ABI, and the appended item's doc names the
//!   version that added it; a field added to a struct that is not a prefix
//!   type (such as [`ConnInfo`]) changes its layout and starts a new series
//!   (0.1.x → 0.2.0);
//! - a server loads plugins built against its own plugin-api version or a
//!   newer one of the same series (0.2.0 and later 0.2.x for a 0.2.0 server),
//!   never an older one: abi_stable lets the plugin's side of a prefix type
//!   have more fields and methods than the server's, never fewer, and the
//!   `Host` the server hands a plugin is one. A `Host` method a server lacks
//!   answers its default in a newer plugin;
//! - fields are only appended to [`PluginModule`] after its last prefix field;
//! - methods are only appended to [`App`] and [`Host`] after their
//!   `last_prefix_field` method, and always with a default body;
//! - "kind" values ([`LogLevel`], [`HostErrorKind`]) are open newtypes over an
//!   integer, so new values can be added without breaking the layout;
//! - `App` and `Host` are `Send + Sync` from the first version on, because marker
//!   supertraits cannot be added later.
//!
//! Plugin authors do not use this module directly; [`crate::sdk`] wraps it.
//!
//! 0.2.1 added `Host::state` (shared state, one across a cluster),
//! `App::on_lost` and `HostErrorKind::UNAVAILABLE`.

use std::fmt;
use std::str::FromStr;

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RArc, RBox, ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

/// The id of one WebSocket connection: 16 random bytes (a UUID v4), unguessable,
/// so a browser can hand it to its backend, which uses it in the push API.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    bytes: [u8; 16],
}

impl ConnId {
    /// Builds an id from its 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        ConnId { bytes }
    }

    /// The 16 bytes of this id.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.bytes
    }
}

impl fmt::Display for ConnId {
    /// The hyphenated lowercase UUID form, as sent to clients and used by the push API.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&uuid::Uuid::from_bytes(self.bytes).hyphenated(), f)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({self})")
    }
}

/// The text is not a connection id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseConnIdError;

impl fmt::Display for ParseConnIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "not a connection id (expected a UUID such as 67e55044-10b1-426f-9247-bb680e5fe0c8)",
        )
    }
}

impl std::error::Error for ParseConnIdError {}

impl FromStr for ConnId {
    type Err = ParseConnIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::try_parse(s)
            .map(|uuid| ConnId::from_bytes(uuid.into_bytes()))
            .map_err(|_| ParseConnIdError)
    }
}

/// A message as it crosses the boundary: borrowed, never copied on the way.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub enum MessageRef<'a> {
    /// A text message (always valid UTF-8).
    Text(RStr<'a>),
    /// A binary message.
    Binary(RSlice<'a, u8>),
}

/// One HTTP header of the handshake request, borrowed.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct HeaderRef<'a> {
    /// Lowercase header name.
    pub name: RStr<'a>,
    /// Header value (headers whose value is not UTF-8 are not passed).
    pub value: RStr<'a>,
}

/// One HTTP header, owned.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Lowercase header name.
    pub name: RString,
    /// Header value.
    pub value: RString,
}

/// The WebSocket upgrade request, as the app sees it before accepting.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct HandshakeRequest<'a> {
    /// The id the connection will have if it is accepted.
    pub conn: ConnId,
    /// The client's address, `ip:port`.
    pub peer: RStr<'a>,
    /// The request path (the app's mount path).
    pub path: RStr<'a>,
    /// The raw query string, without `?` (empty if none).
    pub query: RStr<'a>,
    /// Every request header with a UTF-8 value, names lowercase.
    pub headers: RSlice<'a, HeaderRef<'a>>,
    /// The subprotocols the client offered, in its order of preference.
    pub subprotocols: RSlice<'a, RStr<'a>>,
    /// What a path pattern of the mount captured (`/rooms/{room}` →
    /// `room`), percent-decoded; empty for an exact path.
    ///
    /// Added in 0.2.0.
    pub params: RSlice<'a, HeaderRef<'a>>,
}

/// The app accepts the connection.
#[repr(C)]
#[derive(StableAbi, Debug, Default)]
pub struct Acceptance {
    /// The subprotocol chosen among those offered (must be one of them).
    pub subprotocol: ROption<RString>,
    /// Per-connection data the app attaches, returned by `Host::info`.
    pub data: RString,
    /// Extra headers for the 101 response (for example `set-cookie`).
    pub headers: RVec<Header>,
}

/// The app refuses the connection before the upgrade.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct Rejection {
    /// The HTTP status of the refusal (400..=599).
    pub status: u16,
    /// The response body (plain text).
    pub body: RString,
    /// Extra response headers (for example `www-authenticate`).
    pub headers: RVec<Header>,
}

/// What the app answers to a handshake.
#[repr(u8)]
#[derive(StableAbi, Debug)]
pub enum HandshakeResponse {
    /// Upgrade to WebSocket.
    Accept(Acceptance),
    /// Answer with an HTTP error instead.
    Reject(Rejection),
}

/// A callback failed: it returned an error, or it panicked (the panic was caught
/// inside the plugin and never crossed the boundary).
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct CallbackError {
    /// True when the callback panicked.
    pub panicked: bool,
    /// The error or panic message.
    pub message: RString,
}

/// The severity of a plugin's log line.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Debug)]
pub struct LogLevel(pub u8);

impl LogLevel {
    /// Something failed.
    pub const ERROR: LogLevel = LogLevel(1);
    /// Something unexpected that the app handled.
    pub const WARN: LogLevel = LogLevel(2);
    /// Normal operation worth recording.
    pub const INFO: LogLevel = LogLevel(3);
    /// Detail for debugging.
    pub const DEBUG: LogLevel = LogLevel(4);
    /// Very verbose detail.
    pub const TRACE: LogLevel = LogLevel(5);
}

/// Why a host call failed: an open newtype so that kinds can be added.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Debug)]
pub struct HostErrorKind(pub u8);

impl HostErrorKind {
    /// No open connection of this app has that id.
    pub const UNKNOWN_CONNECTION: HostErrorKind = HostErrorKind(1);
    /// The connection's outbound queue is full; the server closes it (slow consumer).
    pub const QUEUE_FULL: HostErrorKind = HostErrorKind(2);
    /// The app has been shut down; its host handle no longer does anything.
    pub const SHUT_DOWN: HostErrorKind = HostErrorKind(3);
    /// An argument was refused (for example a close code that may not be sent).
    pub const INVALID_ARGUMENT: HostErrorKind = HostErrorKind(4);
    /// The connection is held by another node of a cluster, and the cluster's
    /// backplane (Redis) cannot be reached now; connections of this node can.
    ///
    /// Added in 0.2.1.
    pub const UNAVAILABLE: HostErrorKind = HostErrorKind(5);
}

/// The error of a host call.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct HostError {
    /// What kind of failure.
    pub kind: HostErrorKind,
    /// A lowercase, human-readable explanation.
    pub message: RString,
}

/// What the server knows of one open connection.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct ConnInfo {
    /// The connection's id.
    pub id: ConnId,
    /// The client's address, `ip:port`.
    pub peer: RString,
    /// The mount path the client connected to.
    pub path: RString,
    /// The raw query string of the handshake request, without `?`.
    pub query: RString,
    /// The handshake headers the app's `info_headers` setting keeps, names lowercase.
    pub headers: RVec<Header>,
    /// The subprotocol that was chosen, if any.
    pub subprotocol: ROption<RString>,
    /// When the connection was opened, in milliseconds since the Unix epoch.
    pub connected_at_ms: u64,
    /// The data the app attached when it accepted the handshake.
    pub data: RString,
    /// What a path pattern of the mount captured, percent-decoded.
    ///
    /// Added in 0.2.0.
    pub params: RVec<Header>,
    /// The negotiated `Sec-WebSocket-Extensions` (empty when none).
    ///
    /// Added in 0.2.0.
    pub extensions: RString,
}

/// One app instance inside a plugin, as the server calls it.
///
/// Callbacks for one connection are called in order and never concurrently;
/// callbacks for different connections may run at the same time on different
/// threads. Callbacks must not block.
#[sabi_trait]
pub trait App: Send + Sync {
    /// A client asks to connect; accept (optionally choosing a subprotocol) or reject.
    fn on_handshake(
        &self,
        request: &HandshakeRequest<'_>,
    ) -> RResult<HandshakeResponse, CallbackError>;

    /// The connection is open; messages may be sent to it.
    fn on_open(&self, conn: ConnId) -> RResult<(), CallbackError>;

    /// A complete message arrived (borrowed for the duration of the call).
    fn on_message(&self, conn: ConnId, message: MessageRef<'_>) -> RResult<(), CallbackError>;

    /// The connection is closed; called exactly once per opened connection.
    fn on_close(&self, conn: ConnId, code: u16, reason: RStr<'_>) -> RResult<(), CallbackError>;

    /// The connection failed (protocol error, oversized message, I/O error);
    /// `on_close` follows.
    fn on_error(&self, conn: ConnId, error: RStr<'_>) -> RResult<(), CallbackError>;

    /// The server is shutting down or replacing this app instance; every
    /// connection has been closed already and host calls now fail with `SHUT_DOWN`.
    #[sabi(last_prefix_field)]
    fn on_shutdown(&self) -> RResult<(), CallbackError>;

    /// A backend pushes a message to this app (a connection, a group or every
    /// connection) through the push API; the app may deliver it as it is,
    /// replace it, or veto it. Called on the HTTP request's thread, possibly at
    /// the same time as callbacks for the connection concerned.
    ///
    /// Added in 0.1.1; plugins built against 0.1.0 deliver every push.
    fn on_push(&self, push: &PushRequest<'_>) -> RResult<PushVerdict, CallbackError> {
        let _ = push;
        RResult::ROk(PushVerdict::deliver())
    }

    /// A reload in `migrate` mode is about to replace this instance: return
    /// the state the next instance should start from (the plugin's own
    /// format), or nothing to let it start empty. No callback of this
    /// instance runs from now on, except `on_shutdown`.
    ///
    /// Added in 0.1.3.
    fn save_state(&self) -> RResult<ROption<RVec<u8>>, CallbackError> {
        RResult::ROk(ROption::RNone)
    }

    /// A connection opened on the instance this one replaced (a reload in
    /// `migrate` mode) now belongs to this instance, with the same id, groups
    /// and handshake data. Comes once per such connection, before any other
    /// callback for it.
    ///
    /// Added in 0.1.3.
    fn on_resume(&self, conn: ConnId) -> RResult<(), CallbackError> {
        let _ = conn;
        RResult::ROk(())
    }

    /// A connection of this app on another node of the cluster is gone
    /// without an `on_close` anywhere: its node stopped answering (killed,
    /// crashed, cut off from Redis for longer than `node_timeout`). Called on
    /// one node of the cluster, once per such connection, so the app can
    /// release what the connection held in shared state. Never called on a
    /// single node.
    ///
    /// Added in 0.2.1.
    fn on_lost(&self, conn: ConnId) -> RResult<(), CallbackError> {
        let _ = conn;
        RResult::ROk(())
    }
}

/// Who a push is addressed to: an open newtype so that kinds can be added.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Debug)]
pub struct PushTargetKind(pub u8);

impl PushTargetKind {
    /// One connection (`PushRequest::client`).
    pub const CLIENT: PushTargetKind = PushTargetKind(1);
    /// Every member of a group (`PushRequest::group`).
    pub const GROUP: PushTargetKind = PushTargetKind(2);
    /// Every connection of the app.
    pub const APP: PushTargetKind = PushTargetKind(3);
}

/// A push from a backend, as the app sees it before delivery.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct PushRequest<'a> {
    /// Who it is addressed to.
    pub kind: PushTargetKind,
    /// The connection, for `CLIENT` pushes.
    pub client: ROption<ConnId>,
    /// The group, for `GROUP` pushes (empty otherwise).
    pub group: RStr<'a>,
    /// The message.
    pub message: MessageRef<'a>,
}

/// A message owned by whoever holds it (a replacement for a pushed message).
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub enum OwnedMessage {
    /// A text message.
    Text(RString),
    /// A binary message.
    Binary(RVec<u8>),
}

/// What to do with a push: an open newtype so that actions can be added.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Debug)]
pub struct PushAction(pub u8);

impl PushAction {
    /// Deliver the message as it was pushed.
    pub const DELIVER: PushAction = PushAction(1);
    /// Deliver `PushVerdict::replacement` instead.
    pub const REPLACE: PushAction = PushAction(2);
    /// Deliver nothing; the backend gets 409 with `PushVerdict::reason`.
    pub const VETO: PushAction = PushAction(3);
}

/// The app's answer to a push.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct PushVerdict {
    /// What to do.
    pub action: PushAction,
    /// The message to deliver instead, for `REPLACE`.
    pub replacement: ROption<OwnedMessage>,
    /// Why, for `VETO` (sent to the backend).
    pub reason: RString,
}

impl PushVerdict {
    /// Deliver as pushed.
    pub fn deliver() -> Self {
        PushVerdict {
            action: PushAction::DELIVER,
            replacement: ROption::RNone,
            reason: RString::new(),
        }
    }
}

/// The server, as one app instance sees it. Cheap to clone, usable from any
/// thread at any time, including threads the plugin starts itself.
#[sabi_trait]
pub trait Host: Send + Sync + Clone {
    /// Queues a message for one connection of this app.
    fn send(&self, conn: ConnId, message: MessageRef<'_>) -> RResult<(), HostError>;

    /// Queues a message for every connection of this app, except `except`;
    /// returns how many connections it was queued for.
    fn broadcast(
        &self,
        message: MessageRef<'_>,
        except: ROption<ConnId>,
    ) -> RResult<u64, HostError>;

    /// Closes one connection with a close code and reason, after the messages
    /// already queued for it.
    fn close(&self, conn: ConnId, code: u16, reason: RStr<'_>) -> RResult<(), HostError>;

    /// The ids of every open connection of this app.
    fn connections(&self) -> RResult<RVec<ConnId>, HostError>;

    /// What the server knows of one open connection.
    fn info(&self, conn: ConnId) -> RResult<ConnInfo, HostError>;

    /// Adds a connection to a group of this app (created on first join).
    fn join(&self, conn: ConnId, group: RStr<'_>) -> RResult<(), HostError>;

    /// Removes a connection from a group (a group without members disappears).
    fn leave(&self, conn: ConnId, group: RStr<'_>) -> RResult<(), HostError>;

    /// Queues a message for every member of a group, except `except`; returns
    /// how many connections it was queued for.
    fn publish(
        &self,
        group: RStr<'_>,
        message: MessageRef<'_>,
        except: ROption<ConnId>,
    ) -> RResult<u64, HostError>;

    /// The members of a group (empty if the group does not exist).
    fn members(&self, group: RStr<'_>) -> RResult<RVec<ConnId>, HostError>;

    /// Writes a line to the server's log, in the span of the connection whose
    /// callback is running, if any.
    #[sabi(last_prefix_field)]
    fn log(&self, level: LogLevel, text: RStr<'_>);

    /// Sets a transport option of one connection (see [`ConnOption`]).
    ///
    /// Added in 0.1.2; a server older than that answers `INVALID_ARGUMENT`.
    fn configure(&self, conn: ConnId, option: ConnOption, value: u64) -> RResult<(), HostError> {
        let _ = (conn, value);
        RResult::RErr(HostError {
            kind: HostErrorKind::INVALID_ARGUMENT,
            message: format!(
                "this server does not support connection option {}",
                option.0
            )
            .into(),
        })
    }

    /// Facts about the running server (empty fields from a server that lacks them).
    ///
    /// Added in 0.1.2; a server older than that answers with empty fields.
    fn server_info(&self) -> ServerInfo {
        ServerInfo::default()
    }

    /// Runs one operation on the app's shared state: one state for the app
    /// on every node of a cluster (kept in Redis), in the server's memory on
    /// a single node, with the same semantics (see [`StateOp`]). Keys are
    /// the app's own: two apps never see each other's.
    ///
    /// Added in 0.2.1; a server older than that answers `INVALID_ARGUMENT`.
    fn state(&self, request: &StateRequest<'_>) -> RResult<StateReply, HostError> {
        let _ = request;
        RResult::RErr(HostError {
            kind: HostErrorKind::INVALID_ARGUMENT,
            message: "this server has no shared state (plugin-api 0.2.1)".into(),
        })
    }
}

/// An operation on shared state: an open newtype so that operations can be
/// added. A key holds a value, a hash (fields to values) or a list; an
/// operation of one kind on a key holding another fails (`INVALID_ARGUMENT`).
/// A key without entries (an empty hash or list) does not exist.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Debug)]
pub struct StateOp(pub u8);

impl StateOp {
    /// The value of `key` (`StateReply::value`).
    pub const GET: StateOp = StateOp(1);
    /// Sets `key` to `value`, expiring after `ttl_ms` (0: never).
    pub const SET: StateOp = StateOp(2);
    /// Compare and swap: if `key`'s value is `expected` (absent when
    /// `RNone`), sets it to `value` (deletes it when `RNone`) with `ttl_ms`;
    /// `done` says whether it did. Set-if-absent and delete-if-owner are
    /// its two common uses.
    pub const SWAP: StateOp = StateOp(3);
    /// Deletes `key`, whatever it holds; `done` says whether it existed.
    pub const DELETE: StateOp = StateOp(4);
    /// The value of `field` in the hash `key`.
    pub const HASH_GET: StateOp = StateOp(5);
    /// Sets `field` of the hash `key` to `value` (removes it when `RNone`);
    /// `done`: a field was added (or removed).
    pub const HASH_SET: StateOp = StateOp(6);
    /// Compare and swap of one field, as [`StateOp::SWAP`].
    pub const HASH_SWAP: StateOp = StateOp(7);
    /// Every field and value of the hash `key`, in `items` as field, value,
    /// field, value...
    pub const HASH_ALL: StateOp = StateOp(8);
    /// Appends `value` to the list `key`, then keeps its last `limit`
    /// entries (0: all); `count` is its length after.
    pub const LIST_PUSH: StateOp = StateOp(9);
    /// The last `limit` entries of the list `key` (0: all), oldest first.
    pub const LIST_RANGE: StateOp = StateOp(10);
    /// Removes every entry equal to `value` from the list `key`; `count`
    /// says how many.
    pub const LIST_REMOVE: StateOp = StateOp(11);
    /// How many fields the hash `key` has (`count`).
    pub const HASH_LEN: StateOp = StateOp(12);
}

/// One operation on shared state (`Host::state`).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct StateRequest<'a> {
    /// What to do.
    pub op: StateOp,
    /// The key.
    pub key: RStr<'a>,
    /// The field, for hash operations.
    pub field: RStr<'a>,
    /// The value to write (for `SWAP` and `HASH_*`: `RNone` deletes).
    pub value: ROption<RStr<'a>>,
    /// For `SWAP` and `HASH_SWAP`: the value expected now (`RNone`: absent).
    pub expected: ROption<RStr<'a>>,
    /// For `SET` and `SWAP`: expiry in milliseconds (0: never).
    pub ttl_ms: u64,
    /// For `LIST_PUSH` and `LIST_RANGE`: how many entries (0: all).
    pub limit: u64,
    /// The caller does not wait for the answer (a write whose result it does
    /// not need): the server queues the operation after every earlier one
    /// of this app on this node, answers an empty reply at once and logs a
    /// failure. Later operations of the app on this node see its effect.
    pub detached: bool,
}

/// The answer to a [`StateRequest`].
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq)]
pub struct StateReply {
    /// Whether a conditional operation did what it was asked.
    pub done: bool,
    /// The value read (`GET`, `HASH_GET`).
    pub value: ROption<RString>,
    /// A count (`LIST_PUSH`, `LIST_REMOVE`, `HASH_LEN`).
    pub count: u64,
    /// The entries read (`HASH_ALL`, `LIST_RANGE`).
    pub items: RVec<RString>,
}

/// Facts about the running server, for apps that need to reach it or name it.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default)]
pub struct ServerInfo {
    /// The address the server listens on (`127.0.0.1:8080`); empty before it listens.
    pub listen: RString,
    /// The push API's path (`/_/push`).
    pub push_path: RString,
    /// The server's version.
    pub version: RString,
}

/// A per-connection transport option: an open newtype so options can be added.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Debug)]
pub struct ConnOption(pub u32);

impl ConnOption {
    /// Value 1: write every message to the socket on its own (one frame per
    /// write), for clients that decode one frame per read. Value 0: batch (default).
    pub const ONE_FRAME_PER_WRITE: ConnOption = ConnOption(1);
    /// In one-frame-per-write mode, the pause in microseconds before writing a
    /// frame when the client has sent nothing since the previous one (the 101
    /// response counts), so that a client reading one frame per read gets each
    /// frame in a read of its own. 0: no pause (default).
    pub const FRAME_PAUSE_MICROS: ConnOption = ConnOption(2);
}

/// An app instance as a boxed trait object.
pub type AppBox = App_TO<'static, RBox<()>>;

/// A host handle as a reference-counted trait object.
pub type HostBox = Host_TO<'static, RArc<()>>;

/// What a plugin says about itself.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct Manifest {
    /// The plugin's name (its crate name by default).
    pub name: RStr<'static>,
    /// The plugin's own version.
    pub version: RStr<'static>,
    /// The version of `switchboard-plugin-api` it was built against.
    pub api_version: RStr<'static>,
    /// One line on what the plugin does.
    pub description: RStr<'static>,
}

/// The root module every plugin exports (through `export_app!`).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
pub struct PluginModule {
    /// What the plugin says about itself.
    pub manifest: Manifest,
    /// Builds one app instance from a host handle and the app's config (a JSON
    /// object); called once per mounted app.
    #[sabi(last_prefix_field)]
    pub new_app: extern "C" fn(host: HostBox, config_json: RStr<'_>) -> RResult<AppBox, RString>,
    /// Builds one app instance with the state its predecessor saved
    /// (`App::save_state`), when a reload replaces one.
    ///
    /// Added in 0.1.3.
    pub new_app_with_state: extern "C" fn(
        host: HostBox,
        config_json: RStr<'_>,
        saved_state: ROption<RSlice<'_, u8>>,
    ) -> RResult<AppBox, RString>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "switchboard_plugin";
    const NAME: &'static str = "switchboard-plugin-api";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_id_round_trips_through_its_text_form() {
        let id = ConnId::from_bytes(
            *uuid::Uuid::from_u128(0x67e5504410b1426f9247bb680e5fe0c8).as_bytes(),
        );
        let text = id.to_string();
        assert_eq!(text, "67e55044-10b1-426f-9247-bb680e5fe0c8");
        assert_eq!(text.parse::<ConnId>(), Ok(id));
        assert_eq!("not-an-id".parse::<ConnId>(), Err(ParseConnIdError));
    }
}
