//! The comparison: starts the baseline and Switchboard (release builds, with
//! the real echo plugin) as separate processes, and with `--peers` the echo
//! servers of other stacks that `bench/peers/setup.sh` installed
//! (fastwebsockets, Node's `ws` with `bufferutil`, Python's `websockets`);
//! runs each scenario against every server in rotating rounds, and prints
//! every run, the median of each, and each server's ratio to the baseline.
//! Rotating spreads machine noise over the servers instead of favouring
//! whichever ran in the quieter moment.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::load::{self, Report, Shape};

/// Options of `compare`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CompareArgs {
    /// Rounds per scenario (each round measures both servers).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measured seconds per run.
    #[arg(long, default_value = "5s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Messages in flight per connection in the throughput scenarios.
    #[arg(long, default_value_t = 1)]
    inflight: usize,
    /// Idle connections for the memory scenario (0 skips it).
    #[arg(long, default_value_t = 5000)]
    idle: usize,
    /// Pin the servers to CPU 0 and the load generator to CPU 1 (with `taskset`),
    /// so that they do not take turns on the same core; much less noise.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pin: bool,
    /// Also measure the peers `bench/peers/setup.sh` installed.
    #[arg(long)]
    peers: bool,
    /// Use the raw-frame load generator (`load --raw`), which costs far
    /// less per message than tungstenite's client.
    #[arg(long)]
    raw: bool,
    /// Also draw the ratios to the baseline as an SVG chart to this file.
    #[arg(long)]
    chart: Option<std::path::PathBuf>,
}

impl Default for CompareArgs {
    fn default() -> Self {
        CompareArgs {
            rounds: 3,
            duration: Duration::from_secs(5),
            inflight: 1,
            idle: 5000,
            pin: true,
            peers: false,
            raw: false,
            chart: None,
        }
    }
}

/// A server process under test; killed on drop.
pub(crate) struct ServerProcess {
    pub(crate) name: &'static str,
    child: Child,
    pub(crate) url: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    pub(crate) fn start(
        name: &'static str,
        mut command: Command,
        prefix: &str,
        path: &str,
    ) -> anyhow::Result<ServerProcess> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix(prefix) else {
            let _ = child.kill();
            anyhow::bail!("{name} did not start (first line {line:?})");
        };
        Ok(ServerProcess {
            name,
            url: format!("ws://{addr}{path}"),
            child,
        })
    }

    /// The release `switchboard` next to this executable, listening on a free
    /// loopback port, with `server` lines added to `[server]` and `apps` after
    /// it; `url` is its `ws://` base (no path).
    pub(crate) fn switchboard(server: &str, apps: &str) -> anyhow::Result<ServerProcess> {
        ServerProcess::switchboard_with(server, apps, false, "")
    }

    pub(crate) fn switchboard_with(
        server: &str,
        apps: &str,
        pin: bool,
        path: &str,
    ) -> anyhow::Result<ServerProcess> {
        let switchboard_bin = crate::sibling("switchboard");
        anyhow::ensure!(
            switchboard_bin.exists(),
            "{} is missing: run cargo build --release --workspace",
            switchboard_bin.display()
        );
        let plugin_dir = switchboard_bin.parent().expect("directory").to_owned();
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nplugin_dir = {:?}\nmax_connections_per_ip = 0\n{server}\n{apps}",
            plugin_dir.display().to_string(),
        );
        let config_path = std::env::temp_dir().join(format!(
            "switchboard-bench-{}-{}.toml",
            std::process::id(),
            path.trim_start_matches('/')
        ));
        std::fs::write(&config_path, config)?;
        let mut switchboard = server_command(&switchboard_bin, pin);
        switchboard
            .arg("--config")
            .arg(&config_path)
            .env("SWITCHBOARD_LOG", "warn");
        let started = ServerProcess::start(
            "switchboard",
            switchboard,
            "switchboard listening on http://",
            path,
        );
        let _ = std::fs::remove_file(&config_path);
        started
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the process has used, in nanoseconds (sum over its threads, Linux).
    pub(crate) fn cpu_ns(&self) -> u64 {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.child.id())) else {
            return 0;
        };
        tasks
            .filter_map(Result::ok)
            .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
            .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// Resident memory of the process in KiB (Linux).
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

/// A command for a server process, pinned to CPU 0 when `pin`.
pub(crate) fn server_command(program: &std::path::Path, pin: bool) -> Command {
    if pin {
        let mut command = Command::new("taskset");
        command.arg("-c").arg("0").arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The peers of `bench/peers` that are installed, started; a line for each
/// that is not.
fn start_peers(pin: bool) -> Vec<ServerProcess> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers");
    let mut peers = Vec::new();
    let mut start = |name: &'static str,
                     program: &std::path::Path,
                     args: &[&std::ffi::OsStr],
                     env: Option<(&str, std::path::PathBuf)>,
                     needs: std::path::PathBuf| {
        if !needs.exists() {
            println!(
                "peer {name}: not installed ({} is missing); run bench/peers/setup.sh",
                needs.display()
            );
            return;
        }
        let mut command = server_command(program, pin);
        command.args(args);
        if let Some((key, value)) = env {
            command.env(key, value);
        }
        match ServerProcess::start(name, command, "listening on ", "/") {
            Ok(server) => peers.push(server),
            Err(error) => println!("peer {name}: did not start: {error:#}"),
        }
    };
    let fast = root.join("target/release/fastwebsockets-echo");
    start("fastwebsockets", &fast, &[], None, fast.clone());
    let node_script = root.join("node/echo.mjs");
    start(
        "node-ws",
        std::path::Path::new("node"),
        &[node_script.as_os_str()],
        None,
        root.join("node/node_modules/ws"),
    );
    let python_script = root.join("python/echo.py");
    start(
        "py-websockets",
        std::path::Path::new("python3"),
        &[python_script.as_os_str()],
        Some(("PYTHONPATH", root.join("python/deps"))),
        root.join("python/deps/websockets"),
    );
    peers
}

/// Pins this process (and the threads it starts later) to CPU 1.
pub(crate) fn pin_self() -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-p", "-c", "1", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "taskset could not pin the load generator");
    Ok(())
}

fn start_servers(idle: usize, pin: bool) -> anyhow::Result<Vec<ServerProcess>> {
    let mut baseline = server_command(&std::env::current_exe()?, pin);
    baseline.arg("baseline");
    let baseline = ServerProcess::start("baseline", baseline, "listening on ", "/")?;

    let switchboard = ServerProcess::switchboard_with(
        &format!(
            "max_connections = {}\nmessage_rate = 0\nbyte_rate = 0\n",
            idle + 1000
        ),
        "[[app]]\npath = \"/echo\"\nplugin = \"echo\"\n",
        pin,
        "/echo",
    )?;
    Ok(vec![baseline, switchboard])
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Runs the comparison and prints the tables.
pub(crate) fn run(args: CompareArgs) -> anyhow::Result<()> {
    let pin = args.pin && std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if pin {
        pin_self()?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let mut servers = start_servers(args.idle, pin)?;
    if args.peers {
        servers.extend(start_peers(pin));
    }
    let n = servers.len();
    let shape = |connections: usize, size: usize| Shape {
        connections,
        size,
        inflight: args.inflight,
        duration: args.duration,
        warmup: Duration::from_secs(1),
        count: None,
        raw: args.raw,
    };
    let scenarios = [
        ("1 conn x 32 B", shape(1, 32)),
        ("100 conns x 32 B", shape(100, 32)),
        ("1000 conns x 1 KiB", shape(1000, 1024)),
        ("1 conn x 64 KiB", shape(1, 64 * 1024)),
        ("100 conns x 64 KiB", shape(100, 64 * 1024)),
        ("1 conn x 1 MiB", shape(1, 1 << 20)),
    ];
    println!(
        "echo round trips, {} message(s) in flight per connection, {} rounds of {:?}, servers alternating{}\n",
        args.inflight,
        args.rounds,
        args.duration,
        if pin { ", servers on CPU 0, load generator on CPU 1" } else { "" }
    );
    println!("{} {:>10}", Report::header(), "CPU µs/msg");
    let mut summary = Vec::new();
    for (name, shape) in &scenarios {
        let mut throughput = vec![Vec::new(); n];
        let mut p99 = vec![Vec::new(); n];
        let mut cpu = vec![Vec::new(); n];
        for round in 0..args.rounds {
            // Rotate which server goes first in each round.
            for k in 0..n {
                let i = (k + round) % n;
                let cpu_before = servers[i].cpu_ns();
                let report = runtime.block_on(load::run(&servers[i].url, shape))?;
                let cpu_us = (servers[i].cpu_ns() - cpu_before) as f64
                    / 1000.0
                    / report.all_messages.max(1) as f64;
                println!("{} {cpu_us:>10.2}", report.row(name, servers[i].name));
                throughput[i].push(report.messages_per_second);
                p99[i].push(report.p99_us);
                cpu[i].push(cpu_us);
            }
        }
        let medians = |values: &Vec<Vec<f64>>| -> Vec<f64> {
            values.iter().map(|v| median(v.clone())).collect()
        };
        summary.push((name, medians(&throughput), medians(&p99), medians(&cpu)));
    }

    println!("\nmedians (ratio = server / baseline; CPU = server CPU time per echoed message)");
    println!(
        "{:<18} {:<15} {:>11} {:>7} {:>9} {:>9} {:>9}",
        "scenario", "server", "msgs/s", "ratio", "p99 µs", "CPU µs", "CPU ratio"
    );
    for (name, rate, p99, cpu) in &summary {
        for (i, server) in servers.iter().enumerate() {
            println!(
                "{name:<18} {:<15} {:>11.0} {:>7.3} {:>9.0} {:>9.2} {:>9.3}",
                server.name,
                rate[i],
                rate[i] / rate[0],
                p99[i],
                cpu[i],
                cpu[i] / cpu[0]
            );
        }
    }

    let churn_rates = churn(&runtime, &servers, &args)?;
    let mut rows: Vec<(String, Vec<f64>)> = summary
        .iter()
        .map(|(name, rate, _, _)| {
            (
                format!("{name} msgs/s"),
                rate.iter().map(|r| r / rate[0]).collect(),
            )
        })
        .collect();
    rows.push((
        "churn conns/s".to_owned(),
        churn_rates.iter().map(|r| r / churn_rates[0]).collect(),
    ));

    if args.idle > 0 {
        println!(
            "\nmemory with {} idle connections (resident set of the server process)",
            args.idle
        );
        println!(
            "{:<15} {:>12} {:>12} {:>16}",
            "server", "before KiB", "after KiB", "KiB/connection"
        );
        let mut per_connection = Vec::new();
        for server in &servers {
            let before = server.rss_kib().unwrap_or(0);
            let clients = runtime.block_on(load::open_idle(&server.url, args.idle))?;
            std::thread::sleep(Duration::from_millis(500));
            let after = server.rss_kib().unwrap_or(0);
            let each = after.saturating_sub(before) as f64 / args.idle as f64;
            println!("{:<15} {before:>12} {after:>12} {each:>16.1}", server.name);
            per_connection.push(each);
            drop(clients);
        }
        for (server, each) in servers.iter().zip(&per_connection).skip(1) {
            println!(
                "ratio ({} / baseline): {:.2}",
                server.name,
                each / per_connection[0]
            );
        }
        rows.push((
            "idle conns per MiB".to_owned(),
            per_connection
                .iter()
                .map(|each| per_connection[0] / each.max(0.01))
                .collect(),
        ));
    }
    if let Some(path) = &args.chart {
        let ratios = crate::chart::Ratios {
            title: format!(
                "Echo throughput, churn{} against the bare tokio-tungstenite server ({})",
                if args.idle > 0 {
                    " and idle memory"
                } else {
                    ""
                },
                if pin { "pinned" } else { "unpinned" }
            ),
            series: servers.iter().map(|s| s.name.to_owned()).collect(),
            rows,
        };
        crate::chart::draw(path, &ratios)?;
    }
    Ok(())
}

/// Connection churn: connect, one 32 B echo, close, again, from 50 loops;
/// medians over the rounds.
/// Returns each server's median connections per second.
fn churn(
    runtime: &tokio::runtime::Runtime,
    servers: &[ServerProcess],
    args: &CompareArgs,
) -> anyhow::Result<Vec<f64>> {
    const PARALLEL: usize = 50;
    println!(
        "\nconnection churn: {PARALLEL} loops of connect, one 32 B echo, close (medians of {} rounds of {:?})",
        args.rounds, args.duration
    );
    println!(
        "{:<15} {:>12} {:>7} {:>9} {:>9} {:>11}",
        "server", "conns/s", "ratio", "p50 µs", "p99 µs", "CPU µs/conn"
    );
    let n = servers.len();
    let (mut rate, mut p50, mut p99, mut cpu) = (
        vec![Vec::new(); n],
        vec![Vec::new(); n],
        vec![Vec::new(); n],
        vec![Vec::new(); n],
    );
    for round in 0..args.rounds {
        for k in 0..n {
            let i = (k + round) % n;
            let cpu_before = servers[i].cpu_ns();
            let report = runtime.block_on(load::churn(
                &servers[i].url,
                PARALLEL,
                Duration::from_millis(500),
                args.duration,
            ))?;
            let cpu_us =
                (servers[i].cpu_ns() - cpu_before) as f64 / 1000.0 / report.all.max(1) as f64;
            rate[i].push(report.connections_per_second);
            p50[i].push(report.p50_us);
            p99[i].push(report.p99_us);
            cpu[i].push(cpu_us);
            // Let the sockets closed in this round leave TIME_WAIT's way.
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let base = median(rate[0].clone());
    let mut medians = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let r = median(rate[i].clone());
        println!(
            "{:<15} {:>12.0} {:>7.3} {:>9.0} {:>9.0} {:>11.1}",
            server.name,
            r,
            r / base,
            median(p50[i].clone()),
            median(p99[i].clone()),
            median(cpu[i].clone())
        );
        medians.push(r);
    }
    Ok(medians)
}
