use switchboard_tests::{
    abi_fixture, output_text, plugin_path, run_command, target_dir, TestConfig,
};

/// Runs `switchboard check` on a config; asserts it fails and returns what it printed.
async fn check_fails(config: &str) -> String {
    let output = run_command(&["check"], config).await;
    let text = output_text(&output);
    assert!(!output.status.success(), "check should fail:\n{text}");
    text
}

fn with_server(rest: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nplugin_dir = {:?}\n{rest}",
        target_dir().display().to_string()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn check_accepts_the_example_config_and_lists_its_apps() {
    let output = run_command(&["check"], &TestConfig::new().render()).await;
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("/echo -> echo 0.1.0"), "{text}");
    assert!(text.contains("/commands -> commands 0.1.0"), "{text}");
    assert!(text.contains("ok, 2 app(s)"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_default_config_is_valid() {
    let config = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/switchboard.toml"
    ))
    .unwrap();
    // Point it at this build's plugins; everything else as shipped.
    let config = config.replacen(
        "[server]\n",
        &format!(
            "[server]\nplugin_dir = {:?}\n",
            target_dir().display().to_string()
        ),
        1,
    );
    let output = run_command(&["check"], &config).await;
    assert!(output.status.success(), "{}", output_text(&output));
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_keys_are_refused_with_file_line_and_column() {
    let text = check_fails("[server]\nlisten = \"127.0.0.1:0\"\nmax_conections = 5\n").await;
    assert!(
        text.contains("switchboard.toml:3:1: unknown field `max_conections`, expected one of"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_values_are_refused_with_what_was_expected() {
    let text = check_fails("[server]\nmax_message_size = \"huge\"\n").await;
    assert!(
        text.contains(
            "switchboard.toml:2:20: invalid size \"huge\": expected a size such as \"16 MiB\""
        ),
        "{text}"
    );
    let text = check_fails("[server]\nping_interval = 30\n").await;
    assert!(text.contains("switchboard.toml:2:17:"), "{text}");
    assert!(
        text.contains("expected a duration such as \"30s\""),
        "{text}"
    );
    let text = check_fails("[server\n").await;
    assert!(text.contains("switchboard.toml:1:"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_apps_on_one_path_are_refused() {
    let text = check_fails(&with_server(
        "[[app]]\npath = \"/echo\"\nplugin = \"echo\"\n\n[[app]]\npath = \"/echo\"\nplugin = \"commands\"\n",
    ))
    .await;
    assert!(
        text.contains(
            "switchboard.toml:9:8: app path \"/echo\" is mounted twice (first at line 5)"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_plugin_is_named_with_its_app() {
    let text = check_fails(&with_server(
        "[[app]]\npath = \"/chat\"\nplugin = \"no_such_plugin\"\n",
    ))
    .await;
    let expected = format!(
        "switchboard.toml:5: app /chat: {}: plugin file not found",
        target_dir().join("libno_such_plugin.so").display()
    );
    assert!(
        text.contains(&expected),
        "expected {expected:?} in:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_is_not_a_shared_library_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libfake.so");
    std::fs::write(&fake, "this is not a shared library").unwrap();
    let text = check_fails(&with_server(&format!(
        "[[app]]\npath = \"/x\"\nplugin = {:?}\n",
        fake.display().to_string()
    )))
    .await;
    assert!(
        text.contains(&format!(
            "{}: cannot be opened as a shared library",
            fake.display()
        )),
        "{text}"
    );
}

/// An app block mounting the plugin file at `path` on `/x`.
fn app_with_file(path: &std::path::Path) -> String {
    with_server(&format!(
        "[[app]]\npath = \"/x\"\nplugin = {:?}\n",
        path.display().to_string()
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_library_that_is_not_a_plugin_is_refused() {
    let file = abi_fixture("fixture_not_a_plugin");
    let text = check_fails(&app_with_file(&file)).await;
    assert!(
        text.contains(&format!("{}: not a Switchboard plugin", file.display())),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_of_another_plugin_api_series_is_refused_naming_both_versions() {
    let file = abi_fixture("fixture_old_api_plugin");
    let text = check_fails(&app_with_file(&file)).await;
    let expected = format!(
        "{}: built against switchboard-plugin-api 0.0.1, but this server loads plugins built against {SERVER_API} and later 0.2.x; rebuild the plugin against switchboard-plugin-api {SERVER_API}",
        file.display(),
    );
    assert!(
        text.contains(&expected),
        "expected {expected:?} in:\n{text}"
    );
}

/// The plugin-api version this build of the server loads.
const SERVER_API: &str = "0.2.1";

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_built_against_an_older_plugin_api_is_refused_in_one_line() {
    // A real plugin, built against a frozen copy of plugin-api 0.1.1 (another
    // series than this server's; within a series the unit tests in
    // plugin/loader.rs hold the older-than rule).
    let file = abi_fixture("fixture_abi_0_1_1");
    let text = check_fails(&app_with_file(&file)).await;
    let expected = format!(
        "switchboard.toml:5: app /x: {}: built against switchboard-plugin-api 0.1.1, but this server loads plugins built against {SERVER_API} and later 0.2.x; rebuild the plugin against switchboard-plugin-api {SERVER_API}\n",
        file.display()
    );
    assert!(
        text.contains(&expected),
        "expected {expected:?} in:\n{text}"
    );
    assert!(
        text.lines().all(|line| line.len() < 400),
        "no layout dump:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_with_a_different_abi_layout_is_refused() {
    let file = abi_fixture("fixture_mismatched_plugin");
    let text = check_fails(&app_with_file(&file)).await;
    let expected = format!(
        "{}: built against an incompatible switchboard-plugin-api",
        file.display()
    );
    assert!(
        text.contains(&expected),
        "expected {expected:?} in:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_problem_is_reported_before_refusing_to_serve() {
    let config = with_server(&format!(
        "[[app]]\npath = \"/a\"\nplugin = \"missing_one\"\n\n[[app]]\npath = \"/b\"\nplugin = {:?}\n\n[[app]]\npath = \"/echo\"\nplugin = \"echo\"\n",
        abi_fixture("fixture_not_a_plugin").display().to_string()
    ));
    // `serve` (the default command) refuses to start, too.
    let output = run_command(&[], &config).await;
    let text = output_text(&output);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("app /a:") && text.contains("plugin file not found"),
        "{text}"
    );
    assert!(
        text.contains("app /b:") && text.contains("not a Switchboard plugin"),
        "{text}"
    );
    assert!(!text.contains("listening"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_lists_manifests_and_load_errors() {
    let dir = tempfile::tempdir().unwrap();
    for file in [
        plugin_path("echo"),
        plugin_path("commands"),
        abi_fixture("fixture_not_a_plugin"),
    ] {
        std::fs::copy(&file, dir.path().join(file.file_name().unwrap())).unwrap();
    }
    let output = run_command(&["plugins", dir.path().to_str().unwrap()], "").await;
    let text = output_text(&output);
    assert!(
        !output.status.success(),
        "one file is not a plugin, so the listing fails:\n{text}"
    );
    assert!(text.contains("libecho.so: echo 0.1.0 (plugin-api 0.2.1): Sends every text and binary message back unchanged"), "{text}");
    assert!(
        text.contains("libcommands.so: commands 0.1.0 (plugin-api 0.2.1)"),
        "{text}"
    );
    assert!(
        text.contains("libfixture_not_a_plugin.so: not a Switchboard plugin"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_in_the_build_directory_are_all_real_plugins() {
    // The broken fixtures are built elsewhere, so listing the directory the
    // default config loads plugins from shows no failure.
    let output = run_command(&["plugins", target_dir().to_str().unwrap()], "").await;
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    for name in [
        "echo", "commands", "chat", "locks", "clock", "progress", "hub",
    ] {
        assert!(
            text.contains(&format!("lib{name}.so: {name} ")),
            "{name}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_config_file_is_reported_once() {
    let output = tokio::process::Command::new(switchboard_tests::binary())
        .args(["--config", "/nonexistent/switchboard.toml", "check"])
        .output()
        .await
        .unwrap();
    let text = output_text(&output);
    assert!(!output.status.success());
    assert_eq!(
        text.trim(),
        "error: invalid configuration: cannot read config file /nonexistent/switchboard.toml: No such file or directory (os error 2)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_names_every_path_of_an_app_and_logs_no_mounts() {
    let output = run_command(
        &["check"],
        &with_server("[[app]]\npaths = [\"/a\", \"/b\"]\nplugin = \"echo\"\n"),
    )
    .await;
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("/a, /b -> echo 0.1.0"), "{text}");
    assert!(!text.contains("app mounted"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_third_party_plugin_that_is_missing_gets_a_build_hint_of_its_own() {
    let text = check_fails(&with_server(
        "[[app]]\npath = \"/mine\"\nplugin = \"my_plugin\"\n",
    ))
    .await;
    assert!(
        text.contains(
            "(build the plugin with `cargo build --release` and copy its libmy_plugin.so into"
        ),
        "{text}"
    );
    assert!(!text.contains("--workspace"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line() {
    let server = switchboard_tests::TestServer::start(TestConfig::new().apps(
        "[log]\nformat = \"json\"\nlevel = \"info\"\n\n[[app]]\npath = \"/echo\"\nplugin = \"echo\"\n",
    ))
    .await;
    // The test harness asks for debug in SWITCHBOARD_LOG, which wins over level.
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "{log}");
    for line in lines {
        let record: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            record["level"].is_string() && record["fields"].is_object(),
            "{line}"
        );
    }
    let text = check_fails(&with_server("[log]\nformat = \"xml\"\n")).await;
    assert!(
        text.contains("switchboard.toml:5:10: log.format = \"xml\": expected \"text\" or \"json\""),
        "{text}"
    );
}

#[test]
fn the_systemd_unit_is_valid() {
    let verify = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    if verify.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must check the systemd unit, but systemd-analyze is missing"
        );
        eprintln!("SKIPPED: systemd-analyze is missing");
        return;
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/systemd/switchboard.service"
    ))
    .unwrap();
    // Checked as installed, with the binary where the unit expects it.
    let dir = tempfile::tempdir().unwrap();
    let binary = switchboard_tests::binary();
    let unit = unit.replace("/usr/local/bin/switchboard", &binary.display().to_string());
    let path = dir.path().join("switchboard.service");
    std::fs::write(&path, unit).unwrap();
    let output = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        !text.contains("Unknown key") && !text.contains("Failed"),
        "{text}"
    );
}
