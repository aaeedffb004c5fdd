//! The plugin author's path, end to end: build `examples/plugin-template` as a
//! standalone crate, drop the library into a plugin folder, mount it, talk to it.

use std::path::Path;
use std::process::Command;

use switchboard_tests::{target_dir, TestConfig, TestServer};

use crate::util::{next_text, send_text};

#[tokio::test(flavor = "multi_thread")]
async fn the_plugin_template_builds_installs_and_serves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let template = root.join("examples/plugin-template");
    // A copy, as an author would make, with the workspace's lock file so the
    // same dependency versions are used.
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("my-plugin");
    std::fs::create_dir_all(copy.join("src")).unwrap();
    let manifest = std::fs::read_to_string(template.join("Cargo.toml"))
        .unwrap()
        .replace(
            "path = \"../../plugin-api\"",
            &format!("path = {:?}", root.join("plugin-api").display().to_string()),
        );
    std::fs::write(copy.join("Cargo.toml"), manifest).unwrap();
    std::fs::copy(template.join("src/lib.rs"), copy.join("src/lib.rs")).unwrap();
    std::fs::copy(root.join("Cargo.lock"), copy.join("Cargo.lock")).unwrap();

    let build_dir = target_dir().join("plugin-template-build");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["build", "--offline", "--manifest-path"])
        .arg(copy.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &build_dir)
        .output()
        .expect("run cargo");
    assert!(
        output.status.success(),
        "building the template failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let plugin_dir = work.path().join("plugins");
    std::fs::create_dir(&plugin_dir).unwrap();
    std::fs::copy(
        build_dir.join("debug/libtemplate.so"),
        plugin_dir.join("libtemplate.so"),
    )
    .unwrap();

    let apps = format!(
        "[[app]]\npath = \"/reverse\"\nplugin = {:?}\n[app.config]\nprefix = \"<< \"\n",
        plugin_dir.join("libtemplate.so").display().to_string()
    );
    let server = TestServer::start(TestConfig::new().apps(&apps)).await;
    let mut ws = server.ws("/reverse").await;
    assert!(next_text(&mut ws).await.starts_with("welcome "));
    send_text(&mut ws, "stressed").await;
    assert_eq!(next_text(&mut ws).await, "<< desserts");
}
