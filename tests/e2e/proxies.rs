//! Behind a reverse proxy on the same host every TCP peer is 127.0.0.1: with
//! `trusted_proxies`, every check judges the address the proxy reports
//! instead (the allow-lists, the per-address limit, the hub's backend check,
//! what an app sees), and an entry that does not parse is refused.

use std::time::Duration;

use serde_json::json;
use switchboard_tests::{TestConfig, TestServer};

const BEHIND_A_PROXY: &str = "trusted_proxies = [\"127.0.0.1\"]";

/// A request from "the proxy" (this test, on loopback) on behalf of `client`.
async fn get_for(server: &TestServer, path: &str, forwarded: &str) -> String {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{forwarded}\r\n\r\n");
    server.raw(request.as_bytes(), Duration::from_secs(2)).await
}

async fn upgrade_for(server: &TestServer, path: &str, extra: &str) -> String {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n\r\n"
    );
    server
        .raw(request.as_bytes(), Duration::from_millis(400))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn allow_lists_judge_the_address_the_proxy_reports() {
    let server = TestServer::start(TestConfig::new().server(BEHIND_A_PROXY)).await;
    // Loopback only by default: a remote client behind the local proxy is not.
    for path in ["/_/metrics", "/_/health"] {
        let response = get_for(&server, path, "X-Forwarded-For: 203.0.113.9").await;
        assert!(response.starts_with("HTTP/1.1 403"), "{path}: {response}");
        assert!(
            response.contains("not allowed from 203.0.113.9"),
            "{response}"
        );
        let response = get_for(&server, path, "Forwarded: for=127.0.0.9").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
    }
    // An ip:port entry is read as the address it is (it used to be skipped,
    // which let the proxy's own loopback address through).
    let body = r#"{"to": {"app": "/echo"}, "message": "x"}"#;
    let (status, answer) = server
        .post("/_/push", &[("X-Forwarded-For", "203.0.113.9:4711")], body)
        .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("203.0.113.9"),
        "{answer}"
    );
    // An entry that does not parse fails closed.
    let response = get_for(&server, "/_/health", "X-Forwarded-For: unknown").await;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(
        response.contains("cannot tell the client's address: the X-Forwarded-For entry \"unknown\" is not an address"),
        "{response}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_per_address_limit_counts_each_client_behind_the_proxy() {
    let server = TestServer::start(
        TestConfig::new()
            .server(BEHIND_A_PROXY)
            .server("max_connections_per_ip = 1"),
    )
    .await;
    // Not counted as one: the proxy holds several connections at once.
    let first = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut held = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    drop(first);
    let request = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut held, request.as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut held, &mut head)
        .await
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    // The same client again: over its limit. Another client: welcome.
    let again = upgrade_for(&server, "/echo", "X-Forwarded-For: 203.0.113.9").await;
    assert!(again.starts_with("HTTP/1.1 503"), "{again}");
    let other = upgrade_for(&server, "/echo", "X-Forwarded-For: 203.0.113.10").await;
    assert!(other.starts_with("HTTP/1.1 101"), "{other}");
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_see_the_client_and_the_hub_checks_its_backends_by_it() {
    let server = TestServer::start(TestConfig::new().server(BEHIND_A_PROXY).apps(
        "[[app]]\npath = \"/kit\"\nplugin = \"fixture_testkit\"\n\n[[app]]\npath = \"/hub\"\nplugin = \"hub\"\n",
    ))
    .await;
    let refused = upgrade_for(
        &server,
        "/hub",
        "Client-Type: php\r\nX-Forwarded-For: 203.0.113.9",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(
        refused.contains("must connect from an allowed address"),
        "{refused}"
    );
    let local = upgrade_for(
        &server,
        "/hub",
        "Client-Type: php\r\nX-Forwarded-For: 127.0.0.1",
    )
    .await;
    assert!(local.starts_with("HTTP/1.1 101"), "{local}");

    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            server.url("/kit"),
        )
        .unwrap();
    request.headers_mut().insert(
        "x-forwarded-for",
        "198.51.100.4, 203.0.113.9".parse().unwrap(),
    );
    let (mut kit, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let info = crate::kit::call(&mut kit, json!({"op": "info"})).await;
    assert_eq!(info["ok"]["peer"], "203.0.113.9:0", "{info}");
}
