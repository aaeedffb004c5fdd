//! The browser tests (`tests/browser`: Node's test runner, playwright-core and
//! Debian's Chromium; no browser is downloaded), run as part of `cargo test`.
//! Outside CI they are skipped, with a message, when Chromium or Node is
//! missing; in CI (`CI` set) they must run.

use std::path::Path;
use std::process::Command;

use switchboard_tests::target_dir;

fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn demo_pages_and_the_client_library_work_in_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let missing: Vec<&str> = [
        (!Path::new(&chromium).exists()).then_some("chromium (apt-get install chromium)"),
        (!available("node")).then_some("node"),
        (!available("npm")).then_some("npm"),
        (!available("redis-server")).then_some("redis-server (apt-get install redis-server)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser tests, but these are missing: {missing:?}"
        );
        eprintln!("SKIPPED the browser tests: missing {missing:?}");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    if !dir.join("node_modules/playwright-core").exists() {
        let install = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .expect("run npm ci");
        assert!(
            install.status.success(),
            "npm ci failed:\n{}",
            String::from_utf8_lossy(&install.stderr)
        );
    }
    // A self-signed certificate for the https/wss page test.
    let tls = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let (cert, key) = (tls.path().join("cert.pem"), tls.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let run = Command::new("node")
        .args(["--test", "--test-concurrency=1"])
        .current_dir(&dir)
        .env("SWITCHBOARD_TARGET_DIR", target_dir())
        .env("SWITCHBOARD_TEST_TLS_CERT", &cert)
        .env("SWITCHBOARD_TEST_TLS_KEY", &key)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node --test");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "browser tests failed:\n{output}");
    assert!(
        output.contains("# fail 0") && output.contains("# pass 16"),
        "unexpected browser test summary:\n{output}"
    );
}
