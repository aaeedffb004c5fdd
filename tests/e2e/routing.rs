//! Routing: several apps on one path chosen by the client's subprotocol
//! (PHP-WebSockets-Server style), path patterns with captures, and how the
//! push API, `/_/health` and `/_/apps` name such apps.

use std::time::Duration;

use serde_json::{json, Value};
use switchboard_tests::{output_text, run_command, target_dir, Client, TestConfig, TestServer};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::util::{next_text, send_text};

/// chat and echo chosen by subprotocol on `/`, the commands bot as the default.
const ONE_URL: &str = r#"
[[app]]
path = "/"
plugin = "chat"
subprotocols = ["chat"]

[[app]]
path = "/"
plugin = "echo"
subprotocols = ["echo", "echo.v2"]

[[app]]
path = "/"
plugin = "commands"
"#;

/// A raw handshake on `path` offering `protocols`; the response head and body.
async fn handshake(server: &TestServer, path: &str, protocols: Option<&str>) -> String {
    let offer = protocols
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{offer}\r\n"
    );
    server
        .raw(request.as_bytes(), Duration::from_millis(500))
        .await
}

/// A client on `path` offering `protocols`.
async fn connect(
    server: &TestServer,
    path: &str,
    protocols: Option<&str>,
) -> (Client, Option<String>) {
    let mut request = server.url(path).into_client_request().unwrap();
    if let Some(protocols) = protocols {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocols.parse().unwrap());
    }
    let (ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .unwrap_or_else(|e| panic!("connect to {path}: {e}"));
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    (ws, chosen)
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_on_one_path_are_chosen_by_the_offered_subprotocol() {
    let server = TestServer::start(TestConfig::new().apps(ONE_URL)).await;

    // "chat, echo": the first offered that an app lists wins.
    let head = handshake(&server, "/", Some("chat, echo")).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: chat\r\n"),
        "{head}"
    );
    let (mut chat, chosen) = connect(&server, "/", Some("chat, echo")).await;
    assert_eq!(chosen.as_deref(), Some("chat"));
    let welcome: Value = serde_json::from_str(&next_text(&mut chat).await).unwrap();
    assert_eq!(welcome["type"], "welcome", "the chat app answered");

    let (mut echo, chosen) = connect(&server, "/", Some("nope, echo.v2")).await;
    assert_eq!(chosen.as_deref(), Some("echo.v2"));
    send_text(&mut echo, "hello").await;
    assert_eq!(next_text(&mut echo).await, "hello");

    // No offer: the default (the commands bot).
    let (mut bot, chosen) = connect(&server, "/", None).await;
    assert_eq!(chosen, None);
    send_text(&mut bot, "hello").await;
    let answer = next_text(&mut bot).await;
    assert!(
        !answer.is_empty() && answer != "hello",
        "the bot answered: {answer}"
    );

    // An offer no app speaks is refused before the upgrade, naming what is served.
    let head = handshake(&server, "/", Some("nope")).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(
        head.contains(
            "no app here speaks nope; this path serves the subprotocols chat, echo, echo.v2"
        ),
        "{head}"
    );

    // Health, the app list and the metrics name the apps by path and subprotocol.
    let health = server.health().await;
    assert_eq!(health["apps"]["/#chat"]["subprotocols"], json!(["chat"]));
    assert_eq!(health["apps"]["/#echo"]["plugin"], "echo");
    assert_eq!(health["apps"]["/"]["plugin"], "commands");
    let list = server.get("/_/apps").await;
    assert!(
        list.contains(r#""name":"/#echo""#)
            && list.contains(r#""subprotocols":["echo","echo.v2"]"#),
        "{list}"
    );
    let metrics = server.get("/_/metrics").await;
    assert!(
        metrics.contains(r#"switchboard_connections_accepted_total{app="/#chat"}"#),
        "{metrics}"
    );

    // The push API names such an app by path and subprotocol.
    let (status, answer) = server
        .post(
            "/_/push",
            &[],
            &json!({"to": {"app": "/", "subprotocol": "echo"}, "message": "to echo"}).to_string(),
        )
        .await;
    assert_eq!((status, &answer["delivered"]), (200, &json!(1)), "{answer}");
    assert_eq!(next_text(&mut echo).await, "to echo");
    let (status, answer) = server
        .post(
            "/_/push",
            &[],
            &json!({"to": {"app": "/", "subprotocol": "nope"}, "message": "x"}).to_string(),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("serves chat, echo, echo.v2"),
        "{answer}"
    );
    // Without a subprotocol: the path's default.
    let (status, answer) = server
        .post(
            "/_/push",
            &[],
            &json!({"to": {"app": "/"}, "message": "to the bot"}).to_string(),
        )
        .await;
    assert_eq!((status, &answer["delivered"]), (200, &json!(1)), "{answer}");
    assert_eq!(next_text(&mut bot).await, "to the bot");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_path_without_a_default_refuses_clients_offering_nothing() {
    let apps = "[[app]]\npath = \"/\"\nplugin = \"chat\"\nsubprotocols = [\"chat\"]\n\n[[app]]\npath = \"/\"\nplugin = \"echo\"\nsubprotocols = [\"echo\"]\n";
    let server = TestServer::start(TestConfig::new().apps(apps)).await;
    let head = handshake(&server, "/", None).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(
        head.contains("no subprotocol was offered; this path serves the subprotocols chat, echo"),
        "{head}"
    );
    let (status, answer) = server
        .post(
            "/_/push",
            &[],
            &json!({"to": {"app": "/"}, "message": "x"}).to_string(),
        )
        .await;
    assert_eq!(status, 404);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("name one with \"to.subprotocol\""),
        "{answer}"
    );
}

fn with_server(rest: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nplugin_dir = {:?}\n{rest}",
        target_dir().display().to_string()
    )
}

async fn check_fails(config: &str) -> String {
    let output = run_command(&["check"], config).await;
    let text = output_text(&output);
    assert!(!output.status.success(), "check should fail:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_paths_and_patterns_are_checked_with_file_and_line() {
    let text = check_fails(&with_server(
        "[[app]]\npath = \"/\"\nplugin = \"chat\"\nsubprotocols = [\"chat\"]\n\n[[app]]\npath = \"/\"\nplugin = \"echo\"\nsubprotocols = [\"chat\"]\n",
    ))
    .await;
    assert!(
        text.contains("switchboard.toml:10:8: subprotocol \"chat\" is claimed by two apps on path \"/\" (first at line 5)"),
        "{text}"
    );
    let text = check_fails(&with_server(
        "[[app]]\npath = \"/\"\nplugin = \"chat\"\n\n[[app]]\npath = \"/\"\nplugin = \"echo\"\n",
    ))
    .await;
    assert!(
        text.contains("switchboard.toml:9:8: app path \"/\" is mounted twice (first at line 5); apps share a path only when they list `subprotocols`"),
        "{text}"
    );
    let text = check_fails(&with_server(
        "[[app]]\npath = \"/\"\nplugin = \"echo\"\nsubprotocols = [\"not a token\"]\n",
    ))
    .await;
    assert!(
        text.contains("switchboard.toml:7:17: subprotocol \"not a token\" is not a valid token"),
        "{text}"
    );
    let text = check_fails(&with_server(
        "[[app]]\npath = \"/rooms/{room}\"\nplugin = \"chat\"\n\n[[app]]\npath = \"/rooms/{id}\"\nplugin = \"echo\"\n",
    ))
    .await;
    assert!(
        text.contains(
            "switchboard.toml:9:8: app path \"/rooms/{id}\" is ambiguous with \"/rooms/{room}\""
        ),
        "{text}"
    );
    let text = check_fails(&with_server(
        "[[app]]\npath = \"/files/{*rest}/more\"\nplugin = \"echo\"\n",
    ))
    .await;
    assert!(text.contains("switchboard.toml:5:8: app path \"/files/{*rest}/more\": {*rest} takes the rest of the path"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn path_patterns_capture_decode_and_refuse_bad_segments() {
    let apps = r#"
[[app]]
path = "/rooms/lobby"
plugin = "echo"

[[app]]
path = "/rooms/{room}"
plugin = "fixture_testkit"

[[app]]
name = "files"
path = "/files/{*rest}"
plugin = "fixture_testkit"
"#;
    let server = TestServer::start(TestConfig::new().apps(apps)).await;
    // The exact path wins over the pattern.
    let (mut lobby, _) = connect(&server, "/rooms/lobby", None).await;
    send_text(&mut lobby, "echoed").await;
    assert_eq!(next_text(&mut lobby).await, "echoed");
    // The pattern captures, percent-decoded, in the handshake and in `info`.
    let head = handshake(&server, "/rooms/caf%C3%A9", None).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("x-testkit-params: room=caf\\u{e9}"), "{head}");
    let (mut kit, _) = connect(&server, "/rooms/caf%C3%A9", None).await;
    let info = crate::kit::call(&mut kit, json!({"op": "info"})).await;
    assert_eq!(info["ok"]["params"], json!([["room", "café"]]), "{info}");
    assert_eq!(info["ok"]["path"], "/rooms/caf%C3%A9");
    let (mut files, _) = connect(&server, "/files/a/b%20c.txt", None).await;
    let info = crate::kit::call(&mut files, json!({"op": "info"})).await;
    assert_eq!(
        info["ok"]["params"],
        json!([["rest", "a/b c.txt"]]),
        "{info}"
    );
    // Captures that cannot reach an app: `..`, empty segments, bad UTF-8.
    for bad in [
        "/files/a/../b",
        "/files/a/%2E%2E/b",
        "/rooms/%FF",
        "/files/a//b",
    ] {
        let head = handshake(&server, bad, None).await;
        assert!(
            head.starts_with("HTTP/1.1 400") || head.starts_with("HTTP/1.1 404"),
            "{bad}: {head}"
        );
        assert!(!head.starts_with("HTTP/1.1 101"), "{bad}");
    }
    let head = handshake(&server, "/files/a/%2E%2E/b", None).await;
    assert!(head.contains("has an empty, '.' or '..' segment"), "{head}");
    // A path matching no pattern is still 404.
    assert!(handshake(&server, "/rooms", None)
        .await
        .starts_with("HTTP/1.1 404"));
    // The explicit name names the app.
    assert_eq!(
        server.health().await["apps"]["files"]["paths"],
        json!(["/files/{*rest}"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chat_room_comes_from_the_url() {
    let apps = "[[app]]\npaths = [\"/chat\", \"/chat/{room}\"]\nplugin = \"chat\"\n";
    let server = TestServer::start(TestConfig::new().apps(apps)).await;
    let (mut alice, _) = connect(&server, "/chat/kitchen", None).await;
    let joined = expect_joined(&mut alice).await;
    assert_eq!(joined["room"], "kitchen");
    let (mut bob, _) = connect(&server, "/chat/kitchen", None).await;
    assert_eq!(
        expect_joined(&mut bob).await["members"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    send_text(
        &mut alice,
        &json!({"type": "say", "room": "kitchen", "text": "from the url"}).to_string(),
    )
    .await;
    loop {
        let message: Value = serde_json::from_str(&next_text(&mut bob).await).unwrap();
        if message["type"] == "message" {
            assert_eq!(message["text"], "from the url");
            break;
        }
    }
    // The plain path still works, joining by message.
    let (mut carol, _) = connect(&server, "/chat", None).await;
    send_text(
        &mut carol,
        &json!({"type": "join", "room": "kitchen"}).to_string(),
    )
    .await;
    assert_eq!(
        expect_joined(&mut carol).await["members"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

async fn expect_joined(ws: &mut Client) -> Value {
    loop {
        let message: Value = serde_json::from_str(&next_text(ws).await).unwrap();
        if message["type"] == "joined" {
            return message;
        }
    }
}
