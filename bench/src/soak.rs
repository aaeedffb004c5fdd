//! The soak run: connections open and close continuously on several apps
//! (echo, chat, locks, hub), each session a short conversation checked message
//! by message, for a long time; prints the server's resident memory over time
//! and every unexpected error. It starts its own server (the release binary
//! and plugins next to this executable) and stops by itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::compare::ServerProcess;

/// How long a soak runs and how hard it pushes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SoakArgs {
    /// How long to run.
    #[arg(long, short = 'd', default_value = "600s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Sessions running at once (each opens a connection, talks, closes).
    #[arg(long, short = 'w', default_value_t = 32)]
    workers: usize,
    /// Messages per session.
    #[arg(long, default_value_t = 50)]
    messages: usize,
    /// Pause between two messages of a session.
    #[arg(long, default_value = "10ms", value_parser = crate::parse_duration)]
    pause: Duration,
    /// How often to sample the server's memory.
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    sample: Duration,
    /// Run three nodes sharing a Redis (Debian's redis-server, started here)
    /// and spread the sessions over them; the memory printed is the three
    /// nodes' together.
    #[arg(long)]
    cluster: bool,
}

/// The apps a soak talks to, by path.
const APPS: [&str; 4] = ["/echo", "/chat", "/locks", "/hub"];

/// How long any expected message may take.
const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Counts {
    sessions: AtomicU64,
    messages: AtomicU64,
    errors: AtomicU64,
    /// The first few errors, to print.
    first_errors: Mutex<Vec<String>>,
}

impl Counts {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap_or_else(|e| e.into_inner());
        if first.len() < 10 {
            first.push(what);
        }
    }
}

pub(crate) fn run(args: SoakArgs) -> anyhow::Result<()> {
    let redis = if args.cluster {
        Some(crate::cluster::start_redis()?)
    } else {
        None
    };
    let servers: Vec<ServerProcess> = match &redis {
        None => vec![start_server(args.workers, None)?],
        Some(redis) => (0..3)
            .map(|node| start_server(args.workers, Some((redis.port, node))))
            .collect::<anyhow::Result<_>>()?,
    };
    let bases: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let pids: Vec<u32> = servers.iter().map(ServerProcess::pid).collect();
    let rss = || {
        servers
            .iter()
            .map(|s| s.rss_kib().unwrap_or(0))
            .sum::<u64>()
    };
    println!(
        "soak: {} workers, {} messages per session, {:?} between messages, for {:?}; server pid(s) {pids:?}{}",
        args.workers,
        args.messages,
        args.pause,
        args.duration,
        if args.cluster { ", three nodes sharing a Redis" } else { "" }
    );
    if args.cluster {
        // Every node sees the others before the sessions start.
        std::thread::sleep(Duration::from_secs(2));
    }
    println!(
        "{:>8} {:>10} {:>10} {:>12} {:>8}",
        "elapsed", "RSS MiB", "sessions", "messages", "errors"
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut samples = Vec::new();
    runtime.block_on(async {
        let mut workers = Vec::new();
        for worker in 0..args.workers {
            let counts = counts.clone();
            let bases = bases.clone();
            let args = args.clone();
            workers.push(tokio::spawn(async move {
                let mut round = worker;
                while Instant::now() < deadline {
                    let app = APPS[round % APPS.len()];
                    // Each session on the next node: a chat room spans them.
                    let base = &bases[(round / APPS.len()) % bases.len()];
                    let url = format!("{base}{app}");
                    match session(&url, app, worker, round, &args).await {
                        Ok(messages) => {
                            counts.sessions.fetch_add(1, Ordering::Relaxed);
                            counts.messages.fetch_add(messages, Ordering::Relaxed);
                        }
                        Err(error) => counts.error(format!("{app}: {error:#}")),
                    }
                    round += 1;
                }
            }));
        }
        let mut next_sample = started;
        while Instant::now() < deadline {
            if Instant::now() >= next_sample {
                let rss = rss();
                samples.push(rss);
                print_row(started, rss, &counts);
                next_sample += args.sample;
            }
            tokio::time::sleep(Duration::from_millis(200).min(args.sample)).await;
        }
        for worker in workers {
            let _ = worker.await;
        }
    });
    let rss = rss();
    samples.push(rss);
    print_row(started, rss, &counts);
    let errors = counts.errors.load(Ordering::Relaxed);
    for error in counts
        .first_errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        println!("error: {error}");
    }
    // Warm-up: the first quarter of the samples.
    let warm = &samples[samples.len() / 4..];
    let (low, high) = (
        warm.iter().min().copied().unwrap_or(0),
        warm.iter().max().copied().unwrap_or(0),
    );
    println!(
        "soak done: {} sessions, {} messages, {errors} errors; RSS after warm-up {:.1}..{:.1} MiB (first {:.1}, last {:.1})",
        counts.sessions.load(Ordering::Relaxed),
        counts.messages.load(Ordering::Relaxed),
        low as f64 / 1024.0,
        high as f64 / 1024.0,
        samples[0] as f64 / 1024.0,
        rss as f64 / 1024.0,
    );
    anyhow::ensure!(errors == 0, "{errors} unexpected errors");
    Ok(())
}

fn print_row(started: Instant, rss_kib: u64, counts: &Counts) {
    println!(
        "{:>7.0}s {:>10.1} {:>10} {:>12} {:>8}",
        started.elapsed().as_secs_f64(),
        rss_kib as f64 / 1024.0,
        counts.sessions.load(Ordering::Relaxed),
        counts.messages.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed),
    );
}

fn start_server(workers: usize, cluster: Option<(u16, usize)>) -> anyhow::Result<ServerProcess> {
    let cluster = cluster.map_or(String::new(), |(port, node)| {
        format!("[cluster]\nredis = \"redis://127.0.0.1:{port}\"\nnode_id = \"soak-{node}\"\n")
    });
    let apps = r#"
[[app]]
path = "/echo"
plugin = "echo"

[[app]]
path = "/chat"
plugin = "chat"

[[app]]
path = "/locks"
plugin = "locks"

[[app]]
paths = ["/hub", "/hub/web", "/hub/php"]
plugin = "hub"
[app.config]
secret = "a-soak-secret-of-enough-length"
"#;
    // Each node a runtime directory of its own (they share a config path).
    let runtime_dir = std::env::temp_dir().join(format!(
        "switchboard-soak-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let server = format!(
        "max_connections = {}\nruntime_dir = {:?}\n",
        workers * 4 + 100,
        runtime_dir.display().to_string()
    );
    ServerProcess::switchboard(&server, &format!("{cluster}{apps}"))
}

/// A suffix that differs between calls (the nodes of one soak).
fn rand_suffix() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One session on `app`: connect, talk, close. Returns the messages exchanged.
async fn session(
    url: &str,
    app: &str,
    worker: usize,
    round: usize,
    args: &SoakArgs,
) -> anyhow::Result<u64> {
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .map_err(|_| anyhow::anyhow!("connect timed out"))??;
    let tag = format!("w{worker}-r{round}");
    match app {
        "/echo" => {
            for i in 0..args.messages {
                let text = format!("{tag}-{i}");
                ws.send(Message::text(text.clone())).await?;
                let reply = expect(&mut ws, |m| m.as_str() == Some(text.as_str()), true).await?;
                drop(reply);
                tokio::time::sleep(args.pause).await;
            }
        }
        "/chat" => {
            let welcome = expect(&mut ws, |m| m["type"] == "welcome", false).await?;
            let nick = welcome["nick"].as_str().unwrap_or_default().to_owned();
            let room = format!("soak-{}", worker % 8);
            send_json(&mut ws, &json!({"type": "join", "room": room})).await?;
            expect(&mut ws, |m| m["type"] == "joined", false).await?;
            for i in 0..args.messages {
                let text = format!("{tag}-{i}");
                send_json(&mut ws, &json!({"type": "say", "room": room, "text": text})).await?;
                expect(
                    &mut ws,
                    |m| {
                        m["type"] == "message"
                            && m["nick"] == nick.as_str()
                            && m["text"] == text.as_str()
                    },
                    false,
                )
                .await?;
                tokio::time::sleep(args.pause).await;
            }
        }
        "/locks" => {
            expect(&mut ws, |m| m["type"] == "welcome", false).await?;
            for i in 0..args.messages {
                let id = format!("{tag}-{i}");
                send_json(&mut ws, &json!({"type": "show", "ids": [id]})).await?;
                expect(
                    &mut ws,
                    |m| m["type"] == "shown" && m["mine"] == json!([id]),
                    false,
                )
                .await?;
                tokio::time::sleep(args.pause).await;
            }
        }
        _ => {
            expect(&mut ws, |m| m["opcode"] == "ready", false).await?;
            for i in 0..args.messages {
                send_json(&mut ws, &json!({"opcode": "echo", "n": i})).await?;
                expect(&mut ws, |m| m["opcode"] == "next", true).await?;
                expect(&mut ws, |m| m["opcode"] == "echo" && m["n"] == i, true).await?;
                tokio::time::sleep(args.pause).await;
            }
        }
    }
    ws.close(None).await?;
    // The server answers the close and ends the connection.
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Err(_) => anyhow::bail!("no close reply"),
            Ok(None) => break,
            Ok(Some(Ok(Message::Close(frame)))) => {
                if let Some(frame) = frame {
                    anyhow::ensure!(u16::from(frame.code) == 1000, "closed with {frame:?}");
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed))) => break,
            Ok(Some(Err(error))) => anyhow::bail!("after close: {error}"),
        }
    }
    Ok(args.messages as u64)
}

async fn send_json(ws: &mut Ws, value: &Value) -> anyhow::Result<()> {
    ws.send(Message::text(value.to_string())).await?;
    Ok(())
}

/// Waits for a message `wanted` accepts; others are skipped unless `strict`
/// (then any other data message is an error). Text that is not JSON is
/// offered as a JSON string.
async fn expect(
    ws: &mut Ws,
    wanted: impl Fn(&Value) -> bool,
    strict: bool,
) -> anyhow::Result<Value> {
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let message = tokio::time::timeout_at(until, ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("timed out waiting for a reply"))?
            .ok_or_else(|| anyhow::anyhow!("connection ended"))??;
        let text = match message {
            Message::Text(text) => text.as_str().to_owned(),
            Message::Close(frame) => anyhow::bail!("closed by the server: {frame:?}"),
            Message::Binary(_) => anyhow::bail!("unexpected binary message"),
            _ => continue,
        };
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if wanted(&value) {
            return Ok(value);
        }
        anyhow::ensure!(!strict, "unexpected message {text}");
    }
}
