//! Limits an attacker or a mistake would otherwise get around: absurd
//! durations, connections per address by default, the log under a flood of
//! refusals, a push body that never arrives, links out of `static_dir`, the
//! `Bearer` scheme's case.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_tests::{output_text, run_command, target_dir, TestConfig, TestServer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread")]
async fn absurd_durations_are_refused_at_load() {
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nplugin_dir = {:?}\nhandshake_timeout = \"300000000000y\"\n",
        target_dir().display().to_string()
    );
    let output = run_command(&["check"], &config).await;
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("switchboard.toml:4:21: a duration here must be at most a day (\"24h\")"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_gets_256_connections_by_default() {
    let server = TestServer::start(TestConfig::new()).await;
    let mut held = Vec::new();
    for _ in 0..256 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // The server counts a connection when it accepts it.
    let mut refused = String::new();
    for _ in 0..50 {
        refused = server.get("/_/health").await;
        if refused.starts_with("HTTP/1.1 503") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains("too many connections from this address"),
        "{refused}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_refused_connections_costs_the_log_a_line_a_second() {
    let server = TestServer::start(TestConfig::new().server("max_connections_per_ip = 1")).await;
    let held = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..100 {
        let response = server.get("/_/health").await;
        assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    }
    let logged = server.log().matches("connection refused").count();
    assert!(
        (1..=3).contains(&logged),
        "{logged} lines:\n{}",
        server.log()
    );
    // Each refusal is still counted.
    drop(held);
    let mut metrics = String::new();
    // Until the server has seen `held` close, the scrape itself is refused (and counted).
    let mut refused = 100;
    for _ in 0..50 {
        metrics = server.get("/_/metrics").await;
        if metrics.starts_with("HTTP/1.1 200") {
            break;
        }
        refused += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metrics.contains(&format!(
            "switchboard_connections_rejected_total{{reason=\"limit_per_ip\"}} {refused}"
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_body_that_never_arrives_is_answered_408() {
    let server = TestServer::start(TestConfig::new().apps(
        "[push]\nbody_timeout = \"300ms\"\n\n[[app]]\npath = \"/echo\"\nplugin = \"echo\"\n",
    ))
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /_/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"to\":")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response),
    )
    .await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("push.body_timeout"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn links_out_of_static_dir_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("pages");
    std::fs::create_dir(&pages).unwrap();
    std::fs::write(pages.join("inside.txt"), "inside").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), pages.join("out.txt")).unwrap();
    std::os::unix::fs::symlink(pages.join("inside.txt"), pages.join("alias.txt")).unwrap();
    let server = TestServer::start(
        TestConfig::new().server(&format!("static_dir = {:?}", pages.display().to_string())),
    )
    .await;
    let out = server.get("/out.txt").await;
    assert!(
        out.starts_with("HTTP/1.1 404") && !out.contains("secret"),
        "{out}"
    );
    let alias = server.get("/alias.txt").await;
    assert!(
        alias.starts_with("HTTP/1.1 200") && alias.ends_with("inside"),
        "{alias}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bearer_scheme_is_case_insensitive() {
    let server = TestServer::start(TestConfig::new().apps(
        "[push]\ntoken = \"t0ken\"\n\n[[app]]\npath = \"/echo\"\nplugin = \"echo\"\n\n[[app]]\npath = \"/chat\"\nplugin = \"chat\"\n[app.config]\nauth_token = \"s3cret\"\n",
    ))
    .await;
    let body = r#"{"to": {"app": "/echo"}, "message": "x"}"#;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (status, answer) = server
            .post(
                "/_/push",
                &[("Authorization", &format!("{scheme} t0ken"))],
                body,
            )
            .await;
        assert_eq!(status, 200, "{scheme}: {answer}");
    }
    let (status, _) = server
        .post("/_/push", &[("Authorization", "Bearer wrong")], body)
        .await;
    assert_eq!(status, 401);
    let request = "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: bearer s3cret\r\n\r\n";
    let head = server
        .raw(request.as_bytes(), Duration::from_millis(500))
        .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

/// A raw handshake to `/chat` with extra header lines; the response head.
async fn chat_handshake(server: &TestServer, extra: &str) -> String {
    let request = format!(
        "GET /chat HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n\r\n",
        server.addr
    );
    server
        .raw(request.as_bytes(), Duration::from_millis(500))
        .await
}

const CHAT_WITH_TOKEN: &str =
    "[[app]]\npath = \"/chat\"\nplugin = \"chat\"\n[app.config]\nauth_token = \"s3cret\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn another_site_cannot_ride_a_chat_cookie() {
    // allowed_origins unset (any origin): cookies of cross-origin handshakes
    // never reach the app, so the cookie token does not authenticate them.
    let server = TestServer::start(TestConfig::new().apps(CHAT_WITH_TOKEN)).await;
    let hijack = chat_handshake(
        &server,
        "Origin: https://evil.example\r\nCookie: chat_token=s3cret",
    )
    .await;
    assert!(hijack.starts_with("HTTP/1.1 401"), "{hijack}");
    let own = format!(
        "Origin: http://{}\r\nCookie: chat_token=s3cret",
        server.addr
    );
    let own_page = chat_handshake(&server, &own).await;
    assert!(own_page.starts_with("HTTP/1.1 101"), "{own_page}");
    // A client that is no browser (no Origin) may still use the cookie.
    let tool = chat_handshake(&server, "Cookie: chat_token=s3cret").await;
    assert!(tool.starts_with("HTTP/1.1 101"), "{tool}");
}

#[tokio::test(flavor = "multi_thread")]
async fn same_origin_lets_only_the_servers_own_pages_in() {
    let server = TestServer::start(
        TestConfig::new()
            .server("allowed_origins = \"same-origin\"")
            .apps(CHAT_WITH_TOKEN),
    )
    .await;
    let other = chat_handshake(
        &server,
        "Origin: https://evil.example\r\nCookie: chat_token=s3cret",
    )
    .await;
    assert!(other.starts_with("HTTP/1.1 403"), "{other}");
    let own = format!(
        "Origin: http://{}\r\nCookie: chat_token=s3cret",
        server.addr
    );
    assert!(chat_handshake(&server, &own)
        .await
        .starts_with("HTTP/1.1 101"));
}

#[test]
fn the_shipped_config_lets_only_its_own_pages_in() {
    let config = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/switchboard.toml"
    ))
    .unwrap();
    assert!(
        config.lines().any(|l| l
            .trim_start()
            .starts_with("allowed_origins = \"same-origin\"")),
        "{config}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callback_that_blocks_is_counted_and_logged() {
    let server =
        TestServer::start(crate::kit::kit_config("").server("slow_callback = \"30ms\"")).await;
    let (mut ws, _) = crate::kit::kit_client(&server, "/kit").await;
    let answer = crate::kit::call(&mut ws, serde_json::json!({"op": "block", "ms": 200})).await;
    assert_eq!(answer["ok"], 200);
    // A quick one is not.
    crate::kit::call(&mut ws, serde_json::json!({"op": "block", "ms": 0})).await;
    let metrics = server.get("/_/metrics").await;
    assert!(
        metrics.contains("switchboard_slow_callbacks_total{app=\"/kit\"} 1"),
        "{metrics}"
    );
    let log = server.log();
    assert!(
        log.contains("a plugin callback ran longer than slow_callback") && log.contains("app=/kit"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_over_its_rate_limits_is_closed_with_1008() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start(TestConfig::new().apps(
        "[[app]]\npath = \"/slow\"\nplugin = \"echo\"\nmessage_rate = 5\n\n[[app]]\npath = \"/small\"\nplugin = \"echo\"\nbyte_rate = \"1 KiB\"\n\n[[app]]\npath = \"/echo\"\nplugin = \"echo\"\n",
    ))
    .await;
    let mut slow = server.ws("/slow").await;
    for n in 0..20 {
        if slow.send(Message::text(format!("{n}"))).await.is_err() {
            break;
        }
    }
    let (code, reason) = crate::util::expect_close(&mut slow).await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "over the message rate limit (5 per second)")
    );
    let mut small = server.ws("/small").await;
    for _ in 0..2 {
        let _ = small.send(Message::binary(vec![0u8; 800])).await;
    }
    let (code, reason) = crate::util::expect_close(&mut small).await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "over the byte rate limit (1024 bytes per second)")
    );
    // The server's defaults let an ordinary burst through.
    let mut echo = server.ws("/echo").await;
    for n in 0..200 {
        echo.send(Message::text(format!("{n}"))).await.unwrap();
    }
    for _ in 0..200 {
        crate::util::next_text(&mut echo).await;
    }
}

async fn metric(server: &TestServer, name: &str) -> u64 {
    crate::metrics::metric(server, name, &[]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn reading_pauses_while_the_memory_budget_is_spent() {
    let server = TestServer::start(TestConfig::new().server("memory_budget = \"4 MiB\"")).await;
    // A client sends 3 MiB of a 10 MiB message and stalls: the server holds them.
    let mut hog = TcpStream::connect(server.addr).await.unwrap();
    hog.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(10u64 << 20).to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    hog.write_all(&header).await.unwrap();
    hog.write_all(&vec![0u8; 3 << 20]).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let used = metric(&server, "switchboard_memory_budget_used_bytes").await;
        // All but what hyper read with the request (not counted).
        if used >= (3 << 20) - (64 << 10) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hog's bytes were never read: {used}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another client's 1.5 MiB message is read up to the budget, then waits.
    let (mut tx, mut rx) = server.ws("/echo").await.split();
    let sending = tokio::spawn(async move {
        tx.send(Message::binary(vec![1u8; 3 << 19])).await.unwrap();
        tx
    });
    let early = tokio::time::timeout(Duration::from_secs(1), rx.next()).await;
    assert!(early.is_err(), "the echo came while the budget was spent");
    let used = metric(&server, "switchboard_memory_budget_used_bytes").await;
    assert!(
        (4 << 20..(4 << 20) + (256 << 10)).contains(&used),
        "used {used}"
    );
    // The hog leaves; its bytes are given back and the waiting message goes through.
    drop(hog);
    let echo = tokio::time::timeout(Duration::from_secs(10), rx.next())
        .await
        .expect("no echo")
        .unwrap()
        .unwrap();
    assert_eq!(echo.len(), 3 << 19);
    drop((sending.await.unwrap(), rx));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(&server, "switchboard_memory_budget_used_bytes").await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bytes were not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_beyond_the_memory_budget_closes_its_recipient_with_1013() {
    let server =
        TestServer::start(crate::kit::kit_config("").server("memory_budget = \"4 MiB\"")).await;
    // Three clients that read nothing, sent 1 MiB messages until their
    // sockets and then their queues fill.
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(crate::kit::kit_client(&server, "/kit").await);
    }
    let (mut sender, _) = crate::kit::kit_client(&server, "/kit").await;
    for _ in 0..40 {
        for (_, id) in &readers {
            crate::kit::call(
                &mut sender,
                serde_json::json!({"op": "send_size", "size": 1 << 20, "to": id}),
            )
            .await;
        }
        if metric(&server, "switchboard_memory_budget_refusals_total").await > 0 {
            break;
        }
    }
    assert!(metric(&server, "switchboard_memory_budget_refusals_total").await > 0);
    let mut refused = 0;
    for (mut ws, _) in readers {
        loop {
            match crate::util::next(&mut ws).await {
                Message::Close(Some(frame)) => {
                    if u16::from(frame.code) == 1013 {
                        assert!(frame.reason.contains("memory budget"), "{frame:?}");
                        refused += 1;
                    }
                    break;
                }
                Message::Close(None) => break,
                _ => {}
            }
        }
    }
    assert!(refused > 0);
    // Everything given back; the server serves on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(&server, "switchboard_memory_budget_used_bytes").await > 64 << 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bytes were not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut ws, _) = crate::kit::kit_client(&server, "/kit").await;
    assert_eq!(
        crate::kit::call(&mut ws, serde_json::json!({"op": "send", "text": "hi"})).await["ok"],
        serde_json::Value::Null
    );
}
