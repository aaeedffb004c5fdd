//! Fan-out: one message to N listeners, timed from the moment it is sent
//! until the last listener has read it, against the baseline's fan-out server
//! (`baseline --broadcast`: the simplest tokio-tungstenite broadcast, every
//! connection task on one `tokio::sync::broadcast` channel).
//!
//! Two Switchboard paths are measured:
//! - group publish: the `hub` app's `broadcast` opcode, one browser's message
//!   to the group every browser is in (`Host::publish_except`), triggered by a
//!   WebSocket message as the baseline's is;
//! - app broadcast: a push (`POST /_/push`, `{"to":{"app":"/echo"}}`) to every
//!   connection of `/echo`, so it includes one HTTP request.
//!
//! Listeners read raw frames after their handshake (a few hundred
//! instructions per message), so that with 10,000 of them the load generator
//! is not what is timed. The servers' CPU time per broadcast is printed too:
//! it does not depend on how fast the listeners read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::compare::{self, ServerProcess};
use crate::load;

/// Options of `fanout`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FanoutArgs {
    /// Listener counts, each a scenario.
    #[arg(long, value_delimiter = ',', default_values_t = [1000, 10000])]
    listeners: Vec<usize>,
    /// Broadcasts measured per run (after 5 not measured).
    #[arg(long, default_value_t = 100)]
    broadcasts: usize,
    /// Characters of text in each broadcast (the whole message is this plus
    /// the hub's JSON envelope, the same bytes for every server).
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Rounds (each server runs once per round, in rotating order).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Pin the servers to CPU 0 and the listeners to CPU 1.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pin: bool,
    /// Also draw the ratios to the baseline as an SVG chart to this file.
    #[arg(long)]
    chart: Option<std::path::PathBuf>,
    /// Switchboard's listeners negotiate permessage-deflate (the baseline
    /// cannot): with `--size` above the 1 KiB threshold, every broadcast is
    /// compressed, once per server thread rather than once per listener.
    #[arg(long)]
    compress: bool,
}

/// Broadcasts sent before the measured ones.
const WARMUP: usize = 5;
/// A broadcast that has not reached everyone by then is an error.
const DEADLINE: Duration = Duration::from_secs(20);

/// How a server is made to broadcast.
#[derive(Clone, Copy, PartialEq)]
enum Via {
    /// A text message on a WebSocket connection of its own; `ack`: the server
    /// answers it (the hub's `next`).
    WebSocket { ack: bool },
    /// `POST /_/push` to every connection of the app.
    Push,
}

/// One server and path under test.
struct Target<'a> {
    name: &'static str,
    server: &'a ServerProcess,
    url: String,
    via: Via,
    /// Listeners receive one message on connect (the hub's `ready`).
    greeting: bool,
    /// What listeners offer in `Sec-WebSocket-Extensions`.
    offer: Option<&'static str>,
}

/// Runs the fan-out scenarios and prints the tables.
pub(crate) fn run(args: FanoutArgs) -> anyhow::Result<()> {
    let pin = args.pin && std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if pin {
        compare::pin_self()?;
    }
    let runtime = if pin {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Runtime::new()?
    };
    let most = args.listeners.iter().copied().max().unwrap_or(0);
    let mut baseline = compare::server_command(&std::env::current_exe()?, pin);
    baseline.args(["baseline", "--broadcast"]);
    let baseline = ServerProcess::start("baseline", baseline, "listening on ", "/")?;
    let switchboard = ServerProcess::switchboard_with(
        &format!(
            "max_connections = {}\nmessage_rate = 0\nbyte_rate = 0\n",
            most + 100
        ),
        "[[app]]\npath = \"/hub\"\nplugin = \"hub\"\n\n[[app]]\npath = \"/echo\"\nplugin = \"echo\"\n",
        pin,
        "",
    )?;
    let offer = args
        .compress
        .then_some("permessage-deflate; client_max_window_bits");
    let targets = [
        Target {
            name: "baseline",
            server: &baseline,
            url: baseline.url.clone(),
            via: Via::WebSocket { ack: false },
            greeting: false,
            offer: None,
        },
        Target {
            name: "sb group",
            server: &switchboard,
            url: format!("{}/hub", switchboard.url),
            via: Via::WebSocket { ack: true },
            greeting: true,
            offer,
        },
        Target {
            name: "sb app push",
            server: &switchboard,
            url: format!("{}/echo", switchboard.url),
            via: Via::Push,
            greeting: false,
            offer,
        },
    ];
    let text = format!(
        r#"{{"opcode":"broadcast","message":"{}"}}"#,
        "x".repeat(args.size)
    );
    println!(
        "fan-out: one {} B text message to N listeners{}, time until the last has read it; {} broadcasts per run, {} rounds{}\n",
        text.len(),
        if args.compress { " (Switchboard's compressed)" } else { "" },
        args.broadcasts,
        args.rounds,
        if pin { ", servers on CPU 0, listeners on CPU 1" } else { "" }
    );
    println!(
        "{:<10} {:<12} {:>9} {:>9} {:>9} {:>14}",
        "listeners", "server", "p50 ms", "p99 ms", "max ms", "CPU µs/bcast"
    );
    let mut summary = Vec::new();
    for &listeners in &args.listeners {
        let n = targets.len();
        let (mut p50, mut p99, mut cpu) = (
            vec![Vec::new(); n],
            vec![Vec::new(); n],
            vec![Vec::new(); n],
        );
        for round in 0..args.rounds {
            for k in 0..n {
                let i = (k + round) % n;
                let target = &targets[i];
                let run = runtime.block_on(measure(target, listeners, args.broadcasts, &text))?;
                println!(
                    "{listeners:<10} {:<12} {:>9.2} {:>9.2} {:>9.2} {:>14.0}",
                    target.name, run.p50_ms, run.p99_ms, run.max_ms, run.cpu_us
                );
                p50[i].push(run.p50_ms);
                p99[i].push(run.p99_ms);
                cpu[i].push(run.cpu_us);
                // Let the closed listeners' sockets go before the next run.
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        summary.push((listeners, p50, p99, cpu));
    }
    println!("\nmedians (ratio = server / baseline; lower is better)");
    println!(
        "{:<10} {:<12} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "listeners", "server", "p50 ms", "ratio", "p99 ms", "ratio", "CPU µs", "ratio"
    );
    let mut rows = Vec::new();
    for (listeners, p50, p99, cpu) in summary {
        let m = |v: &Vec<f64>| compare::median(v.clone());
        for (what, values) in [("p50", &p50), ("p99", &p99)] {
            rows.push((
                format!("{listeners} listeners, {what}"),
                values.iter().map(|v| m(&values[0]) / m(v)).collect(),
            ));
        }
        for (i, target) in targets.iter().enumerate() {
            println!(
                "{listeners:<10} {:<12} {:>9.2} {:>9.3} {:>9.2} {:>9.3} {:>10.0} {:>9.3}",
                target.name,
                m(&p50[i]),
                m(&p50[i]) / m(&p50[0]),
                m(&p99[i]),
                m(&p99[i]) / m(&p99[0]),
                m(&cpu[i]),
                m(&cpu[i]) / m(&cpu[0]),
            );
        }
    }
    if let Some(path) = &args.chart {
        let ratios = crate::chart::Ratios {
            title: format!(
                "Fan-out: time until every listener has the message, baseline / server ({})",
                if pin { "pinned" } else { "unpinned" }
            ),
            series: targets.iter().map(|t| t.name.to_owned()).collect(),
            rows,
        };
        crate::chart::draw(path, &ratios)?;
    }
    Ok(())
}

/// What one run measured.
struct Run {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The server's CPU time per measured broadcast.
    cpu_us: f64,
}

/// Connects `listeners` listeners and one sender, broadcasts `WARMUP +
/// broadcasts` times, waiting each time until every listener has the message.
async fn measure(
    target: &Target<'_>,
    listeners: usize,
    broadcasts: usize,
    text: &str,
) -> anyhow::Result<Run> {
    let received = Arc::new(AtomicUsize::new(0));
    let everyone_has_it = Arc::new(Notify::new());
    let connected: Vec<(BufReader<OwnedReadHalf>, OwnedWriteHalf)> =
        futures_util::stream::iter(0..listeners)
            .map(|_| connect(&target.url, target.greeting, target.offer))
            .buffer_unordered(64)
            .try_collect()
            .await?;
    let mut tasks = tokio::task::JoinSet::new();
    for (reader, writer) in connected {
        tasks.spawn(listen(
            reader,
            writer,
            received.clone(),
            listeners,
            everyone_has_it.clone(),
        ));
    }
    let mut sender = Sender::connect(target, text).await?;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut cpu_before = 0;
    for k in 0..WARMUP + broadcasts {
        if k == WARMUP {
            cpu_before = target.server.cpu_ns();
        }
        received.store(0, Ordering::Release);
        let sent = Instant::now();
        sender.fire().await?;
        tokio::time::timeout(DEADLINE, everyone_has_it.notified())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "{}: {} of {listeners} listeners had broadcast {k} after {DEADLINE:?}",
                    target.name,
                    received.load(Ordering::Acquire)
                )
            })?;
        let took = sent.elapsed();
        sender.finish().await?;
        if k >= WARMUP {
            histogram.record(took.as_micros().max(1) as u64)?;
        }
    }
    let cpu_us = (target.server.cpu_ns() - cpu_before) as f64 / 1000.0 / broadcasts as f64;
    tasks.shutdown().await;
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Run {
        p50_ms: ms(histogram.value_at_quantile(0.5)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
        cpu_us,
    })
}

/// A listener: the WebSocket handshake (offering `offer`, if any) and the
/// greeting, when the app sends one, then the raw socket.
async fn connect(
    url: &str,
    greeting: bool,
    offer: Option<&str>,
) -> anyhow::Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf)> {
    if offer.is_some() {
        let stream = crate::compression::handshake(url, offer).await?;
        let (reader, writer) = stream.into_split();
        let mut reader = BufReader::with_capacity(1024, reader);
        if greeting {
            load::read_frame(&mut reader).await?;
        }
        return Ok((reader, writer));
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    if greeting {
        match ws.next().await {
            Some(Ok(message)) if message.is_text() => {}
            other => anyhow::bail!("{url}: expected a greeting, got {other:?}"),
        }
    }
    let tokio_tungstenite::MaybeTlsStream::Plain(stream) = ws.into_inner() else {
        anyhow::bail!("fanout speaks ws:// only");
    };
    let (reader, writer) = stream.into_split();
    Ok((BufReader::with_capacity(1024, reader), writer))
}

/// Reads frames until the connection ends; counts data messages, and wakes
/// the sender when the count reaches `everyone`. Holds `_writer`: dropping
/// it would half-close the connection.
async fn listen(
    mut reader: BufReader<OwnedReadHalf>,
    _writer: OwnedWriteHalf,
    received: Arc<AtomicUsize>,
    everyone: usize,
    everyone_has_it: Arc<Notify>,
) {
    while let Ok(opcode) = load::read_frame(&mut reader).await {
        if (opcode == 0x1 || opcode == 0x2)
            && received.fetch_add(1, Ordering::AcqRel) + 1 == everyone
        {
            everyone_has_it.notify_one();
        }
    }
}

/// What makes the server broadcast.
enum Sender {
    WebSocket {
        reader: BufReader<OwnedReadHalf>,
        writer: OwnedWriteHalf,
        frame: Vec<u8>,
        ack: bool,
    },
    Push {
        connection: BufReader<TcpStream>,
        request: Vec<u8>,
    },
}

impl Sender {
    async fn connect(target: &Target<'_>, text: &str) -> anyhow::Result<Sender> {
        Ok(match target.via {
            Via::WebSocket { ack } => {
                let (reader, writer) = connect(&target.url, target.greeting, target.offer).await?;
                Sender::WebSocket {
                    reader,
                    writer,
                    frame: load::masked(0x1, text.as_bytes()),
                    ack,
                }
            }
            Via::Push => {
                let (authority, path) = target
                    .url
                    .strip_prefix("ws://")
                    .and_then(|rest| rest.split_once('/'))
                    .ok_or_else(|| anyhow::anyhow!("unexpected URL {}", target.url))?;
                let body =
                    serde_json::json!({ "to": { "app": format!("/{path}") }, "message": text })
                        .to_string();
                let request = format!(
                    "POST /_/push HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                Sender::Push {
                    connection: BufReader::new(TcpStream::connect(authority).await?),
                    request: request.into_bytes(),
                }
            }
        })
    }

    /// Sends the message (or the push).
    async fn fire(&mut self) -> anyhow::Result<()> {
        match self {
            Sender::WebSocket { writer, frame, .. } => writer.write_all(frame).await?,
            Sender::Push {
                connection,
                request,
            } => connection.get_mut().write_all(request).await?,
        }
        Ok(())
    }

    /// Reads the server's answer to the message (the hub's `next`, the push's
    /// HTTP response), if it sends one.
    async fn finish(&mut self) -> anyhow::Result<()> {
        match self {
            Sender::WebSocket { ack: false, .. } => {}
            Sender::WebSocket { reader, .. } => while load::read_frame(reader).await? != 0x1 {},
            Sender::Push { connection, .. } => {
                let mut status = String::new();
                connection.read_line(&mut status).await?;
                anyhow::ensure!(
                    status.starts_with("HTTP/1.1 200"),
                    "the push was answered {status:?}"
                );
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    connection.read_line(&mut header).await?;
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = header.split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse()?;
                        }
                    }
                }
                let mut body = vec![0; length];
                connection.read_exact(&mut body).await?;
            }
        }
        Ok(())
    }
}
