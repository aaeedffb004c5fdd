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
