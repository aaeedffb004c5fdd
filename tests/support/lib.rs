//! Support for the end-to-end tests: start the real `switchboard` binary on
//! 127.0.0.1 port 0 with a config written to a temporary directory, read the
//! bound address from its stdout, and talk to it with real clients.
//!
//! The binary and the plugins come from the same target directory as the test
//! executable; build them first with `cargo build --workspace`.

mod redis_server;

pub use redis_server::Redis;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A WebSocket client connection to the test server.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The directory holding the `switchboard` binary and the plugin files.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("deps directory").to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// A built artifact in the target directory, or a panic naming what to build.
pub fn artifact(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

/// The path of a plugin's shared library (`echo` → `.../libecho.so`).
pub fn plugin_path(name: &str) -> PathBuf {
    artifact(&format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

/// Where the ABI fixtures (`tests/abi-fixtures`, a workspace of their own)
/// and other plugins the tests build as standalone crates are built.
pub fn fixture_target_dir() -> PathBuf {
    target_dir()
        .parent()
        .expect("target directory")
        .join("abi-fixtures")
}

/// Runs cargo with `args` for a standalone crate or workspace, building into
/// [`fixture_target_dir`] with the workspace's locked dependency versions
/// (offline: the workspace build has fetched them already).
pub fn cargo(args: &[&str], manifest: &Path) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    std::process::Command::new(cargo)
        .args(args)
        .args(["--offline", "--manifest-path"])
        .arg(manifest)
        .env("CARGO_TARGET_DIR", fixture_target_dir())
        .output()
        .expect("run cargo")
}

/// A plugin of `tests/abi-fixtures` (`fixture_not_a_plugin`, ...), built on
/// first use (once per test process; cargo's own lock covers the rest).
pub fn abi_fixture(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("abi-fixtures");
        for manifest in [
            fixtures.join("Cargo.toml"),
            fixtures.join("legacy-0.1.1/Cargo.toml"),
        ] {
            let output = cargo(&["build"], &manifest);
            if !output.status.success() {
                return Err(String::from_utf8_lossy(&output.stderr).into_owned());
            }
        }
        Ok(())
    });
    if let Err(stderr) = built {
        panic!("building tests/abi-fixtures failed:\n{stderr}");
    }
    let path = fixture_target_dir().join("debug").join(format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Copies a built plugin (`chat`) into `dir` and returns the copy's path, for
/// tests that change the file and reload.
pub fn plugin_copy(name: &str, dir: &Path) -> PathBuf {
    let source = plugin_path(name);
    let copy = dir.join(source.file_name().expect("file name"));
    std::fs::copy(&source, &copy).expect("copy plugin");
    copy
}

/// Makes `plugin` a new build as far as the server can tell (other bytes,
/// same code): appends bytes after the end of the library, which the dynamic
/// loader ignores. A reload then gives its apps a new instance.
pub fn rebuild_in_place(plugin: &Path) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(plugin)
        .expect("open plugin");
    file.write_all(format!("rebuilt {:?}", std::time::SystemTime::now()).as_bytes())
        .expect("append");
}

/// The switchboard binary.
pub fn binary() -> PathBuf {
    artifact(&format!("switchboard{}", std::env::consts::EXE_SUFFIX))
}

/// The two example apps, as the default config mounts them.
pub const EXAMPLE_APPS: &str = r#"
[[app]]
path = "/echo"
plugin = "echo"

[[app]]
path = "/commands"
plugin = "commands"
"#;

/// A config for a test server: `[server]` lines (listen and plugin_dir are
/// added) and the rest of the file.
pub struct TestConfig {
    server: Vec<String>,
    rest: String,
    plugin_dir: Option<PathBuf>,
    tls: Option<String>,
}

impl TestConfig {
    /// The example apps, default server settings.
    pub fn new() -> Self {
        TestConfig {
            server: Vec::new(),
            rest: EXAMPLE_APPS.to_owned(),
            plugin_dir: None,
            tls: None,
        }
    }

    /// Adds a line to `[server]`.
    pub fn server(mut self, line: &str) -> Self {
        self.server.push(line.to_owned());
        self
    }

    /// Replaces everything after `[server]` (the apps).
    pub fn apps(mut self, text: &str) -> Self {
        self.rest = text.to_owned();
        self
    }

    /// Adds `[server.tls]` with these files; with `beside`, on a listener of
    /// its own beside the plain one (the server reports both addresses).
    pub fn tls(mut self, cert: &Path, key: &Path, beside: bool) -> Self {
        let mut table = format!(
            "[server.tls]\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        );
        if beside {
            table.push_str("listen = \"127.0.0.1:0\"\n");
        }
        self.tls = Some(table);
        self
    }

    /// Loads plugins from `dir` instead of the build directory.
    pub fn plugin_dir(mut self, dir: &Path) -> Self {
        self.plugin_dir = Some(dir.to_owned());
        self
    }

    /// The config file's text.
    pub fn render(&self) -> String {
        let plugin_dir = self.plugin_dir.clone().unwrap_or_else(target_dir);
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nplugin_dir = {:?}\n",
            plugin_dir.display().to_string()
        );
        for line in &self.server {
            text.push_str(line);
            text.push('\n');
        }
        if let Some(tls) = &self.tls {
            text.push_str(tls);
        }
        text.push_str(&self.rest);
        text
    }
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig::new()
    }
}

/// A running switchboard process; killed when dropped.
pub struct TestServer {
    child: Child,
    /// The address it listens on (its first listener).
    pub addr: SocketAddr,
    /// The TLS listener's address, when TLS listens beside the plain listener.
    pub tls_addr: Option<SocketAddr>,
    /// Whether `addr` speaks TLS.
    pub addr_is_tls: bool,
    dir: TempDir,
}

/// The config text with the runtime directory inside the test's own
/// directory, so a killed server leaves nothing behind.
fn config_in(dir: &Path, config: &TestConfig) -> String {
    config.render().replacen(
        "[server]\n",
        &format!(
            "[server]\nruntime_dir = {:?}\n",
            dir.join("run").display().to_string()
        ),
        1,
    )
}

impl TestServer {
    /// Starts the binary with `config` and waits until it listens.
    pub async fn start(config: TestConfig) -> TestServer {
        TestServer::start_with(config, &[]).await
    }

    /// Starts the binary with `config` and extra arguments (`--watch`).
    pub async fn start_with(config: TestConfig, args: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("switchboard.toml");
        std::fs::write(&config_path, config_in(dir.path(), &config)).expect("write config");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr log");
        let mut child = Command::new(binary())
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env("SWITCHBOARD_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("start switchboard");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("server did not start in time:\n{}", read_log(dir.path())))
            .expect("read stdout")
            .unwrap_or_else(|| panic!("server exited before listening:\n{}", read_log(dir.path())));
        let parse = |line: &str| -> (SocketAddr, bool) {
            let rest = line
                .strip_prefix("switchboard listening on ")
                .unwrap_or_else(|| panic!("unexpected line {line:?}"));
            let (tls, addr) = match rest.strip_prefix("https://") {
                Some(addr) => (true, addr),
                None => (false, rest.strip_prefix("http://").expect("http or https")),
            };
            (addr.parse().expect("address"), tls)
        };
        let (addr, addr_is_tls) = parse(&line);
        let tls_addr = if config.tls.as_deref().is_some_and(|t| t.contains("listen")) {
            let line = lines
                .next_line()
                .await
                .expect("read stdout")
                .expect("second listener");
            Some(parse(&line).0)
        } else {
            None
        };
        TestServer {
            child,
            addr,
            tls_addr,
            addr_is_tls,
            dir,
        }
    }

    /// `ws://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Connects a WebSocket client to `path`.
    pub async fn ws(&self, path: &str) -> Client {
        let config = WebSocketConfig::default()
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20));
        let (ws, _) = tokio_tungstenite::connect_async_with_config(
            self.url(path).into_client_request().unwrap(),
            Some(config),
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("connect to {path}: {e}"));
        ws
    }

    /// Sends raw bytes on a new TCP connection and reads until the server closes
    /// it or `limit` passes.
    pub async fn raw(&self, request: &[u8], limit: Duration) -> String {
        let mut stream = TcpStream::connect(self.addr).await.expect("connect");
        stream.write_all(request).await.expect("write");
        let mut response = Vec::new();
        let _ = tokio::time::timeout(limit, stream.read_to_end(&mut response)).await;
        String::from_utf8_lossy(&response).into_owned()
    }

    /// A GET request; returns the whole response text.
    pub async fn get(&self, path: &str) -> String {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        self.raw(request.as_bytes(), Duration::from_secs(5)).await
    }

    /// A POST with a body and extra headers; returns the status and the body
    /// parsed as JSON (`Null` if it is not JSON).
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, serde_json::Value) {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        let response = self.raw(request.as_bytes(), Duration::from_secs(10)).await;
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
        (
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }

    /// The config file it serves.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("switchboard.toml")
    }

    /// The test's own directory (config, log, runtime directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces the config file with `config` (for a reload).
    pub fn rewrite_config(&self, config: &TestConfig) {
        std::fs::write(self.config_path(), config_in(self.dir.path(), config))
            .expect("write config");
    }

    /// A memory figure of the process from /proc (`VmRSS`, `VmHWM`: the peak), in KiB.
    pub fn memory_kib(&self, field: &str) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
    }

    /// Sends SIGHUP.
    pub fn hangup(&self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .arg("-HUP")
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Runs `switchboard reload` for this server's config; returns its output.
    pub async fn reload(&self) -> Output {
        Command::new(binary())
            .arg("--config")
            .arg(self.config_path())
            .arg("reload")
            .output()
            .await
            .expect("run switchboard reload")
    }

    /// The `/_/health` document.
    pub async fn health(&self) -> serde_json::Value {
        let response = self.get("/_/health").await;
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
    }

    /// Waits until `/_/health` reports `reloads` reloads of the app at `path`
    /// (a reload by signal answers nobody).
    pub async fn wait_for_reloads(&self, path: &str, reloads: u64) {
        for _ in 0..200 {
            if self.health().await["apps"][path]["reloads"] == reloads {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{path} was not reloaded {reloads} times:\n{}", self.log());
    }

    /// Kills the process (SIGKILL), as a crash would, and waits for it.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Sends SIGTERM and waits for the process to exit; returns its stdout rest and status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running");
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("server did not exit after SIGTERM")
            .expect("wait");
        if !status.success() {
            // The caller asserts on the status; this says why.
            eprintln!(
                "--- switchboard exited with {status}; its log ---\n{}",
                self.log()
            );
        }
        status
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- switchboard log ---\n{}", self.log());
        }
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
}

/// Runs the binary to completion with `args` and a config file written from
/// `config_text` (its path is passed with `--config`).
pub async fn run_command(args: &[&str], config_text: &str) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("switchboard.toml");
    std::fs::write(&config_path, config_text).expect("write config");
    Command::new(binary())
        .arg("--config")
        .arg(&config_path)
        .args(args)
        .output()
        .await
        .expect("run switchboard")
}

/// A run's stdout and stderr together, for assertions and messages.
pub fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
