//! The hub app: compatibility with phpWebSocketServer's clients, tested with
//! clients that behave exactly as its browser library and its PHP backend
//! client do (the PHP-like one reads the 101 with one 1024-byte read and
//! drops whatever else came with it, then decodes one frame per read).

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{json, Value};
use switchboard_tests::{Client, TestConfig, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::util::{expect_close, next_text};

const HUB: &str = r#"
[[app]]
paths = ["/hub", "/hub/web", "/hub/php"]
plugin = "hub"
ping_payload = "{\"opcode\":\"PING\"}"
[app.config]
secret = "a-test-secret-of-enough-length"
# The pause must outlast how late the client process gets to its read. These
# tests share 2 cores with Chromium and the other tests, where a client task
# can wait far longer than a PHP process on a server does.
php_frame_pause_ms = 50
"#;

fn config() -> TestConfig {
    TestConfig::new().apps(HUB)
}

/// A client that behaves like phpWebSocketServer's `websocketPhp.php`.
pub(crate) struct PhpLike {
    stream: TcpStream,
    pub(crate) uuid: String,
}

impl PhpLike {
    pub(crate) async fn connect(server: &TestServer, path: &str, ident: &str) -> PhpLike {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://127.0.0.1\r\nSec-WebSocket-Version: 13\r\nClient-Type: php\r\nIdent: {ident}\r\nallowRemote: ''\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        // One read for the handshake answer; anything else it returned is lost.
        let mut head = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut head))
            .await
            .unwrap()
            .unwrap();
        let head = String::from_utf8_lossy(&head[..n]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.contains("\r\nconnection: Upgrade\r\n")
                || head.contains("\r\nConnection: Upgrade\r\n"),
            "{head}"
        );
        let mut client = PhpLike {
            stream,
            uuid: String::new(),
        };
        // `ready`, read with one more read; if it came with the 101 it is gone and this times out.
        let ready: Value =
            serde_json::from_str(&client.read_with(1024).await.expect("ready lost")).unwrap();
        assert_eq!(ready["opcode"], "ready", "{ready}");
        client.uuid = ready["uuid"].as_str().unwrap().to_owned();
        client
    }

    /// One read of up to `size` bytes, decoded as one frame (more reads only
    /// for the rest of a long payload); pings are answered. `None` on timeout.
    async fn read_with(&mut self, size: usize) -> Option<String> {
        loop {
            let mut buf = vec![0u8; size];
            let n = tokio::time::timeout(Duration::from_secs(3), self.stream.read(&mut buf))
                .await
                .ok()?
                .unwrap();
            assert!(n >= 2, "connection closed");
            let opcode = buf[0] & 0x0f;
            let (len, offset) = match buf[1] & 0x7f {
                126 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            let mut payload = buf[offset..n.min(offset + len)].to_vec();
            while payload.len() < len {
                let mut more = vec![0u8; 8192];
                let m = self.stream.read(&mut more).await.unwrap();
                payload.extend_from_slice(&more[..m.min(len - payload.len())]);
            }
            match opcode {
                0x9 => self.write_frame(0x8A, &payload).await,
                0xA => {}
                0x8 => {
                    return Some(format!(
                        "CLOSE {}",
                        u16::from_be_bytes([payload[0], payload[1]])
                    ))
                }
                _ => return Some(String::from_utf8(payload).unwrap()),
            }
        }
    }

    pub(crate) async fn read(&mut self) -> Option<String> {
        self.read_with(8192).await
    }

    async fn write_frame(&mut self, first: u8, payload: &[u8]) {
        let mut frame = vec![first];
        match payload.len() {
            n if n <= 125 => frame.push(0x80 | n as u8),
            n if n <= 65535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x12, 0x34, 0x56, 0x78];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }

    /// Sends a packet and waits for `next`, as `writeWait` does.
    pub(crate) async fn talk(&mut self, packet: Value) {
        self.write_frame(0x81, packet.to_string().as_bytes()).await;
        let ack: Value = serde_json::from_str(&self.read().await.expect("no next")).unwrap();
        assert_eq!(ack, json!({"opcode": "next", "fyi": ""}));
    }
}

/// A client that behaves like `socketWebClient.js`: waits for `next` before
/// sending again, sends 6 KiB or more as bufferON, chunks, bufferOFF.
pub(crate) struct BrowserLike {
    ws: Client,
    pub(crate) uuid: String,
    /// Packets that arrived while waiting for `next`.
    received: Vec<String>,
}

impl BrowserLike {
    pub(crate) async fn connect(server: &TestServer, path: &str) -> BrowserLike {
        let mut ws = server.ws(path).await;
        let ready: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        assert_eq!(ready["opcode"], "ready", "{ready}");
        let uuid = ready["uuid"].as_str().unwrap().to_owned();
        BrowserLike {
            ws,
            uuid,
            received: Vec::new(),
        }
    }

    async fn send_one(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
        loop {
            let message = next_text(&mut self.ws).await;
            if message == r#"{"opcode":"next","fyi":""}"# {
                return;
            }
            self.received.push(message);
        }
    }

    pub(crate) async fn send(&mut self, packet: &Value) {
        let text = packet.to_string();
        const CHUNK: usize = 6 * 1024;
        if text.len() < CHUNK {
            return self.send_one(&text).await;
        }
        self.send_one("bufferON").await;
        for chunk in text.as_bytes().chunks(CHUNK) {
            self.send_one(std::str::from_utf8(chunk).unwrap()).await;
        }
        self.send_one("bufferOFF").await;
    }

    /// The next packet, from what arrived earlier or from the socket.
    pub(crate) async fn packet(&mut self) -> String {
        if !self.received.is_empty() {
            return self.received.remove(0);
        }
        next_text(&mut self.ws).await
    }
}

fn is_signed_uuid(uuid: &str) -> bool {
    let Some((id, signature)) = uuid.split_once('.') else {
        return false;
    };
    id.len() == 36 && signature.len() == 64 && signature.chars().all(|c| c.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread")]
async fn php_clients_always_get_ready_in_a_read_of_its_own() {
    let server = TestServer::start(config()).await;
    for i in 0..50 {
        let client = PhpLike::connect(&server, "/hub/php", &format!("script{i}")).await;
        assert!(is_signed_uuid(&client.uuid), "{}", client.uuid);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn browsers_get_a_signed_uuid_and_next_after_every_message() {
    let server = TestServer::start(config()).await;
    let mut browser = BrowserLike::connect(&server, "/hub/web").await;
    assert!(is_signed_uuid(&browser.uuid), "{}", browser.uuid);
    browser
        .send(&json!({"opcode": "something new", "message": 1}))
        .await;
    browser
        .send(&json!({"opcode": "uuid", "message": "legacy-uuid"}))
        .await;
    assert!(browser.received.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_feedback_messages_reach_one_browser_in_order() {
    let server = TestServer::start(config()).await;
    let mut browser = BrowserLike::connect(&server, "/hub").await;
    let mut backend = PhpLike::connect(&server, "/hub/php", "worker").await;
    for i in 0..1000 {
        backend
            .talk(json!({"opcode": "feedback", "ident": "", "uuid": browser.uuid, "message": i, "fromUUID": backend.uuid}))
            .await;
    }
    for i in 0..1000 {
        let packet: Value = serde_json::from_str(&browser.packet().await).unwrap();
        assert_eq!(
            (packet["opcode"].as_str(), packet["message"].as_u64()),
            (Some("feedback"), Some(i)),
            "{packet}"
        );
        assert_eq!(packet["fromUUID"], backend.uuid.as_str());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_16_kib_broadcast_reaches_every_other_browser_on_every_path_and_no_backend() {
    let server = TestServer::start(config()).await;
    let mut sender = BrowserLike::connect(&server, "/hub/web").await;
    let mut on_root = BrowserLike::connect(&server, "/hub").await;
    let mut on_web = BrowserLike::connect(&server, "/hub/web").await;
    let mut backend = PhpLike::connect(&server, "/hub/php", "listener").await;
    let packet = json!({"opcode": "broadcast", "message": "x".repeat(16 * 1024)});
    sender.send(&packet).await;
    for browser in [&mut on_root, &mut on_web] {
        let received = browser.packet().await;
        assert_eq!(received.len(), packet.to_string().len());
        assert_eq!(
            serde_json::from_str::<Value>(&received).unwrap(),
            packet,
            "the raw text, unchanged"
        );
    }
    assert!(
        sender.received.is_empty(),
        "the sender gets only its acknowledgements"
    );
    assert_eq!(backend.read().await, None, "backends never get broadcasts");
}

#[tokio::test(flavor = "multi_thread")]
async fn feedback_by_ident_reaches_another_backend() {
    let server = TestServer::start(config()).await;
    let mut alpha = PhpLike::connect(&server, "/hub/php", "alpha").await;
    let mut beta = PhpLike::connect(&server, "/hub/php", "beta").await;
    alpha.talk(json!({"opcode": "feedback", "ident": "beta", "uuid": "", "message": "hello beta", "fromUUID": alpha.uuid})).await;
    let packet: Value =
        serde_json::from_str(&beta.read().await.expect("feedback for beta")).unwrap();
    assert_eq!(
        (packet["opcode"].as_str(), packet["message"].as_str()),
        (Some("feedback"), Some("hello beta"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn feedback_to_a_uuid_whose_signature_does_not_verify_is_not_delivered() {
    let server = TestServer::start(config()).await;
    let mut browser = BrowserLike::connect(&server, "/hub").await;
    let mut backend = PhpLike::connect(&server, "/hub/php", "worker").await;
    let (id, signature) = browser.uuid.split_once('.').unwrap();
    let forged = format!("{id}.{}", signature.chars().rev().collect::<String>());
    backend
        .talk(json!({"opcode": "feedback", "uuid": forged, "message": "forged"}))
        .await;
    backend
        .talk(json!({"opcode": "feedback", "uuid": browser.uuid, "message": "genuine"}))
        .await;
    let packet: Value = serde_json::from_str(&browser.packet().await).unwrap();
    assert_eq!(packet["message"], "genuine", "the forged one never arrived");

    // An older browser library registers a uuid of its own; feedback to it still works.
    browser
        .send(&json!({"opcode": "uuid", "message": "3f2b8c1e-legacy"}))
        .await;
    backend
        .talk(json!({"opcode": "feedback", "uuid": "3f2b8c1e-legacy", "message": "legacy"}))
        .await;
    let packet: Value = serde_json::from_str(&browser.packet().await).unwrap();
    assert_eq!(packet["message"], "legacy");
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_returns_the_packet_after_next_and_quit_or_bad_json_close() {
    let server = TestServer::start(config()).await;
    let mut backend = PhpLike::connect(&server, "/hub/php", "worker").await;
    let packet = json!({"opcode": "echo", "message": "hello"});
    backend.talk(packet.clone()).await;
    let echoed: Value = serde_json::from_str(&backend.read().await.expect("echo")).unwrap();
    assert_eq!(echoed, packet);

    let mut browser = BrowserLike::connect(&server, "/hub").await;
    browser
        .ws
        .send(Message::text(r#"{"opcode":"quit"}"#))
        .await
        .unwrap();
    assert_eq!(expect_close(&mut browser.ws).await.0, 1000);

    let mut careless = BrowserLike::connect(&server, "/hub").await;
    careless.ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(expect_close(&mut careless.ws).await.0, 1003);
    // The app's log line (info) names the connection it is about.
    let conn = careless.uuid.split('.').next().unwrap().to_owned();
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("invalid JSON from a client"))
        .unwrap_or_else(|| panic!("no log line for the bad JSON in:\n{log}"));
    assert!(line.contains(&format!("conn={conn}")), "{line}");
    assert!(line.contains("app=/hub"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn backends_must_come_from_an_allowed_address() {
    let server = TestServer::start(
        TestConfig::new().apps(&format!("{HUB}backend_ips = [\"10.0.0.0/8\"]\n")),
    )
    .await;
    let request = "GET /hub/php HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nClient-Type: php\r\n\r\n";
    let response = server
        .raw(request.as_bytes(), Duration::from_millis(500))
        .await;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    // Browsers are not affected.
    BrowserLike::connect(&server, "/hub").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keepalive_pings_carry_the_php_payload() {
    let server = TestServer::start(config().server("ping_interval = \"200ms\"")).await;
    let mut backend = PhpLike::connect(&server, "/hub/php", "idle").await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), backend.stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf[0] & 0x0f, 0x9, "a ping");
    let len = (buf[1] & 0x7f) as usize;
    assert_eq!(&buf[2..2 + len], br#"{"opcode":"PING"}"#);
    assert!(n >= 2 + len);
}

#[tokio::test(flavor = "multi_thread")]
async fn registrations_and_signed_uuids_survive_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let hub = switchboard_tests::plugin_copy("hub", dir.path());
    // No secret configured: the one generated at start must outlive the reload.
    let apps = HUB
        .replace(
            "plugin = \"hub\"",
            &format!("plugin = {:?}", hub.display().to_string()),
        )
        .replace("secret = \"a-test-secret-of-enough-length\"\n", "");
    assert!(!apps.contains("secret ="));
    let server = TestServer::start(TestConfig::new().apps(&apps)).await;
    let mut browser = BrowserLike::connect(&server, "/hub").await;
    let mut backend = PhpLike::connect(&server, "/hub/php", "worker").await;
    let mut other = PhpLike::connect(&server, "/hub/php", "beta").await;

    switchboard_tests::rebuild_in_place(&hub);
    let output = server.reload().await;
    let printed = switchboard_tests::output_text(&output);
    assert!(printed.contains("reloaded: /hub (migrate)"), "{printed}");

    // The uuid handed out before the reload still verifies (the generated
    // secret was kept), and the backends' idents are still known.
    backend
        .talk(json!({"opcode": "feedback", "uuid": browser.uuid, "message": "after reload", "fromUUID": backend.uuid}))
        .await;
    let packet: Value = serde_json::from_str(&browser.packet().await).unwrap();
    assert_eq!(packet["message"], "after reload", "{packet}");
    backend
        .talk(json!({"opcode": "feedback", "ident": "beta", "uuid": "", "message": "hello beta", "fromUUID": backend.uuid}))
        .await;
    let packet: Value =
        serde_json::from_str(&other.read().await.expect("feedback for beta")).unwrap();
    assert_eq!(packet["message"], "hello beta");
    // A browser that connects now is signed with the same secret.
    let late = BrowserLike::connect(&server, "/hub").await;
    assert!(is_signed_uuid(&late.uuid));
    backend
        .talk(json!({"opcode": "feedback", "uuid": late.uuid, "message": "to the late one"}))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_backends_have_an_ident_and_one_backend_per_ident() {
    let server = TestServer::start(config()).await;
    // A browser claiming a backend's ident gets none of its feedback.
    let mut request = server.url("/hub").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("ident", "worker".parse().unwrap());
    let (mut impostor, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let ready: Value = serde_json::from_str(&next_text(&mut impostor).await).unwrap();
    assert_eq!(ready["opcode"], "ready");
    let mut worker = PhpLike::connect(&server, "/hub/php", "worker").await;
    let mut sender = PhpLike::connect(&server, "/hub/php", "sender").await;
    sender
        .talk(json!({"opcode": "feedback", "ident": "worker", "uuid": "", "message": "for the worker", "fromUUID": sender.uuid}))
        .await;
    let packet: Value = serde_json::from_str(&worker.read().await.expect("feedback")).unwrap();
    assert_eq!(packet["message"], "for the worker");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), next_text(&mut impostor))
            .await
            .is_err(),
        "the browser got nothing"
    );
    // A second backend with the same ident is refused before the upgrade.
    let response = server
        .raw(
            b"GET /hub/php HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nClient-Type: php\r\nIdent: worker\r\n\r\n",
            Duration::from_millis(500),
        )
        .await;
    assert!(response.starts_with("HTTP/1.1 409"), "{response}");
    assert!(
        response.contains("a backend with ident \"worker\" is connected already"),
        "{response}"
    );
}

fn hub_with(settings: &str) -> TestConfig {
    TestConfig::new().apps(&format!("{HUB}{settings}\n"))
}

#[tokio::test(flavor = "multi_thread")]
async fn feedback_from_a_browser_beyond_its_rate_is_dropped_but_answered() {
    let server = TestServer::start(hub_with("browser_feedback_per_second = 5")).await;
    let mut backend = PhpLike::connect(&server, "/hub/php", "worker").await;
    let mut browser = BrowserLike::connect(&server, "/hub").await;
    for i in 0..30 {
        browser
            .send(&json!({"opcode": "feedback", "ident": "worker", "message": i}))
            .await;
    }
    let mut delivered = Vec::new();
    while let Some(text) = backend.read().await {
        let packet: Value = serde_json::from_str(&text).unwrap();
        delivered.push(packet["message"].as_u64().unwrap());
    }
    // The burst of 5 and what refilled while the 30 were sent; never all.
    assert!(
        (5..30).contains(&delivered.len()),
        "delivered {delivered:?}"
    );
    assert_eq!(&delivered[..5], &[0, 1, 2, 3, 4]);
    // After a pause the browser may send again, and backends are never limited.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    browser
        .send(&json!({"opcode": "feedback", "ident": "worker", "message": "later"}))
        .await;
    let packet: Value = serde_json::from_str(&backend.read().await.expect("later")).unwrap();
    assert_eq!(packet["message"], "later");
    for i in 0..30 {
        backend
            .talk(json!({"opcode": "feedback", "uuid": browser.uuid, "message": i}))
            .await;
    }
    for i in 0..30 {
        let packet: Value = serde_json::from_str(&browser.packet().await).unwrap();
        assert_eq!(packet["message"], i);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_sent_more_than_its_queue_holds_loses_the_excess_not_its_connection() {
    let server = TestServer::start(
        hub_with("browser_feedback_per_second = 100").server("outbound_queue = 8"),
    )
    .await;
    let mut backend = PhpLike::connect(&server, "/hub/php", "worker").await;
    // Five browsers send 200 packets while the backend reads nothing; it is
    // paced (one frame per read, 50 ms apart), so its queue of 8 overflows.
    for b in 0..5 {
        let mut browser = BrowserLike::connect(&server, "/hub").await;
        for i in 0..40 {
            browser
                .send(&json!({"opcode": "feedback", "ident": "worker", "message": b * 100 + i}))
                .await;
        }
    }
    let mut delivered = 0;
    while let Some(text) = backend.read().await {
        assert!(!text.starts_with("CLOSE"), "backend closed: {text}");
        delivered += 1;
    }
    assert!((8..200).contains(&delivered), "delivered {delivered}");
    let drops = crate::metrics::metric(
        &server,
        "switchboard_outbound_queue_drops_total",
        &[("app", "/hub")],
    )
    .await;
    assert!(drops > 0);
    // Still connected and working.
    backend
        .talk(json!({"opcode": "echo", "message": "still here"}))
        .await;
    let packet: Value = serde_json::from_str(&backend.read().await.expect("echo")).unwrap();
    assert_eq!(packet["message"], "still here");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_message_that_takes_too_long_closes_its_sender() {
    let server = TestServer::start(hub_with("chunk_timeout_ms = 300")).await;
    let mut browser = BrowserLike::connect(&server, "/hub").await;
    browser.send_one("bufferON").await;
    browser.send_one("{\"opcode\":").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    browser.ws.send(Message::text("\"echo\"}")).await.unwrap();
    let (code, reason) = expect_close(&mut browser.ws).await;
    assert_eq!(code, 1008);
    assert!(reason.contains("took too long"), "{reason}");
    // A prompt one still works.
    let mut other = BrowserLike::connect(&server, "/hub").await;
    other.send_one("bufferON").await;
    other.send_one("{\"opcode\":").await;
    other.send_one("\"echo\"}").await;
    other.send_one("bufferOFF").await;
    assert_eq!(other.packet().await, r#"{"opcode":"echo"}"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn unfinished_chunked_messages_share_one_budget() {
    let server = TestServer::start(hub_with("max_buffered_bytes = 120")).await;
    let packet = json!({"opcode": "echo", "pad": "x".repeat(80)}).to_string();
    let (first, second) = packet.split_at(60);
    let mut a = BrowserLike::connect(&server, "/hub").await;
    a.send_one("bufferON").await;
    a.send_one(first).await;
    a.send_one(second).await;
    // A holds about 100 bytes: B's 60 more do not fit.
    let mut b = BrowserLike::connect(&server, "/hub").await;
    b.send_one("bufferON").await;
    b.ws.send(Message::text(first)).await.unwrap();
    let (code, reason) = expect_close(&mut b.ws).await;
    assert_eq!(code, 1013);
    assert!(reason.contains("try again later"), "{reason}");
    // Once A's message is complete its bytes are free again.
    a.send_one("bufferOFF").await;
    let echoed: Value = serde_json::from_str(&a.packet().await).unwrap();
    assert_eq!(echoed["pad"].as_str().unwrap().len(), 80);
    let mut c = BrowserLike::connect(&server, "/hub").await;
    c.send_one("bufferON").await;
    c.send_one(first).await;
    c.send_one(second).await;
    c.send_one("bufferOFF").await;
    let echoed: Value = serde_json::from_str(&c.packet().await).unwrap();
    assert_eq!(echoed["opcode"], "echo");
}
