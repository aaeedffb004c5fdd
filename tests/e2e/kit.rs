//! Helpers for tests that drive the test-kit plugin (tests/fixtures/testkit):
//! each text message is a JSON command performing one Host call.

use serde_json::{json, Value};
use switchboard_tests::{Client, TestConfig, TestServer};

use crate::util::{next, send_text};

/// The test kit on `/kit` and a second instance on `/kit2`, plus the echo app.
pub(crate) fn kit_config(kit_config: &str) -> TestConfig {
    TestConfig::new().apps(&format!(
        "[[app]]\npath = \"/kit\"\nplugin = \"fixture_testkit\"\n[app.config]\n{kit_config}\n\n\
         [[app]]\npath = \"/kit2\"\nplugin = \"fixture_testkit\"\n\n\
         [[app]]\npath = \"/echo\"\nplugin = \"echo\"\n"
    ))
}

/// Sends a command and returns its `result`, skipping other messages.
pub(crate) async fn call(ws: &mut Client, command: Value) -> Value {
    call_collecting(ws, command).await.0
}

/// Sends a command and returns its `result` and the text messages that
/// arrived before it.
pub(crate) async fn call_collecting(ws: &mut Client, command: Value) -> (Value, Vec<String>) {
    let op = command["op"].as_str().expect("op").to_owned();
    send_text(ws, &command.to_string()).await;
    let mut before = Vec::new();
    loop {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = next(ws).await {
            let value: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
            if value["op"] == op {
                return (value["result"].clone(), before);
            }
            before.push(text.as_str().to_owned());
        }
    }
}

/// The connection id of a test-kit client.
pub(crate) async fn whoami(ws: &mut Client) -> String {
    call(ws, json!({ "op": "whoami" })).await["ok"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// Connects a test-kit client and returns it with its id.
pub(crate) async fn kit_client(server: &TestServer, path: &str) -> (Client, String) {
    let mut ws = server.ws(path).await;
    let id = whoami(&mut ws).await;
    (ws, id)
}
