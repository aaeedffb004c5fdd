//! `/_/metrics` scraped and parsed with a Prometheus text parser, after
//! traffic whose counts are known; `/_/health`; `/_/admin`; and their
//! allow-lists.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use switchboard_tests::{TestConfig, TestServer};
use tokio_tungstenite::tungstenite::Message;

use crate::kit::kit_config;
use crate::util::{expect_close, next, send_text};

pub(crate) fn value_of(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// One sample's value, scraped now (panics if it is not there).
pub(crate) async fn metric(server: &TestServer, name: &str, labels: &[(&str, &str)]) -> u64 {
    let scrape = scrape_metrics(server).await;
    value_of(&scrape, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}")) as u64
}

pub(crate) async fn scrape_metrics(server: &TestServer) -> prometheus_parse::Scrape {
    let response = server.get("/_/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response
            .to_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{response}"
    );
    let body = response.split("\r\n\r\n").nth(1).unwrap().to_owned();
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("a valid Prometheus text exposition")
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_connections_messages_rejections_panics_and_pushes() {
    let server = TestServer::start(kit_config("")).await;
    let mut a = server.ws("/echo").await;
    let mut b = server.ws("/echo").await;
    for ws in [&mut a, &mut b] {
        for i in 0..3 {
            ws.send(Message::text(format!("m{i}"))).await.unwrap();
            next(ws).await;
        }
    }
    // A refused handshake (unsupported version), a panicking callback, a push to nobody.
    let refused = server
        .raw(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", Duration::from_millis(300))
        .await;
    assert!(refused.starts_with("HTTP/1.1 426"));
    let mut victim = server.ws("/kit").await;
    send_text(&mut victim, r#"{"op":"panic"}"#).await;
    assert_eq!(expect_close(&mut victim).await.0, 1011);
    let (status, _) = server
        .post(
            "/_/push",
            &[],
            &json!({"to": {"client": "67e55044-10b1-426f-9247-bb680e5fe0c8"}, "message": "x"})
                .to_string(),
        )
        .await;
    assert_eq!(status, 404);

    let scrape = scrape_metrics(&server).await;
    let echo = [("app", "/echo")];
    assert_eq!(
        value_of(&scrape, "switchboard_messages_in_total", &echo),
        Some(6.0)
    );
    assert_eq!(
        value_of(&scrape, "switchboard_messages_out_total", &echo),
        Some(6.0)
    );
    assert_eq!(
        value_of(&scrape, "switchboard_bytes_in_total", &echo),
        Some(12.0)
    );
    assert_eq!(
        value_of(&scrape, "switchboard_connections_open", &echo),
        Some(2.0)
    );
    assert_eq!(
        value_of(&scrape, "switchboard_connections_accepted_total", &echo),
        Some(2.0)
    );
    assert_eq!(
        value_of(
            &scrape,
            "switchboard_connections_rejected_total",
            &[("reason", "version")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &scrape,
            "switchboard_plugin_callback_panics_total",
            &[("app", "/kit"), ("callback", "on_message")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &scrape,
            "switchboard_push_requests_total",
            &[("status", "404")]
        ),
        Some(1.0)
    );
    let handshakes = scrape
        .samples
        .iter()
        .find(|s| s.metric == "switchboard_handshake_seconds")
        .expect("histogram");
    match &handshakes.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert!(
                buckets.last().is_some_and(|b| b.count >= 3.0),
                "{buckets:?}"
            );
        }
        other => panic!("handshake_seconds is {other:?}"),
    }

    drop(a);
    let mut open = None;
    for _ in 0..50 {
        open = value_of(
            &scrape_metrics(&server).await,
            "switchboard_connections_open",
            &echo,
        );
        if open == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open, Some(1.0), "a closed connection leaves the gauge");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_endpoints_move_and_keep_to_their_allow_lists() {
    let server = TestServer::start(
        kit_config("").apps("[health]\npath = \"/status\"\n\n[metrics]\nallowed_ips = [\"10.0.0.0/8\"]\n\n[[app]]\npath = \"/echo\"\nplugin = \"echo\"\n"),
    )
    .await;
    let health = server.get("/status").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    assert!(
        server.get("/_/health").await.starts_with("HTTP/1.1 404"),
        "the old path is gone"
    );
    let metrics = server.get("/_/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 403"), "{metrics}");
}

/// The `/_/health` document, parsed.
async fn health(server: &TestServer) -> serde_json::Value {
    let response = server.get("/_/health").await;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reports_an_app_whose_callbacks_keep_failing_as_degraded() {
    let server = TestServer::start(kit_config("greeting = \"hi\"")).await;
    // Four failures in a row: not yet degraded.
    for _ in 0..4 {
        let mut ws = server.ws("/kit?fail=open").await;
        assert_eq!(expect_close(&mut ws).await.0, 1011);
    }
    let report = health(&server).await;
    assert_eq!(report["status"], "ok", "{report}");
    let mut ws = server.ws("/kit?fail=open").await;
    assert_eq!(expect_close(&mut ws).await.0, 1011);
    let report = health(&server).await;
    assert_eq!(report["status"], "degraded", "{report}");
    assert_eq!(report["apps"]["/kit"]["status"], "degraded", "{report}");
    assert_eq!(report["apps"]["/kit2"]["status"], "ok", "{report}");
    let failure = &report["apps"]["/kit"]["last_failure"];
    assert_eq!(failure["callback"], "on_open", "{report}");
    assert_eq!(failure["message"], "testkit was told to fail in on_open");
    // One success and the app is well again; the last failure stays on record.
    let mut ws = server.ws("/kit").await;
    next(&mut ws).await;
    let report = health(&server).await;
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(
        report["apps"]["/kit"]["last_failure"]["callback"],
        "on_open"
    );
    ws.send(Message::Close(None)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_app_list_names_paths_plugins_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("echo.html"), "<p>echo</p>").unwrap();
    let server = TestServer::start(
        switchboard_tests::TestConfig::new()
            .server(&format!("static_dir = {:?}", dir.path().display().to_string()))
            .apps("[[app]]\npaths = [\"/echo\", \"/echo2\"]\nplugin = \"echo\"\n\n[[app]]\npath = \"/commands\"\nplugin = \"commands\"\n"),
    )
    .await;
    let response = server.get("/_/apps").await;
    let body: serde_json::Value =
        serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        body["apps"],
        json!([
            {"name": "/echo", "path": "/echo", "paths": ["/echo", "/echo2"], "subprotocols": [],
             "plugin": "echo", "version": "0.1.0",
             "description": "Sends every text and binary message back unchanged", "page": "/echo.html"},
            {"name": "/commands", "path": "/commands", "paths": ["/commands"], "subprotocols": [],
             "plugin": "commands", "version": "0.1.0",
             "description": body["apps"][1]["description"], "page": null},
        ]),
        "{body}"
    );
}

const ADMIN_TOKEN: &str = "an-admin-token-of-some-length";

async fn admin_get(server: &TestServer, path: &str, auth: Option<&str>) -> String {
    let auth = auth.map_or(String::new(), |token| {
        format!("Authorization: Bearer {token}\r\n")
    });
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{auth}\r\n",
        server.addr
    );
    server.raw(request.as_bytes(), Duration::from_secs(5)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_page_shows_apps_and_failures_and_reloads_with_its_token() {
    let server = TestServer::start(TestConfig::new().apps(&format!(
        "[admin]\ntoken = \"{ADMIN_TOKEN}\"\n\n[[app]]\npath = \"/kit\"\nplugin = \"fixture_testkit\"\n"
    )))
    .await;
    // The token, from the query or the Authorization header; nothing without it.
    for (path, auth) in [
        ("/_/admin", None),
        ("/_/admin?token=wrong", None),
        ("/_/admin/state", Some("wrong")),
    ] {
        let response = admin_get(&server, path, auth).await;
        assert!(response.starts_with("HTTP/1.1 401"), "{path}: {response}");
    }
    let page = admin_get(&server, &format!("/_/admin?token={ADMIN_TOKEN}"), None).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("<title>Switchboard admin</title>"), "{page}");
    // Percent-encoded in the query, as a browser may send it.
    let encoded = ADMIN_TOKEN.replace('-', "%2D");
    let page_again = admin_get(&server, &format!("/_/admin?token={encoded}"), None).await;
    assert!(page_again.starts_with("HTTP/1.1 200"), "{page_again}");
    assert!(
        page.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'"),
        "{page}"
    );
    // A panic in a callback shows among the failures, with the app's counters.
    let (mut ws, _) = crate::kit::kit_client(&server, "/kit").await;
    crate::util::send_text(&mut ws, r#"{"op":"panic"}"#).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let kit = loop {
        let response = admin_get(&server, "/_/admin/state", Some(ADMIN_TOKEN)).await;
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
        let state: serde_json::Value = serde_json::from_str(body).expect(&response);
        let kit = state["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|app| app["name"] == "/kit")
            .cloned()
            .expect("the /kit app");
        if !kit["failures"].as_array().unwrap().is_empty() {
            assert_eq!(state["health"]["apps"]["/kit"]["plugin"], "fixture-testkit");
            break kit;
        }
        assert!(tokio::time::Instant::now() < deadline, "no failure: {kit}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(kit["failures"][0]["panicked"], true, "{kit}");
    assert_eq!(kit["failures"][0]["callback"], "on_message", "{kit}");
    assert!(kit["messages_in"].as_u64().unwrap() >= 2, "{kit}");
    // Reload: a POST with the token; never from another site's page.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, body) = server
        .post(
            "/_/admin/reload",
            &[("Authorization", &auth), ("Origin", "https://evil.example")],
            "",
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = server.post("/_/admin/reload", &[], "").await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = server
        .post("/_/admin/reload", &[("Authorization", &auth)], "")
        .await;
    assert_eq!(
        (status, &body["ok"]),
        (200, &serde_json::json!(true)),
        "{body}"
    );
    assert!(
        body["text"].as_str().unwrap().contains("unchanged: /kit"),
        "{body}"
    );
    let wrong_method = admin_get(&server, "/_/admin/reload", Some(ADMIN_TOKEN)).await;
    assert!(wrong_method.starts_with("HTTP/1.1 405"), "{wrong_method}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_page_is_loopback_only_unless_a_token_is_set() {
    // A client behind a trusted proxy, from another machine: refused.
    let server =
        TestServer::start(TestConfig::new().server("trusted_proxies = [\"127.0.0.1\"]")).await;
    let request = format!(
        "GET /_/admin HTTP/1.1\r\nHost: {}\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n\r\n",
        server.addr
    );
    let response = server.raw(request.as_bytes(), Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(admin_get(&server, "/_/admin", None)
        .await
        .starts_with("HTTP/1.1 200"));
    // Opening it to other machines without a token is a config error.
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nplugin_dir = {:?}\n[admin]\nallowed_ips = [\"0.0.0.0/0\"]\n",
        switchboard_tests::target_dir().display().to_string()
    );
    let output = switchboard_tests::run_command(&["check"], &config).await;
    let text = switchboard_tests::output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains(
            "switchboard.toml:5:16: admin.allowed_ips lets other machines in: set admin.token too"
        ),
        "{text}"
    );
}
