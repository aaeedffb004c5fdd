//! Several nodes behind one address, sharing deliveries through Redis
//! (`[cluster]`). Without it nothing here runs and a node is on its own.
//!
//! - **Who holds a connection** is in its id: the first four bytes of every
//!   id a node hands out are a tag derived from its node id
//!   ([`peers::tag_of`]), the other twelve stay random (96 bits no client
//!   can guess). A send to a connection of another node goes straight to
//!   that node's channel; a send to a connection of this node never touches
//!   Redis; no registry in Redis has to be written per connection or cleaned
//!   up after a node dies.
//! - **Broadcasts and group publishes** are delivered here, then published
//!   once on the shared channel; every other node delivers them to its own
//!   connections. One message per node, not per client.
//! - **Who is connected and in which group** elsewhere is mirrored in memory
//!   ([`peers`]) from the changes each node announces, so `members`,
//!   `connections` and the counts answer at once, eventually consistent.
//! - **Liveness**: every node publishes a heartbeat; one not heard from
//!   within `node_timeout` is gone, with its connections.
//! - **Redis lost**: this node goes on serving its own clients; a send to a
//!   connection elsewhere fails at once ([`ClusterError::Unavailable`], 503
//!   for the push API); the link reconnects, resubscribes and asks every
//!   node for a snapshot by itself (see [`link`]).

mod envelope;
mod link;
mod peers;
mod state;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use switchboard_plugin_api::ConnId;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::config::ClusterConfig;
use crate::metrics::{ClusterMetrics, KindLabels, ReasonLabels};
use crate::outbox::CloseRequest;
use crate::registry::{Audience, Registry, RegistryError, RegistryObserver};

pub use envelope::AppSnapshot;
use envelope::{id_text, Change, Header, To};
use peers::Peers;

/// Why a delivery to another node did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// Redis cannot be reached now.
    #[error(
        "the cluster backplane (Redis) is unavailable; only this node's connections can be reached"
    )]
    Unavailable,
    /// Too many messages wait to be published.
    #[error("the cluster backplane's queue is full (cluster.queue)")]
    QueueFull,
    /// No live node holds the connection.
    #[error("no open connection {0}")]
    UnknownConnection(ConnId),
    /// The operation itself was refused (shared state: a key of another kind).
    #[error("{0}")]
    Refused(String),
    /// The node holding the connection did not answer in time.
    #[error("node {node} did not answer within {timeout:?}")]
    Timeout {
        /// The node.
        node: String,
        /// `cluster.request_timeout`.
        timeout: Duration,
    },
}

/// Why a delivery failed: here, or on its way to another node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Refused by this node's registry (size, unknown connection, ...).
    #[error(transparent)]
    Here(#[from] RegistryError),
    /// The connection's node cannot be reached (or no node holds it).
    #[error(transparent)]
    Elsewhere(#[from] ClusterError),
}

/// The one delivery path of a node, which `Host` calls and the push API
/// share: [`Registry::deliver`] for this node's connections and, in a
/// cluster, the node holding the connection, or (broadcasts, publishes)
/// every other node. Counts what this node delivered plus what the others
/// hold, as far as it knows.
///
/// # Errors
/// What the registry refuses; for a connection of another node, why it
/// cannot be reached.
pub fn deliver(
    cluster: Option<&Cluster>,
    registry: &Registry,
    app: &str,
    audience: Audience<'_>,
    message: Message,
    except: Option<ConnId>,
) -> Result<u64, DeliveryError> {
    let Some(cluster) = cluster else {
        return Ok(registry.deliver(audience, message, except)?);
    };
    if let Audience::One(conn) = audience {
        if cluster.holder(conn)? != Holder::Local {
            registry.check_size(message.len())?;
            cluster.send(app, conn, &message)?;
            return Ok(1);
        }
        return Ok(registry.deliver(audience, message, except)?);
    }
    let here = registry.deliver(audience, message.clone(), except)?;
    Ok(here + cluster.fan_out(app, audience, &message, except))
}

/// Where a connection is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// On this node.
    Local,
    /// On another live node.
    Node(String),
}

/// What the cluster asks of this node's apps (the server answers it).
pub trait LocalApps: Send + Sync + 'static {
    /// Delivers a message that came from another node to this node's
    /// connections of `app`; returns how many took it.
    fn deliver(
        &self,
        app: &str,
        audience: Audience<'_>,
        message: Message,
        except: Option<ConnId>,
    ) -> u64;

    /// Closes a connection of `app` on this node, if it holds it.
    fn close(&self, app: &str, id: ConnId, request: CloseRequest);

    /// Closes every connection of this node (it was written off by the others).
    fn close_all(&self, code: u16, reason: &str);

    /// Tells `app` that a connection another node held is lost (`on_lost`).
    fn lost(&self, app: &str, id: ConnId) -> Pin<Box<dyn Future<Output = ()> + Send>>;

    /// Every app's connections and their groups on this node.
    fn snapshot(&self) -> Vec<AppSnapshot>;

    /// Answers a push API item for a client of this node, as the push API
    /// would: the HTTP status and the JSON body.
    fn push(&self, item: Value) -> Pin<Box<dyn Future<Output = (u16, Value)> + Send>>;

    /// How many connections this node holds, all apps together.
    fn connection_count(&self) -> u64;
}

/// Most bytes of envelopes waiting to be published, all together.
const QUEUE_BYTES: usize = 64 << 20;

/// Where an envelope is published.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Channel {
    /// The channel every node subscribes to.
    All,
    /// One node's own channel.
    Node(String),
}

/// Work for the link, in the order it was queued.
#[derive(Debug)]
enum Work {
    /// An envelope to publish.
    Publish {
        /// Where.
        channel: Channel,
        /// The envelope.
        bytes: Vec<u8>,
    },
    /// A shared-state operation of an app of this node.
    State(state::StateJob),
    /// A connection of this node opened (or closed): kept in Redis, so that
    /// whoever outlives this node can tell its apps the connection is lost.
    Track {
        /// Opened (else closed).
        open: bool,
        /// `<app>\n<conn>`.
        member: String,
    },
}

/// Work waiting for the link.
#[derive(Debug)]
struct Outbound {
    kind: &'static str,
    work: Work,
}

impl Outbound {
    /// Bytes it holds, for the queue's bound.
    fn len(&self) -> usize {
        match &self.work {
            Work::Publish { bytes, .. } => bytes.len(),
            Work::State(job) => job.len(),
            Work::Track { .. } => 0,
        }
    }
}

/// This node's membership in a cluster.
pub struct Cluster {
    config: ClusterConfig,
    /// Drawn at start: tells two processes given the same node id apart.
    instance: u64,
    tag: [u8; 4],
    client: redis::Client,
    up: AtomicBool,
    outbound: mpsc::Sender<Outbound>,
    outbound_rx: Mutex<Option<mpsc::Receiver<Outbound>>>,
    peers: Mutex<Peers>,
    pending: Mutex<HashMap<u64, oneshot::Sender<(u16, Value)>>>,
    next_request: AtomicU64,
    /// A membership change could not be queued: publish a whole snapshot.
    resync: AtomicBool,
    /// Bytes of the envelopes in `outbound`.
    queued_bytes: std::sync::atomic::AtomicUsize,
    metrics: ClusterMetrics,
    /// The connection that shared-state operations use, while Redis is up.
    commands: Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// The server's runtime, for state operations from plugins' own threads.
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
    /// Asks the link to leave the cluster (after every connection closed).
    leave: tokio_util::sync::CancellationToken,
    link: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The connection made before the apps were built, until the link takes it.
    session: Mutex<Option<link::Session>>,
    /// Set once the link runs: shared-state operations go through its queue.
    linked: AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.config.node_id)
            .finish()
    }
}

/// Why the cluster could not be joined at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach Redis at {url}: {reason}")]
pub struct JoinError {
    /// The Redis URL, without its password.
    pub url: String,
    /// Why.
    pub reason: String,
}

impl Cluster {
    /// This node's membership, not yet connected (see [`Cluster::start`]).
    ///
    /// # Errors
    /// The Redis URL does not parse (the config checks it first).
    pub fn new(config: ClusterConfig, metrics: ClusterMetrics) -> Result<Arc<Cluster>, JoinError> {
        let client = redis::Client::open(config.redis.as_str()).map_err(|e| JoinError {
            url: redacted(&config.redis),
            reason: e.to_string(),
        })?;
        let (outbound, outbound_rx) = mpsc::channel(config.queue);
        let instance = u64::from_le_bytes(
            uuid::Uuid::new_v4().as_bytes()[..8]
                .try_into()
                .unwrap_or_default(),
        );
        Ok(Arc::new(Cluster {
            tag: peers::tag_of(&config.node_id),
            config,
            instance,
            client,
            up: AtomicBool::new(false),
            outbound,
            outbound_rx: Mutex::new(Some(outbound_rx)),
            peers: Mutex::default(),
            pending: Mutex::default(),
            next_request: AtomicU64::new(1),
            resync: AtomicBool::new(false),
            queued_bytes: std::sync::atomic::AtomicUsize::new(0),
            metrics,
            commands: Mutex::new(None),
            runtime: std::sync::OnceLock::new(),
            leave: tokio_util::sync::CancellationToken::new(),
            link: Mutex::new(None),
            session: Mutex::new(None),
            linked: AtomicBool::new(false),
        }))
    }

    /// Connects to Redis (refusing to start when it cannot within
    /// `request_timeout`); from now on shared state works. Call it on the
    /// server's runtime, before the apps are built.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn connect(self: &Arc<Self>) -> Result<(), JoinError> {
        let _ = self.runtime.set(tokio::runtime::Handle::current());
        let session = link::Session::open(self)
            .await
            .map_err(|reason| JoinError {
                url: redacted(&self.config.redis),
                reason,
            })?;
        self.set_up(Some(&session));
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(session);
        Ok(())
    }

    /// Joins the cluster over the connection [`Cluster::connect`] made: a
    /// task of its own keeps the link up until [`Cluster::leave`].
    pub fn start(self: &Arc<Self>, local: Arc<dyn LocalApps>) {
        let session = self
            .session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let outbound = self
            .outbound_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let (Some(session), Some(outbound)) = (session, outbound) else {
            tracing::error!("cluster: started without a connection to Redis");
            return;
        };
        let task = tokio::spawn(link::run(
            self.clone(),
            session,
            local,
            outbound,
            self.leave.clone(),
        ));
        *self.link.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        self.linked.store(true, Ordering::Release);
    }

    /// Leaves the cluster: says bye and unregisters this node (its
    /// connections are closed by now, their `on_close` ran), within
    /// `request_timeout`.
    pub async fn leave(&self) {
        self.leave.cancel();
        let task = self.link.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(self.config.request_timeout * 2, task).await;
        }
    }

    /// Whether the Redis of `config` answers a PING within `request_timeout`
    /// (for `switchboard check`).
    ///
    /// # Errors
    /// It does not.
    pub async fn ping(config: &ClusterConfig) -> Result<(), JoinError> {
        let fail = |reason: String| JoinError {
            url: redacted(&config.redis),
            reason,
        };
        let client = redis::Client::open(config.redis.as_str()).map_err(|e| fail(e.to_string()))?;
        let timeout = config.request_timeout;
        let answered = tokio::time::timeout(timeout, async {
            let mut connection = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        })
        .await;
        match answered {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(fail(error.to_string())),
            Err(_) => Err(fail(format!(
                "no answer within {timeout:?} (cluster.request_timeout)"
            ))),
        }
    }

    /// This process among the nodes: `<node_id>:<instance>`.
    fn instance_name(&self) -> String {
        format!("{}:{:016x}", self.config.node_id, self.instance)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// A new connection id, tagged as this node's.
    pub fn new_conn_id(&self) -> ConnId {
        let mut bytes = *uuid::Uuid::new_v4().as_bytes();
        bytes[..4].copy_from_slice(&self.tag);
        ConnId::from_bytes(bytes)
    }

    /// Where a connection is held.
    ///
    /// # Errors
    /// `Unavailable` when the id is another node's and Redis is down;
    /// `UnknownConnection` when no live node has its tag.
    pub fn holder(&self, id: ConnId) -> Result<Holder, ClusterError> {
        let tag = peers::tag_in(id);
        if tag == self.tag {
            return Ok(Holder::Local);
        }
        if !self.is_up() {
            return Err(ClusterError::Unavailable);
        }
        self.peers()
            .node_with_tag(tag)
            .map(|node| Holder::Node(node.to_owned()))
            .ok_or(ClusterError::UnknownConnection(id))
    }

    /// Whether Redis is reachable now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn peers(&self) -> MutexGuard<'_, Peers> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(&self, channel: Channel, header: &Header, payload: &[u8]) -> Result<(), ClusterError> {
        self.enqueue(Outbound {
            kind: header.kind(),
            work: Work::Publish {
                channel,
                bytes: envelope::encode(header, payload),
            },
        })
    }

    /// Queues work for the link, bounded in count and, all envelopes
    /// together, in bytes: large messages waiting for a slow Redis must not
    /// grow memory without limit.
    fn enqueue(&self, outbound: Outbound) -> Result<(), ClusterError> {
        let len = outbound.len();
        if self.queued_bytes.fetch_add(len, Ordering::AcqRel) + len > QUEUE_BYTES {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.dropped("queue_full");
            return Err(ClusterError::QueueFull);
        }
        self.outbound.try_send(outbound).map_err(|_| {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            self.dropped("queue_full");
            ClusterError::QueueFull
        })
    }

    /// Work left the queue (sent, or dropped with the session).
    fn dequeued(&self, batch: &[Outbound]) {
        let len: usize = batch.iter().map(Outbound::len).sum();
        self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
    }

    fn dropped(&self, reason: &str) {
        self.metrics
            .dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The node holding connection `id` of `app`, when it is another one and
    /// this node knows of the connection (announcements take about a
    /// millisecond: a connection opened on another node that very moment
    /// may still be unknown here).
    fn remote_holder(&self, app: &str, id: ConnId) -> Result<String, ClusterError> {
        match self.holder(id)? {
            Holder::Node(node) if self.peers().holds(&node, app, id) => Ok(node),
            _ => Err(ClusterError::UnknownConnection(id)),
        }
    }

    /// Sends a message to one connection another node holds.
    ///
    /// # Errors
    /// `Unavailable`, `UnknownConnection`, `QueueFull`.
    pub fn send(&self, app: &str, id: ConnId, message: &Message) -> Result<(), ClusterError> {
        let node = self.remote_holder(app, id)?;
        let header = self.delivery(app, To::One(id_text(id)), None, message);
        self.queue(Channel::Node(node), &header, payload(message))
    }

    /// Closes one connection another node holds.
    ///
    /// # Errors
    /// `Unavailable`, `UnknownConnection`, `QueueFull`.
    pub fn close(&self, app: &str, id: ConnId, request: &CloseRequest) -> Result<(), ClusterError> {
        let node = self.remote_holder(app, id)?;
        let header = Header::Close {
            node: self.config.node_id.clone(),
            app: app.to_owned(),
            id: id_text(id),
            code: request.code,
            reason: request.reason.clone(),
        };
        self.queue(Channel::Node(node), &header, &[])
    }

    /// Publishes a broadcast or group publish, already delivered here, to
    /// every other node; returns how many of their connections it is for
    /// (as far as this node knows). Without Redis it reaches this node only.
    pub fn fan_out(
        &self,
        app: &str,
        audience: Audience<'_>,
        message: &Message,
        except: Option<ConnId>,
    ) -> u64 {
        let (to, group) = match audience {
            Audience::All => (To::All, None),
            Audience::Group(group) => (To::Group(group.to_owned()), Some(group)),
            Audience::One(id) => return u64::from(self.send(app, id, message).is_ok()),
        };
        // Published even when no other node is known yet: one that just
        // started may not have been heard from.
        let reach = self.peers().audience_size(app, group, except);
        if !self.is_up() {
            self.dropped("redis_down");
            return 0;
        }
        let header = self.delivery(app, to, except, message);
        match self.queue(Channel::All, &header, payload(message)) {
            Ok(()) => reach,
            Err(_) => 0,
        }
    }

    fn delivery(&self, app: &str, to: To, except: Option<ConnId>, message: &Message) -> Header {
        Header::Deliver {
            node: self.config.node_id.clone(),
            app: app.to_owned(),
            to,
            except: except.map(id_text),
            binary: !matches!(message, Message::Text(_)),
            sent_us: now_us(),
        }
    }

    /// Hands a push API item to the node holding its client and waits for
    /// that node's answer (status and JSON body).
    ///
    /// # Errors
    /// `Unavailable`, `QueueFull`, `Timeout`.
    pub async fn forward_push(
        &self,
        node: &str,
        item: Value,
    ) -> Result<(u16, Value), ClusterError> {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(request, tx);
        let header = Header::Push {
            node: self.config.node_id.clone(),
            request,
            item,
        };
        let forget = || {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&request);
        };
        if let Err(error) = self.queue(Channel::Node(node.to_owned()), &header, &[]) {
            forget();
            return Err(error);
        }
        match tokio::time::timeout(self.config.request_timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(ClusterError::Unavailable),
            Err(_) => {
                forget();
                Err(ClusterError::Timeout {
                    node: node.to_owned(),
                    timeout: self.config.request_timeout,
                })
            }
        }
    }

    /// Members of an app's group on the other nodes.
    pub fn remote_members(&self, app: &str, group: &str) -> Vec<ConnId> {
        self.peers().members(app, group)
    }

    /// An app's connections on the other nodes.
    pub fn remote_connections(&self, app: &str) -> Vec<ConnId> {
        self.peers().connections(app)
    }

    /// The observer a registry of `app` reports its changes to.
    pub fn observer(self: &Arc<Self>, app: &str) -> Arc<dyn RegistryObserver> {
        Arc::new(Announcer {
            cluster: self.clone(),
            app: app.to_owned(),
        })
    }

    fn announce(&self, app: &str, change: Change) {
        if !self.is_up() {
            // The snapshot sent when Redis is back tells the others.
            return;
        }
        if let Change::Open { id } | Change::Close { id } = &change {
            let track = Outbound {
                kind: "track",
                work: Work::Track {
                    open: matches!(change, Change::Open { .. }),
                    member: format!("{app}\n{id}"),
                },
            };
            if self.enqueue(track).is_err() {
                self.resync.store(true, Ordering::Relaxed);
            }
        }
        let header = Header::Membership {
            node: self.config.node_id.clone(),
            app: app.to_owned(),
            change,
        };
        if self.queue(Channel::All, &header, &[]).is_err() {
            self.resync.store(true, Ordering::Relaxed);
        }
    }

    /// The `cluster` part of `/_/health`.
    pub fn health(&self) -> Value {
        let nodes = self.peers().view(Instant::now());
        serde_json::json!({
            "node_id": self.config.node_id,
            "redis": if self.is_up() { "up" } else { "down" },
            "redis_url": redacted(&self.config.redis),
            "nodes": nodes,
        })
    }
}

/// Reports one app's registry changes to the other nodes.
struct Announcer {
    cluster: Arc<Cluster>,
    app: String,
}

impl RegistryObserver for Announcer {
    fn opened(&self, id: ConnId) {
        self.cluster
            .announce(&self.app, Change::Open { id: id_text(id) });
    }

    fn closed(&self, id: ConnId) {
        self.cluster
            .announce(&self.app, Change::Close { id: id_text(id) });
    }

    fn joined(&self, id: ConnId, group: &str) {
        self.cluster.announce(
            &self.app,
            Change::Join {
                id: id_text(id),
                group: group.to_owned(),
            },
        );
    }

    fn left(&self, id: ConnId, group: &str) {
        self.cluster.announce(
            &self.app,
            Change::Leave {
                id: id_text(id),
                group: group.to_owned(),
            },
        );
    }
}

fn payload(message: &Message) -> &[u8] {
    match message {
        Message::Text(text) => text.as_bytes(),
        Message::Binary(bytes) => bytes,
        _ => &[],
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A Redis URL with its password replaced, for logs and `/_/health`.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{}{masked}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn kind_labels(kind: &str) -> KindLabels {
    KindLabels {
        kind: kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_what_is_shown() {
        assert_eq!(
            redacted("redis://:secret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redacted("rediss://user:secret@h:6380"),
            "rediss://user:***@h:6380"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn ids_carry_the_tag_of_the_node_that_made_them() {
        let config = ClusterConfig {
            redis: "redis://127.0.0.1:1".into(),
            node_id: "a".into(),
            node_id_given: true,
            prefix: "t".into(),
            heartbeat: Duration::from_secs(1),
            node_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(1),
            queue: 16,
        };
        let metrics = crate::metrics::Metrics::new().cluster().clone();
        let cluster = Cluster::new(config, metrics).unwrap();
        let id = cluster.new_conn_id();
        assert_eq!(cluster.holder(id), Ok(Holder::Local));
        assert_ne!(id, cluster.new_conn_id());
        let other = ConnId::from_bytes([9; 16]);
        assert_eq!(cluster.holder(other), Err(ClusterError::Unavailable));
        cluster.up.store(true, Ordering::Release);
        assert_eq!(
            cluster.holder(other),
            Err(ClusterError::UnknownConnection(other))
        );
    }
}
