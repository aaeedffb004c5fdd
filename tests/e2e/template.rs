//! The plugin author's path, end to end: build `examples/plugin-template` as a
//! standalone crate, drop the library into a plugin folder, mount it, talk to it.

use std::path::Path;

use switchboard_tests::{cargo, fixture_target_dir, TestConfig, TestServer};

use crate::util::{next_text, send_text};

/// A copy of the template, as an author would make, with the workspace's lock
/// file so the same dependency versions are used; returns the crate's directory.
fn copy_template(work: &Path) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let template = root.join("examples/plugin-template");
    let copy = work.join("my-plugin");
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
    copy
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plugin_template_builds_installs_and_serves() {
    let work = tempfile::tempdir().unwrap();
    let copy = copy_template(work.path());
    // Built next to the ABI fixtures, sharing their dependencies, as
    // docs/plugins.md suggests for plugins built outside the workspace.
    let build_dir = fixture_target_dir();
    let output = cargo(&["build"], &copy.join("Cargo.toml"));
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

#[test]
fn a_plugin_built_with_panic_abort_does_not_compile() {
    // With panic = "abort" one panic would end the server; export_app! refuses.
    let work = tempfile::tempdir().unwrap();
    let copy = copy_template(work.path());
    let output = cargo(
        &["check", "--config", "profile.dev.panic=\"abort\""],
        &copy.join("Cargo.toml"),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("a Switchboard plugin must be built with panic = \"unwind\""),
        "{stderr}"
    );
}
