//! This node's apps as the other nodes of a cluster reach them: deliveries,
//! closes and pushes that came over Redis go to the mounts serving the app
//! they name (the current one and any a reload left draining), and a
//! snapshot of every connection and group answers a node that (re)joined.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use serde_json::{json, Value};
use switchboard_plugin_api::ConnId;
use tokio_tungstenite::tungstenite::Message;

use crate::cluster::{AppSnapshot, LocalApps};
use crate::outbox::CloseRequest;
use crate::registry::Audience;
use crate::server::Server;

/// The server, as the cluster link calls it. Holds it weakly: the server
/// owns the link, not the other way round.
pub struct ClusterApps {
    server: Weak<Server>,
}

impl ClusterApps {
    /// The apps of `server`.
    pub fn new(server: &Arc<Server>) -> Arc<ClusterApps> {
        Arc::new(ClusterApps {
            server: Arc::downgrade(server),
        })
    }
}

impl LocalApps for ClusterApps {
    fn deliver(
        &self,
        app: &str,
        audience: Audience<'_>,
        message: Message,
        except: Option<ConnId>,
    ) -> u64 {
        let Some(server) = self.server.upgrade() else {
            return 0;
        };
        server
            .mounts_named(app)
            .iter()
            .map(|mount| {
                mount
                    .registry()
                    .deliver(audience, message.clone(), except)
                    .unwrap_or(0)
            })
            .sum()
    }

    fn close(&self, app: &str, id: ConnId, request: CloseRequest) {
        if let Some(server) = self.server.upgrade() {
            for mount in server.mounts_named(app) {
                let _ = mount.registry().close(id, request.clone());
            }
        }
    }

    fn close_all(&self, code: u16, reason: &str) {
        if let Some(server) = self.server.upgrade() {
            let request = CloseRequest {
                code,
                reason: reason.to_owned(),
            };
            for mount in server.all_mounts() {
                mount.registry().close_all(&request);
            }
        }
    }

    fn lost(&self, app: &str, id: ConnId) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mount = self
            .server
            .upgrade()
            .and_then(|server| server.mounts_named(app).into_iter().next());
        Box::pin(async move {
            if let Some(mount) = mount {
                mount.call_shared(|instance| instance.on_lost(id)).await;
            }
        })
    }

    fn snapshot(&self) -> Vec<AppSnapshot> {
        let Some(server) = self.server.upgrade() else {
            return Vec::new();
        };
        let mut apps: Vec<AppSnapshot> = Vec::new();
        for mount in server.all_mounts() {
            let connections = mount
                .registry()
                .snapshot()
                .into_iter()
                .map(|(id, groups)| (id.to_string(), groups));
            match apps.iter_mut().find(|a| *a.app == **mount.name()) {
                Some(app) => app.connections.extend(connections),
                None => apps.push(AppSnapshot {
                    app: mount.name().to_string(),
                    connections: connections.collect(),
                }),
            }
        }
        apps
    }

    fn push(&self, item: Value) -> Pin<Box<dyn Future<Output = (u16, Value)> + Send>> {
        let server = self.server.upgrade();
        Box::pin(async move {
            match server {
                Some(server) => crate::push::answer_forwarded(&item, &server).await,
                None => (
                    503,
                    json!({ "error": "the node is stopping", "delivered": 0 }),
                ),
            }
        })
    }

    fn connection_count(&self) -> u64 {
        self.server.upgrade().map_or(0, |server| {
            server
                .all_mounts()
                .iter()
                .map(|mount| mount.registry().len() as u64)
                .sum()
        })
    }
}
