//! The HTTP side, in process (router without a socket; hyper server with small limits) and
//! through the binary: routing, HEAD, 404/405, negotiation, gzip, limits, slow clients,
//! graceful shutdown, and POST /collect coalesced and rate limited.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use metrics_exporter::collectors::{CATALOGUE, Collector};
use metrics_exporter::config::{RawConfig, validate};
use metrics_exporter::engine::Engine;
use metrics_exporter::error::CollectError;
use metrics_exporter::http::{Limits, route};
use metrics_exporter::model::{Kind, MetricDesc, Scope, SnapshotBuilder, Unit};
use metrics_exporter::platform::{Detection, IdentitySources};
use metrics_exporter::service::{self, App, AppParts};
use tokio::sync::watch;

static RUNS: MetricDesc = MetricDesc {
    name: "test_collector_runs_total",
    help: "Times the test collector ran.",
    kind: Kind::Counter,
    unit: Unit::Count("{run}"),
    labels: &["path"],
    scope: Scope::Node,
    otel: None,
};

/// A collector that counts its runs and takes `delay` (to make collections overlap requests).
struct Slow {
    delay: Duration,
    runs: Arc<AtomicU64>,
}

impl Collector for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }
    fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
        std::thread::sleep(self.delay);
        let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        out.push(&RUNS, ["/srv/www data \"quoted\" back\\slash"], n as f64);
        Ok(())
    }
}

struct Harness {
    app: Arc<App>,
    runs: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    loop_task: tokio::task::JoinHandle<Engine>,
}

async fn harness(delay: Duration) -> Harness {
    let runs = Arc::new(AtomicU64::new(0));
    let slow = Slow {
        delay,
        runs: Arc::clone(&runs),
    };
    harness_with(Box::new(slow), runs).await
}

struct AlwaysFails;

impl Collector for AlwaysFails {
    fn name(&self) -> &'static str {
        "always_fails"
    }
    fn collect(&mut self, _: &mut SnapshotBuilder) -> Result<(), CollectError> {
        Err(CollectError::Vanished {
            path: "/sys/fs/cgroup/lxc/999/cpu.stat".into(),
        })
    }
}

async fn harness_with(collector: Box<dyn Collector>, runs: Arc<AtomicU64>) -> Harness {
    let config = validate(&RawConfig::default(), &["memory"]).unwrap();
    let engine = Engine::new(vec![collector], Arc::default(), "/proc".into(), "host");
    let parts = AppParts {
        config,
        detection: Detection::default(),
        identity: Arc::default(),
        identity_sources: IdentitySources {
            host_name: "test".into(),
            container_id: "test".into(),
        },
        catalogue: CATALOGUE,
        enabled: engine.collector_names(),
        notes: Vec::new(),
    };
    let (app, handles) = service::new_app(parts, Vec::new());
    let (stop, stop_rx) = watch::channel(false);
    let loop_task = tokio::spawn(service::run_loop(engine, Arc::clone(&app), handles, None, stop_rx));
    // The first tick collects at once; wait for it.
    while app.latest().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Harness {
        app,
        runs,
        stop,
        loop_task,
    }
}

fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> hyper::Request<()> {
    let mut builder = hyper::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(()).unwrap()
}

async fn body_of(response: hyper::Response<metrics_exporter::http::Body>) -> Vec<u8> {
    use http_body_util::BodyExt;
    response.into_body().collect().await.unwrap().to_bytes().to_vec()
}

#[tokio::test]
async fn router_statuses_methods_and_head() {
    let h = harness(Duration::ZERO).await;
    let app = &h.app;
    assert_eq!(route(req("GET", "/nope", &[]), app).await.status(), 404);
    let r = route(req("DELETE", "/metrics", &[]), app).await;
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    let r = route(req("GET", "/collect", &[]), app).await;
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    for path in ["/", "/metrics", "/health", "/status", "/collectors"] {
        let get = route(req("GET", path, &[]), app).await;
        assert_eq!(get.status(), 200, "{path}");
        let get_type = get.headers()["content-type"].clone();
        let get_len = body_of(get).await.len();
        let head = route(req("HEAD", path, &[]), app).await;
        assert_eq!(head.status(), 200, "{path}");
        assert_eq!(head.headers()["content-type"], get_type, "{path}");
        let head_len: usize = head.headers()["content-length"].to_str().unwrap().parse().unwrap();
        if path == "/health" || path == "/status" {
            // Their bodies carry elapsed times, whose printed length may differ by a digit.
            assert!(head_len.abs_diff(get_len) < 8, "{path}: {head_len} vs {get_len}");
        } else {
            assert_eq!(head_len, get_len, "{path}");
        }
        assert!(body_of(head).await.is_empty(), "{path}");
    }
}

#[tokio::test]
async fn metrics_negotiates_openmetrics_and_gzip() {
    let h = harness(Duration::ZERO).await;
    let plain = route(req("GET", "/metrics", &[]), &h.app).await;
    assert_eq!(
        plain.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let plain = String::from_utf8(body_of(plain).await).unwrap();
    assert!(
        plain.contains(r#"test_collector_runs_total{path="/srv/www data \"quoted\" back\\slash"} 1.0"#),
        "{plain}"
    );

    let zipped = route(req("GET", "/metrics", &[("accept-encoding", "br, gzip;q=0.8")]), &h.app).await;
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&body_of(zipped).await[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);

    let refused = route(req("GET", "/metrics", &[("accept-encoding", "gzip;q=0")]), &h.app).await;
    assert!(refused.headers().get("content-encoding").is_none());

    let om = route(
        req(
            "GET",
            "/metrics",
            &[(
                "accept",
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.4",
            )],
        ),
        &h.app,
    )
    .await;
    assert_eq!(
        om.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let om = String::from_utf8(body_of(om).await).unwrap();
    assert!(om.ends_with("# EOF\n"), "{om}");
}

#[tokio::test]
async fn health_and_status_carry_the_seed_fields() {
    let h = harness(Duration::ZERO).await;
    let health: serde_json::Value =
        serde_json::from_slice(&body_of(route(req("GET", "/health", &[]), &h.app).await).await).unwrap();
    for field in [
        "status",
        "last_collection_seconds_ago",
        "collection_interval",
        "total_collections",
        "collection_errors",
        "export_format",
        "exporter_healthy",
    ] {
        assert!(health.get(field).is_some(), "/health lacks {field}: {health}");
    }
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["collection_interval"], 30);
    assert_eq!(health["total_collections"], 1);
    assert_eq!(health["export_format"], "prometheus");
    assert_eq!(health["exporter_healthy"], true);
    let status: serde_json::Value =
        serde_json::from_slice(&body_of(route(req("GET", "/status", &[]), &h.app).await).await).unwrap();
    for section in ["service", "platform", "collection", "collectors", "exporter", "config"] {
        assert!(status.get(section).is_some(), "/status lacks {section}");
    }
    assert_eq!(status["collectors"][0]["name"], "slow");
    let collectors: serde_json::Value =
        serde_json::from_slice(&body_of(route(req("GET", "/collectors", &[]), &h.app).await).await).unwrap();
    assert_eq!(collectors["collectors"].as_array().unwrap().len(), CATALOGUE.len());
}

#[tokio::test]
async fn health_is_503_without_a_successful_collection() {
    let h = harness_with(Box::new(AlwaysFails), Arc::default()).await;
    let response = route(req("GET", "/health", &[]), &h.app).await;
    assert_eq!(response.status(), 503);
    let health: serde_json::Value = serde_json::from_slice(&body_of(response).await).unwrap();
    assert_eq!(health["status"], "unhealthy");
    assert_eq!(health["total_collections"], 1);
    assert_eq!(health["collection_errors"], 1);
    assert!(health["last_collection_seconds_ago"].is_null());
    let status: serde_json::Value =
        serde_json::from_slice(&body_of(route(req("GET", "/status", &[]), &h.app).await).await).unwrap();
    assert_eq!(status["collectors"][0]["last_success"], false);
    assert_eq!(
        status["collectors"][0]["last_error"],
        "/sys/fs/cgroup/lxc/999/cpu.stat: not there (never was, or removed while being read)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_collect_requests_cause_one_collection() {
    let h = harness(Duration::from_millis(300)).await;
    // Past the spacing from the harness's first collection, so the first POST starts one.
    tokio::time::sleep(service::COLLECT_REQUEST_MIN_SPACING).await;
    let before = h.runs.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let app = Arc::clone(&h.app);
        tasks.push(tokio::spawn(async move {
            let r = route(req("POST", "/collect", &[]), &app).await;
            assert_eq!(r.status(), 200);
            let v: serde_json::Value = serde_json::from_slice(&body_of(r).await).unwrap();
            (v["sequence"].as_u64().unwrap(), v["fresh"].clone(), v["reason"].clone())
        }));
        // Spread the requests over the collection in flight.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert_eq!(h.runs.load(Ordering::SeqCst) - before, 1, "{answers:?}");
    assert!(answers.iter().all(|a| a.0 == answers[0].0), "{answers:?}");
    assert!(answers.iter().all(|a| a.1 == true), "{answers:?}");
    assert_eq!(answers[0].2, "started for this request");
    assert!(
        answers[1..].iter().all(|a| a.2 == "joined the collection in flight"),
        "{answers:?}"
    );
    h.stop.send(true).unwrap();
    h.loop_task.await.unwrap();
}

/// Fails before the rate rule: each POST after a finished collection started a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_requests_within_a_second_of_a_collection_get_the_latest_and_say_so() {
    let h = harness(Duration::ZERO).await;
    let first = h.app.latest().unwrap().collection.snapshot.sequence;
    let runs = h.runs.load(Ordering::SeqCst);
    for _ in 0..50 {
        let r = route(req("POST", "/collect", &[]), &h.app).await;
        assert_eq!(r.status(), 200);
        let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert_eq!(retry_after, 1, "whole seconds, rounded up");
        let v: serde_json::Value = serde_json::from_slice(&body_of(r).await).unwrap();
        assert_eq!(v["fresh"], false, "{v}");
        assert_eq!(v["sequence"].as_u64(), Some(first), "{v}");
        assert!(
            v["reason"]
                .as_str()
                .unwrap()
                .starts_with("rate limited: a collection started "),
            "{v}"
        );
        let retry = v["retry_after_seconds"].as_f64().unwrap();
        assert!(retry > 0.0 && retry <= 1.0, "{v}");
    }
    assert_eq!(
        h.runs.load(Ordering::SeqCst),
        runs,
        "no collection caused by the 50 requests"
    );
    // After the spacing, a request starts a collection again.
    tokio::time::sleep(service::COLLECT_REQUEST_MIN_SPACING).await;
    let r = route(req("POST", "/collect", &[]), &h.app).await;
    assert!(r.headers().get("retry-after").is_none());
    let v: serde_json::Value = serde_json::from_slice(&body_of(r).await).unwrap();
    assert_eq!(v["fresh"], true, "{v}");
    assert!(v["retry_after_seconds"].is_null(), "{v}");
    assert_eq!(v["sequence"].as_u64(), Some(first + 1), "{v}");
    assert_eq!(h.runs.load(Ordering::SeqCst), runs + 1);
    h.stop.send(true).unwrap();
    h.loop_task.await.unwrap();
}

/// `?wait`: within the spacing a request waits for the next collection the rule allows, and
/// all such requests share it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_requests_that_wait_share_the_next_allowed_collection() {
    let h = harness(Duration::ZERO).await;
    let first = h.app.latest().unwrap().collection.snapshot.sequence;
    let runs = h.runs.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let app = Arc::clone(&h.app);
        tasks.push(tokio::spawn(async move {
            let r = route(req("POST", "/collect?wait", &[]), &app).await;
            assert_eq!(r.status(), 200);
            serde_json::from_slice::<serde_json::Value>(&body_of(r).await).unwrap()
        }));
    }
    for t in tasks {
        let v = t.await.unwrap();
        assert_eq!(v["fresh"], true, "{v}");
        assert_eq!(v["sequence"].as_u64(), Some(first + 1), "{v}");
    }
    assert_eq!(
        h.runs.load(Ordering::SeqCst),
        runs + 1,
        "one collection for the 20 that waited"
    );
    h.stop.send(true).unwrap();
    h.loop_task.await.unwrap();
}

/// Starts the hyper server in process with `limits`.
async fn server(h: &Harness, limits: Limits) -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(metrics_exporter::http::serve(
        listener,
        Arc::clone(&h.app),
        limits,
        stop_rx,
    ));
    (address, stop, task)
}

fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_large_heads_and_idle_connections_are_closed() {
    let h = harness(Duration::ZERO).await;
    let limits = Limits {
        first_byte_timeout: Duration::from_millis(300),
        header_read_timeout: Duration::from_millis(300),
        max_header_bytes: 8192,
        max_requests_in_progress: 2,
        shutdown_grace: Duration::from_secs(2),
        ..Limits::default()
    };
    let (address, stop, task) = server(&h, limits).await;

    // A head larger than the limit is refused, the server stays up.
    let big = blocking(move || {
        let filler = "x".repeat(64 * 1024);
        raw(
            address,
            format!("GET /metrics HTTP/1.1\r\nHost: t\r\nX-Filler: {filler}\r\n\r\n").as_bytes(),
        )
    })
    .await
    .unwrap();
    match big {
        Ok(r) => assert_eq!(r.status, 431),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::InvalidData
            ),
            "{e}"
        ),
    }

    // A client that never finishes its head, and one that sends nothing, are disconnected
    // after their timeouts, without a response.
    for sent in [&b"GET /metrics HTTP/1.1\r\nHost: t\r\n"[..], b""] {
        let slow = blocking(move || {
            let mut s = TcpStream::connect(address).unwrap();
            s.write_all(sent).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = Vec::new();
            let started = std::time::Instant::now();
            let _ = s.read_to_end(&mut buf);
            (started.elapsed(), buf)
        })
        .await
        .unwrap();
        assert!(
            slow.0 < Duration::from_secs(5),
            "a client that sent {sent:?} held the connection for {:?}",
            slow.0
        );
        assert!(slow.1.is_empty(), "{:?}", String::from_utf8_lossy(&slow.1));
    }

    // Normal requests still work after all of that.
    let ok = blocking(move || get(address, "/metrics").unwrap().status)
        .await
        .unwrap();
    assert_eq!(ok, 200);
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// Fails before idle connections stopped holding slots: with 2 slots, the third connection
/// waited until one of the idle ones was closed by the header timeout (10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_keep_alive_connections_hold_no_request_slot() {
    let h = harness(Duration::ZERO).await;
    let limits = Limits {
        max_requests_in_progress: 2,
        ..Limits::default()
    };
    let (address, stop, task) = server(&h, limits).await;
    let status = blocking(move || {
        // Ten connections that sent nothing, two that finished a request and stay open.
        let mut held: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(address).unwrap()).collect();
        for _ in 0..2 {
            let mut s = TcpStream::connect(address).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let mut first = [0u8; 12];
            s.read_exact(&mut first).unwrap();
            assert_eq!(&first, b"HTTP/1.1 200");
            held.push(s);
        }
        let mut third = TcpStream::connect(address).unwrap();
        third
            .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let read = third.read_to_end(&mut rest);
        drop(held);
        read.ok().and_then(|_| parse_response(&rest).ok()).map(|r| r.status)
    })
    .await
    .unwrap();
    assert_eq!(status, Some(200), "a request waited behind idle connections");
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// Fails before the body limit: a 10 MB Content-Length on POST /collect was answered 200 (and
/// started a collection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_beyond_the_limit_are_refused_with_413() {
    let h = harness(Duration::ZERO).await;
    let limits = Limits {
        body_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let max = limits.max_body_bytes;
    let (address, stop, task) = server(&h, limits).await;
    let runs = h.runs.load(Ordering::SeqCst);
    let outcomes = blocking(move || {
        let declared = raw(
            address,
            b"POST /collect HTTP/1.1\r\nHost: t\r\nContent-Length: 10485760\r\n\r\n",
        )
        .map(|r| (r.status, r.header("connection").map(str::to_owned)));
        // Chunked: a 4 KiB chunk, more than the limit, and never a last chunk.
        let chunk = "y".repeat(4096);
        let chunked = raw(
            address,
            format!("POST /collect HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n{chunk}\r\n")
                .as_bytes(),
        )
        .map(|r| r.status);
        // A small body is read and ignored.
        let small = raw(
            address,
            b"POST /collect HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
        )
        .map(|r| r.status);
        // A body that never arrives.
        let slow = raw(
            address,
            b"POST /collect HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhe",
        )
        .map(|r| r.status);
        (declared, chunked, small, slow)
    })
    .await
    .unwrap();
    assert_eq!(outcomes.0.unwrap(), (413, Some("close".to_owned())), "limit {max}");
    assert_eq!(outcomes.1.unwrap(), 413);
    assert_eq!(outcomes.2.unwrap(), 200);
    assert_eq!(outcomes.3.unwrap(), 408);
    assert!(
        h.runs.load(Ordering::SeqCst) <= runs + 1,
        "only the small-body POST may collect"
    );
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight() {
    let h = harness(Duration::from_millis(400)).await;
    let (address, stop, task) = server(&h, Limits::default()).await;
    let in_flight = blocking(move || request(address, "POST", "/collect", &[]).map(|r| r.status));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(true).unwrap();
    assert_eq!(in_flight.await.unwrap().unwrap(), 200);
    task.await.unwrap();
    // After shutdown nothing listens.
    assert!(TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err());
}

#[test]
fn binary_serves_and_exits_cleanly_on_sigterm() {
    let mut exporter = Exporter::start(&[
        ("PLATFORM".into(), "host".into()),
        ("EBPF".into(), "off".into()),
        ("LOG_FORMAT".into(), "json".into()),
    ]);
    let metrics = exporter.get("/metrics");
    assert_eq!(metrics.status, 200);
    let series = parse_exposition(&metrics.text());
    assert!(value(&series, "node_memory_total_bytes", &[]).unwrap() > 0.0);
    let root = exporter.get("/");
    assert!(root.text().contains("<a href=\"/metrics\">"));
    let status = exporter.terminate();
    assert_eq!(status.code(), Some(0));
    let log = exporter.stderr();
    let first = log.lines().next().unwrap_or_default();
    let line: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("log is not JSON lines ({e}): {log}"));
    assert_eq!(line["message"], "metrics-exporter started");
    assert!(log.contains("\"stopped\""), "{log}");
}
