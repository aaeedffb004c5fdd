//! Compression: chat-like JSON messages echoed by Switchboard's `/echo` with
//! permessage-deflate negotiated and without, in the same run: messages per
//! second, bytes on the wire per message each way, the server's CPU per
//! message; then the resident memory of idle connections that negotiated it.
//!
//! The clients send pre-built frames (a message compressed once, by a fresh
//! compressor: valid whatever the server's dictionary holds), so that the
//! load generator stays cheap and the server's cost is what is measured: it
//! inflates every message (priming its decompressor with the client's
//! history when the client keeps context) and deflates every reply.

use std::time::{Duration, Instant};

use flate2::{Compress, Compression, FlushCompress};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::compare::{self, ServerProcess};
use crate::load;

/// Options of `compression`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CompressionArgs {
    /// Connections, each with one message in flight.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Measured seconds per run.
    #[arg(long, default_value = "3s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Rounds (each mode once per round, in rotating order).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Idle connections per memory figure (each measured on a fresh server;
    /// 0 skips them).
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Pin the server to CPU 0 and the load generator to CPU 1.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pin: bool,
    /// Message sizes, each a scenario: up to 600 bytes a chat message, larger
    /// a dashboard update (metrics as JSON objects) of about that size.
    #[arg(long, value_delimiter = ',', default_values_t = [450, 4096])]
    sizes: Vec<usize>,
    /// `compression_window_bits` of the server (its default when absent).
    #[arg(long)]
    window_bits: Option<u8>,
}

/// How a connection is opened.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// No offer: uncompressed.
    Off,
    /// What browsers offer: the client keeps its context.
    On,
    /// The client offers (and is asked for) no context takeover.
    OnNoContext,
}

impl Mode {
    fn offer(self) -> Option<&'static str> {
        match self {
            Mode::Off => None,
            Mode::On => Some("permessage-deflate; client_max_window_bits"),
            Mode::OnNoContext => {
                Some("permessage-deflate; client_no_context_takeover; client_max_window_bits")
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::On => "on",
            Mode::OnNoContext => "on, no client context",
        }
    }
}

/// A message of about `size` bytes: a chat message up to 600 bytes, a
/// dashboard update beyond.
fn message(i: usize, size: usize) -> Vec<u8> {
    if size <= 600 {
        return chat_message(i);
    }
    let mut series = Vec::new();
    let mut k = 0;
    loop {
        let update = serde_json::json!({"type": "metrics", "at": 1_764_400_000_000u64 + i as u64, "series": series});
        if update.to_string().len() >= size {
            return update.to_string().into_bytes();
        }
        const NAMES: [&str; 5] = ["cpu.user", "cpu.system", "mem.used", "net.rx", "net.tx"];
        const UNITS: [&str; 5] = ["percent", "percent", "bytes", "bytes/s", "bytes/s"];
        series.push(serde_json::json!({
            "name": NAMES[k % 5],
            "host": format!("web-{}", k / 5),
            "value": ((k * 7919 + i * 31) % 10_000) as f64 / 100.0,
            "unit": UNITS[k % 5],
        }));
        k += 1;
    }
}

/// A chat message with its room's member list and status (about 450 bytes).
fn chat_message(i: usize) -> Vec<u8> {
    serde_json::json!({
        "type": "message",
        "room": "lobby",
        "nick": format!("guest-{}", i % 50),
        "text": "Has anyone seen the latest dashboard numbers? The deploy went out at noon and the error rate dropped right after.",
        "at": 1_764_400_000_000u64 + i as u64,
        "members": ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"],
        "status": {"online": 10, "away": 2, "typing": ["bob"], "last_seen": {"alice": 1_764_399_990_000u64, "bob": 1_764_399_995_000u64}},
    })
    .to_string()
    .into_bytes()
}

/// The payload as a client sends it: raw deflate, sync-flushed, tail removed.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut compressor = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    compressor
        .compress_vec(data, &mut out, FlushCompress::Sync)
        .expect("deflate");
    out.truncate(out.len() - 4);
    out
}

/// A masked frame; `rsv1` marks it compressed.
fn frame(rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let mut frame = load::masked(0x1, payload);
    if rsv1 {
        frame[0] |= 0x40;
    }
    frame
}

/// A handshake on a raw socket offering `offer`; fails unless the answer
/// agrees (or, without an offer, has no extension).
pub(crate) async fn handshake(url: &str, offer: Option<&str>) -> anyhow::Result<TcpStream> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow::anyhow!("ws:// only"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let extensions = offer.map_or(String::new(), |o| {
        format!("Sec-WebSocket-Extensions: {o}\r\n")
    });
    stream
        .write_all(format!(
            "GET /{path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extensions}\r\n"
        ).as_bytes())
        .await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await?);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    anyhow::ensure!(
        head.starts_with("http/1.1 101"),
        "handshake refused: {head}"
    );
    anyhow::ensure!(
        head.contains("permessage-deflate") == offer.is_some(),
        "the server did not answer the offer as expected: {head}"
    );
    Ok(stream)
}

/// What one run measured.
struct Run {
    messages_per_second: f64,
    p99_us: f64,
    /// Client to server, bytes per message on the wire (frame headers included).
    up: f64,
    /// Server to client.
    down: f64,
    cpu_us: f64,
}

async fn measure(
    server: &ServerProcess,
    url: &str,
    mode: Mode,
    size: usize,
    args: &CompressionArgs,
) -> anyhow::Result<Run> {
    let mut streams = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        streams.push(handshake(url, mode.offer()).await?);
    }
    let warmup = Duration::from_secs(1);
    let start = Instant::now();
    let (measure_from, stop_at) = (start + warmup, start + warmup + args.duration);
    let cpu_before = server.cpu_ns();
    let mut tasks = Vec::new();
    for (i, stream) in streams.into_iter().enumerate() {
        let message = message(i, size);
        let wire = match mode {
            Mode::Off => frame(false, &message),
            Mode::On | Mode::OnNoContext => frame(true, &deflate(&message)),
        };
        tasks.push(tokio::spawn(async move {
            let (reader, mut writer) = stream.into_split();
            let mut reader = BufReader::with_capacity(16 << 10, reader);
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut measured, mut all, mut down) = (0u64, 0u64, 0u64);
            while Instant::now() < stop_at {
                let sent = Instant::now();
                writer.write_all(&wire).await?;
                let (_, on_the_wire) = load::skip_frame(&mut reader).await?;
                let now = Instant::now();
                all += 1;
                if now >= measure_from {
                    measured += 1;
                    down += on_the_wire;
                    histogram.record((now - sent).as_micros().max(1) as u64)?;
                }
            }
            Ok::<_, anyhow::Error>((measured, all, down, histogram, wire.len()))
        }));
    }
    let (mut measured, mut all, mut down, mut up) = (0u64, 0u64, 0u64, 0u64);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        let (m, a, d, h, frame_len) = task.await??;
        measured += m;
        all += a;
        down += d;
        up += m * frame_len as u64;
        histogram.add(h)?;
    }
    let cpu_us = (server.cpu_ns() - cpu_before) as f64 / 1000.0 / all.max(1) as f64;
    Ok(Run {
        messages_per_second: measured as f64 / args.duration.as_secs_f64(),
        p99_us: histogram.value_at_quantile(0.99) as f64,
        up: up as f64 / measured.max(1) as f64,
        down: down as f64 / measured.max(1) as f64,
        cpu_us,
    })
}

/// Runs the comparison and prints the tables.
pub(crate) fn run(args: CompressionArgs) -> anyhow::Result<()> {
    let pin = args.pin && std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if pin {
        compare::pin_self()?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let server = ServerProcess::switchboard_with(
        &format!(
            "max_connections = {}\nmessage_rate = 0\nbyte_rate = 0\n{}",
            args.connections + 100,
            args.window_bits.map_or(String::new(), |bits| format!(
                "compression_window_bits = {bits}\n"
            ))
        ),
        "[[app]]\npath = \"/echo\"\nplugin = \"echo\"\n",
        pin,
        "/echo",
    )?;
    let url = server.url.clone();
    let modes = [Mode::Off, Mode::On, Mode::OnNoContext];
    println!(
        "JSON messages echoed by /echo, {} connections, one message in flight each, {} rounds of {:?}{}",
        args.connections,
        args.rounds,
        args.duration,
        if pin { ", server on CPU 0, load generator on CPU 1" } else { "" }
    );
    for &size in &args.sizes {
        println!(
            "\n{} B {} message",
            message(0, size).len(),
            if size <= 600 { "chat" } else { "dashboard" }
        );
        println!(
            "{:<24} {:>10} {:>9} {:>10} {:>10} {:>9}",
            "compression", "msgs/s", "p99 µs", "up B/msg", "down B/msg", "CPU µs"
        );
        let mut results: Vec<Vec<Run>> = modes.iter().map(|_| Vec::new()).collect();
        for round in 0..args.rounds {
            for k in 0..modes.len() {
                let i = (k + round) % modes.len();
                let run = runtime.block_on(measure(&server, &url, modes[i], size, &args))?;
                println!(
                    "{:<24} {:>10.0} {:>9.0} {:>10.1} {:>10.1} {:>9.2}",
                    modes[i].name(),
                    run.messages_per_second,
                    run.p99_us,
                    run.up,
                    run.down,
                    run.cpu_us
                );
                results[i].push(run);
            }
        }
        println!("medians (ratio to off)");
        let median = |values: Vec<f64>| compare::median(values);
        let rate = |i: usize| median(results[i].iter().map(|r| r.messages_per_second).collect());
        let cpu = |i: usize| median(results[i].iter().map(|r| r.cpu_us).collect());
        for (i, mode) in modes.iter().enumerate() {
            let (up, down) = (results[i][0].up, results[i][0].down);
            println!(
                "{:<24} {:>10.0} msgs/s ({:.3})  {:>8.1} B up ({:.3})  {:>8.1} B down ({:.3})  CPU {:.2} µs ({:.3})",
                mode.name(),
                rate(i),
                rate(i) / rate(0),
                up,
                up / results[0][0].up,
                down,
                down / results[0][0].down,
                cpu(i),
                cpu(i) / cpu(0),
            );
        }
    }

    if args.idle > 0 {
        println!(
            "\nmemory of {} idle connections (resident set of a fresh server for each row)",
            args.idle
        );
        drop(server);
        for (what, mode, send) in [
            ("uncompressed", Mode::Off, false),
            ("uncompressed, one message sent", Mode::Off, true),
            ("compression negotiated", Mode::On, false),
            ("negotiated, one message sent", Mode::On, true),
        ] {
            let fresh = ServerProcess::switchboard_with(
                &format!(
                    "max_connections = {}\nmessage_rate = 0\nbyte_rate = 0\n{}",
                    args.idle + 100,
                    args.window_bits.map_or(String::new(), |bits| {
                        format!("compression_window_bits = {bits}\n")
                    })
                ),
                "[[app]]\npath = \"/echo\"\nplugin = \"echo\"\n",
                pin,
                "/echo",
            )?;
            let before = fresh.rss_kib().unwrap_or(0);
            let kept = runtime.block_on(async {
                let mut kept = Vec::with_capacity(args.idle);
                for i in 0..args.idle {
                    let mut stream = handshake(&fresh.url, mode.offer()).await?;
                    if send {
                        let message = chat_message(i);
                        let wire = match mode {
                            Mode::Off => frame(false, &message),
                            _ => frame(true, &deflate(&message)),
                        };
                        stream.write_all(&wire).await?;
                        let mut reply = [0u8; 1024];
                        let _ = stream.read(&mut reply).await?;
                    }
                    kept.push(stream);
                }
                Ok::<_, anyhow::Error>(kept)
            })?;
            std::thread::sleep(Duration::from_millis(500));
            let after = fresh.rss_kib().unwrap_or(0);
            println!(
                "{what:<32} {:>8.2} KiB per connection",
                after.saturating_sub(before) as f64 / args.idle as f64
            );
            drop(kept);
        }
    }
    Ok(())
}
