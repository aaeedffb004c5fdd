//! The push API: delivery to a client, a group or an app, every error reply,
//! authentication, batches, the app's veto, and the backend examples in three
//! languages against a real server.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use switchboard_tests::{Client, TestConfig, TestServer};
use tokio_tungstenite::tungstenite::Message;

use crate::kit::{call, kit_client};
use crate::util::{expect_close, next, next_text, send_text};

fn config(push: &str) -> TestConfig {
    TestConfig::new().apps(&format!(
        "[push]\n{push}\n\n[[app]]\npath = \"/kit\"\nplugin = \"fixture_testkit\"\n\n\
         [[app]]\npath = \"/progress\"\nplugin = \"progress\"\n"
    ))
}

async fn push(server: &TestServer, body: Value) -> (u16, Value) {
    server.post("/_/push", &[], &body.to_string()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_reach_a_client_by_id_as_text_json_or_binary() {
    let server = TestServer::start(config("")).await;
    let (mut ws, id) = kit_client(&server, "/kit").await;
    assert_eq!(
        push(
            &server,
            json!({"to": {"client": id}, "message": "plain text"})
        )
        .await,
        (200, json!({"delivered": 1}))
    );
    assert_eq!(next_text(&mut ws).await, "plain text");
    assert_eq!(
        push(
            &server,
            json!({"to": {"client": id}, "message": {"progress": 42}})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        serde_json::from_str::<Value>(&next_text(&mut ws).await).unwrap(),
        json!({"progress": 42})
    );
    assert_eq!(
        push(&server, json!({"to": {"client": id}, "binary": "AAEC/w=="}))
            .await
            .0,
        200
    );
    assert_eq!(next(&mut ws).await, Message::binary(vec![0, 1, 2, 255]));
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_reach_a_group_or_every_connection_of_an_app() {
    let server = TestServer::start(config("")).await;
    let (mut a, _) = kit_client(&server, "/kit").await;
    let (mut b, _) = kit_client(&server, "/kit").await;
    call(&mut a, json!({"op": "join", "group": "room"})).await;
    assert_eq!(
        push(
            &server,
            json!({"to": {"app": "/kit", "group": "room"}, "message": "to the room"})
        )
        .await,
        (200, json!({"delivered": 1}))
    );
    assert_eq!(next_text(&mut a).await, "to the room");
    assert_eq!(
        push(&server, json!({"to": {"app": "/kit"}, "message": "to all"})).await,
        (200, json!({"delivered": 2}))
    );
    assert_eq!(next_text(&mut a).await, "to all");
    assert_eq!(next_text(&mut b).await, "to all");
    assert_eq!(
        push(
            &server,
            json!({"to": {"app": "/kit", "group": "nobody"}, "message": "x"})
        )
        .await,
        (200, json!({"delivered": 0}))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_push_gets_its_status_and_names_the_field() {
    let server = TestServer::start(config("max_body = \"2 KiB\"\nmax_batch = 3")).await;
    let (mut ws, id) = kit_client(&server, "/kit").await;
    let unknown = "67e55044-10b1-426f-9247-bb680e5fe0c8";
    let cases = [
        (
            json!({"to": {"client": unknown}, "message": "x"}),
            404,
            None,
        ),
        (json!({"to": {"app": "/nope"}, "message": "x"}), 404, None),
        (json!({"message": "x"}), 400, Some("to")),
        (
            json!({"to": {"client": "not-an-id"}, "message": "x"}),
            400,
            Some("to.client"),
        ),
        (
            json!({"to": {"client": 7}, "message": "x"}),
            400,
            Some("to.client"),
        ),
        (
            json!({"to": {"group": "g"}, "message": "x"}),
            400,
            Some("to.group"),
        ),
        (
            json!({"to": {"client": id, "app": "/kit"}, "message": "x"}),
            400,
            Some("to.client"),
        ),
        (json!({"to": {"client": id}}), 400, Some("message")),
        (
            json!({"to": {"client": id}, "message": "x", "binary": "AA=="}),
            400,
            Some("binary"),
        ),
        (
            json!({"to": {"client": id}, "binary": "***"}),
            400,
            Some("binary"),
        ),
        (
            json!({"to": {"client": id}, "message": "x", "extra": 1}),
            400,
            Some("extra"),
        ),
        (json!("just a string"), 400, None),
    ];
    for (body, status, field) in cases {
        let (got, answer) = push(&server, body.clone()).await;
        assert_eq!(got, status, "{body} -> {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
        assert_eq!(answer["field"].as_str(), field, "{body} -> {answer}");
    }
    let (status, answer) = server.post("/_/push", &[], "{not json").await;
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("not valid JSON"),
        "{answer}"
    );
    let (status, _) = server
        .post(
            "/_/push",
            &[],
            &json!({"to": {"client": id}, "message": "x".repeat(3000)}).to_string(),
        )
        .await;
    assert_eq!(status, 413);
    let batch = json!([{"to": {"client": id}, "message": "1"}, {"to": {"client": id}, "message": "2"}, {"to": {"client": id}, "message": "3"}, {"to": {"client": id}, "message": "4"}]);
    assert_eq!(push(&server, batch).await.0, 413);
    let get = server.get("/_/push").await;
    assert!(get.starts_with("HTTP/1.1 405"), "{get}");
    // Nothing else was affected.
    assert!(call(&mut ws, json!({"op": "whoami"})).await["ok"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_client_is_404() {
    let server = TestServer::start(config("")).await;
    let (mut ws, id) = kit_client(&server, "/kit").await;
    ws.close(None).await.unwrap();
    let mut status = 0;
    for _ in 0..50 {
        status = push(&server, json!({"to": {"client": id}, "message": "x"}))
            .await
            .0;
        if status == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_answers_each_push() {
    let server = TestServer::start(config("")).await;
    let (mut ws, id) = kit_client(&server, "/kit").await;
    let (status, answer) = push(
        &server,
        json!([
            {"to": {"client": id}, "message": "first"},
            {"to": {"client": "67e55044-10b1-426f-9247-bb680e5fe0c8"}, "message": "lost"},
            {"to": {"app": "/kit"}, "message": "second"},
            {"to": {}, "message": "bad"}
        ]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["delivered"], 2);
    let statuses: Vec<u64> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![200, 404, 200, 400]);
    assert_eq!(next_text(&mut ws).await, "first");
    assert_eq!(next_text(&mut ws).await, "second");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_required_when_configured() {
    let server = TestServer::start(config("token = \"s3cret\"")).await;
    let (_ws, id) = kit_client(&server, "/kit").await;
    let body = json!({"to": {"client": id}, "message": "x"}).to_string();
    let (status, answer) = server.post("/_/push", &[], &body).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(
        server
            .post("/_/push", &[("Authorization", "Bearer wrong")], &body)
            .await
            .0,
        401
    );
    assert_eq!(
        server
            .post("/_/push", &[("Authorization", "Bearer s3cret")], &body)
            .await,
        (200, json!({"delivered": 1}))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_allowed_addresses_may_push_and_forwarded_for_is_believed_from_trusted_proxies_only() {
    let server = TestServer::start(config(
        "allowed_ips = [\"203.0.113.0/24\"]\ntrusted_proxies = [\"127.0.0.1\"]",
    ))
    .await;
    let (_ws, id) = kit_client(&server, "/kit").await;
    let body = json!({"to": {"client": id}, "message": "x"}).to_string();
    let (status, answer) = server.post("/_/push", &[], &body).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(
        server
            .post("/_/push", &[("X-Forwarded-For", "203.0.113.7")], &body)
            .await
            .0,
        200
    );
    assert_eq!(
        server
            .post("/_/push", &[("X-Forwarded-For", "198.51.100.1")], &body)
            .await
            .0,
        403
    );

    let untrusting = TestServer::start(config("allowed_ips = [\"203.0.113.0/24\"]")).await;
    assert_eq!(
        untrusting
            .post("/_/push", &[("X-Forwarded-For", "203.0.113.7")], &body)
            .await
            .0,
        403,
        "no trusted proxy: the header is ignored"
    );
}

async fn progress_client(server: &TestServer) -> (Client, String) {
    let mut ws = server.ws("/progress").await;
    let welcome: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    (ws, welcome["id"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_app_tags_progress_and_vetoes_pushes_for_a_cancelled_job() {
    let server = TestServer::start(config("")).await;
    let (mut ws, id) = progress_client(&server).await;
    let update = json!({"to": {"client": id}, "message": {"job": "j1", "progress": 10}});
    assert_eq!(push(&server, update.clone()).await.0, 200);
    let delivered: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(
        delivered,
        json!({"type": "progress", "job": "j1", "progress": 10})
    );
    send_text(&mut ws, r#"{"type":"cancel","job":"j1"}"#).await;
    assert_eq!(
        serde_json::from_str::<Value>(&next_text(&mut ws).await).unwrap(),
        json!({"type": "cancelled", "job": "j1"})
    );
    let (status, answer) = push(&server, update).await;
    assert_eq!(status, 409);
    assert_eq!(
        answer["error"],
        "vetoed by the app: job j1 was cancelled by the user"
    );
    // Another job of the same tab still goes through.
    assert_eq!(
        push(
            &server,
            json!({"to": {"client": id}, "message": {"job": "j2", "progress": 1}})
        )
        .await
        .0,
        200
    );
}

/// The next progress update of `job` (other messages skipped).
async fn next_progress(ws: &mut Client, job: &str) -> Value {
    loop {
        let message: Value = serde_json::from_str(&next_text(ws).await).unwrap();
        if message["type"] == "progress" && message["job"] == job {
            return message;
        }
    }
}

/// How to run each backend example.
fn backend(language: &str) -> Command {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/backend");
    let mut command = match language {
        "curl" => Command::new("bash"),
        "python" => Command::new("python3"),
        "php" => Command::new("php"),
        other => panic!("no backend for {other}"),
    };
    command.arg(format!(
        "{dir}/{}",
        match language {
            "curl" => "progress.sh",
            "python" => "progress.py",
            _ => "progress.php",
        }
    ));
    command
}

/// Runs a backend example for `client` in a thread; returns its exit code and output.
fn run_backend(
    language: &str,
    server: &TestServer,
    client: &str,
    job: &str,
    delay: &str,
) -> std::thread::JoinHandle<(i32, String)> {
    let mut command = backend(language);
    command
        .arg(client)
        .arg(job)
        .env("SWITCHBOARD_URL", format!("http://{}", server.addr))
        .env("SWITCHBOARD_PUSH_TOKEN", "backend-token")
        .env("STEPS", "5")
        .env("STEP_DELAY", delay);
    std::thread::spawn(move || {
        let output = command
            .output()
            .expect("run the backend example (is its interpreter installed?)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code().unwrap_or(-1), text)
    })
}

async fn backends_push_progress_and_stop_on_cancel_and_on_close(language: &str) {
    let interpreter = match language {
        "curl" => "curl",
        "python" => "python3",
        _ => "php",
    };
    if Command::new(interpreter).arg("--version").output().is_err() {
        // Outside CI a missing interpreter skips this test (apt-get install php-cli curl); CI must run it.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the {language} backend example, but {interpreter} is missing"
        );
        eprintln!("SKIPPED the {language} backend example: {interpreter} is not installed");
        return;
    }
    let server = TestServer::start(config("token = \"backend-token\"")).await;

    // A whole job: 0, 20, ..., 100 arrive in order.
    let (mut ws, id) = progress_client(&server).await;
    let job = run_backend(language, &server, &id, "full", "0.02");
    for expected in [0, 20, 40, 60, 80, 100] {
        let update = next_progress(&mut ws, "full").await;
        assert_eq!(update["progress"].as_u64(), Some(expected), "{update}");
    }
    let (code, output) = job.join().unwrap();
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("job full done"), "{output}");

    // The user cancels after the first update: the backend learns it and stops.
    let job = run_backend(language, &server, &id, "cancel-me", "0.3");
    next_progress(&mut ws, "cancel-me").await;
    send_text(&mut ws, r#"{"type":"cancel","job":"cancel-me"}"#).await;
    let (code, output) = job.join().unwrap();
    assert_eq!(code, 3, "{output}");
    assert!(
        output.contains("the user cancelled job cancel-me"),
        "{output}"
    );

    // The tab closes: the backend gets 404 and stops.
    let job = run_backend(language, &server, &id, "orphan", "0.3");
    next_progress(&mut ws, "orphan").await;
    ws.close(None).await.unwrap();
    let _ = expect_close(&mut ws).await;
    drop(ws);
    let (code, output) = job.join().unwrap();
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("the browser is gone"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_curl_backend_pushes_progress_and_stops_on_cancel_and_close() {
    backends_push_progress_and_stop_on_cancel_and_on_close("curl").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_backend_pushes_progress_and_stops_on_cancel_and_close() {
    backends_push_progress_and_stop_on_cancel_and_on_close("python").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_php_backend_pushes_progress_and_stops_on_cancel_and_close() {
    backends_push_progress_and_stop_on_cancel_and_on_close("php").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_job_pushes_through_the_push_api_and_stops_when_cancelled() {
    let server = TestServer::start(TestConfig::new().apps(
        "[[app]]\npath = \"/progress\"\nplugin = \"progress\"\n[app.config]\ndemo_jobs = true\ndemo_steps = 4\ndemo_step_ms = 20\n",
    ))
    .await;
    let (mut ws, _) = progress_client(&server).await;
    send_text(&mut ws, r#"{"type":"start_demo","job":"d1"}"#).await;
    for expected in [0, 25, 50, 75, 100] {
        assert_eq!(
            next_progress(&mut ws, "d1").await["progress"].as_u64(),
            Some(expected)
        );
    }

    send_text(&mut ws, r#"{"type":"start_demo","job":"d2"}"#).await;
    next_progress(&mut ws, "d2").await;
    send_text(&mut ws, r#"{"type":"cancel","job":"d2"}"#).await;
    // The job learns of the cancel at its next push (409) and stops: no 100% arrives.
    let rest = tokio::time::timeout(Duration::from_millis(500), next_progress(&mut ws, "d2")).await;
    if let Ok(update) = rest {
        assert!(
            update["progress"].as_u64().unwrap() < 100,
            "a cancelled job must not finish: {update}"
        );
    }
    let quiet =
        tokio::time::timeout(Duration::from_millis(400), next_progress(&mut ws, "d2")).await;
    assert!(quiet.is_err(), "the cancelled job stopped pushing");
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_jobs_are_off_unless_configured() {
    let server = TestServer::start(config("")).await;
    let (mut ws, _) = progress_client(&server).await;
    send_text(&mut ws, r#"{"type":"start_demo","job":"d1"}"#).await;
    let answer: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(answer["type"], "error");
    assert!(
        answer["message"].as_str().unwrap().contains("demo_jobs"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_may_cancel_at_most_a_thousand_jobs() {
    let server = TestServer::start(config("")).await;
    let (mut ws, _) = progress_client(&server).await;
    for n in 0..1000 {
        send_text(
            &mut ws,
            &json!({"type": "cancel", "job": format!("job-{n}")}).to_string(),
        )
        .await;
    }
    let mut cancelled = 0;
    while cancelled < 1000 {
        let reply: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
        assert_eq!(reply["type"], "cancelled", "{reply}");
        cancelled += 1;
    }
    send_text(
        &mut ws,
        &json!({"type": "cancel", "job": "one-too-many"}).to_string(),
    )
    .await;
    let reply: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(reply["type"], "error");
    assert_eq!(
        reply["message"],
        "at most 1000 cancelled jobs per connection"
    );
    // Cancelling one already cancelled is still answered.
    send_text(
        &mut ws,
        &json!({"type": "cancel", "job": "job-7"}).to_string(),
    )
    .await;
    let reply: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(reply["type"], "cancelled");
}
