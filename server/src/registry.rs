//! The open connections and groups of one mounted app: what `Host::send`,
//! `broadcast`, `publish`, `join` and the push API look connections up in.
//!
//! One `RwLock` guards connections and groups together, so membership can never
//! name a connection that has gone. It is a std lock, held only for map work and
//! non-blocking queue pushes, never across an `.await`. Sends, broadcasts and
//! publishes take it shared; opening, closing, joining and leaving take it
//! exclusively.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use switchboard_plugin_api::ConnId;
use tokio_tungstenite::tungstenite::Message;

use crate::outbox::{CloseRequest, Outbox, QueueError};

/// What the handshake established about a connection: fixed for its lifetime.
#[derive(Debug, Clone)]
pub struct HandshakeFacts {
    /// The client's address.
    pub peer: SocketAddr,
    /// The path it connected to (an app may be mounted on several).
    pub path: Arc<str>,
    /// The raw query string of the handshake.
    pub query: String,
    /// The handshake headers the app keeps (`info_headers`).
    pub headers: Vec<(String, String)>,
    /// The chosen subprotocol.
    pub subprotocol: Option<String>,
    /// Data the app attached at handshake.
    pub data: String,
    /// What the mount's path pattern captured, percent-decoded.
    pub params: Vec<(String, String)>,
    /// The `Sec-WebSocket-Extensions` the server answered (empty: none).
    pub extensions: Box<str>,
}

/// What the server keeps about one open connection.
#[derive(Debug)]
pub struct Connection {
    /// Its id.
    pub id: ConnId,
    /// Where its messages go.
    pub outbox: Outbox,
    /// What its handshake established.
    pub handshake: HandshakeFacts,
    /// When it opened.
    pub connected_at: SystemTime,
    /// Write every message on its own (`ConnOption::ONE_FRAME_PER_WRITE`).
    pub one_frame_per_write: AtomicBool,
    /// Pause before a frame the client may not have read the previous one of
    /// (`ConnOption::FRAME_PAUSE_MICROS`).
    pub frame_pause_micros: AtomicU64,
    /// Raised while one of its own callbacks runs (see `MountedApp::call`).
    pub in_callback: AtomicBool,
    /// Heard from since the last keepalive ping, or not (see [`Liveness`]).
    liveness: AtomicU8,
}

/// What the keepalive does with a connection at a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It was heard from since the last ping (or never pinged): ping it.
    Ping,
    /// Silent since the last ping: drop it.
    Unresponsive,
}

const HEARD: u8 = 0;
const PINGED: u8 = 1;

impl Connection {
    /// A connection that opens now, with default (batched) writes.
    pub fn new(id: ConnId, outbox: Outbox, handshake: HandshakeFacts) -> Connection {
        Connection {
            id,
            outbox,
            handshake,
            connected_at: SystemTime::now(),
            one_frame_per_write: AtomicBool::new(false),
            frame_pause_micros: AtomicU64::new(0),
            in_callback: AtomicBool::new(false),
            liveness: AtomicU8::new(HEARD),
        }
    }

    /// A frame arrived from the client (a load, and a store only when it
    /// changes: every frame calls it).
    pub fn heard(&self) {
        if self.liveness.load(Ordering::Relaxed) != HEARD {
            self.liveness.store(HEARD, Ordering::Relaxed);
        }
    }

    /// The keepalive's verdict at a sweep: ping it now, or drop it.
    pub fn sweep(&self) -> Liveness {
        match self.liveness.swap(PINGED, Ordering::Relaxed) {
            PINGED => Liveness::Unresponsive,
            _ => Liveness::Ping,
        }
    }
}

/// Why a registry operation failed. Both the `Host` calls and the push API
/// report these; each maps them to its own vocabulary, one variant to one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No open connection has that id (or it is closing).
    #[error("no open connection {0}")]
    UnknownConnection(ConnId),
    /// The app is shut down.
    #[error("the app has been shut down")]
    ShutDown,
    /// The connection's queue is full; it is being closed as a slow consumer.
    #[error("the client's outbound queue is full (it reads too slowly); it is being disconnected")]
    QueueFull,
    /// The message is larger than the server's `max_message_size`.
    #[error("message of {len} bytes is larger than the server's max_message_size ({max})")]
    TooLarge {
        /// The message's size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl RegistryError {
    fn from_queue(id: ConnId, error: QueueError) -> Self {
        match error {
            QueueError::Closed => RegistryError::UnknownConnection(id),
            // For the sender both mean the same: not queued, the recipient is being closed.
            QueueError::Full | QueueError::OverBudget => RegistryError::QueueFull,
        }
    }
}

/// Told of every change of who is connected and in which group, while the
/// registry's lock is held (so changes arrive in the order they happened);
/// must not block. The cluster mirrors them to the other nodes.
pub trait RegistryObserver: Send + Sync {
    /// A connection was added.
    fn opened(&self, id: ConnId);
    /// A connection was removed (and left every group).
    fn closed(&self, id: ConnId);
    /// A connection joined a group it was not in.
    fn joined(&self, id: ConnId, group: &str);
    /// A connection left a group it was in.
    fn left(&self, id: ConnId, group: &str);
}

/// Who a message is for, among one app's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience<'a> {
    /// One connection.
    One(ConnId),
    /// Every member of a group.
    Group(&'a str),
    /// Every connection.
    All,
}

/// Hashes a `ConnId` by its first eight bytes. Ids are random bytes the
/// server generates itself, so they are already uniformly spread and no client
/// can choose them to collide; SipHash would only cost time on every send.
#[derive(Default)]
struct ConnIdHasher(u64);

impl Hasher for ConnIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn write_usize(&mut self, _length_prefix: usize) {}
}

type IdMap<V> = HashMap<ConnId, V, BuildHasherDefault<ConnIdHasher>>;

#[derive(Default)]
struct State {
    connections: IdMap<Arc<Connection>>,
    /// Group name → members, each with its connection, so that a publish
    /// reaches every member's outbox without a lookup per member.
    groups: HashMap<String, IdMap<Arc<Connection>>>,
    /// Connection → the groups it is in, so closing leaves them all.
    memberships: IdMap<HashSet<String>>,
}

/// The connections and groups of one app.
pub struct Registry {
    state: RwLock<State>,
    shut_down: AtomicBool,
    max_message_size: usize,
    observer: Option<Arc<dyn RegistryObserver>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("connections", &self.len())
            .finish()
    }
}

impl Registry {
    /// An empty registry whose deliveries refuse messages larger than
    /// `max_message_size` (the server's, the same limit clients have).
    pub fn new(max_message_size: usize) -> Self {
        Registry {
            state: RwLock::default(),
            shut_down: AtomicBool::new(false),
            max_message_size,
            observer: None,
        }
    }

    /// An empty registry that tells `observer` of every change.
    pub fn observed(max_message_size: usize, observer: Arc<dyn RegistryObserver>) -> Self {
        Registry {
            observer: Some(observer),
            ..Registry::new(max_message_size)
        }
    }

    fn read(&self) -> Result<RwLockReadGuard<'_, State>, RegistryError> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(RegistryError::ShutDown);
        }
        Ok(self.state.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an open connection.
    pub fn insert(&self, connection: Arc<Connection>) {
        let id = connection.id;
        let mut state = self.write();
        state.connections.insert(id, connection);
        if let Some(observer) = &self.observer {
            observer.opened(id);
        }
    }

    /// Removes a connection and its group memberships.
    pub fn remove(&self, id: ConnId) {
        let mut state = self.write();
        if state.connections.remove(&id).is_none() {
            return;
        }
        if let Some(observer) = &self.observer {
            observer.closed(id);
        }
        if let Some(groups) = state.memberships.remove(&id) {
            for group in groups {
                if let Some(members) = state.groups.get_mut(&group) {
                    members.remove(&id);
                    if members.is_empty() {
                        state.groups.remove(&group);
                    }
                }
            }
        }
    }

    /// Marks the app shut down: every later call fails with `ShutDown`.
    pub fn shut_down(&self) {
        self.shut_down.store(true, Ordering::Release);
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .connections
            .len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One connection, if open.
    ///
    /// # Errors
    /// `UnknownConnection`, `ShutDown`.
    pub fn get(&self, id: ConnId) -> Result<Arc<Connection>, RegistryError> {
        self.read()?
            .connections
            .get(&id)
            .cloned()
            .ok_or(RegistryError::UnknownConnection(id))
    }

    /// Whether a message of `len` bytes may be delivered at all.
    ///
    /// # Errors
    /// `TooLarge` beyond the server's `max_message_size`.
    pub fn check_size(&self, len: usize) -> Result<(), RegistryError> {
        if len > self.max_message_size {
            return Err(RegistryError::TooLarge {
                len,
                max: self.max_message_size,
            });
        }
        Ok(())
    }

    /// Queues a message for its audience, except `except`; returns how many
    /// connections took it. The one delivery path of the `Host` calls and the
    /// push API, so the size limit and the errors are the same for both. The
    /// payload is shared, not copied, between connections.
    ///
    /// # Errors
    /// `TooLarge`, `ShutDown`; for one connection also `UnknownConnection` and
    /// `QueueFull` (a broadcast or publish skips connections that refuse).
    pub fn deliver(
        &self,
        audience: Audience<'_>,
        message: Message,
        except: Option<ConnId>,
    ) -> Result<u64, RegistryError> {
        self.check_size(message.len())?;
        let state = self.read()?;
        match audience {
            Audience::One(id) => {
                let connection = state
                    .connections
                    .get(&id)
                    .ok_or(RegistryError::UnknownConnection(id))?;
                connection
                    .outbox
                    .push(message)
                    .map_err(|e| RegistryError::from_queue(id, e))?;
                Ok(1)
            }
            Audience::All => Ok(deliver_each(
                state.connections.values().map(|c| &**c),
                &message,
                except,
            )),
            Audience::Group(group) => {
                let Some(members) = state.groups.get(group) else {
                    return Ok(0);
                };
                Ok(deliver_each(
                    members.values().map(|c| &**c),
                    &message,
                    except,
                ))
            }
        }
    }

    /// Asks one connection to close.
    ///
    /// # Errors
    /// `UnknownConnection`, `ShutDown`.
    pub fn close(&self, id: ConnId, request: CloseRequest) -> Result<(), RegistryError> {
        self.get(id)?.outbox.request_close(request);
        Ok(())
    }

    /// The ids of every open connection.
    ///
    /// # Errors
    /// `ShutDown`.
    pub fn ids(&self) -> Result<Vec<ConnId>, RegistryError> {
        Ok(self.read()?.connections.keys().copied().collect())
    }

    /// Adds a connection to a group.
    ///
    /// # Errors
    /// `UnknownConnection`, `ShutDown`.
    pub fn join(&self, id: ConnId, group: &str) -> Result<(), RegistryError> {
        drop(self.read()?);
        let mut state = self.write();
        let Some(connection) = state.connections.get(&id).cloned() else {
            return Err(RegistryError::UnknownConnection(id));
        };
        let members = state.groups.entry(group.to_owned()).or_default();
        if members.insert(id, connection).is_none() {
            if let Some(observer) = &self.observer {
                observer.joined(id, group);
            }
        }
        state
            .memberships
            .entry(id)
            .or_default()
            .insert(group.to_owned());
        Ok(())
    }

    /// Removes a connection from a group (no error if it was not a member).
    ///
    /// # Errors
    /// `UnknownConnection`, `ShutDown`.
    pub fn leave(&self, id: ConnId, group: &str) -> Result<(), RegistryError> {
        drop(self.read()?);
        let mut state = self.write();
        if !state.connections.contains_key(&id) {
            return Err(RegistryError::UnknownConnection(id));
        }
        if let Some(members) = state.groups.get_mut(group) {
            if members.remove(&id).is_some() {
                if let Some(observer) = &self.observer {
                    observer.left(id, group);
                }
            }
            if members.is_empty() {
                state.groups.remove(group);
            }
        }
        if let Some(groups) = state.memberships.get_mut(&id) {
            groups.remove(group);
        }
        Ok(())
    }

    /// The members of a group.
    ///
    /// # Errors
    /// `ShutDown`.
    pub fn members(&self, group: &str) -> Result<Vec<ConnId>, RegistryError> {
        Ok(self
            .read()?
            .groups
            .get(group)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default())
    }

    /// Every open connection with the groups it is in (for the cluster's
    /// snapshots).
    pub fn snapshot(&self) -> Vec<(ConnId, Vec<String>)> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .connections
            .keys()
            .map(|id| {
                let groups = state
                    .memberships
                    .get(id)
                    .map(|groups| groups.iter().cloned().collect())
                    .unwrap_or_default();
                (*id, groups)
            })
            .collect()
    }

    /// Whether a callback of one of its connections is running.
    pub fn any_in_callback(&self) -> bool {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .connections
            .values()
            .any(|c| c.in_callback.load(Ordering::SeqCst))
    }

    /// Runs one keepalive sweep over every connection: a ping for those heard
    /// from since the last, a drop for those silent since.
    pub fn sweep(&self) {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        for connection in state.connections.values() {
            match connection.sweep() {
                Liveness::Ping => connection.outbox.request_ping(),
                Liveness::Unresponsive => connection.outbox.report_unresponsive(),
            }
        }
    }

    /// Asks every connection to close (used at shutdown).
    pub fn close_all(&self, request: &CloseRequest) {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        for connection in state.connections.values() {
            connection.outbox.request_close(request.clone());
        }
    }
}

fn deliver_each<'a>(
    connections: impl Iterator<Item = &'a Connection>,
    message: &Message,
    except: Option<ConnId>,
) -> u64 {
    let mut delivered = 0;
    for connection in connections {
        if Some(connection.id) != except && connection.outbox.push(message.clone()).is_ok() {
            delivered += 1;
        }
    }
    delivered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_budget::MemoryBudget;
    use crate::outbox::{outbox, OutboxReceiver};

    fn open(registry: &Registry, n: u8) -> (ConnId, OutboxReceiver) {
        let id = ConnId::from_bytes([n; 16]);
        let (tx, rx) = outbox(8, 1 << 20, Default::default(), MemoryBudget::unlimited());
        let handshake = HandshakeFacts {
            peer: "127.0.0.1:1".parse().unwrap(),
            path: "/test".into(),
            query: String::new(),
            headers: Vec::new(),
            subprotocol: None,
            data: String::new(),
            params: Vec::new(),
            extensions: Box::default(),
        };
        registry.insert(Arc::new(Connection::new(id, tx, handshake)));
        (id, rx)
    }

    #[test]
    fn publish_reaches_members_only_and_closing_leaves_every_group() {
        let registry = Registry::new(1 << 20);
        let (a, mut rx_a) = open(&registry, 1);
        let (b, mut rx_b) = open(&registry, 2);
        let (_c, mut rx_c) = open(&registry, 3);
        registry.join(a, "room").unwrap();
        registry.join(b, "room").unwrap();
        registry.join(b, "other").unwrap();
        assert_eq!(
            registry
                .deliver(Audience::Group("room"), Message::text("hi"), Some(a))
                .unwrap(),
            1
        );
        assert!(rx_a.try_recv().is_none());
        assert_eq!(rx_b.try_recv(), Some(Message::text("hi")));
        assert!(rx_c.try_recv().is_none());

        registry.remove(b);
        assert_eq!(registry.members("room").unwrap(), vec![a]);
        assert!(registry.members("other").unwrap().is_empty());
        assert_eq!(
            registry.join(b, "room"),
            Err(RegistryError::UnknownConnection(b))
        );
    }

    #[test]
    fn broadcast_skips_the_excepted_connection_and_shutdown_refuses_calls() {
        let registry = Registry::new(1 << 20);
        let (a, _rx_a) = open(&registry, 1);
        let (_b, _rx_b) = open(&registry, 2);
        let all = |except| registry.deliver(Audience::All, Message::text("x"), except);
        assert_eq!(all(Some(a)).unwrap(), 1);
        assert_eq!(all(None).unwrap(), 2);
        assert_eq!(
            registry.deliver(
                Audience::One(a),
                Message::binary(vec![0; (1 << 20) + 1]),
                None
            ),
            Err(RegistryError::TooLarge {
                len: (1 << 20) + 1,
                max: 1 << 20
            })
        );
        registry.shut_down();
        assert_eq!(
            registry.deliver(Audience::One(a), Message::text("x"), None),
            Err(RegistryError::ShutDown)
        );
    }
}
