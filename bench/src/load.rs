//! The load generator: N WebSocket connections, each keeping a fixed number of
//! echo messages in flight (closed loop) for a duration; reports messages per
//! second and round-trip latency percentiles (HdrHistogram).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// The shape of one load run.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Shape {
    /// Connections.
    #[arg(long, short = 'c', default_value_t = 1)]
    pub(crate) connections: usize,
    /// Message size in bytes.
    #[arg(long, short = 's', default_value_t = 32)]
    pub(crate) size: usize,
    /// Messages in flight per connection.
    #[arg(long, short = 'i', default_value_t = 1)]
    pub(crate) inflight: usize,
    /// How long to measure (after the warm-up).
    #[arg(long, short = 'd', default_value = "5s", value_parser = crate::parse_duration)]
    pub(crate) duration: Duration,
    /// Warm-up before measuring.
    #[arg(long, default_value = "1s", value_parser = crate::parse_duration)]
    pub(crate) warmup: Duration,
    /// Send exactly this many messages per connection instead of running for a
    /// duration (for instruction counts, which need a fixed amount of work).
    #[arg(long)]
    pub(crate) count: Option<u64>,
}

/// What one run measured.
pub(crate) struct Report {
    /// Every echo received, warm-up included (for CPU cost per message).
    pub(crate) all_messages: u64,
    pub(crate) messages_per_second: f64,
    pub(crate) bytes_per_second: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
}

impl Report {
    pub(crate) fn header() -> String {
        format!(
            "{:<28} {:<12} {:>12} {:>10} {:>10} {:>10} {:>10}",
            "scenario", "server", "msgs/s", "MiB/s", "p50 µs", "p99 µs", "p99.9 µs"
        )
    }

    pub(crate) fn row(&self, scenario: &str, server: &str) -> String {
        format!(
            "{:<28} {:<12} {:>12.0} {:>10.1} {:>10.0} {:>10.0} {:>10.0}",
            scenario,
            server,
            self.messages_per_second,
            self.bytes_per_second / (1024.0 * 1024.0),
            self.p50_us,
            self.p99_us,
            self.p999_us
        )
    }
}

/// Runs one load shape against `url`.
pub(crate) async fn run(url: &str, shape: &Shape) -> anyhow::Result<Report> {
    let mut clients = Vec::with_capacity(shape.connections);
    let config = crate::baseline::websocket_config(64 * 1024);
    for _ in 0..shape.connections {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
        clients.push(ws);
    }
    let payload = Bytes::from(vec![b'x'; shape.size]);
    let start = Instant::now();
    let measure_from = start + shape.warmup;
    let stop_at = measure_from + shape.duration;
    let mut tasks = Vec::new();
    for mut ws in clients {
        let payload = payload.clone();
        let inflight = shape.inflight;
        let count = shape.count;
        tasks.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(inflight);
            let mut measured = 0u64;
            let mut all = 0u64;
            let mut sent_count = 0u64;
            let more = |sent_count: u64, now: Instant| match count {
                Some(count) => sent_count < count,
                None => now < stop_at,
            };
            for _ in 0..inflight {
                if !more(sent_count, Instant::now()) {
                    break;
                }
                sent_count += 1;
                sent_at.push_back(Instant::now());
                ws.feed(Message::Binary(payload.clone())).await?;
            }
            ws.flush().await?;
            while let Some(sent) = sent_at.pop_front() {
                let message = match ws.next().await {
                    Some(message) => message?,
                    None => anyhow::bail!("server closed the connection"),
                };
                if !message.is_binary() {
                    continue;
                }
                all += 1;
                let now = Instant::now();
                if now >= measure_from && now < stop_at {
                    measured += 1;
                    histogram
                        .record((now - sent).as_micros().max(1) as u64)
                        .ok();
                }
                if more(sent_count, now) {
                    sent_count += 1;
                    sent_at.push_back(Instant::now());
                    ws.send(Message::Binary(payload.clone())).await?;
                }
            }
            let _ = ws.close(None).await;
            Ok::<_, anyhow::Error>((measured, all, histogram))
        }));
    }
    let mut total = 0;
    let mut all_messages = 0;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        let (measured, all, h) = task.await??;
        total += measured;
        all_messages += all;
        histogram.add(h)?;
    }
    let seconds = shape.duration.as_secs_f64();
    Ok(Report {
        all_messages,
        messages_per_second: total as f64 / seconds,
        bytes_per_second: (total as f64 * shape.size as f64) / seconds,
        p50_us: histogram.value_at_quantile(0.50) as f64,
        p99_us: histogram.value_at_quantile(0.99) as f64,
        p999_us: histogram.value_at_quantile(0.999) as f64,
    })
}

/// Opens `n` idle connections and keeps them open until the returned value is dropped.
pub(crate) async fn open_idle(url: &str, n: usize) -> anyhow::Result<Vec<impl Sized>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        clients.push(ws);
    }
    Ok(clients)
}
