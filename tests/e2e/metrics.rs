//! `/_/metrics` scraped and parsed with a Prometheus text parser, after
//! traffic whose counts are known; `/_/health`; and their allow-lists.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use switchboard_tests::TestServer;
use tokio_tungstenite::tungstenite::Message;

use crate::kit::kit_config;
use crate::util::{expect_close, next, send_text};

fn value_of(
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

async fn scrape_metrics(server: &TestServer) -> prometheus_parse::Scrape {
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
