//! Reload: the real binary, a plugin rebuilt between two versions (the
//! `versioned` fixture, built as v1 and v2), reloaded by SIGHUP, by
//! `switchboard reload` and by `--watch`, in each reload mode; refused
//! reloads; the example apps keeping their state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use switchboard_tests::{abi_fixture, output_text, plugin_path, Client, TestConfig, TestServer};
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::util::{expect_close, next_text, send_text};

/// A plugin folder holding `libversioned.so` (v1 to begin with).
struct Plugins {
    dir: TempDir,
}

impl Plugins {
    fn new() -> Self {
        let plugins = Plugins {
            dir: tempfile::tempdir().unwrap(),
        };
        plugins.install("v1");
        plugins
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("libversioned.so")
    }

    /// Copies a build over the plugin file in place, as `cp` does (the same
    /// inode is rewritten: harmless now that the server loads a copy).
    fn install(&self, version: &str) {
        std::fs::copy(plugin_path(&format!("fixture_{version}")), self.file()).unwrap();
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn versioned_config(plugins: &Plugins, app_lines: &str) -> TestConfig {
    TestConfig::new().plugin_dir(plugins.path()).apps(&format!(
        "[[app]]\npath = \"/v\"\nplugin = \"versioned\"\n{app_lines}\n"
    ))
}

/// Connects to `/v` and reads the welcome: (client, version, id).
async fn connect(server: &TestServer) -> (Client, String, String) {
    let mut ws = server.ws("/v").await;
    let welcome: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(welcome["type"], "welcome");
    (
        ws,
        welcome["version"].as_str().unwrap().to_owned(),
        welcome["id"].as_str().unwrap().to_owned(),
    )
}

async fn ask(ws: &mut Client, text: &str) -> String {
    send_text(ws, text).await;
    next_text(ws).await
}

async fn state(ws: &mut Client) -> Value {
    serde_json::from_str(&ask(ws, "state").await).unwrap()
}

/// Runs `switchboard reload`; asserts it succeeded; returns what it printed.
async fn reload_ok(server: &TestServer) -> String {
    let output = server.reload().await;
    let text = output_text(&output);
    assert!(output.status.success(), "{text}\n{}", server.log());
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_and_the_reload_command_migrate_open_connections_to_the_new_build() {
    let plugins = Plugins::new();
    let server = TestServer::start(versioned_config(&plugins, "")).await;
    let (mut a, version, id) = connect(&server).await;
    assert_eq!(version, "v1");
    assert_eq!(ask(&mut a, "which").await, "v1");

    // A new build written over the file: the server keeps serving the old one.
    plugins.install("v2");
    assert_eq!(ask(&mut a, "which").await, "v1");
    let (mut b, _, _) = connect(&server).await;
    assert_eq!(ask(&mut b, "which").await, "v1");

    server.hangup();
    server.wait_for_reloads("/v", 1).await;
    assert_eq!(
        ask(&mut a, "which").await,
        "v2",
        "same connection, new build"
    );
    let after = state(&mut a).await;
    assert_eq!(after["id"], id.as_str(), "same connection id");
    assert_eq!(after["resumed"], 2, "both connections resumed on v2");
    assert_eq!(
        after["handled"], 5,
        "the count carried over through save_state"
    );
    assert_eq!(ask(&mut b, "which").await, "v2");

    plugins.install("v1");
    let printed = reload_ok(&server).await;
    assert!(printed.contains("reloaded: /v (migrate)"), "{printed}");
    assert_eq!(ask(&mut a, "which").await, "v1");
    let health = server.health().await;
    assert_eq!(health["apps"]["/v"]["reloads"], 2);
    assert_eq!(health["apps"]["/v"]["connections"], 2);
    assert_eq!(
        health["apps"]["/v"]["plugin_sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    assert!(server.log().contains("reload applied"), "{}", server.log());

    // Nothing changed: nothing is re-instantiated.
    let printed = reload_ok(&server).await;
    assert!(printed.contains("unchanged: /v"), "{printed}");
    assert_eq!(server.health().await["apps"]["/v"]["reloads"], 2);
    // No connection was closed on the way.
    a.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    })))
    .await
    .unwrap();
    assert_eq!(expect_close(&mut a).await.0, 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_keeps_old_connections_on_the_old_build_until_the_timeout() {
    let plugins = Plugins::new();
    let server = TestServer::start(versioned_config(
        &plugins,
        "reload = \"drain\"\ndrain_timeout = \"1500ms\"",
    ))
    .await;
    let (mut old, _, _) = connect(&server).await;
    plugins.install("v2");
    let printed = reload_ok(&server).await;
    assert!(printed.contains("reloaded: /v (drain)"), "{printed}");
    assert_eq!(
        ask(&mut old, "which").await,
        "v1",
        "old connection, old build"
    );
    let (mut new, version, _) = connect(&server).await;
    assert_eq!(version, "v2");
    assert_eq!(ask(&mut new, "which").await, "v2");
    assert_eq!(
        expect_close(&mut old).await.0,
        1012,
        "closed at the drain timeout"
    );
    assert_eq!(ask(&mut new, "which").await, "v2");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_closes_open_connections_with_1012() {
    let plugins = Plugins::new();
    let server = TestServer::start(versioned_config(&plugins, "reload = \"restart\"")).await;
    let (mut old, _, _) = connect(&server).await;
    plugins.install("v2");
    reload_ok(&server).await;
    assert_eq!(expect_close(&mut old).await.0, 1012);
    let (_new, version, _) = connect(&server).await;
    assert_eq!(version, "v2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_messages_through_five_reloads_arrive_once_each_in_order() {
    let plugins = Plugins::new();
    let server = TestServer::start(versioned_config(&plugins, "")).await;
    let (ws, _, _) = connect(&server).await;
    let (mut write, mut read) = ws.split();
    let sender = tokio::spawn(async move {
        for n in 0..1000 {
            write.send(Message::text(format!("n:{n}"))).await.unwrap();
            // About three seconds of traffic, through which the reloads run.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        write
    });
    let reloader = async {
        for round in 0..5 {
            plugins.install(if round % 2 == 0 { "v2" } else { "v1" });
            reload_ok(&server).await;
        }
    };
    let reader = async {
        let mut answers = Vec::new();
        while answers.len() < 1000 {
            let message = tokio::time::timeout(Duration::from_secs(10), read.next())
                .await
                .expect("an answer")
                .unwrap()
                .unwrap();
            if let Message::Text(text) = message {
                answers.push(text.to_string());
            }
        }
        answers
    };
    let ((), answers) = tokio::join!(reloader, reader);
    let _write = sender.await.unwrap();
    let numbers: Vec<u32> = answers
        .iter()
        .map(|a| a.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        numbers,
        (0..1000).collect::<Vec<u32>>(),
        "in order, once each"
    );
    assert!(answers.iter().any(|a| a.starts_with("v1:")));
    assert!(
        answers.iter().any(|a| a.starts_with("v2:")),
        "the reloads happened during the traffic"
    );
    assert_eq!(server.health().await["apps"]["/v"]["reloads"], 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_reloads_change_nothing_and_say_why() {
    let plugins = Plugins::new();
    let good = versioned_config(&plugins, "");
    let server = TestServer::start(good).await;
    let (mut a, _, _) = connect(&server).await;
    let legacy = abi_fixture("fixture_abi_0_1_1");

    let attempts = [
        (
            TestConfig::new()
                .plugin_dir(plugins.path())
                .apps("[[app]]\npath = \"/v\"\nplugin = \"versioned\"\n[[app\n"),
            "switchboard.toml:",
        ),
        (
            versioned_config(&plugins, "").apps(
                "[[app]]\npath = \"/v\"\nplugin = \"versioned\"\n\n[[app]]\npath = \"/w\"\nplugin = \"no_such_plugin\"\n",
            ),
            "plugin file not found",
        ),
        (
            versioned_config(&plugins, "").apps(&format!(
                "[[app]]\npath = \"/v\"\nplugin = \"versioned\"\n\n[[app]]\npath = \"/old\"\nplugin = {:?}\n",
                legacy.display().to_string()
            )),
            "but this server loads plugins built against",
        ),
        (
            versioned_config(&plugins, "[app.config]\nrefuse = \"not today\""),
            "refused to start: not today",
        ),
    ];
    plugins.install("v2");
    for (config, expected) in attempts {
        server.rewrite_config(&config);
        let output = server.reload().await;
        let text = output_text(&output);
        assert!(!output.status.success(), "{text}");
        assert!(
            text.contains("reload refused, nothing changed") && text.contains(expected),
            "expected {expected:?} in:\n{text}"
        );
        assert_eq!(ask(&mut a, "which").await, "v1", "untouched after: {text}");
    }
    let health = server.health().await;
    assert_eq!(health["apps"]["/v"]["reloads"], 0);
    assert!(health["apps"]["/w"].is_null() && health["apps"]["/old"].is_null());
    let metrics = server.get("/_/metrics").await;
    assert!(
        metrics.contains("switchboard_reloads_total{result=\"refused\"} 4"),
        "{metrics}"
    );
    // The same file, valid again: the new build loads.
    server.rewrite_config(&versioned_config(&plugins, ""));
    reload_ok(&server).await;
    assert_eq!(ask(&mut a, "which").await, "v2");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_serves_a_new_build_without_any_command() {
    let plugins = Plugins::new();
    let server = TestServer::start_with(versioned_config(&plugins, ""), &["--watch"]).await;
    let (mut a, _, _) = connect(&server).await;
    // As a build would: write the library in several steps.
    let v2 = std::fs::read(plugin_path("fixture_v2")).unwrap();
    let (head, tail) = v2.split_at(v2.len() / 2);
    std::fs::write(plugins.file(), head).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(plugins.file())
        .unwrap();
    std::io::Write::write_all(&mut file, tail).unwrap();
    drop(file);
    // Served within the few seconds wait_for_reloads allows.
    server.wait_for_reloads("/v", 1).await;
    assert_eq!(ask(&mut a, "which").await, "v2");
    assert!(
        !server.log().contains("reload refused"),
        "one reload, after the file was whole:\n{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_are_added_and_removed_and_other_settings_apply_to_new_connections() {
    let plugins = Plugins::new();
    let server = TestServer::start(versioned_config(&plugins, "")).await;
    let (mut a, _, _) = connect(&server).await;
    // Add /echo (from the build directory, by file), change the listen address.
    let echo = plugin_path("echo").display().to_string();
    let text = versioned_config(&plugins, "").apps(&format!(
        "[[app]]\npath = \"/v\"\nplugin = \"versioned\"\n\n[[app]]\npath = \"/echo\"\nplugin = {echo:?}\n"
    ));
    server.rewrite_config(&text);
    let mut raw = std::fs::read_to_string(server.config_path()).unwrap();
    raw = raw.replacen("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"", 1);
    std::fs::write(server.config_path(), raw).unwrap();
    let printed = reload_ok(&server).await;
    assert!(printed.contains("added: /echo"), "{printed}");
    assert!(printed.contains("unchanged: /v"), "{printed}");
    assert!(
        printed.contains("needs a restart (not applied): server.listen"),
        "{printed}"
    );
    let mut echo_client = server.ws("/echo").await;
    assert_eq!(ask(&mut echo_client, "hi").await, "hi");
    // Remove /v: its client is told the app is gone.
    server.rewrite_config(
        &versioned_config(&plugins, "")
            .apps(&format!("[[app]]\npath = \"/echo\"\nplugin = {echo:?}\n")),
    );
    let printed = reload_ok(&server).await;
    assert!(printed.contains("removed: /v"), "{printed}");
    assert_eq!(expect_close(&mut a).await, (1001, "app removed".to_owned()));
    assert!(server.get("/v").await.starts_with("HTTP/1.1 404"));
}
