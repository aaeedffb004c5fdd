//! `hub`: speaks the JSON protocol of phpWebSocketServer, so that its browser
//! library (`socketWebClient.js`) and its PHP backend client
//! (`websocketPhp.php`) work against Switchboard unchanged. The protocol, and
//! what this app does better, are in `docs/migrating-from-phpwebsocketserver.md`.
//!
//! Two kinds of clients: browsers, and backends (PHP scripts) that send the
//! handshake header `Client-Type: php` (and optionally `Ident: <name>`) and
//! must come from an allowed address. Every data message is answered with
//! `{"opcode":"next","fyi":""}`; clients wait for it before sending again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use switchboard_plugin_api::{
    export_app, Accept, App, ConnId, Context, Error, FramePacing, Handshake, Host, LogLevel,
    Message, Reject, Shared,
};

/// The group every browser client is in: broadcasts go to it.
const BROWSERS: &str = "browsers";
/// The acknowledgement sent after every data message.
const NEXT: &str = r#"{"opcode":"next","fyi":""}"#;

/// The `[app.config]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HubConfig {
    /// Key of the HMAC that signs client uuids (random at each start when unset,
    /// which invalidates the uuids of a previous run).
    secret: Option<String>,
    /// The name of an environment variable holding the secret (instead of `secret`).
    secret_env: Option<String>,
    /// Addresses backend (`Client-Type: php`) clients may connect from.
    backend_ips: Vec<String>,
    /// Pause before a frame to a backend client that has sent nothing since the
    /// previous one, in milliseconds: the PHP client reads the 101 response with
    /// one `fread`, and then one frame per `fread`, dropping whatever else each
    /// read returned, so `ready` must not arrive with the 101, nor an echo with
    /// its `next`.
    php_frame_pause_ms: u64,
    /// Most chunks between `bufferON` and `bufferOFF`.
    max_chunks: usize,
    /// Most bytes between `bufferON` and `bufferOFF`.
    max_buffer_bytes: usize,
    /// Most bytes held in unfinished chunked messages, all clients together.
    max_buffered_bytes: usize,
    /// Milliseconds a chunked message may take from `bufferON` to `bufferOFF`.
    chunk_timeout_ms: u64,
    /// Feedback packets one browser may send per second (a second's burst).
    /// Backends are not limited: they are trusted by address, and progress
    /// feedback from a job is often fast.
    browser_feedback_per_second: u32,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            secret: None,
            secret_env: None,
            backend_ips: vec!["127.0.0.0/8".to_owned(), "::1".to_owned()],
            php_frame_pause_ms: 20,
            max_chunks: 100,
            max_buffer_bytes: 16 << 20,
            max_buffered_bytes: 64 << 20,
            chunk_timeout_ms: 30_000,
            browser_feedback_per_second: 50,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Browser,
    Backend,
}

/// What the hub keeps about one client.
#[derive(Debug)]
struct Client {
    kind: Kind,
    /// The `Ident` header.
    ident: String,
    /// A uuid the client chose itself (`{"opcode":"uuid"}`, older browser libraries).
    registered_uuid: Option<String>,
    /// Chunks between `bufferON` and `bufferOFF`.
    buffer: Option<Buffer>,
    /// Feedback this client may still send now.
    feedback: FeedbackBudget,
}

/// A chunked message being received.
#[derive(Debug, Default)]
struct Buffer {
    chunks: Vec<String>,
    bytes: usize,
    started: Option<std::time::Instant>,
}

/// A token bucket: `per_second` feedback packets a second, a second's burst.
#[derive(Debug)]
struct FeedbackBudget {
    tokens: f64,
    last: std::time::Instant,
}

impl Default for FeedbackBudget {
    fn default() -> Self {
        FeedbackBudget {
            tokens: f64::MAX,
            last: std::time::Instant::now(),
        }
    }
}

impl FeedbackBudget {
    fn spend(&mut self, per_second: u32) -> bool {
        let rate = f64::from(per_second);
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * rate;
        self.tokens = (self.tokens.min(rate) + refill).min(rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The state a reload hands to the next instance (`save_state`): JSON.
/// Version 1; a later version must read this one. Pending chunks are not
/// kept (a client sends its chunked message again after an error).
#[derive(Serialize, Deserialize)]
struct SavedState {
    version: u32,
    /// The secret generated at start, when none is configured, so the uuids
    /// handed out stay valid (hex).
    generated_secret: Option<String>,
    /// Connection id, `php` or `web`, ident, registered uuid.
    clients: Vec<(String, String, String, Option<String>)>,
}

/// The connected clients, with the indexes feedback routing looks them up
/// by, kept in step by the only methods that change them.
#[derive(Debug, Default)]
struct Clients {
    by_conn: HashMap<ConnId, Client>,
    /// Backend ident → its connection (idents are unique among backends).
    by_ident: HashMap<String, ConnId>,
    /// Uuid a browser registered itself → its connection.
    by_registered_uuid: HashMap<String, ConnId>,
    /// Bytes held in unfinished chunked messages, all clients together.
    buffered: usize,
}

impl Clients {
    fn insert(&mut self, conn: ConnId, client: Client) {
        if client.kind == Kind::Backend && !client.ident.is_empty() {
            self.by_ident.insert(client.ident.clone(), conn);
        }
        if let Some(uuid) = &client.registered_uuid {
            self.by_registered_uuid.insert(uuid.clone(), conn);
        }
        self.by_conn.insert(conn, client);
    }

    fn remove(&mut self, conn: ConnId) {
        if let Some(client) = self.by_conn.remove(&conn) {
            if let Some(buffer) = &client.buffer {
                self.buffered -= buffer.bytes;
            }
            if self.by_ident.get(&client.ident) == Some(&conn) {
                self.by_ident.remove(&client.ident);
            }
            if let Some(uuid) = client.registered_uuid {
                if self.by_registered_uuid.get(&uuid) == Some(&conn) {
                    self.by_registered_uuid.remove(&uuid);
                }
            }
        }
    }

    fn register_uuid(&mut self, conn: ConnId, uuid: Option<String>) {
        let Some(client) = self.by_conn.get_mut(&conn) else {
            return;
        };
        if let Some(old) = client.registered_uuid.take() {
            if self.by_registered_uuid.get(&old) == Some(&conn) {
                self.by_registered_uuid.remove(&old);
            }
        }
        if let Some(uuid) = &uuid {
            self.by_registered_uuid.insert(uuid.clone(), conn);
        }
        client.registered_uuid = uuid;
    }

    /// The backend holding `ident`.
    fn backend_with_ident(&self, ident: &str) -> Option<ConnId> {
        self.by_ident.get(ident).copied()
    }
}

impl FromIterator<(ConnId, Client)> for Clients {
    fn from_iter<I: IntoIterator<Item = (ConnId, Client)>>(iter: I) -> Self {
        let mut clients = Clients::default();
        for (conn, client) in iter {
            clients.insert(conn, client);
        }
        clients
    }
}

/// The hub app (exported to the server by `export_app!`; public for tests and fuzzing).
pub struct Hub {
    host: Host,
    /// Whether the secret was generated here rather than configured.
    secret_generated: bool,
    config: HubConfig,
    backend_nets: Vec<ipnet::IpNet>,
    secret: Vec<u8>,
    clients: Shared<Clients>,
}

fn parse_net(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

impl Hub {
    fn clients(&self) -> std::sync::MutexGuard<'_, Clients> {
        self.clients.lock()
    }

    fn signature(&self, uuid: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(uuid.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The uuid a client is given: its connection id and an HMAC of it.
    fn signed_uuid(&self, conn: ConnId) -> String {
        let uuid = conn.to_string();
        let signature = self.signature(&uuid);
        format!("{uuid}.{signature}")
    }

    /// The connection a signed uuid names, if the signature is right.
    fn verify(&self, signed: &str) -> Option<ConnId> {
        let (uuid, signature) = signed.split_once('.')?;
        let expected = self.signature(uuid);
        let same = expected.len() == signature.len()
            && expected
                .bytes()
                .zip(signature.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            uuid.parse().ok()
        } else {
            None
        }
    }

    fn next(&self, conn: ConnId) -> Result<(), Error> {
        self.host.send(conn, NEXT)?;
        Ok(())
    }

    /// Where a feedback packet goes: the browser with that uuid, or the client
    /// with that ident.
    fn feedback_target(&self, packet: &Value) -> Result<Option<ConnId>, String> {
        let uuid = packet.get("uuid").and_then(Value::as_str).unwrap_or("");
        let ident = packet.get("ident").and_then(Value::as_str).unwrap_or("");
        let clients = self.clients();
        if !uuid.is_empty() {
            if uuid.contains('.') {
                let conn = self.verify(uuid).ok_or_else(|| {
                    format!("feedback to a uuid whose signature does not verify: {uuid}")
                })?;
                return Ok(clients
                    .by_conn
                    .get(&conn)
                    .filter(|c| c.kind == Kind::Browser)
                    .map(|_| conn));
            }
            // An unsigned uuid the client registered itself (older browser library).
            return Ok(clients.by_registered_uuid.get(uuid).copied());
        }
        if !ident.is_empty() {
            return Ok(clients.backend_with_ident(ident));
        }
        Err("feedback without uuid or ident".to_owned())
    }

    /// Handles one complete packet (after any chunking).
    fn packet(&self, conn: ConnId, text: &str) -> Result<(), Error> {
        let Ok(packet) = serde_json::from_str::<Value>(text) else {
            self.host
                .log(LogLevel::INFO, "invalid JSON from a client; closing it");
            self.host.close(conn, 1003, "invalid JSON")?;
            return Ok(());
        };
        match packet.get("opcode").and_then(Value::as_str).unwrap_or("") {
            "quit" => {
                self.host.close(conn, 1000, "quit")?;
            }
            "uuid" => {
                let uuid = packet
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                // Only browsers register uuids (feedback by uuid goes to browsers).
                let mut clients = self.clients();
                if clients
                    .by_conn
                    .get(&conn)
                    .is_some_and(|c| c.kind == Kind::Browser)
                {
                    clients.register_uuid(conn, uuid);
                }
                self.next(conn)?;
            }
            "broadcast" => {
                // The raw text, unchanged, to every browser but the sender.
                self.host.publish_except(BROWSERS, Some(conn), text)?;
                self.next(conn)?;
            }
            "feedback" => {
                let allowed = self.clients().by_conn.get_mut(&conn).is_some_and(|c| {
                    c.kind == Kind::Backend
                        || c.feedback.spend(self.config.browser_feedback_per_second)
                });
                if !allowed {
                    self.host.log(
                        LogLevel::DEBUG,
                        "feedback over the browser's rate limit (browser_feedback_per_second); dropped",
                    );
                    return self.next(conn);
                }
                match self.feedback_target(&packet) {
                    Ok(Some(target)) => {
                        if let Err(error) = self.host.send(target, packet.to_string().as_str()) {
                            self.host
                                .log(LogLevel::DEBUG, &format!("feedback not delivered: {error}"));
                        }
                    }
                    Ok(None) => self.host.log(
                        LogLevel::DEBUG,
                        "feedback for a client that is not connected",
                    ),
                    Err(reason) => self.host.log(LogLevel::WARN, &reason),
                }
                self.next(conn)?;
            }
            "echo" => {
                // `next` first: a PHP client reads exactly one frame as the acknowledgement.
                self.next(conn)?;
                self.host.send(conn, text)?;
            }
            _ => self.next(conn)?,
        }
        Ok(())
    }
}

impl App for Hub {
    fn new(context: Context) -> Result<Self, Error> {
        let config: HubConfig = context.config()?;
        let mut backend_nets = Vec::new();
        for text in &config.backend_ips {
            backend_nets.push(
                parse_net(text).ok_or_else(|| {
                    format!("backend_ips: {text:?} is not an IP address or network")
                })?,
            );
        }
        if config.php_frame_pause_ms > 1000 {
            return Err("php_frame_pause_ms above 1000 would make PHP clients give up".into());
        }
        let configured = match (&config.secret, &config.secret_env) {
            (Some(_), Some(_)) => return Err("set secret or secret_env, not both".into()),
            (Some(secret), None) => Some(secret.clone()),
            (None, Some(name)) => Some(std::env::var(name).map_err(|_| {
                format!("secret_env names the environment variable {name}, which is not set")
            })?),
            (None, None) => None,
        };
        let saved = context.saved_state_json(|saved: &SavedState| saved.version == 1);
        let previous_secret = saved
            .as_ref()
            .and_then(|s| s.generated_secret.as_deref())
            .and_then(|hex_text| hex::decode(hex_text).ok());
        let (secret, secret_generated) = match configured {
            Some(secret) if secret.len() < 16 => {
                return Err("the secret must have at least 16 characters".into())
            }
            Some(secret) => (secret.into_bytes(), false),
            // A reload keeps the secret of the run, so handed-out uuids stay valid.
            None => match previous_secret {
                Some(secret) => (secret, true),
                None => (
                    [
                        uuid::Uuid::new_v4().into_bytes(),
                        uuid::Uuid::new_v4().into_bytes(),
                    ]
                    .concat(),
                    true,
                ),
            },
        };
        let clients = saved
            .map(|saved| {
                saved
                    .clients
                    .into_iter()
                    .filter_map(|(id, kind, ident, registered_uuid)| {
                        let kind = if kind == "php" {
                            Kind::Backend
                        } else {
                            Kind::Browser
                        };
                        let client = Client {
                            kind,
                            ident,
                            registered_uuid,
                            buffer: None,
                            feedback: FeedbackBudget::default(),
                        };
                        Some((id.parse::<ConnId>().ok()?, client))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Hub {
            host: context.host,
            secret_generated,
            config,
            backend_nets,
            secret,
            clients: Shared::new(clients),
        })
    }

    fn on_handshake(&self, request: &Handshake<'_>) -> Result<Accept, Reject> {
        let backend = request
            .header("client-type")
            .is_some_and(|t| t.eq_ignore_ascii_case("php"));
        if backend {
            let ip = request
                .peer()
                .parse::<std::net::SocketAddr>()
                .map(|a| a.ip())
                .ok();
            if !ip.is_some_and(|ip| self.backend_nets.iter().any(|net| net.contains(&ip))) {
                return Err(Reject::new(
                    403,
                    "backend clients (Client-Type: php) must connect from an allowed address",
                ));
            }
        }
        // Only backends have an ident: feedback by ident is for backends, and
        // a browser claiming one would receive what a backend is sent.
        let ident = if backend {
            request
                .header("ident")
                .unwrap_or("")
                .trim_matches(['\'', '"'])
        } else {
            ""
        };
        if !ident.is_empty() && self.clients().backend_with_ident(ident).is_some() {
            return Err(Reject::new(
                409,
                format!("a backend with ident {ident:?} is connected already"),
            ));
        }
        // The client's kind and ident travel to on_open as the connection's data
        // (state made here would leak if the upgrade never completed).
        Ok(Accept::new().data(format!("{}:{ident}", if backend { "php" } else { "web" })))
    }

    fn save_state(&self) -> Result<Option<Vec<u8>>, Error> {
        let clients = self
            .clients()
            .by_conn
            .iter()
            .map(|(conn, client)| {
                let kind = match client.kind {
                    Kind::Backend => "php",
                    Kind::Browser => "web",
                };
                (
                    conn.to_string(),
                    kind.to_owned(),
                    client.ident.clone(),
                    client.registered_uuid.clone(),
                )
            })
            .collect();
        let saved = SavedState {
            version: 1,
            generated_secret: self.secret_generated.then(|| hex::encode(&self.secret)),
            clients,
        };
        Ok(Some(serde_json::to_vec(&saved)?))
    }

    fn on_resume(&self, conn: ConnId) -> Result<(), Error> {
        // A client the previous instance knew keeps its registration and its
        // signed uuid; its pacing and groups are the server's and stay.
        if self.clients().by_conn.contains_key(&conn) {
            Ok(())
        } else {
            self.on_open(conn)
        }
    }

    fn on_open(&self, conn: ConnId) -> Result<(), Error> {
        let data = self.host.info(conn)?.data;
        let (kind, ident) = match data.split_once(':') {
            Some(("php", ident)) => (Kind::Backend, ident.to_owned()),
            Some((_, ident)) => (Kind::Browser, ident.to_owned()),
            None => (Kind::Browser, String::new()),
        };
        {
            let mut clients = self.clients();
            // Two backends with one ident that passed their handshakes at once:
            // the second one goes.
            if kind == Kind::Backend && clients.backend_with_ident(&ident).is_some() {
                drop(clients);
                self.host
                    .close(conn, 1008, "a backend with this ident is connected already")?;
                return Ok(());
            }
            clients.insert(
                conn,
                Client {
                    kind,
                    ident,
                    registered_uuid: None,
                    buffer: None,
                    feedback: FeedbackBudget::default(),
                },
            );
        }
        let ready = json!({ "opcode": "ready", "uuid": self.signed_uuid(conn) }).to_string();
        match kind {
            Kind::Backend => {
                // Backend clients decode one frame per read: one frame per write,
                // paced (this also keeps `ready` out of the read of the 101).
                let pause = Duration::from_millis(self.config.php_frame_pause_ms);
                self.host
                    .set_frame_pacing(conn, FramePacing::OnePerWrite { pause })?;
                self.host.send(conn, ready.as_str())?;
                Ok(())
            }
            Kind::Browser => {
                self.host.join(conn, BROWSERS)?;
                self.host.send(conn, ready.as_str())?;
                Ok(())
            }
        }
    }

    fn on_message(&self, conn: ConnId, message: Message<'_>) -> Result<(), Error> {
        let Message::Text(text) = message else {
            return self.next(conn);
        };
        // Chunked messages: bufferON, chunks, bufferOFF; each acknowledged.
        let complete = {
            let mut clients = self.clients();
            let budget_left = self
                .config
                .max_buffered_bytes
                .saturating_sub(clients.buffered);
            let timeout = std::time::Duration::from_millis(self.config.chunk_timeout_ms);
            let Some(client) = clients.by_conn.get_mut(&conn) else {
                return Ok(());
            };
            // Bytes this message adds to or frees from unfinished chunked messages.
            let (mut added, mut freed) = (0, 0);
            let outcome = match (text, client.buffer.as_mut()) {
                ("bufferON", _) => {
                    freed = client.buffer.take().map_or(0, |b| b.bytes);
                    client.buffer = Some(Buffer {
                        started: Some(std::time::Instant::now()),
                        ..Buffer::default()
                    });
                    Ok(None)
                }
                ("bufferOFF", Some(_)) => {
                    let buffer = client.buffer.take().unwrap_or_default();
                    freed = buffer.bytes;
                    Ok(Some(buffer.chunks.concat()))
                }
                (_, Some(buffer)) => {
                    if buffer.started.is_some_and(|s| s.elapsed() > timeout) {
                        Err((1008, "a chunked message took too long"))
                    } else if buffer.chunks.len() >= self.config.max_chunks
                        || buffer.bytes + text.len() > self.config.max_buffer_bytes
                    {
                        Err((1009, "too many or too large chunks"))
                    } else if text.len() > budget_left {
                        Err((
                            1013,
                            "the hub holds too many unfinished chunked messages; try again later",
                        ))
                    } else {
                        buffer.chunks.push(text.to_owned());
                        buffer.bytes += text.len();
                        added = text.len();
                        Ok(None)
                    }
                }
                (_, None) => Ok(Some(text.to_owned())),
            };
            if outcome.is_err() {
                freed = client.buffer.take().map_or(0, |b| b.bytes);
            }
            clients.buffered = clients.buffered + added - freed;
            match outcome {
                Ok(complete) => complete,
                Err((code, reason)) => {
                    drop(clients);
                    self.host.close(conn, code, reason)?;
                    return Ok(());
                }
            }
        };
        match complete {
            Some(packet) => self.packet(conn, &packet),
            None => self.next(conn),
        }
    }

    fn on_close(&self, conn: ConnId, _code: u16, _reason: &str) {
        self.clients().remove(conn);
    }
}

export_app!(Hub);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_parse_single_addresses_and_ranges() {
        assert!(parse_net("127.0.0.1")
            .unwrap()
            .contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
        assert!(parse_net("10.0.0.0/8")
            .unwrap()
            .contains(&"10.2.3.4".parse::<IpAddr>().unwrap()));
        assert!(parse_net("nope").is_none());
    }
}
