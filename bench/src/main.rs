//! `switchboard-bench`: measures Switchboard's `/echo` against a bare
//! tokio-tungstenite echo server (the in-stack upper bound), in one invocation,
//! alternating between the two, and prints throughput, latency and ratios.
//!
//! ```text
//! cargo build --release --workspace && ./target/release/switchboard-bench
//! ```

mod baseline;
mod chart;
mod cluster;
mod compare;
mod compression;
mod fanout;
mod load;
mod soak;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Load generator and baseline server for Switchboard.
#[derive(Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run every scenario against the baseline and Switchboard, alternating (the default).
    Compare(compare::CompareArgs),
    /// Chat-like JSON echoed with permessage-deflate and without: msgs/s,
    /// bytes on the wire, server CPU, and idle memory with it negotiated.
    Compression(compression::CompressionArgs),
    /// One message to 1,000 and 10,000 listeners (group publish, app
    /// broadcast), timed until the last has it, against the baseline's fan-out.
    Fanout(fanout::FanoutArgs),
    /// Drive one server: N connections, message size, messages in flight, duration.
    Load {
        /// WebSocket URL, e.g. ws://127.0.0.1:8080/echo.
        url: String,
        #[command(flatten)]
        shape: load::Shape,
    },
    /// Connections opening and closing on several apps for a long time;
    /// prints the server's memory over time and any unexpected error.
    Soak(soak::SoakArgs),
    /// One chat room over three nodes and Redis, next to one node: delivery
    /// latency and messages delivered per second.
    Cluster(cluster::ClusterArgs),
    /// Open idle connections to a running server and print its resident
    /// memory per connection (from /proc, given its pid).
    Idle {
        /// WebSocket URL, e.g. ws://127.0.0.1:8080/echo.
        url: String,
        /// The server's process id.
        #[arg(long)]
        pid: u32,
        /// Connections to open.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
    },
    /// Serve the bare tokio-tungstenite echo baseline.
    Baseline {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Read buffer size, as Switchboard's default.
        #[arg(long, default_value_t = 4096)]
        read_buffer: usize,
        /// Fan out instead of echoing: a data message from one connection
        /// goes to every other connection.
        #[arg(long)]
        broadcast: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli
        .command
        .unwrap_or(Command::Compare(compare::CompareArgs::default()))
    {
        Command::Compare(args) => compare::run(args),
        Command::Fanout(args) => fanout::run(args),
        Command::Compression(args) => compression::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Load { url, shape } => {
            let runtime = tokio::runtime::Runtime::new()?;
            let result = runtime.block_on(load::run(&url, &shape))?;
            println!("{}", load::Report::header());
            println!("{}", result.row("", ""));
            Ok(())
        }
        Command::Idle {
            url,
            pid,
            connections,
        } => {
            let rss = || -> anyhow::Result<u64> {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let before = rss()?;
            let clients = runtime.block_on(load::open_idle(&url, connections))?;
            std::thread::sleep(Duration::from_secs(1));
            let after = rss()?;
            println!(
                "{connections} idle connections: RSS {before} KiB -> {after} KiB, {:.2} KiB per connection",
                after.saturating_sub(before) as f64 / connections as f64
            );
            drop(clients);
            Ok(())
        }
        Command::Baseline {
            listen,
            read_buffer,
            broadcast,
        } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(baseline::serve(listen, read_buffer, broadcast))
        }
    }
}

/// The directory of this executable, where the release `switchboard` binary and plugins are too.
fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Parses `5s`, `500ms`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Some(ms) = text.strip_suffix("ms") {
        ms.parse()
            .map(Duration::from_millis)
            .map_err(|e| e.to_string())
    } else if let Some(s) = text.strip_suffix('s') {
        s.parse::<f64>()
            .map(Duration::from_secs_f64)
            .map_err(|e| e.to_string())
    } else {
        Err(format!("{text:?}: expected a duration such as 5s or 500ms"))
    }
}
