//! wss:// and https:// without a proxy: a self-signed certificate made at
//! test time (rcgen), clients that trust exactly it, echo over wss, the push
//! API and health over https, a stalled handshake, bad files, a certificate
//! renewed by a reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use switchboard_tests::{output_text, run_command, target_dir, TestConfig, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// A self-signed certificate for localhost and its key, as PEM files in `dir`.
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// A TLS client that trusts only the certificate in `cert`.
fn connector(cert: &Path) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(der.unwrap()).unwrap();
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn tls_stream(
    addr: SocketAddr,
    cert: &Path,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector(cert)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// An HTTPS request; the whole response text.
async fn https(addr: SocketAddr, cert: &Path, request: &str) -> String {
    let mut stream = tls_stream(addr, cert).await.expect("TLS handshake");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn echo_over_wss_and_the_push_api_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "server");
    let server = TestServer::start(TestConfig::new().tls(&cert, &key, false)).await;
    assert!(server.addr_is_tls, "listen speaks TLS");

    let stream = tls_stream(server.addr, &cert).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/echo", stream)
        .await
        .unwrap();
    ws.send(Message::text("over tls")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("over tls"));

    let health = https(
        server.addr,
        &cert,
        "GET /_/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let body = r#"{"to": {"app": "/echo"}, "message": "pushed over https"}"#;
    let pushed = https(
        server.addr,
        &cert,
        &format!(
            "POST /_/push HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(
        pushed.starts_with("HTTP/1.1 200") && pushed.contains(r#"{"delivered":1}"#),
        "{pushed}"
    );
    let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(message, Message::text("pushed over https"));

    // Plain HTTP on the TLS port is not served.
    let plain = server
        .raw(
            b"GET /_/health HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
    assert!(!plain.contains("200 OK"), "{plain}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_listener_beside_the_plain_one() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "server");
    let server = TestServer::start(TestConfig::new().tls(&cert, &key, true)).await;
    assert!(!server.addr_is_tls);
    let tls_addr = server.tls_addr.expect("a TLS listener");
    // Plain on listen, TLS on tls.listen.
    assert!(server.get("/_/health").await.starts_with("HTTP/1.1 200"));
    let health = https(
        tls_addr,
        &cert,
        "GET /_/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_or_bogus_tls_handshake_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "server");
    let server = TestServer::start(
        TestConfig::new()
            .server("handshake_timeout = \"500ms\"")
            .tls(&cert, &key, false),
    )
    .await;
    // Connected, then silent: dropped at the handshake timeout.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buffer))
        .await
        .expect("the server closes a silent client");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Not TLS at all: closed, and the server still serves others.
    let garbage = server
        .raw(
            b"this is not a TLS ClientHello\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
    assert!(!garbage.contains("HTTP/1.1 200"), "{garbage}");
    let (mut ws, _) = tokio_tungstenite::client_async(
        "wss://localhost/echo",
        tls_stream(server.addr, &cert).await.unwrap(),
    )
    .await
    .unwrap();
    ws.send(Message::text("still here")).await.unwrap();
    assert!(ws.next().await.unwrap().is_ok());
}

fn with_tls(cert: &Path, key: &Path) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nplugin_dir = {:?}\n[server.tls]\ncert = {:?}\nkey = {:?}\n",
        target_dir().display().to_string(),
        cert.display().to_string(),
        key.display().to_string()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_unreadable_or_mismatched_files_refuse_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "a");
    let (_, other_key) = certificate(dir.path(), "b");
    let missing = dir.path().join("missing.pem");
    for (cert, key, expected) in [
        (
            missing.clone(),
            key.clone(),
            format!("tls.cert {}:", missing.display()),
        ),
        (
            key.clone(),
            key.clone(),
            format!("tls.cert {}: no PEM certificate", key.display()),
        ),
        (
            cert.clone(),
            cert.clone(),
            format!("tls.key {}:", cert.display()),
        ),
        (
            cert.clone(),
            other_key.clone(),
            format!(
                "tls.cert {} and tls.key {} do not make a usable pair",
                cert.display(),
                other_key.display()
            ),
        ),
    ] {
        let output = run_command(&[], &with_tls(&cert, &key)).await;
        let text = output_text(&output);
        assert!(!output.status.success(), "{text}");
        assert!(
            text.contains(&expected),
            "expected {expected:?} in:\n{text}"
        );
        assert!(!text.contains("listening"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_renews_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "server");
    let first = dir.path().join("first.pem");
    std::fs::copy(&cert, &first).unwrap();
    let server = TestServer::start(TestConfig::new().tls(&cert, &key, false)).await;
    let (mut old, _) = tokio_tungstenite::client_async(
        "wss://localhost/echo",
        tls_stream(server.addr, &first).await.unwrap(),
    )
    .await
    .unwrap();
    // The renewed pair written over the same files, then a reload.
    let (renewed_cert, renewed_key) = certificate(dir.path(), "renewed");
    std::fs::copy(&renewed_cert, &cert).unwrap();
    std::fs::copy(&renewed_key, &key).unwrap();
    let output = server.reload().await;
    assert!(output.status.success(), "{}", output_text(&output));
    // New handshakes get the new certificate; the old one is no longer offered.
    assert!(tls_stream(server.addr, &renewed_cert).await.is_ok());
    assert!(tls_stream(server.addr, &first).await.is_err());
    // The connection made before carries on.
    old.send(Message::text("still")).await.unwrap();
    assert_eq!(old.next().await.unwrap().unwrap(), Message::text("still"));
    // A bad key refuses the reload and keeps the certificate being served.
    std::fs::write(&key, "not a key").unwrap();
    let output = server.reload().await;
    let text = output_text(&output);
    assert!(
        !output.status.success() && text.contains("tls.key"),
        "{text}"
    );
    assert!(tls_stream(server.addr, &renewed_cert).await.is_ok());
}
