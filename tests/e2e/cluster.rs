//! Three nodes sharing one real Redis (Debian's `redis-server` on a port of
//! the test's own): Host calls, pushes and memberships across nodes, a node
//! killed with SIGKILL, Redis killed and restarted during traffic.

use std::time::Duration;

use serde_json::{json, Value};
use switchboard_tests::{Client, Redis, TestConfig, TestServer};

use crate::kit::{call, call_collecting, kit_client};
use crate::util::{expect_close, next_text};

/// Polls an expression (it may `.await`) until it is true (10 s at most).
macro_rules! eventually {
    ($what:expr, $check:expr) => {{
        let mut held = false;
        for _ in 0..200 {
            if $check {
                held = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(held, "never happened: {}", $what);
    }};
}
pub(crate) use eventually;

/// The test kit on `/kit`.
const KIT: &str = "[[app]]\npath = \"/kit\"\nplugin = \"fixture_testkit\"\n";

/// A node of the cluster on `redis`, quick to notice a node gone.
pub(crate) fn node_config(redis: &Redis, node: &str, apps: &str) -> TestConfig {
    TestConfig::new().apps(&format!(
        "[cluster]\nredis = \"{}\"\nnode_id = \"{node}\"\nheartbeat = \"100ms\"\nnode_timeout = \"1s\"\nrequest_timeout = \"1s\"\n\n{apps}",
        redis.url()
    ))
}

/// Starts one node per name and waits until every node sees all the others.
pub(crate) async fn start_nodes(redis: &Redis, names: &[&str], apps: &str) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(TestServer::start(node_config(redis, name, apps)).await);
    }
    for node in &nodes {
        eventually!("every node sees the others", {
            node.health().await["cluster"]["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == names.len() - 1)
        });
    }
    nodes
}

/// The next text message that is not a command's answer.
async fn delivered(ws: &mut Client) -> String {
    loop {
        let text = next_text(ws).await;
        if !text.starts_with("{\"op\"") {
            return text;
        }
    }
}

fn sorted(value: &Value) -> Vec<String> {
    let mut ids: Vec<String> = value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[tokio::test]
async fn host_calls_reach_connections_on_every_node() {
    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let nodes = start_nodes(&redis, &["a", "b", "c"], KIT).await;
    let (mut a, a_id) = kit_client(&nodes[0], "/kit").await;
    let (mut b, b_id) = kit_client(&nodes[1], "/kit").await;
    let (mut c, c_id) = kit_client(&nodes[2], "/kit").await;
    // Ids say which node holds them: the three differ in their first bytes.
    assert_ne!(a_id[..8], b_id[..8]);
    let (a_kit, b_kit, c_kit) = (&mut a, &mut b, &mut c);
    let mut all = vec![a_id.clone(), b_id.clone(), c_id.clone()];
    all.sort();
    eventually!("node a lists the three connections", {
        sorted(&call(a_kit, json!({"op": "connections"})).await["ok"]) == all
    });

    // A message for a client of the same node never touches Redis; a
    // broadcast crosses it once, whatever the number of clients.
    let published = |node| async move {
        let scrape = crate::metrics::scrape_metrics(node).await;
        crate::metrics::value_of(
            &scrape,
            "switchboard_cluster_published_total",
            &[("kind", "deliver")],
        )
        .unwrap_or(0.0) as u64
    };
    let (mut a2, a2_id) = kit_client(&nodes[0], "/kit").await;
    let before = published(&nodes[0]).await;
    for _ in 0..5 {
        call(
            a_kit,
            json!({"op": "send", "to": a2_id, "text": "same node"}),
        )
        .await;
    }
    assert_eq!(delivered(&mut a2).await, "same node");
    assert_eq!(published(&nodes[0]).await, before);
    let (mut more, more_id) = kit_client(&nodes[1], "/kit").await;
    drop(a2);
    eventually!("a2 gone and the new client on b known", {
        let ids = sorted(&call(a_kit, json!({"op": "connections"})).await["ok"]);
        ids.len() == 4 && ids.contains(&more_id) && !ids.contains(&a2_id)
    });
    let (count, _) =
        call_collecting(a_kit, json!({"op": "broadcast", "text": "once per node"})).await;
    assert_eq!(count["ok"], 4, "{count}");
    assert_eq!(delivered(&mut more).await, "once per node");
    assert_eq!(delivered(b_kit).await, "once per node");
    assert_eq!(delivered(c_kit).await, "once per node");
    // Counted once Redis answered the node that sent it (after it may have
    // reached the others).
    eventually!("the publish is counted", {
        published(&nodes[0]).await > before
    });
    assert_eq!(
        published(&nodes[0]).await,
        before + 1,
        "one publish for two nodes and three remote clients"
    );
    drop(more);
    eventually!("node a sees the extra client gone", {
        sorted(&call(a_kit, json!({"op": "connections"})).await["ok"]) == all
    });

    // One connection on another node.
    let sent = call(a_kit, json!({"op": "send", "to": b_id, "text": "a to b"})).await;
    assert_eq!(sent, json!({"ok": null}));
    assert_eq!(delivered(b_kit).await, "a to b");

    // A broadcast reaches every node once, and counts every connection.
    let (count, before) =
        call_collecting(a_kit, json!({"op": "broadcast", "text": "to all"})).await;
    assert_eq!(count["ok"], 3, "{count}");
    assert_eq!(
        before,
        ["to all"],
        "the sender's own copy comes before the answer"
    );
    assert_eq!(delivered(b_kit).await, "to all");
    assert_eq!(delivered(c_kit).await, "to all");

    // Groups span nodes: members are listed and reached wherever they are.
    call(b_kit, json!({"op": "join", "group": "room"})).await;
    call(c_kit, json!({"op": "join", "group": "room"})).await;
    let mut room = vec![b_id.clone(), c_id.clone()];
    room.sort();
    eventually!("node a sees both members", {
        sorted(&call(a_kit, json!({"op": "members", "group": "room"})).await["ok"]) == room
    });
    let count = call(
        a_kit,
        json!({"op": "publish", "group": "room", "text": "to the room"}),
    )
    .await;
    assert_eq!(count["ok"], 2, "{count}");
    assert_eq!(delivered(b_kit).await, "to the room");
    assert_eq!(delivered(c_kit).await, "to the room");
    // `except` names a connection on another node.
    let count = call(
        a_kit,
        json!({"op": "publish", "group": "room", "text": "not to c", "except": c_id}),
    )
    .await;
    assert_eq!(count["ok"], 1, "{count}");
    assert_eq!(delivered(b_kit).await, "not to c");
    call(c_kit, json!({"op": "leave", "group": "room"})).await;
    eventually!("node a sees c leave", {
        sorted(&call(a_kit, json!({"op": "members", "group": "room"})).await["ok"])
            == [b_id.clone()]
    });

    // A close asked on node a happens on node c, with its code.
    let closed = call(
        a_kit,
        json!({"op": "close", "to": c_id, "code": 4001, "reason": "from a"}),
    )
    .await;
    assert_eq!(closed, json!({"ok": null}));
    assert_eq!(expect_close(c_kit).await, (4001, "from a".to_owned()));
    eventually!("node a sees c gone", {
        let connections = sorted(&call(a_kit, json!({"op": "connections"})).await["ok"]);
        !connections.contains(&c_id)
    });
    // An id no node holds any more is unknown.
    let gone = call(a_kit, json!({"op": "send", "to": c_id, "text": "x"})).await;
    assert_eq!(gone["error"], "UNKNOWN_CONNECTION", "{gone}");

    let health = nodes[0].health().await;
    assert_eq!(health["cluster"]["node_id"], "a");
    assert_eq!(health["cluster"]["redis"], "up");
    let metrics = nodes[0].get("/_/metrics").await;
    assert!(
        metrics.contains("switchboard_cluster_published_total{kind=\"deliver\"}"),
        "{metrics}"
    );
    let metrics = nodes[1].get("/_/metrics").await;
    assert!(
        metrics.contains("switchboard_cluster_received_total{kind=\"deliver\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("switchboard_cluster_delivery_seconds_count"));
}

#[tokio::test]
async fn pushes_reach_clients_on_whichever_node_holds_them() {
    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let nodes = start_nodes(&redis, &["a", "b", "c"], KIT).await;
    let (mut b, _) = kit_client(&nodes[1], "/kit").await;
    let (mut c, c_id) = kit_client(&nodes[2], "/kit").await;
    let push = |body: Value| {
        let node = &nodes[0];
        async move { node.post("/_/push", &[], &body.to_string()).await }
    };

    // To a client on node c, through node a.
    let (status, body) = push(json!({"to": {"client": c_id}, "message": "hello c"})).await;
    assert_eq!((status, body), (200, json!({"delivered": 1})));
    assert_eq!(delivered(&mut c).await, "hello c");

    // Binary too; and the holder's own refusals come back as they are.
    let (status, body) = push(json!({"to": {"client": c_id}, "binary": "AAEC"})).await;
    assert_eq!((status, body), (200, json!({"delivered": 1})));
    match crate::util::next(&mut c).await {
        tokio_tungstenite::tungstenite::Message::Binary(bytes) => assert_eq!(&bytes[..], [0, 1, 2]),
        other => panic!("expected binary, got {other:?}"),
    }

    // A group and a whole app, on every node.
    call(&mut b, json!({"op": "join", "group": "g"})).await;
    call(&mut c, json!({"op": "join", "group": "g"})).await;
    let (mut a, _) = kit_client(&nodes[0], "/kit").await;
    eventually!("node a sees both members", {
        call(&mut a, json!({"op": "members", "group": "g"})).await["ok"]
            .as_array()
            .is_some_and(|m| m.len() == 2)
    });
    let (status, body) =
        push(json!({"to": {"app": "/kit", "group": "g"}, "message": "to g"})).await;
    assert_eq!((status, body), (200, json!({"delivered": 2})));
    assert_eq!(delivered(&mut b).await, "to g");
    assert_eq!(delivered(&mut c).await, "to g");
    let (status, body) = push(json!({"to": {"app": "/kit"}, "message": "to all"})).await;
    assert_eq!((status, body), (200, json!({"delivered": 3})));
    assert_eq!(delivered(&mut a).await, "to all");
    assert_eq!(delivered(&mut b).await, "to all");
    assert_eq!(delivered(&mut c).await, "to all");

    // A client its node no longer holds, and one no node ever held: 404.
    drop(c);
    eventually!("c has left node c", {
        nodes[2].health().await["apps"]["/kit"]["connections"] == 0
    });
    let (status, body) = push(json!({"to": {"client": c_id}, "message": "x"})).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) =
        push(json!({"to": {"client": "0badc0de-0000-4000-8000-000000000000"}, "message": "x"}))
            .await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("no open connection"));
}

#[tokio::test]
async fn a_killed_node_leaves_the_others_within_the_timeout() {
    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let mut nodes = start_nodes(&redis, &["a", "b", "c"], KIT).await;
    let (mut a, _) = kit_client(&nodes[0], "/kit").await;
    let (mut c, c_id) = kit_client(&nodes[2], "/kit").await;
    call(&mut c, json!({"op": "join", "group": "g"})).await;
    eventually!("node a sees c in the group", {
        sorted(&call(&mut a, json!({"op": "members", "group": "g"})).await["ok"]) == [c_id.clone()]
    });
    let killed_at = std::time::Instant::now();
    nodes.pop().expect("node c").kill().await;
    eventually!("node a forgets node c", {
        call(&mut a, json!({"op": "members", "group": "g"})).await["ok"] == json!([])
    });
    // node_timeout is 1 s; heartbeats are checked every 100 ms.
    assert!(killed_at.elapsed() < Duration::from_secs(3));
    let health = nodes[0].health().await;
    assert_eq!(health["cluster"]["nodes"].as_array().unwrap().len(), 1);
    let (status, _) = nodes[0]
        .post(
            "/_/push",
            &[],
            &json!({"to": {"client": c_id}, "message": "x"}).to_string(),
        )
        .await;
    assert_eq!(status, 404);
    assert!(nodes[0].log().contains("node c not heard from"));
}

#[tokio::test]
async fn redis_lost_and_back_keeps_local_service_and_resumes_by_itself() {
    let Some(mut redis) = Redis::start_or_skip() else {
        return;
    };
    let nodes = start_nodes(&redis, &["a", "b"], KIT).await;
    let (mut a1, a1_id) = kit_client(&nodes[0], "/kit").await;
    let (mut a2, _) = kit_client(&nodes[0], "/kit").await;
    let (mut b, b_id) = kit_client(&nodes[1], "/kit").await;

    redis.kill();
    eventually!("node a notices Redis is gone", {
        nodes[0].health().await["cluster"]["redis"] == "down"
    });
    // This node's own clients are served as before.
    let sent = call(&mut a2, json!({"op": "send", "to": a1_id, "text": "local"})).await;
    assert_eq!(sent, json!({"ok": null}));
    assert_eq!(delivered(&mut a1).await, "local");
    let count = call(&mut a2, json!({"op": "broadcast", "text": "local all"})).await;
    assert_eq!(count["ok"], 2, "{count}");
    // Another node's client: a clear error at once, not a hang.
    let failed = call(&mut a2, json!({"op": "send", "to": b_id, "text": "x"})).await;
    assert_eq!(failed["error"], "UNAVAILABLE", "{failed}");
    let started = std::time::Instant::now();
    let (status, body) = nodes[0]
        .post(
            "/_/push",
            &[],
            &json!({"to": {"client": b_id}, "message": "x"}).to_string(),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Redis"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let (status, _) = nodes[0]
        .post(
            "/_/push",
            &[],
            &json!({"to": {"client": a1_id}, "message": "pushed locally"}).to_string(),
        )
        .await;
    assert_eq!(status, 200);

    redis.restart();
    eventually!("both nodes resubscribe and see each other", {
        let mut ok = true;
        for node in &nodes {
            let health = node.health().await;
            ok &= health["cluster"]["redis"] == "up"
                && health["cluster"]["nodes"]
                    .as_array()
                    .is_some_and(|n| n.len() == 1);
        }
        ok
    });
    let sent = call(&mut a2, json!({"op": "send", "to": b_id, "text": "back"})).await;
    assert_eq!(sent, json!({"ok": null}));
    assert_eq!(delivered(&mut b).await, "back");
    let metrics = nodes[0].get("/_/metrics").await;
    assert!(
        metrics.contains("switchboard_cluster_redis_reconnects_total 1"),
        "{metrics}"
    );
    assert!(nodes[0].log().contains("lost Redis"));
    assert!(nodes[0].log().contains("Redis is back"));
}

#[tokio::test]
async fn without_redis_a_node_refuses_to_start_and_check_says_why() {
    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let port = redis.port;
    drop(redis);
    let text = node_config_text(port);
    let output = switchboard_tests::run_command(&[], &text).await;
    let printed = switchboard_tests::output_text(&output);
    assert!(!output.status.success());
    assert!(
        printed.contains(&format!("cannot reach Redis at redis://127.0.0.1:{port}")),
        "{printed}"
    );
    let output = switchboard_tests::run_command(&["check"], &text).await;
    assert!(!output.status.success());
    assert!(switchboard_tests::output_text(&output).contains("cannot reach Redis"));

    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let output = switchboard_tests::run_command(&["check"], &node_config_text(redis.port)).await;
    let printed = switchboard_tests::output_text(&output);
    assert!(output.status.success(), "{printed}");
    assert!(
        printed.contains("answers; this node is \"solo\""),
        "{printed}"
    );

    let output = switchboard_tests::run_command(
        &["check"],
        "[cluster]\nredis = \"http://nope\"\nnode_id = \"bad id!\"\n",
    )
    .await;
    let printed = switchboard_tests::output_text(&output);
    assert!(
        printed.contains(":2:9: cluster.redis = \"http://nope\" is not a Redis URL"),
        "{printed}"
    );
    assert!(
        printed.contains(":3:11: cluster.node_id must be"),
        "{printed}"
    );
}

fn node_config_text(port: u16) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nplugin_dir = {:?}\n[cluster]\nredis = \"redis://127.0.0.1:{port}\"\nnode_id = \"solo\"\nrequest_timeout = \"500ms\"\n",
        switchboard_tests::target_dir().display().to_string()
    )
}

/// Shared-state calls and the answers a single node gives; a cluster node
/// must give the same.
fn state_script() -> Vec<(Value, Value)> {
    let call = |fields: Value| {
        let mut command = json!({"op": "state"});
        for (name, value) in fields.as_object().unwrap() {
            command[name] = value.clone();
        }
        command
    };
    vec![
        (
            call(json!({"call": "get", "key": "k"})),
            json!({"ok": null}),
        ),
        (
            call(json!({"call": "swap", "key": "k", "value": "me"})),
            json!({"ok": true}),
        ),
        (
            call(json!({"call": "swap", "key": "k", "value": "you"})),
            json!({"ok": false}),
        ),
        (
            call(json!({"call": "get", "key": "k"})),
            json!({"ok": "me"}),
        ),
        (
            call(json!({"call": "swap", "key": "k", "expected": "you"})),
            json!({"ok": false}),
        ),
        (
            call(json!({"call": "swap", "key": "k", "expected": "me", "value": "me2"})),
            json!({"ok": true}),
        ),
        (
            call(json!({"call": "swap", "key": "k", "expected": "me2"})),
            json!({"ok": true}),
        ),
        (
            call(json!({"call": "get", "key": "k"})),
            json!({"ok": null}),
        ),
        (
            call(json!({"call": "set", "key": "k", "value": "v"})),
            json!({"ok": null}),
        ),
        (
            call(json!({"call": "delete", "key": "k"})),
            json!({"ok": true}),
        ),
        (
            call(json!({"call": "delete", "key": "k"})),
            json!({"ok": false}),
        ),
        (
            call(json!({"call": "hash_set", "key": "h", "field": "a", "value": "1"})),
            json!({"ok": true}),
        ),
        (
            call(json!({"call": "hash_set", "key": "h", "field": "a", "value": "2"})),
            json!({"ok": false}),
        ),
        (
            call(json!({"call": "hash_set", "key": "h", "field": "b", "value": "3"})),
            json!({"ok": true}),
        ),
        (
            call(json!({"call": "hash_get", "key": "h", "field": "a"})),
            json!({"ok": "2"}),
        ),
        (
            call(json!({"call": "hash_swap", "key": "h", "field": "c", "value": "x"})),
            json!({"ok": true}),
        ),
        (
            call(
                json!({"call": "hash_swap", "key": "h", "field": "c", "expected": "y", "value": "z"}),
            ),
            json!({"ok": false}),
        ),
        (
            call(json!({"call": "hash_all", "key": "h"})),
            json!({"ok": [["a", "2"], ["b", "3"], ["c", "x"]]}),
        ),
        (
            call(json!({"call": "hash_set", "key": "h", "field": "a"})),
            json!({"ok": true}),
        ),
        (
            call(json!({"call": "hash_set", "key": "h", "field": "a"})),
            json!({"ok": false}),
        ),
        (
            call(json!({"call": "list_push", "key": "l", "value": "1", "limit": 3})),
            json!({"ok": 1}),
        ),
        (
            call(json!({"call": "list_push", "key": "l", "value": "2", "limit": 3})),
            json!({"ok": 2}),
        ),
        (
            call(json!({"call": "list_push", "key": "l", "value": "3", "limit": 3})),
            json!({"ok": 3}),
        ),
        (
            call(json!({"call": "list_push", "key": "l", "value": "2", "limit": 3})),
            json!({"ok": 3}),
        ),
        (
            call(json!({"call": "list_range", "key": "l"})),
            json!({"ok": ["2", "3", "2"]}),
        ),
        (
            call(json!({"call": "list_range", "key": "l", "limit": 2})),
            json!({"ok": ["3", "2"]}),
        ),
        (
            call(json!({"call": "list_remove", "key": "l", "value": "2"})),
            json!({"ok": 2}),
        ),
        (
            call(json!({"call": "list_range", "key": "l"})),
            json!({"ok": ["3"]}),
        ),
        (
            call(json!({"call": "list_remove", "key": "l", "value": "3"})),
            json!({"ok": 1}),
        ),
        (
            call(json!({"call": "list_range", "key": "l"})),
            json!({"ok": []}),
        ),
        (
            call(json!({"call": "get", "key": "h"})),
            json!({"error": "INVALID_ARGUMENT", "message": "state key \"h\" holds a hash, not a value"}),
        ),
        (
            call(json!({"call": "set", "key": "h", "value": "v"})),
            json!({"error": "INVALID_ARGUMENT", "message": "state key \"h\" holds a hash, not a value"}),
        ),
        (
            call(json!({"call": "list_push", "key": "h", "value": "v"})),
            json!({"error": "INVALID_ARGUMENT", "message": "state key \"h\" holds a hash, not a list"}),
        ),
    ]
}

#[tokio::test]
async fn shared_state_answers_alike_on_one_node_and_across_nodes() {
    let single = TestServer::start(TestConfig::new().apps(KIT)).await;
    let (mut alone, _) = kit_client(&single, "/kit").await;
    for (command, expected) in state_script() {
        assert_eq!(
            call(&mut alone, command.clone()).await,
            expected,
            "single node: {command}"
        );
    }
    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let nodes = start_nodes(&redis, &["a", "b"], KIT).await;
    let (mut a, _) = kit_client(&nodes[0], "/kit").await;
    let (mut b, _) = kit_client(&nodes[1], "/kit").await;
    for (index, (command, expected)) in state_script().into_iter().enumerate() {
        // Alternate the nodes: one state, whichever node asks.
        let ws = if index % 2 == 0 { &mut a } else { &mut b };
        assert_eq!(
            call(ws, command.clone()).await,
            expected,
            "cluster: {command}"
        );
    }
    // Expiry, on both.
    for ws in [&mut alone, &mut a] {
        let set = json!({"op": "state", "call": "swap", "key": "t", "value": "x", "ttl_ms": 200});
        assert_eq!(call(ws, set).await, json!({"ok": true}));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let get = json!({"op": "state", "call": "get", "key": "t"});
        assert_eq!(call(ws, get).await, json!({"ok": null}));
    }
    // Apps do not share keys.
    let other = format!("{KIT}\n[[app]]\npath = \"/kit2\"\nplugin = \"fixture_testkit\"\n");
    let node = TestServer::start(node_config(&redis, "c", &other)).await;
    let (mut kit2, _) = kit_client(&node, "/kit2").await;
    let get = json!({"op": "state", "call": "hash_all", "key": "h"});
    assert_eq!(call(&mut kit2, get.clone()).await, json!({"ok": []}));
    let (mut kit, _) = kit_client(&node, "/kit").await;
    assert_eq!(
        call(&mut kit, get).await,
        json!({"ok": [["b", "3"], ["c", "x"]]})
    );
}

#[tokio::test]
async fn the_connections_of_a_killed_node_are_lost_once_on_another_node() {
    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let mut nodes = start_nodes(&redis, &["a", "b", "c"], KIT).await;
    let (mut a, _) = kit_client(&nodes[0], "/kit").await;
    let (_c1, c1) = kit_client(&nodes[2], "/kit").await;
    let (_c2, c2) = kit_client(&nodes[2], "/kit").await;
    let (c3, c3_id) = kit_client(&nodes[2], "/kit").await;
    // A connection closed normally is not lost: its on_close ran.
    drop(c3);
    eventually!("c3 closed", {
        nodes[2].health().await["apps"]["/kit"]["connections"] == 2
    });
    // The nodes have been up for node_timeout (1 s): reaping is on.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let killed_at = std::time::Instant::now();
    nodes.pop().expect("node c").kill().await;
    let lost = json!({"op": "state", "call": "list_range", "key": "lost"});
    let mut expected = vec![c1.clone(), c2.clone()];
    expected.sort();
    eventually!("a or b is told c1 and c2 are lost", {
        sorted(&call(&mut a, lost.clone()).await["ok"]) == expected
    });
    assert!(killed_at.elapsed() < Duration::from_secs(4));
    // Once: wait two more heartbeats and count again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sorted(&call(&mut a, lost).await["ok"]), expected);
    assert!(!expected.contains(&c3_id));
    let logs = format!("{}{}", nodes[0].log(), nodes[1].log());
    assert_eq!(logs.matches("stopped answering").count(), 1, "{logs}");
}

#[tokio::test]
async fn a_reload_keeps_the_cluster_it_joined_and_says_a_change_needs_a_restart() {
    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let node = TestServer::start(node_config(&redis, "a", KIT)).await;
    // The same [cluster]: nothing to restart.
    let output = node.reload().await;
    let printed = switchboard_tests::output_text(&output);
    assert!(output.status.success(), "{printed}");
    assert!(!printed.contains("cluster"), "{printed}");
    node.rewrite_config(&node_config(&redis, "renamed", KIT));
    let output = node.reload().await;
    let printed = switchboard_tests::output_text(&output);
    assert!(
        printed.contains("needs a restart (not applied): cluster"),
        "{printed}"
    );
    assert_eq!(node.health().await["cluster"]["node_id"], "a");
}

#[tokio::test]
async fn a_redis_with_a_password_is_reached_with_it_and_refused_without() {
    if Redis::start_or_skip().is_none() {
        return;
    }
    let redis = Redis::start_with(&["--requirepass", "s3cret-pass"]);
    let config = |url: String| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nplugin_dir = {:?}\n[cluster]\nredis = \"{url}\"\nnode_id = \"p\"\nrequest_timeout = \"1s\"\n",
            switchboard_tests::target_dir().display().to_string()
        )
    };
    let wrong = config(format!("redis://:wrong@127.0.0.1:{}", redis.port));
    let output = switchboard_tests::run_command(&["check"], &wrong).await;
    let printed = switchboard_tests::output_text(&output);
    assert!(!output.status.success());
    assert!(
        printed.contains(&format!(
            "cannot reach Redis at redis://:***@127.0.0.1:{}",
            redis.port
        )),
        "{printed}"
    );
    assert!(
        !printed.contains("wrong"),
        "the password stays out of messages: {printed}"
    );
    let right = config(format!("redis://:s3cret-pass@127.0.0.1:{}", redis.port));
    let output = switchboard_tests::run_command(&["check"], &right).await;
    let printed = switchboard_tests::output_text(&output);
    assert!(output.status.success(), "{printed}");
    let node = TestServer::start(TestConfig::new().apps(&format!(
        "[cluster]\nredis = \"redis://:s3cret-pass@127.0.0.1:{}\"\nnode_id = \"p\"\n\n{KIT}",
        redis.port
    )))
    .await;
    let health = node.health().await;
    assert_eq!(health["cluster"]["redis"], "up");
    assert_eq!(
        health["cluster"]["redis_url"],
        format!("redis://:***@127.0.0.1:{}", redis.port)
    );
    // rediss:// (TLS) is understood; a plain port does not speak it.
    let tls = config(format!("rediss://127.0.0.1:{}", redis.port));
    let output = switchboard_tests::run_command(&["check"], &tls).await;
    let printed = switchboard_tests::output_text(&output);
    assert!(!output.status.success());
    assert!(
        printed.contains("cannot reach Redis at rediss://127.0.0.1"),
        "{printed}"
    );
}

#[tokio::test]
async fn a_node_that_stops_says_bye_and_nothing_is_lost() {
    let Some(redis) = Redis::start_or_skip() else {
        return;
    };
    let mut nodes = start_nodes(&redis, &["a", "b"], KIT).await;
    let (mut a, _) = kit_client(&nodes[0], "/kit").await;
    let (_b, b_id) = kit_client(&nodes[1], "/kit").await;
    eventually!("node a knows the client on b", {
        sorted(&call(&mut a, json!({"op": "connections"})).await["ok"]).contains(&b_id)
    });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let status = nodes.pop().expect("node b").terminate().await;
    assert!(status.success());
    // Gone as soon as it stopped: it said bye (logged below), rather than
    // being timed out.
    eventually!("node a forgets node b", {
        nodes[0].health().await["cluster"]["nodes"] == json!([])
    });
    assert!(!sorted(&call(&mut a, json!({"op": "connections"})).await["ok"]).contains(&b_id));
    // It closed its clients itself (on_close ran there): nothing to reap.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lost = call(
        &mut a,
        json!({"op": "state", "call": "list_range", "key": "lost"}),
    )
    .await;
    assert_eq!(lost, json!({"ok": []}));
    assert!(nodes[0].log().contains("node b left"));
}

/// The cluster benchmark, briefly, so that it keeps working (its figures are
/// in docs/scaling.md; here only that it runs and reports both setups).
#[tokio::test]
async fn the_cluster_benchmark_runs_and_reports_both_setups() {
    if Redis::start_or_skip().is_none() {
        return;
    }
    let output = tokio::process::Command::new(switchboard_tests::artifact("switchboard-bench"))
        .args([
            "cluster",
            "--listeners",
            "6",
            "--messages",
            "20",
            "--rate",
            "100",
            "--burst",
            "20",
        ])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let text = switchboard_tests::output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("one node "), "{text}");
    assert!(text.contains("3 nodes + Redis "), "{text}");
    assert!(text.contains("three nodes / one node: p50 "), "{text}");
}
