//! The app platform: the handshake hook, per-app config, crash isolation and
//! the delivery guarantees, through the test-kit plugin.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{json, Value};
use switchboard_tests::{output_text, run_command, TestServer};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::kit::{call, kit_client, kit_config};
use crate::util::{expect_close, next, next_text, send_text};

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

fn upgrade_request(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
    .into_bytes()
}

const SHORT: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread")]
async fn on_handshake_can_reject_with_status_body_and_headers() {
    let server = TestServer::start(kit_config("")).await;
    let response = server
        .raw(
            &upgrade_request("/kit?reject=401&body=token%20required", ""),
            SHORT,
        )
        .await;
    assert_eq!(status_line(&response), "HTTP/1.1 401 Unauthorized");
    assert!(
        response.to_lowercase().contains("www-authenticate: bearer"),
        "{response}"
    );
    assert!(response.ends_with("token required\n"), "{response}");
    let response = server
        .raw(&upgrade_request("/kit?reject=403", ""), SHORT)
        .await;
    assert_eq!(status_line(&response), "HTTP/1.1 403 Forbidden");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_handshake_chooses_a_subprotocol_among_those_offered() {
    let server = TestServer::start(kit_config("")).await;
    let chosen = server
        .raw(
            &upgrade_request(
                "/kit?protocol=b.v1",
                "Sec-WebSocket-Protocol: a.v1, b.v1\r\n",
            ),
            SHORT,
        )
        .await;
    assert_eq!(status_line(&chosen), "HTTP/1.1 101 Switching Protocols");
    assert!(
        chosen
            .to_lowercase()
            .contains("sec-websocket-protocol: b.v1"),
        "{chosen}"
    );
    assert!(
        chosen.to_lowercase().contains("x-testkit-conn: "),
        "the app's extra header: {chosen}"
    );
    // Choosing a protocol the client did not offer is the app's bug: 500, logged.
    let bad = server
        .raw(
            &upgrade_request("/kit?protocol=c.v1", "Sec-WebSocket-Protocol: a.v1\r\n"),
            SHORT,
        )
        .await;
    assert_eq!(status_line(&bad), "HTTP/1.1 500 Internal Server Error");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_in_on_handshake_answers_500_and_the_server_carries_on() {
    let server = TestServer::start(kit_config("")).await;
    let response = server
        .raw(&upgrade_request("/kit?panic=handshake", ""), SHORT)
        .await;
    assert_eq!(status_line(&response), "HTTP/1.1 500 Internal Server Error");
    let (mut ws, _) = kit_client(&server, "/kit").await;
    assert!(call(&mut ws, json!({"op": "stats"})).await["violations"]
        .as_u64()
        .is_some());
    assert!(
        server.log().contains("plugin callback panicked"),
        "{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_app_config_table_reaches_the_plugin() {
    let server = TestServer::start(kit_config("greeting = \"hello from config\"")).await;
    let mut ws = server.ws("/kit").await;
    let greeting: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(greeting["greeting"], "hello from config");
}

async fn start_fails(app_config: &str) -> String {
    let output = run_command(&[], &kit_config(app_config).render()).await;
    let text = output_text(&output);
    assert!(
        !output.status.success(),
        "the server should refuse to start:\n{text}"
    );
    assert!(!text.contains("listening"), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_refuses_its_config_stops_start_up_naming_app_plugin_and_reason() {
    let text = start_fails("fail_start = \"the moon is in the wrong phase\"").await;
    assert!(text.contains("app /kit: plugin "), "{text}");
    assert!(
        text.contains("libfixture_testkit.so refused to start: the moon is in the wrong phase"),
        "{text}"
    );
    // A config error points at the offending key's line in the TOML file.
    let text = start_fails("greeting = \"hi\"\nno_such_setting = 1").await;
    let config = kit_config("greeting = \"hi\"\nno_such_setting = 1").render();
    let line = config
        .lines()
        .position(|l| l.starts_with("no_such_setting"))
        .unwrap()
        + 1;
    assert!(
        text.contains(&format!("switchboard.toml:{line}:1: app /kit: plugin "))
            && text.contains(
                "invalid app config at `no_such_setting`: unknown field `no_such_setting`"
            ),
        "expected line {line} in:\n{text}"
    );
    let text = start_fails("greeting = 5").await;
    let config = kit_config("greeting = 5").render();
    let line = config
        .lines()
        .position(|l| l.starts_with("greeting"))
        .unwrap()
        + 1;
    assert!(
        text.contains(&format!("switchboard.toml:{line}:1: app /kit: plugin "))
            && text.contains("invalid app config at `greeting`: invalid type: integer `5`"),
        "expected line {line} in:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_whose_constructor_panics_stops_start_up() {
    let text = start_fails("panic_start = true").await;
    assert!(
        text.contains("app /kit:")
            && text.contains("constructor panicked: testkit was told to panic in its constructor"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callback_that_panics_or_fails_closes_only_its_connection_with_1011() {
    let server = TestServer::start(kit_config("")).await;
    let (mut bystander, _) = kit_client(&server, "/kit").await;
    let mut echo = server.ws("/echo").await;

    let (mut victim, _) = kit_client(&server, "/kit").await;
    send_text(&mut victim, r#"{"op":"panic"}"#).await;
    assert_eq!(expect_close(&mut victim).await.0, 1011);

    let (mut failing, _) = kit_client(&server, "/kit").await;
    send_text(&mut failing, r#"{"op":"fail"}"#).await;
    assert_eq!(expect_close(&mut failing).await.0, 1011);

    let mut panics_on_open = server.ws("/kit?panic=open").await;
    assert_eq!(expect_close(&mut panics_on_open).await.0, 1011);
    let mut fails_on_open = server.ws("/kit?fail=open").await;
    assert_eq!(expect_close(&mut fails_on_open).await.0, 1011);

    // A panic in on_close is only logged.
    let (mut panics_on_close, _) = {
        let mut ws = server.ws("/kit?panic=close").await;
        let id = crate::kit::whoami(&mut ws).await;
        (ws, id)
    };
    panics_on_close.close(None).await.unwrap();

    // Everyone else carries on, on this app and on others.
    assert!(call(&mut bystander, json!({"op": "whoami"})).await["ok"].is_string());
    echo.send(Message::text("still here")).await.unwrap();
    assert_eq!(next(&mut echo).await, Message::text("still here"));
    let log = server.log();
    assert!(
        log.contains("app=/kit") && log.contains("testkit was told to panic in on_message"),
        "{log}"
    );
    for _ in 0..50 {
        if server
            .log()
            .contains("testkit was told to panic in on_close")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the on_close panic was not logged:\n{}", server.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn panics_under_load_do_not_disturb_other_clients() {
    let server = TestServer::start(kit_config("")).await;
    let url_echo = "/echo";
    let mut workers = Vec::new();
    for i in 0..20 {
        let mut ws = server.ws(if i % 2 == 0 { url_echo } else { "/kit2" }).await;
        workers.push(tokio::spawn(async move {
            for round in 0..200 {
                let text = format!("{{\"op\":\"whoami\",\"round\":{round}}}");
                ws.send(Message::text(text.clone())).await.unwrap();
                match next(&mut ws).await {
                    Message::Text(reply) if i % 2 == 0 => assert_eq!(reply.as_str(), text),
                    Message::Text(reply) => {
                        assert!(reply.as_str().contains("\"op\":\"whoami\""), "{reply}")
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }));
    }
    for _ in 0..50 {
        let mut victim = server.ws("/kit").await;
        send_text(&mut victim, r#"{"op":"panic"}"#).await;
        assert_eq!(expect_close(&mut victim).await.0, 1011);
    }
    for worker in workers {
        worker.await.expect("a bystander saw an error");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_to_one_connection_arrive_in_the_order_sent_from_callback_and_thread() {
    let server = TestServer::start(kit_config("")).await;
    let (mut ws, _) = kit_client(&server, "/kit").await;
    send_text(&mut ws, r#"{"op":"sequence","n":500}"#).await;
    for i in 0..1000 {
        assert_eq!(next_text(&mut ws).await, format!("seq {i}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn callbacks_never_overlap_and_on_close_comes_once_even_when_clients_vanish() {
    let server = TestServer::start(kit_config("")).await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let mut ws = server.ws("/kit").await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                ws.feed(Message::text(r#"{"op":"whoami"}"#)).await.unwrap();
            }
            ws.flush().await.unwrap();
            match i % 3 {
                // Polite close.
                0 => ws.close(None).await.unwrap(),
                // Vanish: drop the TCP connection with replies unread.
                1 => drop(ws),
                // Read everything, then close.
                _ => {
                    for _ in 0..50 {
                        next(&mut ws).await;
                    }
                    ws.close(None).await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (mut observer, _) = kit_client(&server, "/kit").await;
    let mut stats = json!(null);
    for _ in 0..100 {
        stats = call(&mut observer, json!({"op": "stats"})).await;
        if stats["opens"].as_u64() == Some(31) && stats["closes"].as_u64() == Some(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats["opens"], 31, "{stats}");
    assert_eq!(stats["closes"], 30, "{stats}");
    assert_eq!(stats["violations"], 0, "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_closes_everyone_calls_on_close_once_each_and_then_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let server = TestServer::start(kit_config(&format!(
        "report_file = {:?}",
        report.display().to_string()
    )))
    .await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(kit_client(&server, "/kit").await.0);
    }
    let status = server.terminate().await;
    assert!(status.success());
    for client in &mut clients {
        assert_eq!(expect_close(client).await.0, 1001);
    }
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&report).expect("report written at shutdown"),
    )
    .unwrap();
    assert_eq!(report["opens"], 3, "{report}");
    assert_eq!(report["closes"], 3, "{report}");
    assert_eq!(report["violations"], 0, "{report}");
    assert_eq!(
        report["after_shutdown"], "SHUT_DOWN",
        "host calls fail once the app is shut down: {report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_handshake_data_attached_by_the_app_is_returned_by_info() {
    let server = TestServer::start(kit_config("")).await;
    let request = format!("{}?data=role%3Deditor", server.url("/kit"))
        .into_client_request()
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        call(&mut ws, json!({"op": "info"})).await["ok"]["data"],
        "role=editor"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_protocol_error_calls_on_error_then_on_close_once() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    let server = TestServer::start(kit_config("")).await;
    let (mut observer, _) = kit_client(&server, "/kit").await;
    let mut broken = server.ws("/kit").await;
    let invalid_utf8 = Frame::message(vec![0xc3, 0x28], OpCode::Data(Data::Text), true);
    broken.send(Message::Frame(invalid_utf8)).await.unwrap();
    assert_eq!(expect_close(&mut broken).await.0, 1007);
    // Keep reading, so the client library completes its side of the close.
    assert!(crate::util::ends(&mut broken).await);
    drop(broken);
    let mut stats = json!(null);
    for _ in 0..50 {
        stats = call(&mut observer, json!({"op": "stats"})).await;
        if stats["closes"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (
            stats["errors"].clone(),
            stats["closes"].clone(),
            stats["violations"].clone()
        ),
        (json!(1), json!(1), json!(0)),
        "{stats}"
    );
    assert!(
        server.log().contains("invalid UTF-8")
            || server.log().contains("utf-8")
            || server.log().contains("UTF-8"),
        "{}",
        server.log()
    );
}
