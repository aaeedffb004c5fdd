//! The cluster run: one sender and many listeners in one chat room, the
//! listeners spread evenly over three nodes sharing a Redis (Debian's
//! `redis-server`, started here on a port of its own), next to the same run
//! on one node without Redis. Prints the time from a message's send to its
//! arrival at each listener (p50, p99, at a steady rate) and the messages
//! delivered per second (a burst, as fast as the nodes go).

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::compare::ServerProcess;

/// How hard the cluster run pushes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClusterArgs {
    /// Listeners in the room (spread evenly over the nodes).
    #[arg(long, default_value_t = 300)]
    listeners: usize,
    /// Messages sent at a steady rate, for latency.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// The steady rate, messages per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Messages sent at once, for throughput.
    #[arg(long, default_value_t = 2000)]
    burst: usize,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A Redis for the run; killed when dropped.
pub(crate) struct RedisProcess {
    child: Child,
    pub(crate) port: u16,
    _dir: std::path::PathBuf,
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

pub(crate) fn start_redis() -> anyhow::Result<RedisProcess> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = std::env::temp_dir().join(format!("switchboard-bench-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!("cannot start redis-server (apt-get install redis-server): {e}")
        })?;
    let redis = RedisProcess {
        child,
        port,
        _dir: dir,
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(redis);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    anyhow::bail!("redis-server did not start")
}

const SERVER: &str = "max_connections = 20000\nmessage_rate = 1000000\nbyte_rate = \"1 GiB\"\noutbound_queue = 65536";

fn apps(cluster: Option<(u16, usize)>) -> String {
    let cluster = cluster.map_or(String::new(), |(port, node)| {
        format!("[cluster]\nredis = \"redis://127.0.0.1:{port}\"\nnode_id = \"bench-{node}\"\n\n")
    });
    format!("{cluster}[[app]]\npath = \"/chat\"\nplugin = \"chat\"\n[app.config]\nhistory = 50\n")
}

/// One row of results.
struct Row {
    setup: String,
    deliveries: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    delivered_per_s: f64,
}

pub(crate) fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let redis = start_redis()?;
    println!(
        "cluster: {} listeners in one chat room, one sender; latency at {} msg/s ({} messages), throughput from a burst of {}",
        args.listeners, args.rate, args.messages, args.burst
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let mut rows = Vec::new();
    for nodes in [1usize, 3] {
        let servers: Vec<ServerProcess> = (0..nodes)
            .map(|node| {
                let cluster = (nodes > 1).then_some((redis.port, node));
                // Each node a runtime directory of its own (they share a config path).
                let runtime_dir = std::env::temp_dir().join(format!(
                    "switchboard-bench-{}-node{node}",
                    std::process::id()
                ));
                let server = format!(
                    "{SERVER}\nruntime_dir = {:?}",
                    runtime_dir.display().to_string()
                );
                ServerProcess::switchboard(&server, &apps(cluster))
            })
            .collect::<anyhow::Result<_>>()?;
        let urls: Vec<String> = servers.iter().map(|s| format!("{}/chat", s.url)).collect();
        let setup = if nodes == 1 {
            "one node".to_owned()
        } else {
            format!("{nodes} nodes + Redis")
        };
        rows.push(runtime.block_on(measure(&setup, &urls, &args))?);
        drop(servers);
    }
    println!();
    println!(
        "{:<18} {:>11} {:>9} {:>9} {:>9} {:>16}",
        "setup", "deliveries", "p50 µs", "p99 µs", "max µs", "delivered msg/s"
    );
    for row in &rows {
        println!(
            "{:<18} {:>11} {:>9} {:>9} {:>9} {:>16.0}",
            row.setup, row.deliveries, row.p50_us, row.p99_us, row.max_us, row.delivered_per_s
        );
    }
    if let [one, three] = &rows[..] {
        println!(
            "\nthree nodes / one node: p50 {:.2}x, p99 {:.2}x, delivered msg/s {:.2}x",
            three.p50_us as f64 / one.p50_us.max(1) as f64,
            three.p99_us as f64 / one.p99_us.max(1) as f64,
            three.delivered_per_s / one.delivered_per_s.max(1.0)
        );
    }
    drop(redis);
    Ok(())
}

async fn connect_and_join(url: &str) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    ws.send(Message::text(
        json!({"type": "join", "room": "bench"}).to_string(),
    ))
    .await?;
    loop {
        let message = next_json(&mut ws).await?;
        if message["type"] == "joined" {
            return Ok(ws);
        }
    }
}

async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("no message for 30 s"))?
            .ok_or_else(|| anyhow::anyhow!("connection closed"))??;
        if let Message::Text(text) = message {
            return Ok(serde_json::from_str(text.as_str())?);
        }
    }
}

async fn measure(setup: &str, urls: &[String], args: &ClusterArgs) -> anyhow::Result<Row> {
    let mut listeners = Vec::new();
    for i in 0..args.listeners {
        listeners.push(connect_and_join(&urls[i % urls.len()]).await?);
    }
    let mut sender = connect_and_join(&urls[0]).await?;
    // Every node's view of the room is complete before the clock starts.
    let expected = args.listeners + 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        sender
            .send(Message::text(
                json!({"type": "members", "room": "bench"}).to_string(),
            ))
            .await?;
        let members = loop {
            let message = next_json(&mut sender).await?;
            if message["type"] == "members" {
                break message["members"].as_array().map_or(0, Vec::len);
            }
        };
        if members == expected {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the room has {members} of {expected} members"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let clock = Instant::now();
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let total = (args.messages + args.burst) as u64;
    let mut tasks = Vec::new();
    for mut ws in listeners {
        let histogram = histogram.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = 0u64;
            let mut last = Instant::now();
            while seen < total {
                let message = next_json(&mut ws).await?;
                if message["type"] != "message" {
                    continue;
                }
                let text = message["text"].as_str().unwrap_or("");
                let mut parts = text.split(' ');
                let (Some(phase), Some(sent)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let now_us = clock.elapsed().as_micros() as u64;
                if phase == "steady" {
                    let sent: u64 = sent.parse().unwrap_or(now_us);
                    let _ = histogram
                        .lock()
                        .map(|mut h| h.record(now_us.saturating_sub(sent).max(1)));
                }
                seen += 1;
                last = Instant::now();
            }
            anyhow::Ok(last)
        }));
    }
    // Steady: latency without queueing.
    let period = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut tick = tokio::time::interval(period);
    for _ in 0..args.messages {
        tick.tick().await;
        let text = format!("steady {}", clock.elapsed().as_micros());
        let say = json!({"type": "say", "room": "bench", "text": text});
        sender.send(Message::text(say.to_string())).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Burst: as fast as the sender's socket takes them.
    let burst_start = Instant::now();
    for i in 0..args.burst {
        let say = json!({"type": "say", "room": "bench", "text": format!("burst {i}")});
        sender.feed(Message::text(say.to_string())).await?;
    }
    sender.flush().await?;
    let mut last = burst_start;
    for task in tasks {
        last = last.max(task.await??);
    }
    let elapsed = last.duration_since(burst_start).as_secs_f64();
    let histogram = histogram.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let row = Row {
        setup: setup.to_owned(),
        deliveries: histogram.len(),
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
        max_us: histogram.max(),
        delivered_per_s: (args.burst * args.listeners) as f64 / elapsed,
    };
    println!(
        "{setup}: p50 {} µs, p99 {} µs; burst delivered in {:.3} s",
        row.p50_us, row.p99_us, elapsed
    );
    Ok(row)
}
