//! The server side of the `Host` trait object: what an app's calls do.
//!
//! One `AppHost` exists per app instance and is cloned freely (it is an `Arc`
//! inside). Every call works from any thread and never blocks: sends go into
//! the connections' bounded outboxes through [`Registry::deliver`], the same
//! path the push API takes. A message is copied out of the plugin's memory once
//! (or not at all when it is part of the message being handled, see
//! [`crate::callback_scope`]); broadcasts and publishes share that one buffer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, ROption, RResult, RStr, RString, RVec};
use bytes::Bytes;
use switchboard_plugin_api::abi::{
    ConnInfo, ConnOption, Header, Host, HostBox, HostError, HostErrorKind, Host_TO, LogLevel,
    MessageRef, ServerInfo, StateReply, StateRequest,
};
use switchboard_plugin_api::ConnId;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::callback_scope;
use crate::cluster::{self, Cluster, ClusterError, DeliveryError, Holder};
use crate::outbox::CloseRequest;
use crate::registry::{Audience, Registry, RegistryError};

/// Longest close reason a close frame can carry (125 bytes minus the code).
pub const MAX_CLOSE_REASON: usize = 123;

/// What every app may learn about the server (`Host::server_info`).
#[derive(Debug, Default)]
pub struct ServerFacts {
    /// The bound address, set once the server listens.
    pub listen: std::sync::OnceLock<std::net::SocketAddr>,
    /// The push API's path (a reload may move it).
    pub push_path: std::sync::RwLock<String>,
    /// The cluster this node is part of (`[cluster]`), if any: `Host` calls
    /// reach connections on the other nodes through it, and shared state is
    /// kept in its Redis.
    pub cluster: Option<Arc<Cluster>>,
    /// Every app's shared state on a single node (kept across reloads).
    pub state: switchboard_plugin_api::memory_state::MemoryState,
}

/// The host handle of one app instance.
#[derive(Clone)]
pub struct AppHost {
    registry: Arc<Registry>,
    app: Arc<str>,
    facts: Arc<ServerFacts>,
    /// Set when the instance is shut down (by shutdown, an unmount, or a
    /// reload that replaced it): every call then answers `SHUT_DOWN`, while
    /// the registry may live on with the instance's successor.
    shut_down: Arc<AtomicBool>,
}

impl AppHost {
    /// A host over an app's registry for one instance, refusing every call
    /// once `shut_down` is set.
    pub fn new(
        registry: Arc<Registry>,
        app: Arc<str>,
        facts: Arc<ServerFacts>,
        shut_down: Arc<AtomicBool>,
    ) -> Self {
        AppHost {
            registry,
            app,
            facts,
            shut_down,
        }
    }

    /// The registry, unless this instance is shut down.
    fn live(&self) -> Result<&Registry, HostError> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(RegistryError::ShutDown.into());
        }
        Ok(&self.registry)
    }

    /// As the trait object handed to the plugin.
    pub fn into_abi(self) -> HostBox {
        Host_TO::from_ptr(RArc::new(self), TD_Opaque)
    }

    /// Whether `conn` is this node's (always, outside a cluster).
    fn is_local(&self, conn: ConnId) -> Result<bool, HostError> {
        match &self.facts.cluster {
            Some(cluster) => Ok(cluster.holder(conn)? == Holder::Local),
            None => Ok(true),
        }
    }

    fn deliver(
        &self,
        audience: Audience<'_>,
        message: MessageRef<'_>,
        except: ROption<ConnId>,
    ) -> RResult<u64, HostError> {
        result(self.live().and_then(|registry| {
            Ok(cluster::deliver(
                self.facts.cluster.as_deref(),
                registry,
                &self.app,
                audience,
                to_message(message),
                except.into_option(),
            )?)
        }))
    }
}

impl From<DeliveryError> for HostError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::Here(e) => e.into(),
            DeliveryError::Elsewhere(e) => e.into(),
        }
    }
}

impl From<ClusterError> for HostError {
    fn from(e: ClusterError) -> Self {
        let kind = match e {
            ClusterError::Unavailable | ClusterError::Timeout { .. } => HostErrorKind::UNAVAILABLE,
            ClusterError::QueueFull => HostErrorKind::QUEUE_FULL,
            ClusterError::UnknownConnection(_) => HostErrorKind::UNKNOWN_CONNECTION,
            ClusterError::Refused(_) => HostErrorKind::INVALID_ARGUMENT,
        };
        error(kind, e.to_string())
    }
}

/// The message as the connection writes it: a shared slice of the message
/// being handled when it is part of it, a copy otherwise.
fn to_message(message: MessageRef<'_>) -> Message {
    match message {
        MessageRef::Text(text) => {
            let shared = callback_scope::share_inbound(text.as_str().as_bytes())
                .and_then(|b| Utf8Bytes::try_from(b).ok());
            Message::Text(shared.unwrap_or_else(|| text.as_str().into()))
        }
        MessageRef::Binary(bytes) => {
            let bytes = bytes.as_slice();
            Message::Binary(
                callback_scope::share_inbound(bytes)
                    .unwrap_or_else(|| Bytes::copy_from_slice(bytes)),
            )
        }
    }
}

fn error(kind: HostErrorKind, message: String) -> HostError {
    HostError {
        kind,
        message: message.into(),
    }
}

impl From<RegistryError> for HostError {
    fn from(e: RegistryError) -> Self {
        let kind = match e {
            RegistryError::UnknownConnection(_) => HostErrorKind::UNKNOWN_CONNECTION,
            RegistryError::ShutDown => HostErrorKind::SHUT_DOWN,
            RegistryError::QueueFull => HostErrorKind::QUEUE_FULL,
            RegistryError::TooLarge { .. } => HostErrorKind::INVALID_ARGUMENT,
        };
        error(kind, e.to_string())
    }
}

fn result<T>(r: Result<T, HostError>) -> RResult<T, HostError> {
    r.into()
}

/// Whether a server may send this close code (RFC 6455 §7.4).
pub fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Why a close an app asked for cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidClose {
    /// The code is reserved or out of range.
    #[error("close code {0} may not be sent (use 1000-1003, 1007-1014 or 3000-4999)")]
    Code(u16),
    /// The reason does not fit in a close frame.
    #[error("close reason is {0} bytes; at most {MAX_CLOSE_REASON} fit in a close frame")]
    ReasonTooLong(usize),
}

/// Checks a close code and reason an app asked for.
///
/// # Errors
/// What is not allowed.
pub fn close_request(code: u16, reason: &str) -> Result<CloseRequest, InvalidClose> {
    if !is_sendable_close_code(code) {
        return Err(InvalidClose::Code(code));
    }
    if reason.len() > MAX_CLOSE_REASON {
        return Err(InvalidClose::ReasonTooLong(reason.len()));
    }
    Ok(CloseRequest {
        code,
        reason: reason.to_owned(),
    })
}

impl Host for AppHost {
    fn send(&self, conn: ConnId, message: MessageRef<'_>) -> RResult<(), HostError> {
        self.deliver(Audience::One(conn), message, ROption::RNone)
            .map(|_| ())
    }

    fn broadcast(&self, message: MessageRef<'_>, skip: ROption<ConnId>) -> RResult<u64, HostError> {
        self.deliver(Audience::All, message, skip)
    }

    fn close(&self, conn: ConnId, code: u16, reason: RStr<'_>) -> RResult<(), HostError> {
        result(
            close_request(code, reason.as_str())
                .map_err(|e| error(HostErrorKind::INVALID_ARGUMENT, e.to_string()))
                .and_then(|request| {
                    let registry = self.live()?;
                    match &self.facts.cluster {
                        Some(cluster) if !self.is_local(conn)? => {
                            Ok(cluster.close(&self.app, conn, &request)?)
                        }
                        _ => Ok(registry.close(conn, request)?),
                    }
                }),
        )
    }

    fn connections(&self) -> RResult<RVec<ConnId>, HostError> {
        result(self.live().and_then(|r| {
            let mut ids = r.ids()?;
            if let Some(cluster) = &self.facts.cluster {
                ids.extend(cluster.remote_connections(&self.app));
            }
            Ok(RVec::from(ids))
        }))
    }

    fn info(&self, conn: ConnId) -> RResult<ConnInfo, HostError> {
        result(self.live().and_then(|r| Ok(r.get(conn)?)).map(|c| {
            let h = &c.handshake;
            ConnInfo {
                id: c.id,
                peer: h.peer.to_string().into(),
                path: RString::from(&*h.path),
                query: h.query.as_str().into(),
                headers: h
                    .headers
                    .iter()
                    .map(|(name, value)| Header {
                        name: name.as_str().into(),
                        value: value.as_str().into(),
                    })
                    .collect(),
                subprotocol: h.subprotocol.as_deref().map(RString::from).into(),
                connected_at_ms: c
                    .connected_at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                data: h.data.as_str().into(),
                params: h
                    .params
                    .iter()
                    .map(|(name, value)| Header {
                        name: name.as_str().into(),
                        value: value.as_str().into(),
                    })
                    .collect(),
                extensions: RString::from(&*h.extensions),
            }
        }))
    }

    fn join(&self, conn: ConnId, group: RStr<'_>) -> RResult<(), HostError> {
        result(self.live().and_then(|r| Ok(r.join(conn, group.as_str())?)))
    }

    fn leave(&self, conn: ConnId, group: RStr<'_>) -> RResult<(), HostError> {
        result(self.live().and_then(|r| Ok(r.leave(conn, group.as_str())?)))
    }

    fn publish(
        &self,
        group: RStr<'_>,
        message: MessageRef<'_>,
        skip: ROption<ConnId>,
    ) -> RResult<u64, HostError> {
        self.deliver(Audience::Group(group.as_str()), message, skip)
    }

    fn members(&self, group: RStr<'_>) -> RResult<RVec<ConnId>, HostError> {
        result(self.live().and_then(|r| {
            let mut members = r.members(group.as_str())?;
            if let Some(cluster) = &self.facts.cluster {
                members.extend(cluster.remote_members(&self.app, group.as_str()));
            }
            Ok(RVec::from(members))
        }))
    }

    fn configure(&self, conn: ConnId, option: ConnOption, value: u64) -> RResult<(), HostError> {
        result(match option {
            ConnOption::ONE_FRAME_PER_WRITE => self.live().and_then(|r| {
                let connection = r.get(conn)?;
                connection
                    .one_frame_per_write
                    .store(value != 0, Ordering::Relaxed);
                // The server sets a paced connection's pace: a full queue is ours.
                connection.outbox.set_close_when_full(value == 0);
                Ok(())
            }),
            ConnOption::FRAME_PAUSE_MICROS if value > 1_000_000 => Err(error(
                HostErrorKind::INVALID_ARGUMENT,
                "a frame pause of more than a second".to_owned(),
            )),
            ConnOption::FRAME_PAUSE_MICROS => self.live().and_then(|r| {
                r.get(conn)?
                    .frame_pause_micros
                    .store(value, Ordering::Relaxed);
                Ok(())
            }),
            other => Err(error(
                HostErrorKind::INVALID_ARGUMENT,
                format!("unknown connection option {}", other.0),
            )),
        })
    }

    fn server_info(&self) -> ServerInfo {
        ServerInfo {
            listen: self
                .facts
                .listen
                .get()
                .map(|a| a.to_string())
                .unwrap_or_default()
                .into(),
            push_path: self
                .facts
                .push_path
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_str()
                .into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn state(&self, request: &StateRequest<'_>) -> RResult<StateReply, HostError> {
        result(self.live().and_then(|_| match &self.facts.cluster {
            Some(cluster) => Ok(cluster.state(&self.app, request)?),
            None => {
                // One namespace per app: its name cannot contain a NUL.
                let key = format!("{}\0{}", self.app, request.key.as_str());
                self.facts
                    .state
                    .run(&key, request)
                    .map_err(|e| error(HostErrorKind::INVALID_ARGUMENT, e.to_string()))
            }
        }))
    }

    fn log(&self, level: LogLevel, text: RStr<'_>) {
        let (app, text) = (&*self.app, text.as_str());
        // The connection whose callback logs (none outside callbacks).
        let conn = crate::callback_scope::current_conn().map(tracing::field::display);
        match level {
            LogLevel::ERROR => tracing::error!(target: "plugin", app = %app, conn, "{text}"),
            LogLevel::WARN => tracing::warn!(target: "plugin", app = %app, conn, "{text}"),
            LogLevel::INFO => tracing::info!(target: "plugin", app = %app, conn, "{text}"),
            LogLevel::DEBUG => tracing::debug!(target: "plugin", app = %app, conn, "{text}"),
            _ => tracing::trace!(target: "plugin", app = %app, conn, "{text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sendable_close_codes_and_short_reasons_pass() {
        assert!(close_request(1000, "bye").is_ok());
        assert!(close_request(4000, "custom").is_ok());
        for code in [0, 999, 1004, 1005, 1006, 1015, 2000, 5000] {
            assert!(close_request(code, "").is_err(), "{code}");
        }
        assert_eq!(
            close_request(1000, &"x".repeat(124)),
            Err(InvalidClose::ReasonTooLong(124))
        );
    }
}
