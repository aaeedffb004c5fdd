//! The chat, locks and clock apps, with several clients at once.

use std::time::Duration;

use serde_json::{json, Value};
use switchboard_tests::{Client, TestConfig, TestServer};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::util::{next_text, send_text};

const APPS: &str = r#"
[[app]]
path = "/chat"
plugin = "chat"
[app.config]
history = 3
max_message_length = 20

[[app]]
path = "/secret-chat"
plugin = "chat"
[app.config]
auth_token = "s3cret"

[[app]]
path = "/locks"
plugin = "locks"

[[app]]
path = "/clock"
plugin = "clock"
[app.config]
interval_ms = 50
"#;

pub(crate) async fn json_of(ws: &mut Client) -> Value {
    serde_json::from_str(&next_text(ws).await).expect("json")
}

/// The next message of a given type (others skipped).
pub(crate) async fn expect_type(ws: &mut Client, kind: &str) -> Value {
    loop {
        let value = json_of(ws).await;
        if value["type"] == kind {
            return value;
        }
    }
}

pub(crate) async fn send_json(ws: &mut Client, value: Value) {
    send_text(ws, &value.to_string()).await;
}

pub(crate) async fn chat_client(server: &TestServer, nick: &str) -> Client {
    let mut ws = server.ws("/chat").await;
    let welcome = expect_type(&mut ws, "welcome").await;
    assert_eq!(welcome["id"].as_str().map(str::len), Some(36));
    send_json(&mut ws, json!({"type": "nick", "nick": nick})).await;
    assert_eq!(expect_type(&mut ws, "nick").await["nick"], nick);
    ws
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_rooms_history_members_and_system_messages() {
    let server = TestServer::start(TestConfig::new().apps(APPS)).await;
    let mut alice = chat_client(&server, "alice").await;
    let mut bob = chat_client(&server, "bob").await;
    let mut carol = chat_client(&server, "carol").await;

    send_json(&mut alice, json!({"type": "join", "room": "lobby"})).await;
    let joined = expect_type(&mut alice, "joined").await;
    assert_eq!(joined["members"], json!(["alice"]));
    assert_eq!(joined["history"], json!([]));
    for text in ["one", "two", "three", "four"] {
        send_json(
            &mut alice,
            json!({"type": "say", "room": "lobby", "text": text}),
        )
        .await;
        let message = expect_type(&mut alice, "message").await;
        assert_eq!(
            (message["nick"].as_str(), message["text"].as_str()),
            (Some("alice"), Some(text))
        );
    }

    send_json(&mut bob, json!({"type": "join", "room": "lobby"})).await;
    let joined = expect_type(&mut bob, "joined").await;
    assert_eq!(joined["members"], json!(["alice", "bob"]));
    let history: Vec<&str> = joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        vec!["two", "three", "four"],
        "the last `history` messages, oldest first"
    );
    assert_eq!(
        expect_type(&mut alice, "system").await["text"],
        "bob joined"
    );

    send_json(
        &mut bob,
        json!({"type": "say", "room": "lobby", "text": "hi alice"}),
    )
    .await;
    assert_eq!(expect_type(&mut alice, "message").await["text"], "hi alice");
    assert_eq!(expect_type(&mut bob, "message").await["text"], "hi alice");

    // Carol is in another room and hears nothing of the lobby.
    send_json(&mut carol, json!({"type": "join", "room": "garden"})).await;
    expect_type(&mut carol, "joined").await;
    send_json(
        &mut carol,
        json!({"type": "say", "room": "lobby", "text": "let me in"}),
    )
    .await;
    assert!(expect_type(&mut carol, "error").await["message"]
        .as_str()
        .unwrap()
        .contains("join room \"lobby\""));
    send_json(&mut carol, json!({"type": "members", "room": "lobby"})).await;
    assert_eq!(
        expect_type(&mut carol, "members").await["members"],
        json!(["alice", "bob"])
    );

    // Limits and bad input get an error and change nothing.
    send_json(
        &mut bob,
        json!({"type": "say", "room": "lobby", "text": "x".repeat(21)}),
    )
    .await;
    assert!(expect_type(&mut bob, "error").await["message"]
        .as_str()
        .unwrap()
        .contains("1 to 20 characters"));
    send_text(&mut bob, "not json").await;
    assert!(expect_type(&mut bob, "error").await["message"]
        .as_str()
        .unwrap()
        .starts_with("invalid command"));
    send_json(&mut bob, json!({"type": "nick", "nick": "alice"})).await;
    assert!(expect_type(&mut bob, "error").await["message"]
        .as_str()
        .unwrap()
        .contains("taken"));

    send_json(&mut bob, json!({"type": "nick", "nick": "robert"})).await;
    assert_eq!(
        expect_type(&mut alice, "system").await["text"],
        "bob is now robert"
    );
    send_json(&mut bob, json!({"type": "leave", "room": "lobby"})).await;
    assert_eq!(
        expect_type(&mut alice, "system").await["text"],
        "robert left"
    );

    send_json(&mut carol, json!({"type": "join", "room": "lobby"})).await;
    expect_type(&mut alice, "system").await;
    drop(carol);
    assert_eq!(
        expect_type(&mut alice, "system").await["text"],
        "carol disconnected"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_with_an_auth_token_refuses_clients_without_it_before_the_upgrade() {
    let server = TestServer::start(TestConfig::new().apps(APPS)).await;
    let refused = tokio_tungstenite::connect_async(server.url("/secret-chat"))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    let wrong =
        tokio_tungstenite::connect_async(format!("{}?token=nope", server.url("/secret-chat")))
            .await
            .unwrap_err();
    assert!(wrong.to_string().contains("401"), "{wrong}");
    let (mut by_query, _) =
        tokio_tungstenite::connect_async(format!("{}?token=s3cret", server.url("/secret-chat")))
            .await
            .unwrap();
    expect_type(&mut by_query, "welcome").await;
    let mut request = server.url("/secret-chat").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    let (mut by_header, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    expect_type(&mut by_header, "welcome").await;
    let mut request = server.url("/secret-chat").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("cookie", "chat_token=s3cret".parse().unwrap());
    let (mut by_cookie, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    expect_type(&mut by_cookie, "welcome").await;
}

pub(crate) async fn locks_client(server: &TestServer, user: &str) -> (Client, String) {
    let mut ws = server.ws("/locks").await;
    let welcome = expect_type(&mut ws, "welcome").await;
    let id = welcome["id"].as_str().unwrap().to_owned();
    send_json(&mut ws, json!({"type": "hello", "user": user})).await;
    expect_type(&mut ws, "hello").await;
    (ws, id)
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_are_first_come_first_served_visible_to_all_and_freed_on_disconnect() {
    let server = TestServer::start(TestConfig::new().apps(APPS)).await;
    let (mut anna, anna_id) = locks_client(&server, "Anna").await;
    let (mut ben, ben_id) = locks_client(&server, "Ben").await;
    let (mut cleo, _) = locks_client(&server, "Cleo").await;

    send_json(
        &mut anna,
        json!({"type": "show", "ids": ["isbn-1", "isbn-2"]}),
    )
    .await;
    let shown = expect_type(&mut anna, "shown").await;
    assert_eq!(shown["mine"], json!(["isbn-1", "isbn-2"]));
    for other in [&mut ben, &mut cleo] {
        let locked = expect_type(other, "locked").await;
        assert_eq!(
            (locked["ids"].clone(), locked["user"].clone()),
            (json!(["isbn-1", "isbn-2"]), json!("Anna"))
        );
        assert_eq!(locked["conn"], anna_id);
    }

    send_json(
        &mut ben,
        json!({"type": "show", "ids": ["isbn-2", "isbn-3"]}),
    )
    .await;
    let shown = expect_type(&mut ben, "shown").await;
    assert_eq!(shown["mine"], json!(["isbn-3"]));
    assert_eq!(shown["held_by_others"]["isbn-2"]["user"], "Anna");
    let locked = expect_type(&mut anna, "locked").await;
    assert_eq!(
        (locked["ids"].clone(), locked["user"].clone()),
        (json!(["isbn-3"]), json!("Ben"))
    );

    // A new client sees every lock on connect.
    let mut dan = server.ws("/locks").await;
    let welcome = expect_type(&mut dan, "welcome").await;
    assert_eq!(welcome["locks"]["isbn-1"]["user"], "Anna");
    assert_eq!(welcome["locks"]["isbn-3"]["user"], "Ben");

    // Anna leaves: Ben waited for isbn-2 and gets it; isbn-1 is free.
    drop(anna);
    let acquired = expect_type(&mut ben, "acquired").await;
    assert_eq!(acquired["ids"], json!(["isbn-2"]));
    let mut saw_taken = false;
    let mut saw_freed = false;
    while !(saw_taken && saw_freed) {
        let message = json_of(&mut cleo).await;
        match message["type"].as_str() {
            Some("locked") if message["ids"] == json!(["isbn-2"]) => {
                assert_eq!(message["conn"], ben_id);
                saw_taken = true;
            }
            Some("released") => {
                assert_eq!(message["ids"], json!(["isbn-1"]));
                saw_freed = true;
            }
            _ => {}
        }
    }
    send_json(&mut cleo, json!({"type": "state"})).await;
    let state = expect_type(&mut cleo, "state").await;
    assert_eq!(
        state["locks"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["isbn-2", "isbn-3"]
    );

    send_json(&mut cleo, json!({"type": "show", "ids": vec!["x"; 1]})).await;
    expect_type(&mut cleo, "shown").await;
    send_json(&mut cleo, json!({"type": "show", "ids": [""]})).await;
    assert!(expect_type(&mut cleo, "error").await["message"]
        .as_str()
        .unwrap()
        .contains("must have 1 to 200 bytes"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_clock_publishes_from_its_own_thread_and_clients_can_pause() {
    let server = TestServer::start(TestConfig::new().apps(APPS)).await;
    let mut ws = server.ws("/clock").await;
    let mut last = None;
    for _ in 0..4 {
        let tick = expect_type(&mut ws, "tick").await;
        let n = tick["n"].as_u64().unwrap();
        assert!(last.is_none_or(|l| n > l), "ticks count up");
        assert_eq!(tick["time"].as_str().map(str::len), Some(8));
        last = Some(n);
    }
    send_text(&mut ws, "pause").await;
    assert_eq!(expect_type(&mut ws, "ok").await["subscribed"], false);
    // Paused: at most what was already queued arrives, then silence.
    let quiet = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            let value = json_of(&mut ws).await;
            assert_eq!(value["type"], "tick");
        }
    })
    .await;
    assert!(quiet.is_err(), "no ticks while paused");
    send_text(&mut ws, "resume").await;
    assert_eq!(expect_type(&mut ws, "ok").await["subscribed"], true);
    expect_type(&mut ws, "tick").await;
}

/// The chat and locks apps from copies of their plugins in `dir`.
fn reloadable_apps(dir: &std::path::Path) -> (TestConfig, std::path::PathBuf, std::path::PathBuf) {
    let chat = switchboard_tests::plugin_copy("chat", dir);
    let locks = switchboard_tests::plugin_copy("locks", dir);
    let config = TestConfig::new().apps(&format!(
        "[[app]]\npath = \"/chat\"\nplugin = {:?}\n[app.config]\nhistory = 3\n\n[[app]]\npath = \"/locks\"\nplugin = {:?}\n",
        chat.display().to_string(),
        locks.display().to_string()
    ));
    (config, chat, locks)
}

async fn reload(server: &TestServer) -> String {
    let output = server.reload().await;
    let text = switchboard_tests::output_text(&output);
    assert!(output.status.success(), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_rooms_nicknames_and_history_survive_a_reload_of_a_new_build() {
    let dir = tempfile::tempdir().unwrap();
    let (config, chat, _) = reloadable_apps(dir.path());
    let server = TestServer::start(config).await;
    let mut alice = chat_client(&server, "alice").await;
    let mut bob = chat_client(&server, "bob").await;
    let mut carol = chat_client(&server, "carol").await;
    for ws in [&mut alice, &mut bob, &mut carol] {
        send_json(ws, json!({"type": "join", "room": "lobby"})).await;
        expect_type(ws, "joined").await;
    }
    for text in ["one", "two"] {
        send_json(
            &mut alice,
            json!({"type": "say", "room": "lobby", "text": text}),
        )
        .await;
        for ws in [&mut alice, &mut bob, &mut carol] {
            assert_eq!(expect_type(ws, "message").await["text"], text);
        }
    }

    switchboard_tests::rebuild_in_place(&chat);
    let printed = reload(&server).await;
    assert!(printed.contains("reloaded: /chat (migrate)"), "{printed}");
    assert!(printed.contains("unchanged: /locks"), "{printed}");

    // Same room, same nicknames, messages keep flowing.
    send_json(
        &mut bob,
        json!({"type": "say", "room": "lobby", "text": "after"}),
    )
    .await;
    for ws in [&mut alice, &mut bob, &mut carol] {
        let message = expect_type(ws, "message").await;
        assert_eq!(
            (message["nick"].as_str(), message["text"].as_str()),
            (Some("bob"), Some("after"))
        );
    }
    send_json(&mut carol, json!({"type": "members", "room": "lobby"})).await;
    assert_eq!(
        expect_type(&mut carol, "members").await["members"],
        json!(["alice", "bob", "carol"])
    );
    // History intact for a late joiner.
    let mut dave = chat_client(&server, "dave").await;
    send_json(&mut dave, json!({"type": "join", "room": "lobby"})).await;
    let joined = expect_type(&mut dave, "joined").await;
    let history: Vec<&str> = joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| line["text"].as_str().unwrap())
        .collect();
    assert_eq!(history, vec!["one", "two", "after"]);
    assert_eq!(server.health().await["apps"]["/chat"]["reloads"], 1);
    // Nobody was welcomed twice: the reload resumed them silently.
    send_json(&mut alice, json!({"type": "nick", "nick": "alice2"})).await;
    assert_eq!(expect_type(&mut alice, "nick").await["nick"], "alice2");
}

#[tokio::test(flavor = "multi_thread")]
async fn held_locks_and_the_waiting_line_survive_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _, locks) = reloadable_apps(dir.path());
    let server = TestServer::start(config).await;
    let (mut anna, _) = locks_client(&server, "Anna").await;
    let (mut ben, ben_id) = locks_client(&server, "Ben").await;
    send_json(&mut anna, json!({"type": "show", "ids": ["isbn-1"]})).await;
    assert_eq!(
        expect_type(&mut anna, "shown").await["mine"],
        json!(["isbn-1"])
    );
    send_json(
        &mut ben,
        json!({"type": "show", "ids": ["isbn-1", "isbn-2"]}),
    )
    .await;
    let shown = expect_type(&mut ben, "shown").await;
    assert_eq!(shown["mine"], json!(["isbn-2"]));
    assert_eq!(shown["held_by_others"]["isbn-1"]["user"], "Anna");

    switchboard_tests::rebuild_in_place(&locks);
    let printed = reload(&server).await;
    assert!(printed.contains("reloaded: /locks (migrate)"), "{printed}");

    // A new client sees the same holders.
    let mut cleo = server.ws("/locks").await;
    let welcome = expect_type(&mut cleo, "welcome").await;
    assert_eq!(welcome["locks"]["isbn-1"]["user"], "Anna");
    assert_eq!(welcome["locks"]["isbn-2"]["user"], "Ben");
    // Anna leaves: Ben, who was waiting, inherits isbn-1.
    drop(anna);
    assert_eq!(
        expect_type(&mut ben, "acquired").await["ids"],
        json!(["isbn-1"])
    );
    let locked = expect_type(&mut cleo, "locked").await;
    assert_eq!(locked["conn"], ben_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn many_locks_are_capped_and_sent_to_new_clients_in_pages() {
    let server =
        TestServer::start(TestConfig::new().apps(
            "[[app]]\npath = \"/locks\"\nplugin = \"locks\"\n[app.config]\nmax_locks = 1200\n",
        ))
        .await;
    // Long ids, so one message with every lock would pass 1 MiB... if sent whole.
    let long = |n: usize| format!("{n:05}-{}", "x".repeat(190));
    let mut holders = Vec::new();
    for round in 0..2 {
        let (mut ws, _) = locks_client(&server, &format!("holder-{round}")).await;
        let ids: Vec<String> = (round * 1000..round * 1000 + 1000).map(long).collect();
        send_json(&mut ws, json!({"type": "show", "ids": ids})).await;
        let shown = expect_type(&mut ws, "shown").await;
        let mine = shown["mine"].as_array().unwrap().len();
        let over = shown["over_limit"].as_array().unwrap().len();
        assert_eq!(mine + over, 1000);
        if round == 1 {
            assert_eq!((mine, over), (200, 800), "the cap of 1200 locks");
            assert!(expect_type(&mut ws, "error").await["message"]
                .as_str()
                .unwrap()
                .contains("maximum of 1200 locks"));
        }
        holders.push(ws);
    }
    // A new client gets all 1200, in pages of at most 500.
    let mut fresh = server.ws("/locks").await;
    let welcome = expect_type(&mut fresh, "welcome").await;
    let mut total = welcome["locks"].as_object().unwrap().len();
    let mut more = welcome["more"] == true;
    let mut pages = 1;
    while more {
        let page = expect_type(&mut fresh, "locks").await;
        let n = page["locks"].as_object().unwrap().len();
        assert!(n <= 500);
        total += n;
        more = page["more"] == true;
        pages += 1;
    }
    assert_eq!((total, pages), (1200, 3));
}
