use std::time::{Duration, Instant};

use switchboard_tests::{TestConfig, TestServer};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

fn handshake(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
    .into_bytes()
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response
        .split("\r\n\r\n")
        .next()?
        .lines()
        .skip(1)
        .find_map(|line| {
            line.split_once(':')
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
        })
}

const SHORT: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread")]
async fn unknown_path_is_404() {
    let server = TestServer::start(TestConfig::new()).await;
    assert_eq!(
        status_line(&server.get("/nothing-here").await),
        "HTTP/1.1 404 Not Found"
    );
    let upgrade = server
        .raw(
            &handshake("/nothing-here", "Sec-WebSocket-Version: 13\r\n"),
            SHORT,
        )
        .await;
    assert_eq!(status_line(&upgrade), "HTTP/1.1 404 Not Found");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_get_on_an_app_path_is_426_with_the_supported_version() {
    let server = TestServer::start(TestConfig::new()).await;
    let response = server.get("/echo").await;
    assert_eq!(status_line(&response), "HTTP/1.1 426 Upgrade Required");
    assert_eq!(header(&response, "sec-websocket-version"), Some("13"));
    assert!(
        response.contains("this is a WebSocket endpoint"),
        "{response}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unsupported_websocket_version_is_426_naming_version_13() {
    let server = TestServer::start(TestConfig::new()).await;
    let response = server
        .raw(&handshake("/echo", "Sec-WebSocket-Version: 8\r\n"), SHORT)
        .await;
    assert_eq!(status_line(&response), "HTTP/1.1 426 Upgrade Required");
    assert_eq!(header(&response, "sec-websocket-version"), Some("13"));
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_handshakes_get_400_or_405() {
    let server = TestServer::start(TestConfig::new()).await;
    let bad_key = b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: tooshort\r\n\r\n";
    assert_eq!(
        status_line(&server.raw(bad_key, SHORT).await),
        "HTTP/1.1 400 Bad Request"
    );
    let post = b"POST /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n";
    let response = server.raw(post, SHORT).await;
    assert_eq!(status_line(&response), "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(header(&response, "allow"), Some("GET"));
    let http10 = b"GET /echo HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    assert_eq!(
        status_line(&server.raw(http10, SHORT).await),
        "HTTP/1.0 400 Bad Request"
    );
    let garbage = server
        .raw(b"\x16\x03\x01 this is not http\r\n\r\n", SHORT)
        .await;
    assert!(
        garbage.is_empty() || status_line(&garbage).contains(" 400 "),
        "{garbage:?}"
    );
    // The server still serves.
    assert_eq!(
        status_line(&server.get("/echo").await),
        "HTTP/1.1 426 Upgrade Required"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn subprotocol_is_chosen_from_the_clients_offer_in_its_order() {
    let server = TestServer::start(TestConfig::new().apps(
        "[[app]]\npath = \"/echo\"\nplugin = \"echo\"\nsubprotocols = [\"echo.v2\", \"echo.v1\"]\n",
    ))
    .await;
    let offer = server
        .raw(
            &handshake(
                "/echo",
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: other, echo.v1, echo.v2\r\n",
            ),
            SHORT,
        )
        .await;
    assert_eq!(status_line(&offer), "HTTP/1.1 101 Switching Protocols");
    assert_eq!(header(&offer, "sec-websocket-protocol"), Some("echo.v1"));
    assert_eq!(
        header(&offer, "sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );

    let none_offered = server
        .raw(&handshake("/echo", "Sec-WebSocket-Version: 13\r\n"), SHORT)
        .await;
    assert_eq!(
        status_line(&none_offered),
        "HTTP/1.1 101 Switching Protocols"
    );
    assert_eq!(header(&none_offered, "sec-websocket-protocol"), None);

    let unknown = server
        .raw(
            &handshake(
                "/echo",
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: nope\r\n",
            ),
            SHORT,
        )
        .await;
    assert_eq!(status_line(&unknown), "HTTP/1.1 101 Switching Protocols");
    assert_eq!(
        header(&unknown, "sec-websocket-protocol"),
        None,
        "none chosen when none is supported"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn origins_outside_the_allow_list_get_403() {
    let server =
        TestServer::start(TestConfig::new().server("allowed_origins = [\"https://good.example\"]"))
            .await;
    let bad = server
        .raw(
            &handshake(
                "/echo",
                "Sec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\n",
            ),
            SHORT,
        )
        .await;
    assert_eq!(status_line(&bad), "HTTP/1.1 403 Forbidden");
    let good = server
        .raw(
            &handshake(
                "/echo",
                "Sec-WebSocket-Version: 13\r\nOrigin: https://good.example\r\n",
            ),
            SHORT,
        )
        .await;
    assert_eq!(status_line(&good), "HTTP/1.1 101 Switching Protocols");
    let no_origin = server
        .raw(&handshake("/echo", "Sec-WebSocket-Version: 13\r\n"), SHORT)
        .await;
    assert_eq!(
        status_line(&no_origin),
        "HTTP/1.1 101 Switching Protocols",
        "non-browser clients send no Origin"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_sends_no_request_is_dropped_after_the_handshake_timeout() {
    let server = TestServer::start(TestConfig::new().server("handshake_timeout = \"300ms\"")).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("server should close the idle connection")
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_per_ip_limit_get_503() {
    let server = TestServer::start(TestConfig::new().server("max_connections_per_ip = 2")).await;
    let _a = server.ws("/echo").await;
    let _b = server.ws("/echo").await;
    let response = server.get("/_/health").await;
    assert_eq!(status_line(&response), "HTTP/1.1 503 Service Unavailable");
    assert!(
        response.contains("too many connections from this address"),
        "{response}"
    );
    drop(_a);
    // The slot comes back once the server sees the close.
    let mut ok = false;
    for _ in 0..50 {
        if status_line(&server.get("/_/health").await) == "HTTP/1.1 200 OK" {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a freed slot should be usable again");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reports_apps_plugins_and_connections() {
    let server = TestServer::start(TestConfig::new()).await;
    let _client = server.ws("/echo").await;
    // The connection registers once its task starts, just after the 101.
    let mut health = serde_json::Value::Null;
    for _ in 0..50 {
        let response = server.get("/_/health").await;
        assert_eq!(status_line(&response), "HTTP/1.1 200 OK");
        let body = response.split("\r\n\r\n").nth(1).unwrap();
        health = serde_json::from_str(body).unwrap();
        if health["apps"]["/echo"]["connections"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(health["status"], "ok");
    assert_eq!(health["apps"]["/echo"]["connections"], 1);
    assert_eq!(health["apps"]["/commands"]["plugin"], "commands");
    assert_eq!(health["plugins"].as_array().unwrap().len(), 2);
}
