//! What this node knows of the others: who is alive (heard from within
//! `node_timeout`) and, per app, which connections each holds and in which
//! groups. Built from the others' membership changes and snapshots, so it is
//! eventually consistent: a connection another node just opened may be
//! missing for the time its announcement takes to cross Redis (about a
//! millisecond on a LAN).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use switchboard_plugin_api::ConnId;

use super::envelope::{AppSnapshot, Change};

/// The first four bytes of every connection id a node hands out: derived
/// from its node id, so any node can tell from an id alone who holds it.
pub(super) fn tag_of(node_id: &str) -> [u8; 4] {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(node_id.as_bytes());
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The tag of a connection id.
pub(super) fn tag_in(id: ConnId) -> [u8; 4] {
    let b = id.as_bytes();
    [b[0], b[1], b[2], b[3]]
}

/// One app's connections on one other node.
#[derive(Debug, Default)]
struct Mirror {
    connections: HashSet<ConnId>,
    groups: HashMap<String, HashSet<ConnId>>,
}

impl Mirror {
    fn apply(&mut self, change: &Change) {
        let parse = |id: &str| id.parse::<ConnId>().ok();
        match change {
            Change::Open { id } => {
                if let Some(id) = parse(id) {
                    self.connections.insert(id);
                }
            }
            Change::Close { id } => {
                if let Some(id) = parse(id) {
                    self.connections.remove(&id);
                    self.groups.retain(|_, members| {
                        members.remove(&id);
                        !members.is_empty()
                    });
                }
            }
            Change::Join { id, group } => {
                if let Some(id) = parse(id) {
                    self.groups.entry(group.clone()).or_default().insert(id);
                }
            }
            Change::Leave { id, group } => {
                if let (Some(id), Some(members)) = (parse(id), self.groups.get_mut(group)) {
                    members.remove(&id);
                    if members.is_empty() {
                        self.groups.remove(group);
                    }
                }
            }
        }
    }
}

/// One other node.
#[derive(Debug)]
struct Peer {
    tag: [u8; 4],
    instance: Option<u64>,
    last_heard: Instant,
    /// Its connections, as its heartbeat counts them.
    connections: u64,
    apps: HashMap<String, Mirror>,
}

/// A node as `/_/health` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct PeerView {
    /// Its id.
    pub node: String,
    /// Milliseconds since it was last heard from.
    pub last_heard_ms: u64,
    /// Its connections, as its last heartbeat said.
    pub connections: u64,
}

/// Every other node this one has heard from.
#[derive(Debug, Default)]
pub(super) struct Peers {
    nodes: HashMap<String, Peer>,
}

impl Peers {
    fn peer(&mut self, node: &str, now: Instant) -> &mut Peer {
        let peer = self.nodes.entry(node.to_owned()).or_insert_with(|| Peer {
            tag: tag_of(node),
            instance: None,
            last_heard: now,
            connections: 0,
            apps: HashMap::new(),
        });
        peer.last_heard = now;
        peer
    }

    /// Whether `node` is known (alive).
    pub(super) fn knows(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// A node was heard from; returns the instance it had before when it
    /// differs (another process with the same node id, or a restart).
    pub(super) fn heard(
        &mut self,
        node: &str,
        instance: Option<u64>,
        connections: Option<u64>,
        now: Instant,
    ) -> Option<u64> {
        let peer = self.peer(node, now);
        if let Some(count) = connections {
            peer.connections = count;
        }
        match (peer.instance, instance) {
            (Some(before), Some(now)) if before != now => {
                peer.instance = Some(now);
                Some(before)
            }
            (None, Some(now)) => {
                peer.instance = Some(now);
                None
            }
            _ => None,
        }
    }

    /// Applies one membership change of `node`.
    pub(super) fn apply(&mut self, node: &str, app: &str, change: &Change, now: Instant) {
        self.peer(node, now)
            .apps
            .entry(app.to_owned())
            .or_default()
            .apply(change);
    }

    /// Replaces what is known of `node` with its snapshot.
    pub(super) fn replace(&mut self, node: &str, apps: &[AppSnapshot], now: Instant) {
        let peer = self.peer(node, now);
        peer.apps.clear();
        for snapshot in apps {
            let mirror = peer.apps.entry(snapshot.app.clone()).or_default();
            for (id, groups) in &snapshot.connections {
                let Ok(id) = id.parse::<ConnId>() else {
                    continue;
                };
                mirror.connections.insert(id);
                for group in groups {
                    mirror.groups.entry(group.clone()).or_default().insert(id);
                }
            }
        }
    }

    /// Forgets a node (it said bye, or was not heard from in time).
    pub(super) fn forget(&mut self, node: &str) -> bool {
        self.nodes.remove(node).is_some()
    }

    /// Forgets every node not heard from within `timeout`; returns them.
    pub(super) fn expire(&mut self, timeout: Duration, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, peer)| now.duration_since(peer.last_heard) > timeout)
            .map(|(node, _)| node.clone())
            .collect();
        for node in &gone {
            self.nodes.remove(node);
        }
        gone
    }

    /// The node whose ids start with `tag`.
    pub(super) fn node_with_tag(&self, tag: [u8; 4]) -> Option<&str> {
        self.nodes
            .iter()
            .find(|(_, peer)| peer.tag == tag)
            .map(|(node, _)| node.as_str())
    }

    /// Whether `node` holds connection `id` of `app`, as far as this node knows.
    pub(super) fn holds(&self, node: &str, app: &str, id: ConnId) -> bool {
        self.nodes
            .get(node)
            .and_then(|peer| peer.apps.get(app))
            .is_some_and(|mirror| mirror.connections.contains(&id))
    }

    /// How many other nodes are known.
    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Members of an app's group on every other node.
    pub(super) fn members(&self, app: &str, group: &str) -> Vec<ConnId> {
        self.nodes
            .values()
            .filter_map(|peer| peer.apps.get(app)?.groups.get(group))
            .flatten()
            .copied()
            .collect()
    }

    /// An app's connections on every other node.
    pub(super) fn connections(&self, app: &str) -> Vec<ConnId> {
        self.nodes
            .values()
            .filter_map(|peer| peer.apps.get(app))
            .flat_map(|mirror| mirror.connections.iter().copied())
            .collect()
    }

    /// How many of an app's connections on other nodes a delivery reaches.
    pub(super) fn audience_size(
        &self,
        app: &str,
        group: Option<&str>,
        except: Option<ConnId>,
    ) -> u64 {
        let count = |ids: &HashSet<ConnId>| {
            ids.len() as u64 - u64::from(except.is_some_and(|id| ids.contains(&id)))
        };
        self.nodes
            .values()
            .filter_map(|peer| peer.apps.get(app))
            .map(|mirror| match group {
                None => count(&mirror.connections),
                Some(group) => mirror.groups.get(group).map_or(0, count),
            })
            .sum()
    }

    /// The nodes for `/_/health`, sorted by id.
    pub(super) fn view(&self, now: Instant) -> Vec<PeerView> {
        let mut nodes: Vec<PeerView> = self
            .nodes
            .iter()
            .map(|(node, peer)| PeerView {
                node: node.clone(),
                last_heard_ms: u64::try_from(now.duration_since(peer.last_heard).as_millis())
                    .unwrap_or(u64::MAX),
                connections: peer.connections,
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ConnId {
        ConnId::from_bytes([n; 16])
    }

    #[test]
    fn changes_and_snapshots_make_the_view_and_expiry_clears_it() {
        let mut peers = Peers::default();
        let t0 = Instant::now();
        let open = |n: u8| Change::Open {
            id: id(n).to_string(),
        };
        let join = |n: u8| Change::Join {
            id: id(n).to_string(),
            group: "room".into(),
        };
        for change in [open(1), open(2), join(1), join(2)] {
            peers.apply("b", "/chat", &change, t0);
        }
        assert_eq!(peers.connections("/chat").len(), 2);
        assert_eq!(peers.audience_size("/chat", Some("room"), Some(id(1))), 1);
        peers.apply(
            "b",
            "/chat",
            &Change::Close {
                id: id(2).to_string(),
            },
            t0,
        );
        assert_eq!(peers.members("/chat", "room"), vec![id(1)]);
        peers.replace(
            "c",
            &[AppSnapshot {
                app: "/chat".into(),
                connections: vec![(id(3).to_string(), vec!["room".into()])],
            }],
            t0,
        );
        assert_eq!(peers.audience_size("/chat", Some("room"), None), 2);
        assert_eq!(peers.node_with_tag(tag_of("c")), Some("c"));
        let later = t0 + Duration::from_secs(10);
        peers.heard("c", Some(1), Some(1), later);
        assert_eq!(peers.expire(Duration::from_secs(5), later), vec!["b"]);
        assert_eq!(peers.members("/chat", "room"), vec![id(3)]);
        assert_eq!(peers.heard("c", Some(2), None, later), Some(1));
    }
}
