//! The example apps on three nodes sharing one real Redis, clients spread
//! over them: a chat room, record locks and the hub's feedback behave as on
//! one node, and a killed node's locks and members are released.

use std::time::Duration;

use serde_json::{json, Value};
use switchboard_tests::Redis;

use crate::apps::{chat_client, expect_type, locks_client, send_json};
use crate::cluster::{eventually, start_nodes};
use crate::hub::{BrowserLike, PhpLike};

const APPS: &str = r#"
[[app]]
path = "/chat"
plugin = "chat"
[app.config]
history = 3

[[app]]
path = "/locks"
plugin = "locks"

[[app]]
paths = ["/hub", "/hub/web", "/hub/php"]
plugin = "hub"
[app.config]
php_frame_pause_ms = 50
"#;

/// Waits for a chat message of `kind` whose text is `text`.
async fn expect_text(ws: &mut switchboard_tests::Client, kind: &str, text: &str) -> Value {
    loop {
        let message = expect_type(ws, kind).await;
        if message["text"] == text {
            return message;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chat_room_spans_three_nodes() {
    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let nodes = start_nodes(&redis, &["a", "b", "c"], APPS).await;
    let mut alice = chat_client(&nodes[0], "alice").await;
    let mut bob = chat_client(&nodes[1], "bob").await;
    let mut carol = chat_client(&nodes[2], "carol").await;
    for ws in [&mut alice, &mut bob, &mut carol] {
        send_json(ws, json!({"type": "join", "room": "lobby"})).await;
        expect_type(ws, "joined").await;
    }
    // Members are listed from every node.
    eventually!("carol sees the three members", {
        send_json(&mut carol, json!({"type": "members", "room": "lobby"})).await;
        expect_type(&mut carol, "members").await["members"] == json!(["alice", "bob", "carol"])
    });
    send_json(
        &mut alice,
        json!({"type": "say", "room": "lobby", "text": "hi all"}),
    )
    .await;
    for ws in [&mut bob, &mut carol] {
        let message = expect_text(ws, "message", "hi all").await;
        assert_eq!(message["nick"], "alice");
    }
    send_json(
        &mut bob,
        json!({"type": "say", "room": "lobby", "text": "from b"}),
    )
    .await;
    expect_text(&mut alice, "message", "from b").await;
    expect_text(&mut carol, "message", "from b").await;

    // A late joiner on another node gets the room's history.
    let mut dave = chat_client(&nodes[1], "dave").await;
    send_json(&mut dave, json!({"type": "join", "room": "lobby"})).await;
    let joined = expect_type(&mut dave, "joined").await;
    let texts: Vec<&str> = joined["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|line| line["text"].as_str())
        .collect();
    assert_eq!(texts, ["hi all", "from b"]);
    // Nicknames are one namespace for the cluster.
    send_json(&mut dave, json!({"type": "nick", "nick": "carol"})).await;
    let refused = expect_type(&mut dave, "error").await;
    assert!(
        refused["message"].as_str().unwrap().contains("taken"),
        "{refused}"
    );

    // A client leaving on node c is seen on node a.
    drop(carol);
    let left = expect_text(&mut alice, "system", "carol disconnected").await;
    assert_eq!(left["room"], "lobby");
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_are_one_table_across_nodes_and_a_killed_nodes_locks_are_released() {
    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let mut nodes = start_nodes(&redis, &["a", "b", "c"], APPS).await;
    let (mut anna, anna_id) = locks_client(&nodes[0], "Anna").await;
    let (mut ben, _) = locks_client(&nodes[2], "Ben").await;
    let (mut cleo, _) = locks_client(&nodes[1], "Cleo").await;

    send_json(&mut anna, json!({"type": "show", "ids": ["isbn-1"]})).await;
    assert_eq!(
        expect_type(&mut anna, "shown").await["mine"],
        json!(["isbn-1"])
    );
    // Held on node a, seen on node c.
    let locked = expect_type(&mut ben, "locked").await;
    assert_eq!(
        (locked["user"].clone(), locked["conn"].clone()),
        (json!("Anna"), json!(anna_id))
    );
    send_json(&mut ben, json!({"type": "show", "ids": ["isbn-1"]})).await;
    let shown = expect_type(&mut ben, "shown").await;
    assert_eq!(shown["mine"], json!([]));
    assert_eq!(shown["held_by_others"]["isbn-1"]["user"], "Anna");
    send_json(&mut cleo, json!({"type": "show", "ids": ["isbn-1"]})).await;
    expect_type(&mut cleo, "shown").await;

    // The holder disconnects on node a: the longest waiter, on node c, inherits.
    drop(anna);
    assert_eq!(
        expect_type(&mut ben, "acquired").await["ids"],
        json!(["isbn-1"])
    );

    // Node c dies with the lock: within the node timeout the next waiter
    // (on node b) gets it, and a new client sees the table without ben.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let killed_at = std::time::Instant::now();
    nodes.pop().expect("node c").kill().await;
    assert_eq!(
        expect_type(&mut cleo, "acquired").await["ids"],
        json!(["isbn-1"])
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed_at.elapsed()
    );
    let mut dan = nodes[0].ws("/locks").await;
    let welcome = expect_type(&mut dan, "welcome").await;
    assert_eq!(welcome["locks"]["isbn-1"]["user"], "Cleo");
    assert_eq!(welcome["locks"].as_object().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn hub_feedback_finds_its_target_on_any_node() {
    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let nodes = start_nodes(&redis, &["a", "b", "c"], APPS).await;
    let mut browser = BrowserLike::connect(&nodes[0], "/hub/web").await;
    let mut worker = PhpLike::connect(&nodes[2], "/hub/php", "worker").await;
    let mut beta = PhpLike::connect(&nodes[1], "/hub/php", "beta").await;

    // By uuid: a backend on node c, a browser on node a (the uuid's
    // signature verifies on every node: the generated secret is shared).
    worker
        .talk(json!({"opcode": "feedback", "uuid": browser.uuid, "message": "progress 50%", "fromUUID": worker.uuid}))
        .await;
    let packet: Value = serde_json::from_str(&browser.packet().await).unwrap();
    assert_eq!(packet["message"], "progress 50%");
    // By ident: node c to node b.
    worker
        .talk(json!({"opcode": "feedback", "ident": "beta", "uuid": "", "message": "hello beta"}))
        .await;
    let packet: Value =
        serde_json::from_str(&beta.read().await.expect("feedback for beta")).unwrap();
    assert_eq!(packet["message"], "hello beta");
    // An ident is unique across the cluster.
    let duplicate = nodes[0]
        .raw(
            b"GET /hub/php HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1\r\nClient-Type: php\r\nIdent: beta\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
    assert!(duplicate.starts_with("HTTP/1.1 409"), "{duplicate}");
    // A browser's broadcast reaches browsers on other nodes.
    let mut other = BrowserLike::connect(&nodes[1], "/hub").await;
    eventually!("node a sees the browser on node b", {
        nodes[0].health().await["cluster"]["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 2)
    });
    browser
        .send(&json!({"opcode": "broadcast", "message": "to every browser"}))
        .await;
    let packet: Value = serde_json::from_str(&other.packet().await).unwrap();
    assert_eq!(packet["message"], "to every browser");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_paused_past_the_timeout_is_written_off_and_closes_its_clients_when_it_wakes() {
    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let nodes = start_nodes(&redis, &["a", "b"], APPS).await;
    let (mut anna, _) = locks_client(&nodes[0], "Anna").await;
    let (mut ben, _) = locks_client(&nodes[1], "Ben").await;
    send_json(&mut anna, json!({"type": "show", "ids": ["isbn-9"]})).await;
    assert_eq!(
        expect_type(&mut anna, "shown").await["mine"],
        json!(["isbn-9"])
    );
    send_json(&mut ben, json!({"type": "show", "ids": ["isbn-9"]})).await;
    expect_type(&mut ben, "shown").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Node a stops answering (paused) for longer than node_timeout (1 s):
    // node b releases Anna's lock to Ben.
    nodes[0].signal("STOP");
    let acquired =
        tokio::time::timeout(Duration::from_secs(8), expect_type(&mut ben, "acquired")).await;
    nodes[0].signal("CONT");
    assert_eq!(
        acquired.expect("ben acquires while node a is paused")["ids"],
        json!(["isbn-9"])
    );
    // Node a wakes: Anna no longer holds what her page shows, so she is
    // closed with 1012 and comes back to the real state.
    let (code, reason) = crate::util::expect_close(&mut anna).await;
    assert_eq!(code, 1012, "{reason}");
    let (mut again, _) = locks_client(&nodes[0], "Anna").await;
    send_json(&mut again, json!({"type": "state"})).await;
    let state = expect_type(&mut again, "state").await;
    assert_eq!(state["locks"]["isbn-9"]["user"], "Ben");
    assert!(nodes[0].log().contains("wrote this node off"));
}

#[tokio::test(flavor = "multi_thread")]
async fn chat_goes_on_for_a_nodes_own_clients_while_redis_is_out() {
    let Some(mut redis) = Redis::start_or_skip() else {
        return;
    };
    let nodes = start_nodes(&redis, &["a", "b"], APPS).await;
    let mut alice = chat_client(&nodes[0], "alice").await;
    let mut bob = chat_client(&nodes[0], "bob").await;
    let mut carol = chat_client(&nodes[1], "carol").await;
    for ws in [&mut alice, &mut bob, &mut carol] {
        send_json(ws, json!({"type": "join", "room": "lobby"})).await;
        expect_type(ws, "joined").await;
    }
    redis.kill();
    eventually!("node a notices", {
        nodes[0].health().await["cluster"]["redis"] == "down"
    });
    // The room on this node goes on.
    send_json(
        &mut alice,
        json!({"type": "say", "room": "lobby", "text": "still here"}),
    )
    .await;
    expect_text(&mut bob, "message", "still here").await;
    // A new client cannot get a nickname unique in the cluster now: 1013.
    let mut late = nodes[0].ws("/chat").await;
    let (code, _) = crate::util::expect_close(&mut late).await;
    assert_eq!(code, 1013);

    redis.restart();
    eventually!("both nodes are back", {
        let mut back = true;
        for node in &nodes {
            let health = node.health().await;
            back &= health["cluster"]["redis"] == "up"
                && health["cluster"]["nodes"]
                    .as_array()
                    .is_some_and(|n| n.len() == 1);
        }
        back
    });
    send_json(
        &mut alice,
        json!({"type": "say", "room": "lobby", "text": "across again"}),
    )
    .await;
    expect_text(&mut carol, "message", "across again").await;
    let _dave = chat_client(&nodes[1], "dave").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_clock_ticks_for_every_node() {
    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let clock = "[[app]]\npath = \"/clock\"\nplugin = \"clock\"\n[app.config]\ninterval_ms = 100\n";
    let nodes = start_nodes(&redis, &["a", "b", "c"], clock).await;
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(node.ws("/clock").await);
    }
    // Every client gets the same ticks, one per interval, numbered in
    // order: one node holds the lease and ticks for all (three tickers
    // would repeat numbers and tick three times as often).
    let started = std::time::Instant::now();
    let mut first = None;
    let mut last = 0;
    for ws in &mut clients {
        let mut seen = Vec::new();
        let reading = std::time::Instant::now();
        while reading.elapsed() < Duration::from_millis(1000) {
            let tick: Value = serde_json::from_str(&crate::util::next_text(ws).await).unwrap();
            seen.push(tick["n"].as_u64().unwrap());
        }
        // The first is the count at connect time; then one each tick.
        let ticks = &seen[1..];
        assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
        first = first.or(ticks.first().copied());
        last = last.max(*ticks.last().unwrap());
    }
    let elapsed_ticks = started.elapsed().as_millis() as u64 / 100;
    let numbered = last - first.unwrap();
    assert!(
        numbered <= elapsed_ticks + 5,
        "{numbered} ticks in {elapsed_ticks} intervals: more than one clock"
    );
}
