use futures_util::SinkExt;
use switchboard_tests::{TestConfig, TestServer};
use tokio_tungstenite::tungstenite::Message;

use crate::util::{expect_close, next, next_text, send_text};

#[tokio::test(flavor = "multi_thread")]
async fn many_clients_on_two_apps_at_once_each_get_their_own_answers() {
    let server = TestServer::start(TestConfig::new()).await;
    let mut tasks = Vec::new();
    for client in 0..200 {
        let mut ws = server
            .ws(if client % 2 == 0 {
                "/echo"
            } else {
                "/commands"
            })
            .await;
        tasks.push(tokio::spawn(async move {
            for round in 0..20 {
                if client % 2 == 0 {
                    let text = format!("client {client} round {round}");
                    ws.send(Message::text(text.clone())).await.unwrap();
                    assert_eq!(next(&mut ws).await, Message::text(text));
                } else {
                    send_text(&mut ws, "hello").await;
                    assert_eq!(next_text(&mut ws).await, "hello human");
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    let health = server.get("/_/health").await;
    assert!(health.contains("\"status\":\"ok\""), "{health}");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_closes_every_connection_with_1001_and_exits_cleanly() {
    let server = TestServer::start(TestConfig::new()).await;
    let mut a = server.ws("/echo").await;
    let mut b = server.ws("/commands").await;
    a.send(Message::text("x")).await.unwrap();
    assert_eq!(next(&mut a).await, Message::text("x"));
    let waiting =
        tokio::spawn(async move { (expect_close(&mut a).await, expect_close(&mut b).await) });
    let status = server.terminate().await;
    let ((code_a, _), (code_b, _)) = waiting.await.unwrap();
    assert_eq!((code_a, code_b), (1001, 1001));
    assert!(status.success(), "exit status {status}");
}

/// The soak mode of the load generator, briefly: sessions on echo, chat, locks
/// and hub open, talk and close for a few seconds without one unexpected error.
/// (`docs/operations.md` reports a 10-minute run of it.)
#[tokio::test(flavor = "multi_thread")]
async fn a_short_soak_sees_no_unexpected_error() {
    let output = tokio::process::Command::new(switchboard_tests::artifact("switchboard-bench"))
        .args([
            "soak",
            "--duration",
            "4s",
            "--sample",
            "2s",
            "--workers",
            "8",
            "--messages",
            "10",
        ])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let text = switchboard_tests::output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains(" messages, 0 errors; RSS after warm-up"),
        "{text}"
    );
    let sessions: u64 = text
        .split("soak done: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(sessions >= 20, "{text}");
}
