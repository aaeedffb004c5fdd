//! The app's handle to the server ([`Host`]) and what its calls return.

use std::fmt;
use std::time::Duration;

use abi_stable::std_types::{ROption, RStr, RVec};
use serde::Serialize;

use super::{ConnInfo, Message, SharedState};
use crate::abi::{self, ConnId, HostBox, HostErrorKind, LogLevel};

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

    /// True when a cluster's Redis is out of reach (shared state, or a
    /// connection of another node): worth telling the client to try again
    /// later rather than failing the callback.
    pub fn is_unavailable(&self) -> bool {
        self.kind == HostErrorKind::UNAVAILABLE
    }

    /// Whether `error` (as a callback returns it) is a host error that
    /// [`HostError::is_unavailable`].
    pub fn is_unavailable_error(error: &(dyn std::error::Error + 'static)) -> bool {
        error
            .downcast_ref::<HostError>()
            .is_some_and(HostError::is_unavailable)
    }

    pub(super) fn from_abi(error: abi::HostError) -> Self {
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

    /// The app's shared state: one for the app across a cluster, kept by
    /// the server across reloads (see [`SharedState`]).
    pub fn state(&self) -> SharedState<'_> {
        SharedState::new(self)
    }

    pub(super) fn state_call(
        &self,
        request: &abi::StateRequest<'_>,
    ) -> Result<abi::StateReply, HostError> {
        self.inner
            .state(request)
            .into_result()
            .map_err(HostError::from_abi)
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

    /// Serializes `value` as JSON and queues it for every connection of this
    /// app but `skip` (if any); returns how many.
    ///
    /// # Errors
    /// As [`Host::broadcast_except`], or `INVALID_ARGUMENT` if `value` cannot be serialized.
    pub fn broadcast_json<T: Serialize + ?Sized>(
        &self,
        skip: Option<ConnId>,
        value: &T,
    ) -> Result<u64, HostError> {
        let text = serde_json::to_string(value).map_err(|e| HostError::invalid(e.to_string()))?;
        self.broadcast_except(skip, Message::Text(&text))
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

    /// Serializes `value` as JSON and queues it for every member of a group
    /// but `skip` (if any); returns how many.
    ///
    /// # Errors
    /// As [`Host::publish_except`], or `INVALID_ARGUMENT` if `value` cannot be serialized.
    pub fn publish_json<T: Serialize + ?Sized>(
        &self,
        group: &str,
        skip: Option<ConnId>,
        value: &T,
    ) -> Result<u64, HostError> {
        let text = serde_json::to_string(value).map_err(|e| HostError::invalid(e.to_string()))?;
        self.publish_except(group, skip, Message::Text(&text))
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

    /// Facts about the running server: where it listens, the push API's path, its version.
    pub fn server_info(&self) -> ServerInfo {
        let info = self.inner.server_info();
        ServerInfo {
            listen: info.listen.as_str().parse().ok(),
            push_path: info.push_path.into_string(),
            version: info.version.into_string(),
        }
    }

    /// How messages to this connection are written to its socket (see [`FramePacing`]).
    ///
    /// # Errors
    /// `UNKNOWN_CONNECTION`, `SHUT_DOWN`, or `INVALID_ARGUMENT` from a server that lacks it.
    pub fn set_frame_pacing(&self, conn: ConnId, pacing: FramePacing) -> Result<(), HostError> {
        let (one_per_write, pause) = match pacing {
            FramePacing::Batched => (0, Duration::ZERO),
            FramePacing::OnePerWrite { pause } => (1, pause),
        };
        let micros = u64::try_from(pause.as_micros()).unwrap_or(u64::MAX);
        self.inner
            .configure(conn, abi::ConnOption::FRAME_PAUSE_MICROS, micros)
            .and_then(|()| {
                self.inner
                    .configure(conn, abi::ConnOption::ONE_FRAME_PER_WRITE, one_per_write)
            })
            .into_result()
            .map_err(HostError::from_abi)
    }
}

/// Facts about the running server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// The address the server listens on (`None` before it listens).
    pub listen: Option<std::net::SocketAddr>,
    /// The push API's path (`/_/push`).
    pub push_path: String,
    /// The server's version.
    pub version: String,
}

impl ServerInfo {
    /// The push API's URL as seen from this machine (a wildcard listen address
    /// becomes loopback).
    pub fn local_push_url(&self) -> Option<String> {
        let mut addr = self.listen?;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        Some(format!("http://{addr}{}", self.push_path))
    }
}

/// How the server writes messages to one connection's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FramePacing {
    /// Several queued messages per write (the default, the fastest).
    #[default]
    Batched,
    /// Each message in a write of its own, for clients that decode one frame per
    /// read. When the client has sent nothing since the previous frame (the 101
    /// response counts), the server waits `pause` first, so that such a client
    /// gets each frame in a read of its own.
    OnePerWrite {
        /// The pause (a few milliseconds suffice on a local network).
        pause: Duration,
    },
}

/// A host whose every call fails with `SHUT_DOWN`, for the SDK's own tests.
#[cfg(test)]
impl Host {
    pub(super) fn detached() -> Self {
        use abi_stable::sabi_trait::TD_Opaque;
        use abi_stable::std_types::RResult;

        #[derive(Clone)]
        struct Detached;
        fn gone<T>() -> RResult<T, abi::HostError> {
            RResult::RErr(abi::HostError {
                kind: HostErrorKind::SHUT_DOWN,
                message: "detached".into(),
            })
        }
        impl abi::Host for Detached {
            fn send(&self, _: ConnId, _: abi::MessageRef<'_>) -> RResult<(), abi::HostError> {
                gone()
            }
            fn broadcast(
                &self,
                _: abi::MessageRef<'_>,
                _: ROption<ConnId>,
            ) -> RResult<u64, abi::HostError> {
                gone()
            }
            fn close(&self, _: ConnId, _: u16, _: RStr<'_>) -> RResult<(), abi::HostError> {
                gone()
            }
            fn connections(&self) -> RResult<RVec<ConnId>, abi::HostError> {
                gone()
            }
            fn info(&self, _: ConnId) -> RResult<abi::ConnInfo, abi::HostError> {
                gone()
            }
            fn join(&self, _: ConnId, _: RStr<'_>) -> RResult<(), abi::HostError> {
                gone()
            }
            fn leave(&self, _: ConnId, _: RStr<'_>) -> RResult<(), abi::HostError> {
                gone()
            }
            fn publish(
                &self,
                _: RStr<'_>,
                _: abi::MessageRef<'_>,
                _: ROption<ConnId>,
            ) -> RResult<u64, abi::HostError> {
                gone()
            }
            fn members(&self, _: RStr<'_>) -> RResult<RVec<ConnId>, abi::HostError> {
                gone()
            }
            fn log(&self, _: LogLevel, _: RStr<'_>) {}
        }
        Host::from_abi(abi::Host_TO::from_ptr(
            abi_stable::std_types::RArc::new(Detached),
            TD_Opaque,
        ))
    }
}
