//! `cargo xtask compare`: this exporter beside Debian's `prometheus-node-exporter`, on the same
//! machine, in the same run, both on loopback.
//!
//! It builds the release binary, installs node_exporter if missing (without starting its
//! packaged service), starts both on free loopback ports and measures, for each process:
//! start to first served `/metrics`, scrape latency (p50, p99 of sequential scrapes), CPU per
//! scrape, bytes and series per scrape, RSS after warm-up, idle CPU, and for this exporter the
//! CPU of one full collection (`POST /collect`) plus one scrape: node_exporter collects on every
//! scrape, so that pair is what its scrape must be compared with.
//!
//! How each figure is taken, so the table can be read without this file:
//! - Scrapes are plain HTTP/1.1 `GET /metrics` without `Accept-Encoding` (no gzip) and without
//!   `Accept` (both answer the 0.0.4 text format), sent one after the other over one keep-alive
//!   connection per exporter, as Prometheus does. Latency runs from writing the request to
//!   reading the body's last byte. Ten unmeasured warm-up scrapes come first.
//! - CPU is the process's `utime + stime` from `/proc/PID/stat` (every thread, exited ones
//!   included) before and after, in clock ticks (`sysconf(_SC_CLK_TCK)`): its resolution is one
//!   tick per window, so the table states it. A second figure sums the first field of
//!   `/proc/PID/task/*/schedstat` (nanoseconds on CPU per thread) as a precise cross-check; a
//!   thread that exits inside the window loses its share there, never in the tick figure.
//! - RSS is `VmRSS` from `/proc/PID/status` one second after the warm-up scrapes (the process
//!   at rest); peak RSS is `VmHWM` at the end of the run, which includes every body in flight.
//! - Idle CPU is the CPU delta of both processes over `--idle-seconds` (default 60) with no
//!   request at all; this exporter collects every 30 s (COLLECTION_INTERVAL=30), so a 60 s
//!   window holds two of its collections.
//!
//! Every process this command starts is killed when it ends, also on error (a guard's `Drop`)
//! and if the command itself dies (`PR_SET_PDEATHSIG`).
//!
//! `--scenario proxmox` (or `--guests N`, default 1000) runs the second scenario of issue 7
//! instead: this exporter alone in Proxmox host mode (PLATFORM=proxmox, EBPF=off, every default
//! collector) over a synthetic host of N guests (systemd containers and VMs), written by
//! `synthetic-host` (benches/src/bin) into target/compare/synthetic-N, with PROC_PATH,
//! SYS_PATH, CGROUP_PATH and PVE_PATH pointing into it; `--cgroup-stat-format 6.8` writes its
//! `cgroup.stat` files as Linux 6.8 does (Proxmox VE 8) instead of 6.11+. Binaries are taken
//! from `$CARGO_TARGET_DIR/release` when that is set, as cargo builds them there. It reports the CPU of `--collections` (`POST /collect`, `GET /metrics`) pairs per
//! pair and per guest, scrape latency and CPU (plain, and with `Accept-Encoding: gzip` as
//! Prometheus scrapes), bytes and series per scrape, RSS after warm-up, idle CPU and start to
//! first served /metrics. The tree lives on a regular filesystem, where a
//! file read costs less than on cgroupfs (see docs/TOOLCHAIN.md); node_exporter has no
//! counterpart of this mode and is not started.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::{setup, workspace_root};

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
const USAGE: &str = "usage: cargo xtask compare [--scrapes N] [--collections N] [--idle-seconds N] \
                     [--scenario node|proxmox] [--guests N] [--cgroup-stat-format 6.8|6.11]";

/// What the command line may change; the defaults are the issue's.
#[derive(Debug, Clone)]
struct Options {
    /// Measured sequential scrapes per exporter.
    scrapes: usize,
    /// Unmeasured scrapes before them (connection set-up, first allocations, page faults).
    warmup: usize,
    /// `POST /collect` + `GET /metrics` pairs measured on this exporter.
    collections: usize,
    /// Length of the idle window.
    idle_seconds: u64,
    /// `Some(N)`: the Proxmox host-mode scenario over N synthetic guests.
    guests: Option<usize>,
    /// How the synthetic host's `cgroup.stat` files look: `6.8` or `6.11`.
    cgroup_stat_format: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scrapes: 200,
            warmup: 10,
            collections: 50,
            idle_seconds: 60,
            guests: None,
            cgroup_stat_format: "6.11".to_owned(),
        }
    }
}

fn parse_options(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = |name: &str| -> anyhow::Result<u64> {
            let text = args.next().with_context(|| format!("{name} needs a value; {USAGE}"))?;
            let n: u64 = text
                .parse()
                .with_context(|| format!("{name} {text:?}: expected a positive integer"))?;
            ensure!(n > 0, "{name} must be at least 1");
            Ok(n)
        };
        match flag.as_str() {
            "--scrapes" => options.scrapes = value("--scrapes")? as usize,
            "--collections" => options.collections = value("--collections")? as usize,
            "--idle-seconds" => options.idle_seconds = value("--idle-seconds")?,
            "--guests" => options.guests = Some(value("--guests")? as usize),
            "--cgroup-stat-format" => match args.next().map(String::as_str) {
                Some(format @ ("6.8" | "6.11")) => {
                    options.cgroup_stat_format = format.to_owned();
                    options.guests = Some(options.guests.unwrap_or(DEFAULT_GUESTS));
                }
                other => bail!("--cgroup-stat-format {other:?}: expected 6.8 or 6.11; {USAGE}"),
            },
            "--scenario" => match args.next().map(String::as_str) {
                Some("proxmox") => options.guests = Some(options.guests.unwrap_or(DEFAULT_GUESTS)),
                Some("node") => options.guests = None,
                other => bail!("--scenario {other:?}: expected node or proxmox; {USAGE}"),
            },
            _ => bail!("unknown argument {flag:?}; {USAGE}"),
        }
    }
    Ok(options)
}

/// Guests of the Proxmox scenario when `--guests` does not say.
const DEFAULT_GUESTS: usize = 1000;

/// Runs the comparison and writes its table to target/compare.md (the Proxmox scenario to
/// target/compare-proxmox.md).
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let options = parse_options(args)?;
    let command = std::iter::once("cargo xtask compare".to_owned())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(guests) = options.guests {
        return run_proxmox(&options, guests, command);
    }
    setup::apt_install(&["prometheus-node-exporter"])?;
    crate::run("cargo", &["build", "--release", "-p", "metrics-exporter"], &[])?;
    let root = workspace_root();
    let ours_binary = release_dir().join("metrics-exporter");
    let logs = root.join("target/compare");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let tick = clock_tick()?;
    let load = load_average();

    // One at a time, so that neither start-up competes with the other for the two cores.
    let ours_port = free_port()?;
    let mut ours_command = Command::new(&ours_binary);
    ours_command
        .env_clear()
        .env("PLATFORM", "host")
        .env("EBPF", "off")
        .env("COLLECTION_INTERVAL", "30")
        .env("LISTEN_ADDRESS", "127.0.0.1")
        .env("METRICS_PORT", ours_port.to_string())
        .env("LOG_LEVEL", "warn");
    let (ours, ours_start) = Exporter::start("metrics-exporter", ours_command, ours_port, &logs)?;

    let node_port = free_port()?;
    let mut node_command = Command::new(NODE_EXPORTER);
    node_command.arg(format!("--web.listen-address=127.0.0.1:{node_port}"));
    let (node, node_start) = Exporter::start("node_exporter", node_command, node_port, &logs)?;

    eprintln!("measuring {} scrapes of each", options.scrapes);
    let ours_scrapes = measure_scrapes(&ours, &options, Encoding::Identity)?;
    let node_scrapes = measure_scrapes(&node, &options, Encoding::Identity)?;

    eprintln!(
        "measuring {} collections + scrapes of metrics-exporter",
        options.collections
    );
    let pairs = measure_collect_and_scrape(&ours, options.collections)?;

    eprintln!("measuring idle CPU over {} s (no requests)", options.idle_seconds);
    let (ours_idle, node_idle) = measure_idle(&ours, &node, options.idle_seconds)?;

    let versions = (version_of(&ours_binary), version_of(Path::new(NODE_EXPORTER)));
    let peak_rss = (peak_rss_bytes(ours.pid())?, peak_rss_bytes(node.pid())?);
    drop(node);
    drop(ours);

    let report = Report {
        command,
        load,
        options,
        tick,
        versions,
        start: (ours_start, node_start),
        scrapes: (ours_scrapes, node_scrapes),
        pairs,
        idle: (ours_idle, node_idle),
        peak_rss,
    };
    let text = report.markdown();
    println!("{text}");
    let path = root.join("target/compare.md");
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("written to {}", path.display());
    Ok(())
}

/// The Proxmox host-mode scenario: see the module documentation.
fn run_proxmox(options: &Options, guests: usize, command: String) -> anyhow::Result<()> {
    crate::run(
        "cargo",
        &[
            "build",
            "--release",
            "-p",
            "metrics-exporter",
            "-p",
            "benches",
            "--bin",
            "metrics-exporter",
            "--bin",
            "synthetic-host",
        ],
        &[],
    )?;
    let root = workspace_root();
    let release = release_dir();
    let ours_binary = release.join("metrics-exporter");
    let logs = root.join("target/compare");
    let tree = logs.join(format!("synthetic-{guests}"));
    // A fresh tree each run: a tree left by an older generator would measure something else.
    if tree.exists() {
        std::fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    eprintln!(
        "writing a synthetic Proxmox host of {guests} guests to {}",
        tree.display()
    );
    let written = Command::new(release.join("synthetic-host"))
        .args(["--cgroup-stat-format", &options.cgroup_stat_format])
        .arg(&tree)
        .arg(guests.to_string())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run synthetic-host")?;
    ensure!(
        written.status.success(),
        "synthetic-host failed with {}",
        written.status
    );
    // It prints the path variables that point into the tree, `NAME=value` per line.
    let paths: Vec<(String, String)> = String::from_utf8(written.stdout)
        .context("synthetic-host printed non-UTF-8")?
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    ensure!(
        paths.iter().any(|(k, _)| k == "CGROUP_PATH"),
        "synthetic-host printed no CGROUP_PATH"
    );
    let tick = clock_tick()?;
    let load = load_average();

    let port = free_port()?;
    let mut ours_command = Command::new(&ours_binary);
    ours_command
        .env_clear()
        .env("PLATFORM", "proxmox")
        .env("EBPF", "off")
        .env("COLLECTION_INTERVAL", "30")
        .env("LISTEN_ADDRESS", "127.0.0.1")
        .env("METRICS_PORT", port.to_string())
        .env("LOG_LEVEL", "warn")
        .envs(paths.iter().map(|(k, v)| (k, v)));
    let (ours, start) = Exporter::start("metrics-exporter", ours_command, port, &logs)?;

    eprintln!("measuring {} scrapes", options.scrapes);
    let scrapes = measure_scrapes(&ours, options, Encoding::Identity)?;
    eprintln!("measuring {} scrapes with Accept-Encoding: gzip", options.scrapes);
    let gzip_scrapes = measure_scrapes(&ours, options, Encoding::Gzip)?;
    eprintln!("measuring {} collections + scrapes", options.collections);
    let pairs = measure_collect_and_scrape(&ours, options.collections)?;
    std::thread::sleep(RSS_SETTLE);
    let rss_after = rss_bytes(ours.pid())?;
    eprintln!("measuring idle CPU over {} s (no requests)", options.idle_seconds);
    let idle_before = read_cpu(ours.pid())?;
    std::thread::sleep(Duration::from_secs(options.idle_seconds));
    let idle = cpu_delta(&idle_before, &read_cpu(ours.pid())?, tick);
    let version = version_of(&ours_binary);
    let peak_rss = peak_rss_bytes(ours.pid())?;
    drop(ours);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let n = options.scrapes as f64;
    let k = options.collections as f64;
    let per_guest = |seconds: f64| seconds * 1e6 / (k * guests as f64);
    let idle_s = options.idle_seconds as f64;
    let tick_ms = ms(tick);
    let rows: Vec<(String, String)> = vec![
        (
            format!(
                "collection + scrape CPU per guest, utime+stime (µs; ±{} µs)",
                sig3(tick_ms * 1e3 / (k * guests as f64))
            ),
            sig3(per_guest(pairs.seconds)),
        ),
        (
            "collection + scrape CPU per guest, Σ thread schedstat (µs)".into(),
            sig3(per_guest(pairs.sched_seconds)),
        ),
        (
            "collection + scrape CPU, Σ thread schedstat (ms)".into(),
            sig3(pairs.sched_seconds * 1e3 / k),
        ),
        (
            "scrape latency p50 (ms)".into(),
            sig3(ms(percentile(&scrapes.latencies, 50.0))),
        ),
        (
            "scrape latency p99 (ms)".into(),
            sig3(ms(percentile(&scrapes.latencies, 99.0))),
        ),
        (
            "CPU per scrape, Σ thread schedstat (ms)".into(),
            sig3(scrapes.cpu.sched_seconds * 1e3 / n),
        ),
        ("bytes per scrape".into(), scrapes.bytes.to_string()),
        ("series per scrape".into(), scrapes.series.to_string()),
        (
            "gzip scrape (as Prometheus asks) latency p50 (ms)".into(),
            sig3(ms(percentile(&gzip_scrapes.latencies, 50.0))),
        ),
        (
            "gzip scrape latency p99 (ms)".into(),
            sig3(ms(percentile(&gzip_scrapes.latencies, 99.0))),
        ),
        (
            "CPU per gzip scrape, Σ thread schedstat (ms)".into(),
            sig3(gzip_scrapes.cpu.sched_seconds * 1e3 / n),
        ),
        ("bytes per gzip scrape".into(), gzip_scrapes.bytes.to_string()),
        ("RSS after warm-up (MiB)".into(), sig3(scrapes.rss as f64 / 1048576.0)),
        (
            "RSS after the gzip warm-up scrapes (MiB)".into(),
            sig3(gzip_scrapes.rss as f64 / 1048576.0),
        ),
        (
            "RSS after the collections (MiB)".into(),
            sig3(rss_after as f64 / 1048576.0),
        ),
        (
            "peak RSS over the whole run, VmHWM (MiB)".into(),
            sig3(peak_rss as f64 / 1048576.0),
        ),
        (
            format!(
                "idle CPU over {} s, utime+stime (% of one core; ±{})",
                options.idle_seconds,
                sig3(tick_ms / 1e3 / idle_s * 100.0)
            ),
            sig3(idle.seconds / idle_s * 100.0),
        ),
        (
            format!(
                "idle CPU over {} s, Σ thread schedstat (% of one core; low when a pool thread exits in the window)",
                options.idle_seconds
            ),
            sig3(idle.sched_seconds / idle_s * 100.0),
        ),
        ("start to first served /metrics (ms)".into(), sig3(ms(start))),
    ];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## metrics-exporter in Proxmox host mode, {guests} synthetic guests, cgroup.stat as Linux {}\n",
        options.cgroup_stat_format
    );
    let _ = writeln!(out, "Command: `{command}`\n");
    let _ = writeln!(out, "Machine: {}\n", machine());
    let _ = writeln!(out, "Load average (1, 5, 15 min) at the start: {load}\n");
    let _ = writeln!(
        out,
        "Version: {version} (PLATFORM=proxmox, EBPF=off, COLLECTION_INTERVAL=30, default collectors)\n"
    );
    let _ = writeln!(out, "| metric | metrics-exporter |");
    let _ = writeln!(out, "|---|---:|");
    for (name, value) in rows {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    let _ = writeln!(
        out,
        "\nThe tree ({tree}) is on a regular filesystem: reads there cost less than on cgroupfs. \
         Collection CPU is that of {k} `POST /collect` + `GET /metrics` pairs divided by {k}·{guests}; \
         it includes the node-level collectors, which read the tree's mostly empty /proc. \
         {scrapes} sequential plain-text scrapes after {warmup} warm-up scrapes, then as many with \
         `Accept-Encoding: gzip`. Snapshots of more than 10,000 series keep only their compressed \
         body: a plain scrape encodes the text again. Idle: no requests for {idle} s.",
        tree = tree.display(),
        k = options.collections,
        scrapes = options.scrapes,
        warmup = options.warmup,
        idle = options.idle_seconds,
    );
    println!("{out}");
    let path = root.join("target/compare-proxmox.md");
    std::fs::write(&path, &out).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("written to {}", path.display());
    Ok(())
}

/// Where cargo puts release binaries: `$CARGO_TARGET_DIR/release`, else the workspace's
/// target/release.
fn release_dir() -> std::path::PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir).join("release"),
        _ => workspace_root().join("target/release"),
    }
}

/// A free loopback port: the kernel picks one and we release it for the exporter. Another
/// process could take it in between; the exporter would then fail to bind and say so.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a loopback port")?;
    Ok(listener.local_addr()?.port())
}

fn clock_tick() -> anyhow::Result<Duration> {
    // SAFETY: sysconf only reads a configuration value; it has no memory-safety preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ensure!(per_second > 0, "sysconf(_SC_CLK_TCK) failed");
    Ok(Duration::from_secs_f64(1.0 / per_second as f64))
}

fn version_of(binary: &Path) -> String {
    // node_exporter prints its version on stderr, ours on stdout.
    Command::new(binary)
        .arg("--version")
        .output()
        .map(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// A running exporter; dropping it stops the process (SIGTERM, then SIGKILL after 3 s).
#[derive(Debug)]
struct Exporter {
    name: &'static str,
    child: Child,
    address: SocketAddr,
}

impl Exporter {
    /// Spawns the process and waits for its first `200` on `/metrics`; returns the time from
    /// spawn to that answer (our exporter answers 503 until its first collection is published).
    fn start(name: &'static str, mut command: Command, port: u16, logs: &Path) -> anyhow::Result<(Self, Duration)> {
        let log_path = logs.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        use std::os::unix::process::CommandExt as _;
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
        // is async-signal-safe; it allocates nothing and touches no lock.
        unsafe {
            command.pre_exec(|| {
                // If this command dies without running its guards (SIGKILL), the exporter dies too.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        eprintln!("starting {name} on 127.0.0.1:{port} (log: {})", log_path.display());
        let spawned = Instant::now();
        let child = command.spawn().with_context(|| format!("cannot start {name}"))?;
        let mut exporter = Exporter {
            name,
            child,
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        };
        let deadline = spawned + Duration::from_secs(30);
        loop {
            if let Some(status) = exporter.child.try_wait()? {
                bail!(
                    "{name} exited with {status} before serving /metrics; see {}",
                    log_path.display()
                );
            }
            // A fresh connection per attempt: before the bind it is refused, before the first
            // collection the answer is 503.
            if let Ok(mut client) = Client::connect(exporter.address)
                && let Ok(response) = client.request("GET", "/metrics")
                && response.status == 200
            {
                return Ok((exporter, spawned.elapsed()));
            }
            if Instant::now() > deadline {
                bail!("{name} served no /metrics within 30 s; see {}", log_path.display());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our own unreaped child,
            // so it cannot have been reused by another process.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!("{} ignored SIGTERM for 3 s; killing it", self.name);
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 client over one keep-alive connection: the measurement should see the
/// exporter's cost, not a client library's (and xtask stays free of an HTTP stack).
struct Client {
    address: SocketAddr,
    reader: BufReader<TcpStream>,
}

struct Response {
    status: u16,
    body: Vec<u8>,
    close: bool,
}

impl Client {
    fn connect(address: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        // A collection on a slow machine can take seconds; a hung exporter must not hang us.
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Client {
            address,
            reader: BufReader::with_capacity(64 * 1024, stream),
        })
    }

    fn request(&mut self, method: &str, path: &str) -> anyhow::Result<Response> {
        self.request_with(method, path, "")
    }

    /// A request with `headers` (complete `Name: value\r\n` lines) added.
    fn request_with(&mut self, method: &str, path: &str, headers: &str) -> anyhow::Result<Response> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: xtask-compare\r\n{}{headers}\r\n",
            self.address,
            if method == "POST" { "Content-Length: 0\r\n" } else { "" }
        );
        self.reader.get_mut().write_all(head.as_bytes())?;
        let response = self.read_response()?;
        if response.close {
            *self = Client::connect(self.address)?;
        }
        Ok(response)
    }

    fn read_line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        ensure!(
            self.reader.read_line(&mut line)? > 0,
            "connection closed by the exporter"
        );
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    fn read_response(&mut self) -> anyhow::Result<Response> {
        let status_line = self.read_line()?;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                bail!("bad header line {line:?}");
            };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = Some(value.parse::<usize>()?),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            // Go's net/http (node_exporter) streams bodies it did not size in advance.
            loop {
                let size_line = self.read_line()?;
                let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                    .with_context(|| format!("bad chunk size {size_line:?}"))?;
                if size == 0 {
                    while !self.read_line()?.is_empty() {}
                    break;
                }
                // Same reason as below: no byte-by-byte `resize` in an unoptimised build.
                let mut chunk = vec![0; size];
                self.reader.read_exact(&mut chunk)?;
                body.extend_from_slice(&chunk);
                ensure!(self.read_line()?.is_empty(), "chunk not followed by CRLF");
            }
        } else if let Some(length) = length {
            // `vec![0; n]` is one zeroed allocation (calloc); `resize` fills byte by byte,
            // which in xtask's unoptimised build took ~19 ms of the measured latency of a
            // 4.9 MB body (the 1000-guest scenario) and was charged to the exporter.
            body = vec![0; length];
            self.reader.read_exact(&mut body)?;
        } else {
            self.reader.read_to_end(&mut body)?;
            close = true;
        }
        Ok(Response { status, body, close })
    }
}

/// CPU used so far by a process, two ways.
#[derive(Debug, Clone)]
struct CpuReading {
    /// utime + stime of every thread, exited ones included, in clock ticks.
    ticks: u64,
    /// Nanoseconds on CPU per live thread (`/proc/PID/task/TID/schedstat`).
    threads: HashMap<u32, u64>,
}

/// CPU used over a window.
#[derive(Debug, Clone, Copy)]
struct CpuDelta {
    /// From the tick count.
    seconds: f64,
    /// From schedstat: precise, but blind to threads that exited inside the window.
    sched_seconds: f64,
}

fn read_cpu(pid: u32) -> anyhow::Result<CpuReading> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = stat_ticks(&stat).with_context(|| format!("parsing {path}"))?;
    let mut threads = HashMap::new();
    let tasks = format!("/proc/{pid}/task");
    for entry in std::fs::read_dir(&tasks).with_context(|| format!("listing {tasks}"))? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // A thread may exit between the listing and the read: it then simply is not counted.
        if let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat"))
            && let Some(ns) = text.split_whitespace().next().and_then(|s| s.parse().ok())
        {
            threads.insert(tid, ns);
        }
    }
    Ok(CpuReading { ticks, threads })
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in clock ticks.
fn stat_ticks(stat: &str) -> anyhow::Result<u64> {
    // The command name (field 2) may hold spaces and parentheses: fields restart after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("no ')'")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')', index 0 is field 3 (state), so utime (field 14) is index 11, stime index 12.
    let field = |i: usize| -> anyhow::Result<u64> {
        let text = fields.get(i).with_context(|| format!("no field {}", i + 3))?;
        text.parse().with_context(|| format!("field {}: {text:?}", i + 3))
    };
    Ok(field(11)? + field(12)?)
}

fn cpu_delta(before: &CpuReading, after: &CpuReading, tick: Duration) -> CpuDelta {
    let ticks = after.ticks.saturating_sub(before.ticks);
    // A thread born inside the window counts from zero.
    let ns: u64 = after
        .threads
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.threads.get(tid).copied().unwrap_or(0)))
        .sum();
    CpuDelta {
        seconds: ticks as f64 * tick.as_secs_f64(),
        sched_seconds: ns as f64 / 1e9,
    }
}

fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    status_bytes(pid, "VmRSS:")
}

/// The highest RSS the process has had (`VmHWM`): what a scrape's body or a collection adds
/// while it is in flight.
fn peak_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    status_bytes(pid, "VmHWM:")
}

fn status_bytes(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .with_context(|| format!("{path} has no {field}"))?;
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse()?;
    Ok(kib * 1024)
}

/// How long a process is left alone after the warm-up scrapes before its RSS is read: the
/// last response's body is released when the server has finished with the connection, not
/// when the client has read it (a plain scrape of 1000 guests is 4.9 MB).
const RSS_SETTLE: Duration = Duration::from_secs(1);

/// Samples (non-comment, non-empty lines) of a text-format body.
fn count_series(body: &[u8]) -> usize {
    body.split(|&b| b == b'\n')
        .filter(|line| !line.is_empty() && !line.starts_with(b"#"))
        .count()
}

#[derive(Debug)]
struct ScrapeResult {
    latencies: Vec<Duration>,
    cpu: CpuDelta,
    bytes: usize,
    series: usize,
    rss: u64,
}

/// How a scrape asks for its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// No `Accept-Encoding`: the plain text.
    Identity,
    /// `Accept-Encoding: gzip`, as Prometheus sends.
    Gzip,
}

fn measure_scrapes(exporter: &Exporter, options: &Options, encoding: Encoding) -> anyhow::Result<ScrapeResult> {
    let mut client = Client::connect(exporter.address)?;
    let headers = match encoding {
        Encoding::Identity => "",
        Encoding::Gzip => "Accept-Encoding: gzip\r\n",
    };
    let scrape = |client: &mut Client| -> anyhow::Result<Vec<u8>> {
        let response = client.request_with("GET", "/metrics", headers)?;
        ensure!(
            response.status == 200,
            "{}: /metrics answered {}",
            exporter.name,
            response.status
        );
        Ok(response.body)
    };
    for _ in 0..options.warmup {
        scrape(&mut client)?;
    }
    std::thread::sleep(RSS_SETTLE);
    let rss = rss_bytes(exporter.pid())?;
    let mut latencies = Vec::with_capacity(options.scrapes);
    let mut last = Vec::new();
    let before = read_cpu(exporter.pid())?;
    for _ in 0..options.scrapes {
        let started = Instant::now();
        last = scrape(&mut client)?;
        latencies.push(started.elapsed());
    }
    let after = read_cpu(exporter.pid())?;
    Ok(ScrapeResult {
        latencies,
        cpu: cpu_delta(&before, &after, clock_tick()?),
        bytes: last.len(),
        // A compressed body is not unpacked here: its series are those of the plain text.
        series: if encoding == Encoding::Identity {
            count_series(&last)
        } else {
            0
        },
        rss,
    })
}

/// CPU of `n` (POST /collect, GET /metrics) pairs: what one full collection plus one scrape costs.
fn measure_collect_and_scrape(exporter: &Exporter, n: usize) -> anyhow::Result<CpuDelta> {
    let mut client = Client::connect(exporter.address)?;
    let before = read_cpu(exporter.pid())?;
    for _ in 0..n {
        let collected = client.request("POST", "/collect?wait")?;
        ensure!(collected.status == 200, "POST /collect answered {}", collected.status);
        let scraped = client.request("GET", "/metrics")?;
        ensure!(scraped.status == 200, "/metrics answered {}", scraped.status);
    }
    let after = read_cpu(exporter.pid())?;
    Ok(cpu_delta(&before, &after, clock_tick()?))
}

fn measure_idle(a: &Exporter, b: &Exporter, seconds: u64) -> anyhow::Result<(CpuDelta, CpuDelta)> {
    // Both in the same window: neither is asked anything, so they do not disturb each other.
    let (a0, b0) = (read_cpu(a.pid())?, read_cpu(b.pid())?);
    std::thread::sleep(Duration::from_secs(seconds));
    let (a1, b1) = (read_cpu(a.pid())?, read_cpu(b.pid())?);
    let tick = clock_tick()?;
    Ok((cpu_delta(&a0, &a1, tick), cpu_delta(&b0, &b1, tick)))
}

/// Nearest-rank percentile of unsorted samples.
fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Three significant digits, without an exponent for the magnitudes seen here.
fn sig3(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let decimals = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.decimals$}")
}

/// How a row's figures are known.
#[derive(Debug, Clone, Copy)]
enum Precision {
    /// A measured quantity: three significant digits.
    Measured,
    /// A count: printed whole.
    Count,
    /// Counted in clock ticks: known to one tick per window (this much, in the row's unit), so
    /// zero means "below one tick", which the table says instead of claiming zero.
    Ticks(f64),
}

fn cell(x: f64, precision: Precision) -> String {
    match precision {
        Precision::Count => format!("{x:.0}"),
        Precision::Ticks(r) if x == 0.0 => format!("< {}", sig3(r)),
        _ => sig3(x),
    }
}

fn ratio(ours: f64, theirs: f64, precision: Precision) -> String {
    match precision {
        Precision::Ticks(_) if ours == 0.0 && theirs == 0.0 => "n/a (both below one tick)".to_owned(),
        _ if theirs <= 0.0 => "n/a (node_exporter: 0)".to_owned(),
        Precision::Ticks(r) if ours == 0.0 => format!("< {}×", sig3(r / theirs)),
        _ => format!("{}×", sig3(ours / theirs)),
    }
}

struct Report {
    command: String,
    load: String,
    options: Options,
    tick: Duration,
    versions: (String, String),
    start: (Duration, Duration),
    scrapes: (ScrapeResult, ScrapeResult),
    pairs: CpuDelta,
    idle: (CpuDelta, CpuDelta),
    /// `VmHWM` of each at the end.
    peak_rss: (u64, u64),
}

impl Report {
    fn markdown(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (ours, node) = &self.scrapes;
        let n = self.options.scrapes as f64;
        let pairs = self.options.collections as f64;
        let idle = self.options.idle_seconds as f64;
        let tick_ms = ms(self.tick);
        // One clock tick over the window, in each row's unit.
        let per_scrape_tick = Precision::Ticks(tick_ms / n);
        let per_pair_tick = Precision::Ticks(tick_ms / pairs);
        let idle_tick = Precision::Ticks(tick_ms / 1e3 / idle * 100.0);
        let rows: Vec<(String, f64, f64, Precision)> = vec![
            (
                "scrape latency p50 (ms)".into(),
                ms(percentile(&ours.latencies, 50.0)),
                ms(percentile(&node.latencies, 50.0)),
                Precision::Measured,
            ),
            (
                "scrape latency p99 (ms)".into(),
                ms(percentile(&ours.latencies, 99.0)),
                ms(percentile(&node.latencies, 99.0)),
                Precision::Measured,
            ),
            (
                format!("CPU per scrape, utime+stime (ms; ±{} ms)", sig3(tick_ms / n)),
                ours.cpu.seconds * 1e3 / n,
                node.cpu.seconds * 1e3 / n,
                per_scrape_tick,
            ),
            (
                "CPU per scrape, Σ thread schedstat (ms)".into(),
                ours.cpu.sched_seconds * 1e3 / n,
                node.cpu.sched_seconds * 1e3 / n,
                Precision::Measured,
            ),
            (
                format!(
                    "CPU of one full collection + one scrape, utime+stime (ms; ±{} ms)",
                    sig3(tick_ms / pairs)
                ),
                self.pairs.seconds * 1e3 / pairs,
                node.cpu.seconds * 1e3 / n,
                per_pair_tick,
            ),
            (
                "CPU of one full collection + one scrape, Σ thread schedstat (ms)".into(),
                self.pairs.sched_seconds * 1e3 / pairs,
                node.cpu.sched_seconds * 1e3 / n,
                Precision::Measured,
            ),
            (
                "bytes per scrape".into(),
                ours.bytes as f64,
                node.bytes as f64,
                Precision::Count,
            ),
            (
                "series per scrape".into(),
                ours.series as f64,
                node.series as f64,
                Precision::Count,
            ),
            (
                "RSS after warm-up (MiB)".into(),
                ours.rss as f64 / 1048576.0,
                node.rss as f64 / 1048576.0,
                Precision::Measured,
            ),
            (
                "peak RSS over the whole run, VmHWM (MiB)".into(),
                self.peak_rss.0 as f64 / 1048576.0,
                self.peak_rss.1 as f64 / 1048576.0,
                Precision::Measured,
            ),
            (
                format!(
                    "idle CPU over {} s, utime+stime (% of one core; ±{})",
                    self.options.idle_seconds,
                    sig3(tick_ms / 1e3 / idle * 100.0)
                ),
                self.idle.0.seconds / idle * 100.0,
                self.idle.1.seconds / idle * 100.0,
                idle_tick,
            ),
            (
                format!(
                    "idle CPU over {} s, Σ thread schedstat (% of one core)",
                    self.options.idle_seconds
                ),
                self.idle.0.sched_seconds / idle * 100.0,
                self.idle.1.sched_seconds / idle * 100.0,
                Precision::Measured,
            ),
            (
                "start to first served /metrics (ms)".into(),
                ms(self.start.0),
                ms(self.start.1),
                Precision::Measured,
            ),
        ];
        let mut out = String::new();
        let _ = writeln!(out, "## metrics-exporter vs node_exporter\n");
        let _ = writeln!(out, "Command: `{}`\n", self.command);
        let _ = writeln!(out, "Machine: {}\n", machine());
        // Other work on a 2-core machine shows in every figure: the load says how much there was.
        let _ = writeln!(out, "Load average (1, 5, 15 min) at the start: {}\n", self.load);
        let _ = writeln!(
            out,
            "Versions: {} (PLATFORM=host, EBPF=off, COLLECTION_INTERVAL=30); {} (its defaults)\n",
            self.versions.0, self.versions.1
        );
        let _ = writeln!(
            out,
            "| metric | metrics-exporter | node_exporter | ratio (ours / node_exporter) |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for (name, a, b, precision) in rows {
            let (a_cell, b_cell) = (cell(a, precision), cell(b, precision));
            let _ = writeln!(out, "| {name} | {a_cell} | {b_cell} | {} |", ratio(a, b, precision));
        }
        let _ = writeln!(
            out,
            "\n{scrapes} sequential plain-text scrapes (no gzip) over one keep-alive connection each, after \
             {warmup} warm-up scrapes; CPU from /proc/PID/stat (clock tick {tick} ms) and, as a precise \
             cross-check, the sum of /proc/PID/task/*/schedstat. A full collection is `POST /collect`, \
             {pairs} times, each followed by one scrape; node_exporter collects on every scrape, so its \
             column there is its CPU per scrape. Idle: no requests for {idle} s, both exporters in the same window.",
            scrapes = self.options.scrapes,
            warmup = self.options.warmup,
            tick = sig3(tick_ms),
            pairs = self.options.collections,
            idle = self.options.idle_seconds,
        );
        out
    }
}

fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(", ")
}

/// Kernel, CPU model, logical CPUs and RAM, from /proc.
fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim())
        })
        .unwrap_or("unknown CPU")
        .to_owned();
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let ram_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_default();
    format!(
        "{os}, Linux {kernel}, {model}, {cores} logical CPUs, {:.1} GiB RAM",
        ram_kib as f64 / 1048576.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_sums_utime_and_stime_after_an_awkward_name() {
        let line = "4242 (a b) c)) S 1 4242 4242 0 -1 4194560 1200 0 0 0 37 5 0 0 20 0 3 0 100 0 0\n";
        assert_eq!(stat_ticks(line).unwrap(), 42);
        assert!(stat_ticks("4242 (short) S 1 2").is_err());
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let samples: Vec<Duration> = (1..=200).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(100));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(198));
        assert_eq!(percentile(&samples[..1], 99.0), Duration::from_millis(200));
    }

    #[test]
    fn series_are_sample_lines() {
        let body = b"# HELP a A.\n# TYPE a gauge\na 1\nb{x=\"#\"} 2\n\n";
        assert_eq!(count_series(body), 2);
    }

    #[test]
    fn tick_rows_below_resolution_say_so() {
        assert_eq!(cell(0.0, Precision::Ticks(0.05)), "< 0.0500");
        assert_eq!(cell(1.0, Precision::Ticks(0.2)), "1.00");
        assert_eq!(cell(507.0, Precision::Count), "507");
        assert_eq!(ratio(0.0, 5.0, Precision::Ticks(0.05)), "< 0.0100×");
        assert_eq!(ratio(0.0, 0.0, Precision::Ticks(0.05)), "n/a (both below one tick)");
        assert_eq!(ratio(1.0, 4.0, Precision::Measured), "0.250×");
        assert_eq!(sig3(12.04), "12.0");
    }

    #[test]
    fn chunked_and_sized_bodies_are_read_over_keep_alive() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            for answer in [
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy",
            ] {
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap() > 2 {
                    line.clear();
                }
                stream.write_all(answer.as_bytes()).unwrap();
            }
        });
        let mut client = Client::connect(address).unwrap();
        let first = client.request("GET", "/metrics").unwrap();
        assert_eq!((first.status, first.body.as_slice()), (200, &b"abcde"[..]));
        let second = client.request("GET", "/metrics").unwrap();
        assert_eq!((second.status, second.body.as_slice()), (503, &b"busy"[..]));
        server.join().unwrap();
    }
}
