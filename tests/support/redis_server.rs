//! A real Redis (Debian's `redis-server`) for the cluster tests, on a
//! loopback port of the test's own, with nothing saved to disk; killed when
//! dropped. `.ci/run` installs the package.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// One `redis-server` process.
pub struct Redis {
    child: Option<Child>,
    /// The port it listens on (kept across [`Redis::restart`]).
    pub port: u16,
    dir: TempDir,
    /// Extra `redis-server` arguments (kept across [`Redis::restart`]).
    extra: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn spawn(port: u16, dir: &TempDir, extra: &[String]) -> Child {
    Command::new("redis-server")
        .args(extra)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .args(["--logfile", "redis.log"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server (apt-get install redis-server)")
}

impl Redis {
    /// Starts a Redis; or, on a machine without `redis-server` and outside
    /// CI (where it must run), says the test is skipped and returns `None`.
    pub fn start_or_skip() -> Option<Redis> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the cluster tests, but redis-server is missing"
            );
            eprintln!("SKIPPED: redis-server is missing (apt-get install redis-server)");
            return None;
        }
        Some(Redis::start())
    }

    /// Starts a Redis and waits until it answers.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// Starts a Redis with extra arguments (`--requirepass x`).
    pub fn start_with(extra: &[&str]) -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut redis = Redis {
            child: None,
            port: 0,
            dir,
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
        };
        for _ in 0..5 {
            redis.port = free_port();
            redis.child = Some(spawn(redis.port, &redis.dir, &redis.extra));
            if redis.wait_ready() {
                return redis;
            }
            // The port was taken between the probe and the start: try another.
            redis.kill();
        }
        panic!("redis-server did not start");
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Whether it answers PING.
    pub fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        // Any answer will do: "+PONG", or "-NOAUTH" from one with a password.
        let mut answer = [0u8; 1];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && matches!(&answer, b"+" | b"-")
    }

    /// Kills it (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing was saved).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.child = Some(spawn(self.port, &self.dir, &self.extra));
            if self.wait_ready() {
                return;
            }
            self.kill();
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
