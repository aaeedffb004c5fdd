//! Every Host call, end to end, through the test-kit plugin.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use switchboard_tests::TestServer;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::kit::{call, call_collecting, kit_client, kit_config};
use crate::util::{expect_close, next, next_text};

#[tokio::test(flavor = "multi_thread")]
async fn connection_ids_are_random_uuids() {
    let server = TestServer::start(kit_config("")).await;
    let (_a, a) = kit_client(&server, "/kit").await;
    let (_b, b) = kit_client(&server, "/kit").await;
    assert_ne!(a, b);
    for id in [&a, &b] {
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(&id[14..15], "4", "version 4 UUID: {id}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn send_reaches_another_connection_by_id_and_fails_for_unknown_ones() {
    let server = TestServer::start(kit_config("")).await;
    let (mut a, _) = kit_client(&server, "/kit").await;
    let (mut b, b_id) = kit_client(&server, "/kit").await;
    assert_eq!(
        call(&mut a, json!({"op": "send", "to": b_id, "text": "for b"})).await,
        json!({"ok": null})
    );
    assert_eq!(next_text(&mut b).await, "for b");
    assert_eq!(
        call(
            &mut a,
            json!({"op": "send", "to": b_id, "binary": [1, 2, 255]})
        )
        .await,
        json!({"ok": null})
    );
    assert_eq!(next(&mut b).await, Message::binary(vec![1, 2, 255]));

    let unknown = call(
        &mut a,
        json!({"op": "send", "to": "67e55044-10b1-426f-9247-bb680e5fe0c8", "text": "x"}),
    )
    .await;
    assert_eq!(unknown["error"], "UNKNOWN_CONNECTION");

    drop(b);
    let mut gone = json!(null);
    for _ in 0..50 {
        gone = call(&mut a, json!({"op": "send", "to": b_id, "text": "x"})).await;
        if gone.get("error").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        gone["error"], "UNKNOWN_CONNECTION",
        "a closed connection is unknown"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn broadcast_reaches_every_connection_of_the_app_only() {
    let server = TestServer::start(kit_config("")).await;
    let (mut a, _) = kit_client(&server, "/kit").await;
    let (mut b, _) = kit_client(&server, "/kit").await;
    let (mut other_app, _) = kit_client(&server, "/kit2").await;
    let (result, before) = call_collecting(&mut a, json!({"op": "broadcast", "text": "all"})).await;
    assert_eq!(result, json!({"ok": 2}));
    assert_eq!(before, vec!["all"], "the sender is part of the broadcast");
    assert_eq!(next_text(&mut b).await, "all");
    assert_eq!(
        call(
            &mut a,
            json!({"op": "broadcast", "text": "not me", "except_self": true})
        )
        .await,
        json!({"ok": 1})
    );
    assert_eq!(next_text(&mut b).await, "not me");
    // The other mount is another app instance: it saw neither.
    let (result, before) =
        call_collecting(&mut other_app, json!({"op": "broadcast", "text": "kit2"})).await;
    assert_eq!(
        (result, before),
        (json!({"ok": 1}), vec!["kit2".to_owned()])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_join_leave_publish_members_and_closing_leaves_them() {
    let server = TestServer::start(kit_config("")).await;
    let (mut a, a_id) = kit_client(&server, "/kit").await;
    let (mut b, b_id) = kit_client(&server, "/kit").await;
    let (mut c, _) = kit_client(&server, "/kit").await;
    assert_eq!(
        call(&mut a, json!({"op": "join", "group": "room"})).await,
        json!({"ok": null})
    );
    assert_eq!(
        call(&mut a, json!({"op": "join", "group": "room", "to": b_id})).await,
        json!({"ok": null})
    );
    let mut members = call(&mut c, json!({"op": "members", "group": "room"})).await["ok"]
        .as_array()
        .unwrap()
        .clone();
    members.sort_by_key(|m| m.as_str().unwrap().to_owned());
    let mut expected = vec![json!(a_id), json!(b_id)];
    expected.sort_by_key(|m| m.as_str().unwrap().to_owned());
    assert_eq!(members, expected);

    assert_eq!(
        call(
            &mut c,
            json!({"op": "publish", "group": "room", "text": "to room"})
        )
        .await,
        json!({"ok": 2})
    );
    assert_eq!(next_text(&mut a).await, "to room");
    assert_eq!(next_text(&mut b).await, "to room");
    assert_eq!(
        call(
            &mut a,
            json!({"op": "publish", "group": "room", "text": "from a", "except_self": true})
        )
        .await,
        json!({"ok": 1})
    );
    assert_eq!(next_text(&mut b).await, "from a");
    assert_eq!(
        call(
            &mut c,
            json!({"op": "publish", "group": "empty", "text": "x"})
        )
        .await,
        json!({"ok": 0})
    );

    assert_eq!(
        call(&mut b, json!({"op": "leave", "group": "room"})).await,
        json!({"ok": null})
    );
    assert_eq!(
        call(&mut c, json!({"op": "members", "group": "room"})).await,
        json!({"ok": [a_id]})
    );
    // Groups are per app: /kit2 has no such group.
    let (mut other_app, _) = kit_client(&server, "/kit2").await;
    assert_eq!(
        call(&mut other_app, json!({"op": "members", "group": "room"})).await,
        json!({"ok": []})
    );

    a.close(None).await.unwrap();
    let mut left = json!(null);
    for _ in 0..50 {
        left = call(&mut c, json!({"op": "members", "group": "room"})).await;
        if left == json!({"ok": []}) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        left,
        json!({"ok": []}),
        "a closed connection leaves its groups"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_lists_the_apps_open_connections() {
    let server = TestServer::start(kit_config("")).await;
    let (mut a, a_id) = kit_client(&server, "/kit").await;
    let (_b, b_id) = kit_client(&server, "/kit").await;
    let (_other, _) = kit_client(&server, "/kit2").await;
    let mut ids: Vec<String> = call(&mut a, json!({"op": "connections"})).await["ok"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut expected = vec![a_id, b_id];
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn info_reports_the_handshake() {
    let server = TestServer::start(kit_config("")).await;
    let mut request = format!("{}?data=alice&x=1", server.url("/kit"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("cookie", "session=abc123; theme=dark".parse().unwrap());
    request
        .headers_mut()
        .insert("user-agent", "switchboard-test/1".parse().unwrap());
    request
        .headers_mut()
        .insert("x-not-kept", "secret".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let info = call(&mut ws, json!({"op": "info"})).await["ok"].clone();
    assert_eq!(info["path"], "/kit");
    assert_eq!(info["query"], "data=alice&x=1");
    assert_eq!(info["data"], "alice");
    assert_eq!(info["cookie_session"], "abc123");
    assert!(
        info["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{info}"
    );
    let headers = info["headers"].as_array().unwrap();
    assert!(
        headers.contains(&json!(["user-agent", "switchboard-test/1"])),
        "{info}"
    );
    assert!(
        !headers.iter().any(|h| h[0] == "x-not-kept"),
        "only info_headers are kept: {info}"
    );
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let at = info["connected_at_ms"].as_u64().unwrap();
    assert!(at <= now_ms && now_ms - at < 10_000, "{info}");
}

#[tokio::test(flavor = "multi_thread")]
async fn close_sends_the_apps_code_and_refuses_codes_that_may_not_be_sent() {
    let server = TestServer::start(kit_config("")).await;
    let (mut a, _) = kit_client(&server, "/kit").await;
    let (mut b, b_id) = kit_client(&server, "/kit").await;
    let refused = call(
        &mut a,
        json!({"op": "close", "to": b_id, "code": 1005, "reason": ""}),
    )
    .await;
    assert_eq!(refused["error"], "INVALID_ARGUMENT");
    let too_long = call(
        &mut a,
        json!({"op": "close", "to": b_id, "code": 4000, "reason": "x".repeat(124)}),
    )
    .await;
    assert_eq!(too_long["error"], "INVALID_ARGUMENT");
    assert_eq!(
        call(
            &mut a,
            json!({"op": "close", "to": b_id, "code": 4000, "reason": "go away"})
        )
        .await,
        json!({"ok": null})
    );
    assert_eq!(expect_close(&mut b).await, (4000, "go away".to_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_larger_than_the_outbound_limit_are_refused() {
    let server = TestServer::start(kit_config("").server("max_message_size = \"64 KiB\"")).await;
    let (mut a, _) = kit_client(&server, "/kit").await;
    let refused = call(&mut a, json!({"op": "send_size", "size": 64 * 1024 + 1})).await;
    assert_eq!(refused["error"], "INVALID_ARGUMENT", "{refused}");
    assert_eq!(
        call(&mut a, json!({"op": "send_size", "size": 64 * 1024})).await,
        json!({"ok": null})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn log_lines_reach_the_server_log_with_the_app_and_connection() {
    let server = TestServer::start(kit_config("")).await;
    let (mut a, a_id) = kit_client(&server, "/kit").await;
    assert_eq!(
        call(
            &mut a,
            json!({"op": "log", "text": "hello from the plugin"})
        )
        .await,
        json!({"ok": true})
    );
    let mut found = false;
    for _ in 0..50 {
        if let Some(line) = server
            .log()
            .lines()
            .find(|l| l.contains("hello from the plugin"))
        {
            assert!(line.contains("app=/kit"), "{line}");
            assert!(line.contains(&a_id), "the connection's span: {line}");
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(found, "log line not found:\n{}", server.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_does_not_read_is_closed_as_a_slow_consumer() {
    let server = TestServer::start(kit_config("").server("outbound_queue = 8")).await;
    let (mut a, _) = kit_client(&server, "/kit").await;
    let (mut slow, slow_id) = kit_client(&server, "/kit").await;
    // The slow client reads nothing while 64 KiB messages pile up for it.
    let mut refused = None;
    for _ in 0..2000 {
        let result = call(
            &mut a,
            json!({"op": "send_size", "to": slow_id, "size": 65536}),
        )
        .await;
        if let Some(error) = result.get("error") {
            refused = Some(error.clone());
            break;
        }
    }
    let refused = refused.expect("the queue should fill");
    assert!(
        refused == "QUEUE_FULL" || refused == "UNKNOWN_CONNECTION",
        "{refused}"
    );
    assert_eq!(expect_close(&mut slow).await.0, 1008);
    // Everyone else is unaffected.
    assert_eq!(
        call(&mut a, json!({"op": "send", "text": "still fine"})).await,
        json!({"ok": null})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let server = TestServer::start(kit_config("").server("write_timeout = \"300ms\"")).await;
    let (mut a, _) = kit_client(&server, "/kit").await;
    let (_stalled, stalled_id) = kit_client(&server, "/kit").await;
    // Fill the stalled client's socket and queue; the server must not wait on it forever.
    let started = std::time::Instant::now();
    let mut last = json!(null);
    while started.elapsed() < Duration::from_secs(15) {
        last = call(
            &mut a,
            json!({"op": "send_size", "to": stalled_id, "size": 65536}),
        )
        .await;
        if last["error"] == "UNKNOWN_CONNECTION" {
            break;
        }
        if last["error"] == "QUEUE_FULL" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(
        last["error"], "UNKNOWN_CONNECTION",
        "the stalled client should be gone: {last}"
    );
    assert!(
        server.log().contains("write timeout") || server.log().contains("did not take our data"),
        "{}",
        server.log()
    );
}
