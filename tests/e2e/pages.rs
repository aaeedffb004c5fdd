//! Static pages from `static_dir`: served with their types, nothing outside
//! the directory, and app paths still upgrade.

use std::time::Duration;

use switchboard_tests::{TestConfig, TestServer};

fn pages_config() -> TestConfig {
    let web = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/web");
    TestConfig::new().server(&format!("static_dir = {web:?}"))
}

fn status(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_are_served_with_their_content_type() {
    let server = TestServer::start(pages_config()).await;
    let index = server.get("/").await;
    assert_eq!(status(&index), "HTTP/1.1 200 OK");
    assert!(
        index
            .to_lowercase()
            .contains("content-type: text/html; charset=utf-8"),
        "{index}"
    );
    assert!(index.contains("<title>Switchboard</title>"));
    let page = server.get("/progress.html").await;
    assert_eq!(status(&page), "HTTP/1.1 200 OK");
    assert!(
        page.contains("connect('/progress')"),
        "the page connects to its app"
    );
    let library = server.get("/switchboard.js").await;
    assert!(
        library
            .to_lowercase()
            .contains("content-type: text/javascript"),
        "{library}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_outside_the_directory_or_hidden_is_served() {
    let server = TestServer::start(pages_config()).await;
    for path in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/.hidden",
        "/nope.html",
        "/a/../index.html",
    ] {
        assert_eq!(
            status(&server.get(path).await),
            "HTTP/1.1 404 Not Found",
            "{path}"
        );
    }
    let raw = server
        .raw(
            b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
    assert!(!raw.contains("root:"), "{raw}");
}

#[tokio::test(flavor = "multi_thread")]
async fn app_paths_still_answer_426_and_upgrade() {
    let server = TestServer::start(pages_config()).await;
    assert_eq!(
        status(&server.get("/echo").await),
        "HTTP/1.1 426 Upgrade Required"
    );
    let _ws = server.ws("/echo").await;
}
