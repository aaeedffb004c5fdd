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
    /// After the handshake, write one pre-built masked frame per message and
    /// read the echo's header and skip its payload, instead of going through
    /// tungstenite's client: a generator that costs far less per message, so
    /// that the server rather than the generator is what is measured.
    #[arg(long)]
    pub(crate) raw: bool,
}

/// A masked binary frame of `size` bytes, as a client sends it.
fn masked_frame(size: usize) -> Vec<u8> {
    masked(0x2, &vec![b'x'; size])
}

/// A masked frame with this opcode and payload (the same mask for every
/// message: servers must accept any).
pub(crate) fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let size = payload.len();
    let mut frame = vec![0x80 | opcode];
    match size {
        0..=125 => frame.push(0x80 | size as u8),
        126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(size as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(size as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads one frame from the server: its opcode (payload skipped).
pub(crate) async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
) -> anyhow::Result<u8> {
    Ok(skip_frame(reader).await?.0)
}

/// Reads one frame from the server, payload skipped: its opcode and its
/// size on the wire, header included.
pub(crate) async fn skip_frame<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
) -> anyhow::Result<(u8, u64)> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 2];
    reader.read_exact(&mut head).await?;
    let (len, header) = match head[1] & 0x7f {
        126 => (u64::from(reader.read_u16().await?), 4),
        127 => (reader.read_u64().await?, 10),
        n => (u64::from(n), 2),
    };
    tokio::io::copy(&mut reader.take(len), &mut tokio::io::sink()).await?;
    Ok((head[0] & 0x0f, header + len))
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

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One generator connection: tungstenite's client, or (`--raw`) the socket
/// itself with a pre-built frame.
enum Client {
    Ws(Box<Ws>, Bytes),
    Raw {
        reader: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
        writer: tokio::net::tcp::OwnedWriteHalf,
        frame: std::sync::Arc<Vec<u8>>,
    },
}

impl Client {
    /// Queues one message (`Ws`: written at the next flush).
    async fn feed(&mut self) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        match self {
            Client::Ws(ws, payload) => ws.feed(Message::Binary(payload.clone())).await?,
            Client::Raw { writer, frame, .. } => writer.write_all(frame).await?,
        }
        Ok(())
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if let Client::Ws(ws, _) = self {
            ws.flush().await?;
        }
        Ok(())
    }

    /// Waits for the next binary echo (other frames are skipped; a ping
    /// would go unanswered by `Raw`: runs are shorter than ping intervals).
    async fn echo(&mut self) -> anyhow::Result<()> {
        loop {
            let binary = match self {
                Client::Ws(ws, _) => match ws.next().await {
                    Some(message) => message?.is_binary(),
                    None => anyhow::bail!("server closed the connection"),
                },
                Client::Raw { reader, .. } => read_frame(reader).await? == 0x2,
            };
            if binary {
                return Ok(());
            }
        }
    }

    async fn close(self) {
        if let Client::Ws(mut ws, _) = self {
            let _ = Ws::close(&mut ws, None).await;
        }
    }
}

/// Runs one load shape against `url`.
pub(crate) async fn run(url: &str, shape: &Shape) -> anyhow::Result<Report> {
    let mut clients = Vec::with_capacity(shape.connections);
    let config = crate::baseline::websocket_config(64 * 1024);
    let payload = Bytes::from(vec![b'x'; shape.size]);
    let frame = std::sync::Arc::new(masked_frame(shape.size));
    for _ in 0..shape.connections {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
        clients.push(if shape.raw {
            let tokio_tungstenite::MaybeTlsStream::Plain(stream) = ws.into_inner() else {
                anyhow::bail!("--raw speaks ws:// only");
            };
            let (reader, writer) = stream.into_split();
            Client::Raw {
                reader: tokio::io::BufReader::with_capacity(64 * 1024, reader),
                writer,
                frame: frame.clone(),
            }
        } else {
            Client::Ws(Box::new(ws), payload.clone())
        });
    }
    let start = Instant::now();
    let measure_from = start + shape.warmup;
    let stop_at = measure_from + shape.duration;
    let mut tasks = Vec::new();
    for mut client in clients {
        let inflight = shape.inflight;
        let count = shape.count;
        tasks.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(inflight);
            let (mut measured, mut all, mut sent_count) = (0u64, 0u64, 0u64);
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
                client.feed().await?;
            }
            client.flush().await?;
            while let Some(sent) = sent_at.pop_front() {
                client.echo().await?;
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
                    client.feed().await?;
                    client.flush().await?;
                }
            }
            client.close().await;
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

/// What a churn run measured.
pub(crate) struct ChurnReport {
    /// Whole connections (connect, one echo, close) per second.
    pub(crate) connections_per_second: f64,
    /// Median time of one whole connection, µs.
    pub(crate) p50_us: f64,
    /// 99th percentile, µs.
    pub(crate) p99_us: f64,
    /// Connections completed, warm-up included (for CPU per connection).
    pub(crate) all: u64,
}

/// Connection churn: `parallel` loops, each opening a connection, echoing one
/// 32 B message, closing it (close handshake included), and starting again,
/// for `warmup` and then `duration`.
pub(crate) async fn churn(
    url: &str,
    parallel: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<ChurnReport> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop_at = measure_from + duration;
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let (mut measured, mut all) = (0u64, 0u64);
            while Instant::now() < stop_at {
                let began = Instant::now();
                let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
                ws.send(Message::binary(vec![b'x'; 32])).await?;
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Binary(_))) => break,
                        Some(Ok(_)) => continue,
                        _ => anyhow::bail!("the connection ended before the echo"),
                    }
                }
                ws.close(None).await?;
                // The server's close frame, then the end of the stream.
                while let Some(Ok(_)) = ws.next().await {}
                all += 1;
                let now = Instant::now();
                if now >= measure_from && now < stop_at {
                    measured += 1;
                    histogram
                        .record((now - began).as_micros().max(1) as u64)
                        .ok();
                }
            }
            Ok::<_, anyhow::Error>((measured, all, histogram))
        }));
    }
    let (mut total, mut all) = (0, 0);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for task in tasks {
        let (measured, done, h) = task.await??;
        total += measured;
        all += done;
        histogram.add(h)?;
    }
    Ok(ChurnReport {
        connections_per_second: total as f64 / duration.as_secs_f64(),
        p50_us: histogram.value_at_quantile(0.50) as f64,
        p99_us: histogram.value_at_quantile(0.99) as f64,
        all,
    })
}
