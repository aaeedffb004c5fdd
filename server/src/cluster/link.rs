//! The link to Redis: one multiplexed connection publishes (pipelined,
//! in batches of what is queued) and serves shared-state operations, one
//! subscribed connection receives this node's channel and the shared one. A
//! session ends when either fails or a command takes longer than
//! `request_timeout`; then the node serves its own clients alone and
//! reconnects with backoff, and once back it says hello (every node answers
//! with a snapshot) and sends its own snapshot, so the nodes' views of each
//! other are whole again without a restart.
//!
//! Every node process also keeps three things in Redis: its name in
//! `<prefix>:instances`, a key `<prefix>:alive:<instance>` that expires
//! after `node_timeout` unless the heartbeat renews it, and the set of its
//! connections `<prefix>:conns:<instance>`. A node that has been up for
//! `node_timeout` reaps every instance whose alive key expired: the one that
//! removes it from `instances` (Redis says which, exactly one) calls
//! `on_lost` of the apps for each connection it held. A node restarted
//! under the same id, a whole cluster restarted, a node killed: all end
//! there, within `node_timeout` plus a heartbeat.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use switchboard_plugin_api::ConnId;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::envelope::{self, Header, To};
use super::{kind_labels, Channel, Cluster, LocalApps, Outbound, Work};
use crate::registry::Audience;

/// Most envelopes published in one pipelined round trip.
const BATCH: usize = 256;

/// The longest wait between two attempts to reach Redis again.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One connected pair of Redis connections.
pub(super) struct Session {
    commands: redis::aio::MultiplexedConnection,
    messages: redis::aio::PubSubStream,
}

impl Cluster {
    fn channel_name(&self, channel: &Channel) -> String {
        match channel {
            Channel::All => format!("{}:all", self.config.prefix),
            Channel::Node(node) => format!("{}:node:{node}", self.config.prefix),
        }
    }

    fn key(&self, kind: &str, instance: &str) -> String {
        format!("{}:{kind}:{instance}", self.config.prefix)
    }

    fn instances_key(&self) -> String {
        format!("{}:instances", self.config.prefix)
    }

    pub(super) fn set_up(&self, session: Option<&Session>) {
        let up = session.is_some();
        *self.commands.lock().unwrap_or_else(|e| e.into_inner()) =
            session.map(|s| s.commands.clone());
        self.up.store(up, Ordering::Release);
        self.metrics.redis_up.set(i64::from(up));
    }
}

impl Session {
    /// Connects both connections and subscribes, within `request_timeout`.
    pub(super) async fn open(cluster: &Cluster) -> Result<Session, String> {
        let timeout = cluster.config.request_timeout;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let opened = tokio::time::timeout(timeout, async {
            let commands = cluster
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let mut pubsub = cluster.client.get_async_pubsub().await?;
            pubsub
                .subscribe(cluster.channel_name(&Channel::All))
                .await?;
            pubsub
                .subscribe(cluster.channel_name(&Channel::Node(cluster.config.node_id.clone())))
                .await?;
            Ok::<_, redis::RedisError>(Session {
                commands,
                messages: pubsub.into_on_message(),
            })
        })
        .await;
        match opened {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!(
                "no answer within {timeout:?} (cluster.request_timeout)"
            )),
        }
    }

    /// Sends a batch of work as one pipeline, in order, and answers the
    /// shared-state operations in it; the batch is emptied.
    async fn publish(
        &mut self,
        cluster: &Cluster,
        batch: &mut Vec<Outbound>,
    ) -> Result<(), String> {
        let conns = cluster.key("conns", &cluster.instance_name());
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut jobs = Vec::new();
        let mut kinds = Vec::with_capacity(batch.len());
        for outbound in batch.drain(..) {
            kinds.push(outbound.kind);
            match outbound.work {
                Work::Publish { channel, bytes } => {
                    pipe.cmd("PUBLISH")
                        .arg(cluster.channel_name(&channel))
                        .arg(bytes)
                        .ignore();
                }
                Work::Track { open, member } => {
                    pipe.cmd(if open { "SADD" } else { "SREM" })
                        .arg(&conns)
                        .arg(member)
                        .ignore();
                }
                Work::State(job) => {
                    pipe.add_command(job.command());
                    jobs.push(job);
                }
            }
        }
        let answered = pipe
            .query_async::<Vec<redis::Value>>(&mut self.commands)
            .await;
        let values = match answered {
            Ok(values) if values.len() == jobs.len() => values,
            other => {
                for job in jobs {
                    job.answer(Err(super::ClusterError::Unavailable));
                }
                return Err(match other {
                    Err(error) => format!("publishing: {error}"),
                    Ok(_) => "publishing: an answer of the wrong length".to_owned(),
                });
            }
        };
        for (job, value) in jobs.into_iter().zip(values) {
            let result = job.decode(value, &mut self.commands).await;
            job.answer(result);
        }
        for kind in kinds {
            cluster
                .metrics
                .published
                .get_or_create(&kind_labels(kind))
                .inc();
        }
        Ok(())
    }
}

/// Keeps the link up until `shutdown`, reconnecting after every loss.
pub(super) async fn run(
    cluster: Arc<Cluster>,
    mut session: Session,
    local: Arc<dyn LocalApps>,
    mut outbound: mpsc::Receiver<Outbound>,
    shutdown: CancellationToken,
) {
    let node = cluster.config.node_id.clone();
    loop {
        cluster.set_up(Some(&session));
        let ended = serve(&cluster, &mut session, &local, &mut outbound, &shutdown).await;
        cluster.set_up(None);
        // Pushes waiting for an answer fail now (503) rather than time out.
        cluster
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        match ended {
            Ok(()) => return,
            Err(error) => tracing::warn!(
                node = %node,
                "cluster: lost Redis ({error}); serving this node's clients only until it is back"
            ),
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            match Session::open(&cluster).await {
                Ok(next) => {
                    session = next;
                    cluster.metrics.reconnects.inc();
                    tracing::info!(node = %node, "cluster: Redis is back; resubscribed");
                    break;
                }
                Err(error) => {
                    tracing::debug!(node = %node, "cluster: Redis still unreachable: {error}");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// One session: announce, then publish, receive and beat until it fails
/// (an error) or the server stops (`Ok`, after saying bye).
async fn serve(
    cluster: &Arc<Cluster>,
    session: &mut Session,
    local: &Arc<dyn LocalApps>,
    outbound: &mut mpsc::Receiver<Outbound>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let node = cluster.config.node_id.clone();
    register(cluster, session, local).await?;
    let mut greeting = vec![
        heartbeat(cluster, local),
        envelope_for(Channel::All, &Header::Hello { node: node.clone() }),
        snapshot(cluster, local),
    ];
    session.publish(cluster, &mut greeting).await?;
    let up_since = Instant::now();
    let mut tick = tokio::time::interval(cluster.config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                // What the closing connections queued goes out first.
                while outbound.recv_many(&mut batch, BATCH).now_or_never().unwrap_or(0) > 0 {
                    cluster.dequeued(&batch);
                    let _ = session.publish(cluster, &mut batch).await;
                    batch.clear();
                }
                let mut bye = vec![envelope_for(Channel::All, &Header::Bye { node })];
                let _ = session.publish(cluster, &mut bye).await;
                let _ = unregister(cluster, session).await;
                return Ok(());
            }
            message = session.messages.next() => {
                let Some(message) = message else {
                    return Err("the subscription was closed".to_owned());
                };
                receive(cluster, local, message.get_payload_bytes());
            }
            count = outbound.recv_many(&mut batch, BATCH) => {
                if count == 0 {
                    return Ok(());
                }
                cluster.dequeued(&batch);
                session.publish(cluster, &mut batch).await?;
            }
            _ = tick.tick() => {
                let mut beat = vec![heartbeat(cluster, local)];
                if cluster.resync.swap(false, Ordering::Relaxed) {
                    beat.push(snapshot(cluster, local));
                }
                session.publish(cluster, &mut beat).await?;
                if !renew(cluster, session).await? {
                    rejoin(cluster, session, local).await?;
                }
                // Every live node has had the time to renew its key since
                // this one connected (after an outage of Redis too).
                if up_since.elapsed() > cluster.config.node_timeout {
                    reap(cluster, session, local).await?;
                }
                let gone = cluster
                    .peers()
                    .expire(cluster.config.node_timeout, Instant::now());
                for other in gone {
                    tracing::warn!(
                        node = %node,
                        "cluster: node {other} not heard from for {:?}; its connections are gone",
                        cluster.config.node_timeout
                    );
                }
                cluster.metrics.nodes.set(i64::try_from(cluster.peers().len()).unwrap_or(i64::MAX));
            }
        }
    }
}

/// Puts this process in `instances`, its alive key in place and the set of
/// its connections as they are now (it may have changed while Redis was out).
async fn register(
    cluster: &Cluster,
    session: &mut Session,
    local: &Arc<dyn LocalApps>,
) -> Result<(), String> {
    let me = cluster.instance_name();
    let conns = cluster.key("conns", &me);
    let members: Vec<String> = local
        .snapshot()
        .into_iter()
        .flat_map(|app| {
            let name = app.app;
            app.connections
                .into_iter()
                .map(move |(id, _)| format!("{name}\n{id}"))
        })
        .collect();
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("SADD")
        .arg(cluster.instances_key())
        .arg(&me)
        .ignore()
        .cmd("DEL")
        .arg(&conns)
        .ignore();
    if !members.is_empty() {
        pipe.cmd("SADD").arg(&conns).arg(members).ignore();
    }
    pipe.query_async::<()>(&mut session.commands)
        .await
        .map_err(|e| format!("registering: {e}"))?;
    renew(cluster, session).await.map(|_| ())
}

/// Renews this process's alive key; false when this process is no longer
/// registered (it was reaped, or Redis lost its data).
async fn renew(cluster: &Cluster, session: &mut Session) -> Result<bool, String> {
    let ttl = u64::try_from(cluster.config.node_timeout.as_millis()).unwrap_or(u64::MAX);
    let me = cluster.instance_name();
    let (registered,): (bool,) = redis::pipe()
        .cmd("SET")
        .arg(cluster.key("alive", &me))
        .arg(1)
        .arg("PX")
        .arg(ttl)
        .ignore()
        .cmd("SISMEMBER")
        .arg(cluster.instances_key())
        .arg(&me)
        .query_async(&mut session.commands)
        .await
        .map_err(|e| format!("heartbeat: {e}"))?;
    Ok(registered)
}

/// This process found itself unregistered while connected. If another node
/// reaped it (it stopped answering for longer than `node_timeout`: paused,
/// or cut off from Redis), the apps have released what its clients held:
/// it closes them with 1012 so they come back with fresh state. If Redis
/// lost its data instead, there is nothing to undo. Either way it registers
/// again and tells the others what it holds.
async fn rejoin(
    cluster: &Cluster,
    session: &mut Session,
    local: &Arc<dyn LocalApps>,
) -> Result<(), String> {
    let tombstone = cluster.key("reaped", &cluster.instance_name());
    let reaped: i64 = redis::cmd("DEL")
        .arg(&tombstone)
        .query_async(&mut session.commands)
        .await
        .map_err(|e| format!("rejoining: {e}"))?;
    if reaped > 0 {
        tracing::warn!(
            node = %cluster.config.node_id,
            "cluster: the other nodes wrote this node off (it did not answer within node_timeout); closing its clients (1012) so they come back with fresh state"
        );
        local.close_all(1012, "this node lost the cluster; reconnect");
    } else {
        tracing::warn!(
            node = %cluster.config.node_id,
            "cluster: this node was not registered in Redis (did Redis lose its data?); registering again"
        );
    }
    register(cluster, session, local).await?;
    cluster.resync.store(true, Ordering::Relaxed);
    Ok(())
}

/// Takes this process out of Redis when it leaves (its connections closed
/// normally, so nobody has anything to reap).
async fn unregister(cluster: &Cluster, session: &mut Session) -> Result<(), String> {
    let me = cluster.instance_name();
    let mut pipe = redis::pipe();
    pipe.cmd("SREM")
        .arg(cluster.instances_key())
        .arg(&me)
        .ignore()
        .cmd("DEL")
        .arg(cluster.key("alive", &me))
        .arg(cluster.key("conns", &me))
        .ignore();
    pipe.query_async::<()>(&mut session.commands)
        .await
        .map_err(|e| format!("leaving: {e}"))
}

/// Reaps every instance whose alive key expired: the node that removes it
/// from `instances` tells its apps each of its connections is lost.
async fn reap(
    cluster: &Cluster,
    session: &mut Session,
    local: &Arc<dyn LocalApps>,
) -> Result<(), String> {
    let me = cluster.instance_name();
    let c = &mut session.commands;
    let failed = |e: redis::RedisError| format!("reaping: {e}");
    let instances: Vec<String> = redis::cmd("SMEMBERS")
        .arg(cluster.instances_key())
        .query_async(c)
        .await
        .map_err(failed)?;
    for instance in instances.into_iter().filter(|i| *i != me) {
        let alive: bool = redis::cmd("EXISTS")
            .arg(cluster.key("alive", &instance))
            .query_async(c)
            .await
            .map_err(failed)?;
        if alive {
            continue;
        }
        let claimed: i64 = redis::cmd("SREM")
            .arg(cluster.instances_key())
            .arg(&instance)
            .query_async(c)
            .await
            .map_err(failed)?;
        if claimed != 1 {
            continue;
        }
        // Should the instance come back (it was paused, or cut off), it
        // learns it was written off.
        redis::cmd("SET")
            .arg(cluster.key("reaped", &instance))
            .arg(1)
            .arg("EX")
            .arg(86_400)
            .query_async::<()>(c)
            .await
            .map_err(failed)?;
        let conns = cluster.key("conns", &instance);
        let (members,): (Vec<String>,) = redis::pipe()
            .atomic()
            .cmd("SMEMBERS")
            .arg(&conns)
            .cmd("DEL")
            .arg(&conns)
            .ignore()
            .query_async(c)
            .await
            .map_err(failed)?;
        tracing::warn!(
            node = %cluster.config.node_id,
            "cluster: {instance} stopped answering; telling the apps its {} connection(s) are lost",
            members.len()
        );
        let local = local.clone();
        tokio::spawn(async move {
            for member in members {
                let Some((app, id)) = member.rsplit_once('\n') else {
                    continue;
                };
                if let Ok(id) = id.parse::<ConnId>() {
                    local.lost(app, id).await;
                }
            }
        });
    }
    Ok(())
}

fn envelope_for(channel: Channel, header: &Header) -> Outbound {
    Outbound {
        kind: header.kind(),
        work: Work::Publish {
            channel,
            bytes: envelope::encode(header, &[]),
        },
    }
}

fn heartbeat(cluster: &Cluster, local: &Arc<dyn LocalApps>) -> Outbound {
    envelope_for(
        Channel::All,
        &Header::Heartbeat {
            node: cluster.config.node_id.clone(),
            instance: cluster.instance,
            connections: local.connection_count(),
        },
    )
}

fn snapshot(cluster: &Cluster, local: &Arc<dyn LocalApps>) -> Outbound {
    envelope_for(
        Channel::All,
        &Header::Snapshot {
            node: cluster.config.node_id.clone(),
            apps: local.snapshot(),
        },
    )
}

/// Handles one envelope from Redis.
fn receive(cluster: &Arc<Cluster>, local: &Arc<dyn LocalApps>, bytes: &[u8]) {
    let (header, payload) = match envelope::decode(bytes) {
        Ok(decoded) => decoded,
        Err(error) => {
            cluster.dropped("unreadable");
            tracing::warn!("cluster: dropped an unreadable envelope: {error}");
            return;
        }
    };
    let own = cluster.config.node_id.as_str();
    if header.node() == Some(own) {
        // Our own publications on the shared channel, or another process
        // that was given our node id.
        if let Header::Heartbeat { instance, .. } = header {
            if instance != cluster.instance {
                tracing::error!(
                    "cluster: another process uses this node's node_id {own:?}; give each node its own"
                );
            }
        }
        return;
    }
    cluster
        .metrics
        .received
        .get_or_create(&kind_labels(header.kind()))
        .inc();
    let now = Instant::now();
    if let Some(node) = header.node() {
        if !matches!(header, Header::Bye { .. }) {
            let mut peers = cluster.peers();
            if !peers.knows(node) {
                tracing::info!(node = %own, "cluster: node {node} joined");
            }
            let (instance, connections) = match &header {
                Header::Heartbeat {
                    instance,
                    connections,
                    ..
                } => (Some(*instance), Some(*connections)),
                _ => (None, None),
            };
            if peers.heard(node, instance, connections, now).is_some() {
                tracing::info!(node = %own, "cluster: node {node} restarted");
            }
        }
    }
    match header {
        Header::Heartbeat { .. } => {}
        Header::Hello { .. } => {
            if cluster.enqueue(snapshot(cluster, local)).is_err() {
                cluster.resync.store(true, Ordering::Relaxed);
            }
        }
        Header::Bye { node } => {
            if cluster.peers().forget(&node) {
                tracing::info!(node = %own, "cluster: node {node} left");
            }
        }
        Header::Snapshot { node, apps } => cluster.peers().replace(&node, &apps, now),
        Header::Membership { node, app, change } => {
            cluster.peers().apply(&node, &app, &change, now);
        }
        Header::Deliver {
            app,
            to,
            except,
            binary,
            sent_us,
            ..
        } => {
            let message = if binary {
                Message::Binary(Bytes::copy_from_slice(payload))
            } else {
                match std::str::from_utf8(payload) {
                    Ok(text) => Message::text(text),
                    Err(_) => {
                        cluster.dropped("unreadable");
                        return;
                    }
                }
            };
            let parse = |id: &str| id.parse::<ConnId>().ok();
            let one;
            let audience = match &to {
                To::One(id) => {
                    let Some(id) = parse(id) else {
                        cluster.dropped("unreadable");
                        return;
                    };
                    one = id;
                    Audience::One(one)
                }
                To::Group(group) => Audience::Group(group),
                To::All => Audience::All,
            };
            let except = except.as_deref().and_then(parse);
            if local.deliver(&app, audience, message, except) == 0 && matches!(to, To::One(_)) {
                cluster.dropped("gone");
            }
            let elapsed_us = super::now_us().saturating_sub(sent_us);
            cluster
                .metrics
                .delivery_seconds
                .observe(elapsed_us as f64 / 1e6);
        }
        Header::Close {
            app,
            id,
            code,
            reason,
            ..
        } => {
            if let Ok(id) = id.parse::<ConnId>() {
                local.close(&app, id, crate::outbox::CloseRequest { code, reason });
            }
        }
        Header::Push {
            node,
            request,
            item,
        } => {
            let (cluster, local) = (cluster.clone(), local.clone());
            tokio::spawn(async move {
                let (status, body) = local.push(item).await;
                let reply = Header::PushReply {
                    request,
                    status,
                    body,
                };
                let _ = cluster.queue(Channel::Node(node), &reply, &[]);
            });
        }
        Header::PushReply {
            request,
            status,
            body,
        } => {
            let waiting = cluster
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&request);
            if let Some(waiting) = waiting {
                let _ = waiting.send((status, body));
            }
        }
    }
}
