//! The reverse-proxy configuration of docs/operations.md, tested: Debian's
//! nginx in front of the real server, proxying pages, the push API and
//! WebSockets with X-Forwarded-For set. Outside CI it is skipped, with a
//! message, when nginx is missing; in CI (`CI` set) it must run.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchboard_tests::{TestConfig, TestServer};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The nginx configuration docs/operations.md shows, with the ports filled in.
fn nginx_conf(dir: &Path, listen: u16, upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 1h;
        }}
    }}
}}
"#,
        dir = dir.display()
    )
}

/// A port nothing listens on now (nginx cannot be told to pick one).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_nginx(dir: &Path, upstream: std::net::SocketAddr) -> (Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(dir, port, upstream)).unwrap();
        let mut child = Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nginx");
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return (child, port);
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill().await;
    }
    panic!(
        "nginx did not start:\n{}",
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_in_front_proxies_pages_pushes_and_websockets() {
    if Command::new("nginx").arg("-v").output().await.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the nginx test, but nginx is missing"
        );
        eprintln!("SKIPPED the nginx test: nginx is missing (apt-get install nginx-light)");
        return;
    }
    let server = TestServer::start(
        TestConfig::new()
            .server("trusted_proxies = [\"127.0.0.1\"]")
            .apps("[[app]]\npath = \"/kit\"\nplugin = \"fixture_testkit\"\n\n[[app]]\npath = \"/echo\"\nplugin = \"echo\"\n"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, port) = start_nginx(dir.path(), server.addr).await;

    // A WebSocket through nginx, from a "client" that says it forwards for
    // 203.0.113.9; nginx appends the address it saw (127.0.0.1). The server
    // reads from the right past trusted addresses: this test runs on the
    // proxy's own host, so its own address is trusted too, and the app sees
    // 203.0.113.9, as it would see a remote client's own address.
    let mut request = format!("ws://127.0.0.1:{port}/kit")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    let (mut kit, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let info = crate::kit::call(&mut kit, json!({"op": "info"})).await;
    assert_eq!(info["ok"]["peer"], "203.0.113.9:0", "{info}");
    assert_eq!(
        info["ok"]["headers"][0][1], "203.0.113.9, 127.0.0.1",
        "nginx appended"
    );
    let (mut echo, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/echo"))
        .await
        .unwrap();
    echo.send(Message::text("through nginx")).await.unwrap();
    assert_eq!(
        echo.next().await.unwrap().unwrap(),
        Message::text("through nginx")
    );

    // The push API and health through nginx, judged by the forwarded address.
    let proxied = |request: String| async move {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .unwrap();
        let mut response = Vec::new();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response),
        )
        .await;
        String::from_utf8_lossy(&response).into_owned()
    };
    let body = r#"{"to": {"app": "/echo"}, "message": "pushed through nginx"}"#;
    let pushed = proxied(format!(
        "POST /_/push HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
    .await;
    assert!(pushed.starts_with("HTTP/1.1 200"), "{pushed}");
    assert_eq!(
        echo.next().await.unwrap().unwrap(),
        Message::text("pushed through nginx")
    );
    let health =
        proxied("GET /_/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned()).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let status: Value =
        serde_json::from_str(health.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or(Value::Null);
    assert_eq!(status["status"], "ok", "{health}");
}
