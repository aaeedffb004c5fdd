//! The ABI compatibility rule, tested: a plugin built against a newer
//! plugin-api than the server's (`tests/abi-fixtures/plugin-api-next`, a
//! made-up 0.2.99 with one method appended to `Host` and one to `App`) is
//! loaded by today's server; every callback and host call works, and the host
//! method the server lacks answers its default. (A plugin built against an
//! older plugin-api is refused: see `startup.rs`.)

use futures_util::SinkExt;
use serde_json::{json, Value};
use switchboard_tests::{abi_fixture, Client, TestConfig, TestServer};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::util::{ends, expect_close, next, next_text, send_text};

async fn legacy_server() -> TestServer {
    let apps = format!(
        "[[app]]\npath = \"/legacy\"\nplugin = {:?}\ninfo_headers = [\"user-agent\"]\n",
        abi_fixture("fixture_next_api").display().to_string()
    );
    TestServer::start(TestConfig::new().apps(&apps)).await
}

async fn json_of(ws: &mut Client) -> Value {
    serde_json::from_str(&next_text(ws).await).unwrap()
}

/// Sends a command and returns its result, skipping other messages.
async fn call(ws: &mut Client, command: Value) -> Value {
    send_text(ws, &command.to_string()).await;
    loop {
        let reply = json_of(ws).await;
        if let Some(result) = reply.get("result") {
            return result.clone();
        }
    }
}

/// Connects and reads the welcome; returns the client and its id.
async fn join(server: &TestServer) -> (Client, String) {
    let mut ws = server.ws("/legacy").await;
    let welcome = json_of(&mut ws).await;
    assert_eq!(welcome["api"], "0.2.99", "{welcome}");
    let id = welcome["id"].as_str().unwrap().to_owned();
    (ws, id)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_built_against_a_newer_plugin_api_is_served_by_todays_server() {
    let server = legacy_server().await;
    let health = server.get("/_/health").await;
    assert!(health.contains("\"fixture-next-api\""), "{health}");

    // on_handshake: a refusal, a subprotocol, per-connection data.
    let refused = server
        .raw(
            b"GET /legacy?reject=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            std::time::Duration::from_secs(2),
        )
        .await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("refused by 0.2.99"), "{refused}");
    let mut request = server.url("/legacy").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "legacy.v1".parse().unwrap());
    let (mut with_protocol, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "legacy.v1");
    json_of(&mut with_protocol).await;

    // on_open, then every host call.
    let (mut a, id_a) = join(&server).await;
    let (mut b, _id_b) = join(&server).await;
    send_text(&mut a, r#"{"op": "send"}"#).await;
    assert_eq!(next_text(&mut a).await, "sent to you by 0.2.99");
    assert_eq!(next_text(&mut a).await, r#"{"result":true}"#);
    let info = call(&mut a, json!({"op": "info"})).await;
    assert_eq!(info["id"], id_a.as_str());
    assert_eq!(info["path"], "/legacy");
    assert_eq!(info["data"], "from 0.2.99");
    assert_eq!(call(&mut a, json!({"op": "connections"})).await, 3);
    assert_eq!(
        call(
            &mut a,
            json!({"op": "broadcast", "text": "to all", "except_me": true})
        )
        .await,
        2
    );
    assert_eq!(next_text(&mut b).await, "to all");
    assert_eq!(
        call(&mut a, json!({"op": "join", "group": "g"})).await,
        true
    );
    assert_eq!(
        call(&mut b, json!({"op": "join", "group": "g"})).await,
        true
    );
    assert_eq!(
        call(&mut a, json!({"op": "members", "group": "g"})).await,
        2
    );
    assert_eq!(
        call(
            &mut a,
            json!({"op": "publish", "group": "g", "text": "to g", "except_me": true})
        )
        .await,
        1
    );
    assert_eq!(next_text(&mut b).await, "to g");
    assert_eq!(
        call(&mut b, json!({"op": "leave", "group": "g"})).await,
        true
    );
    assert_eq!(
        call(&mut a, json!({"op": "members", "group": "g"})).await,
        1
    );
    assert_eq!(
        call(&mut a, json!({"op": "log", "text": "hello"})).await,
        true
    );
    // The calls 0.1.2 added work; the one only 0.2.99 has answers its default.
    let push_url = call(&mut a, json!({"op": "server_info"})).await;
    assert_eq!(push_url, format!("http://{}/_/push", server.addr));
    assert_eq!(call(&mut a, json!({"op": "frame_pacing"})).await, true);
    assert_eq!(
        call(&mut a, json!({"op": "next_only"})).await,
        "default of a method the server does not have"
    );
    a.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(next(&mut a).await, Message::binary(vec![1u8, 2, 3]));

    // on_push: deliver, replace, veto.
    for (message, status, delivered) in [
        ("plain", 200, Some("plain")),
        ("replace", 200, Some("replaced by 0.2.99")),
        ("veto", 409, None),
    ] {
        let (got, answer) = server
            .post(
                "/_/push",
                &[],
                &json!({"to": {"client": id_a}, "message": message}).to_string(),
            )
            .await;
        assert_eq!(got, status, "{message}: {answer}");
        if let Some(text) = delivered {
            assert_eq!(next_text(&mut a).await, text);
        } else {
            assert_eq!(answer["error"], "vetoed by the app: vetoed by 0.2.99");
        }
    }

    // A failing and a panicking callback close only their connection (1011).
    let (mut failing, _) = join(&server).await;
    send_text(&mut failing, r#"{"op": "fail"}"#).await;
    assert_eq!(expect_close(&mut failing).await.0, 1011);
    assert!(ends(&mut failing).await);
    let (mut panicking, _) = join(&server).await;
    send_text(&mut panicking, r#"{"op": "panic"}"#).await;
    assert_eq!(expect_close(&mut panicking).await.0, 1011);
    assert!(ends(&mut panicking).await);

    // Host::close with a code the server refuses, then a good one.
    let refused = call(&mut b, json!({"op": "close", "code": 1005})).await;
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("may not be sent"),
        "{refused}"
    );
    send_text(
        &mut b,
        &json!({"op": "close", "code": 4001, "reason": "bye"}).to_string(),
    )
    .await;
    assert_eq!(expect_close(&mut b).await, (4001, "bye".to_owned()));
    assert!(ends(&mut b).await);

    // on_close ran for each closed connection (once its close handshake
    // ended); on_error for none yet.
    let mut stats = Value::Null;
    for _ in 0..100 {
        stats = call(&mut a, json!({"op": "stats"})).await;
        if stats["closes"] == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(stats["opens"], 5, "{stats}");
    assert_eq!(stats["closes"], 3, "{stats}");
    assert_eq!(stats["errors"], 0, "{stats}");
    // A protocol violation calls on_error.
    let mut raw = crate::protocol::raw_websocket(&server, "/legacy").await;
    raw.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    let mut errors = Value::Null;
    for _ in 0..50 {
        errors = call(&mut a, json!({"op": "stats"})).await["errors"].clone();
        if errors == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(errors, 1);
    assert!(server.terminate().await.success());
}
