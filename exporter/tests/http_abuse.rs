//! HTTP abuse against the binary on loopback (issue 14, point 2): 1,000 idle connections, a
//! client sending one header byte a second, a 1 MB header, a 10 MB body on POST /collect, and a
//! storm of 1,000 POSTs from 50 clients. Each test scrapes /metrics in the middle of its abuse
//! and prints the scrape's latency against the 100 ms target and the exporter's VmRSS before and
//! during the abuse; it asserts that the scrape is served (within a generous 2 s that cannot
//! flake), that RSS grew by at most 10 MB, and that each abusive connection is closed the way
//! README "Endpoints" documents. Every socket is closed when its test ends. Counts are bounded
//! (1,000 sockets, 1 MB, 10 MB) and so is time (the longest test waits for the 10 s timeouts).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// The documented limits (README "Endpoints"), as the tests expect them.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RSS_GROWTH_KIB: u64 = 10 * 1024;
/// The target of the issue; printed beside each measured latency, not asserted.
const SCRAPE_TARGET: Duration = Duration::from_millis(100);
/// A bound no healthy run comes near, so the assertion cannot flake on a loaded machine.
const SCRAPE_BOUND: Duration = Duration::from_secs(2);

fn exporter() -> Exporter {
    Exporter::start(&fixture_env("proxmox-host", "proxmox"))
}

/// VmRSS of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// A scrape as Prometheus sends it; returns its latency after asserting it was served.
fn scrape(address: SocketAddr, during: &str) -> Duration {
    let started = Instant::now();
    let response = request(
        address,
        "GET",
        "/metrics",
        &[
            (
                "Accept",
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4",
            ),
            ("Accept-Encoding", "gzip"),
        ],
    )
    .unwrap_or_else(|e| panic!("scrape during {during}: {e}"));
    let latency = started.elapsed();
    assert_eq!(response.status, 200, "scrape during {during}");
    assert!(!response.body.is_empty(), "scrape during {during}");
    println!(
        "{during}: scrape served in {:.1} ms (target {} ms)",
        latency.as_secs_f64() * 1000.0,
        SCRAPE_TARGET.as_millis()
    );
    assert!(latency < SCRAPE_BOUND, "scrape during {during} took {latency:?}");
    latency
}

fn check_rss(during: &str, pid: u32, before: u64) {
    let now = rss_kib(pid);
    println!(
        "{during}: exporter VmRSS {before} KiB before, {now} KiB during ({:+} KiB; bound +{MAX_RSS_GROWTH_KIB} KiB)",
        now as i64 - before as i64
    );
    assert!(
        now <= before + MAX_RSS_GROWTH_KIB,
        "{during}: RSS {before} -> {now} KiB"
    );
}

/// Raises this process's soft RLIMIT_NOFILE to at least `wanted` (within the hard limit); the
/// exporter started afterwards inherits it.
fn raise_nofile(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < wanted {
            assert!(
                limit.rlim_max >= wanted,
                "hard RLIMIT_NOFILE {} below the {wanted} this test needs",
                limit.rlim_max
            );
            limit.rlim_cur = wanted;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

/// Reads until the server closes; returns what it sent and how long that took. A reset
/// counts as a close (it is one: the server closed with unread data from the client).
fn read_until_closed(stream: &mut TcpStream, patience: Duration) -> (Vec<u8>, Duration) {
    stream.set_read_timeout(Some(patience)).unwrap();
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("server did not close within {patience:?}: {e}"),
        }
    }
    (received, started.elapsed())
}

/// Writes `total` bytes of `fill` after `head` on a clone of `stream` in 64 KiB pieces until
/// done or the server closes; returns the bytes of `fill` written.
fn write_until_closed(stream: &TcpStream, head: Vec<u8>, fill: u8, total: usize) -> std::thread::JoinHandle<usize> {
    let mut writer = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        if writer.write_all(&head).is_err() {
            return 0;
        }
        let piece = vec![fill; 64 * 1024];
        let mut written = 0;
        while written < total {
            let n = piece.len().min(total - written);
            if writer.write_all(&piece[..n]).is_err() {
                break;
            }
            written += n;
        }
        written
    })
}

fn status_of(head: &[u8]) -> Option<u16> {
    parse_response(head).ok().map(|r| r.status)
}

fn total_collections(address: SocketAddr) -> u64 {
    get(address, "/health").unwrap().json()["total_collections"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_thousand_idle_connections_hold_nothing_a_scrape_needs_and_are_closed_after_the_first_byte_timeout() {
    raise_nofile(4096);
    let exporter = exporter();
    let (address, pid) = (exporter.address, exporter.child.id());
    scrape(address, "warm-up");
    let before = rss_kib(pid);
    let opened = Instant::now();
    let mut idle: Vec<TcpStream> = (0..1000).map(|_| TcpStream::connect(address).unwrap()).collect();
    let connected = opened.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    scrape(address, "1,000 idle connections");
    check_rss("1,000 idle connections", pid, before);
    // Each is closed by the server, without a byte of response, once it has sent nothing for
    // the first-byte timeout.
    let patience = FIRST_BYTE_TIMEOUT + Duration::from_secs(10);
    let mut first_closed = None;
    for (n, stream) in idle.iter_mut().enumerate() {
        let (received, _) = read_until_closed(stream, patience);
        assert!(received.is_empty(), "idle connection {n} got {received:?}");
        first_closed.get_or_insert_with(|| opened.elapsed());
    }
    println!(
        "1,000 idle connections: opened in {:.2} s; the first closed by the server {:.1} s after, the last {:.1} s after (first-byte timeout {} s)",
        connected.as_secs_f64(),
        first_closed.unwrap().as_secs_f64(),
        opened.elapsed().as_secs_f64(),
        FIRST_BYTE_TIMEOUT.as_secs()
    );
    drop(idle);
    check_rss("after the idle connections", pid, before);
}

#[test]
fn a_client_sending_one_header_byte_a_second_is_closed_by_the_header_timeout() {
    let exporter = exporter();
    let (address, pid) = (exporter.address, exporter.child.id());
    scrape(address, "warm-up");
    let before = rss_kib(pid);
    let mut stream = TcpStream::connect(address).unwrap();
    let head = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: one-byte-a-second\r\nAccept: */*\r\n\r\n";
    let closed = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut writer = stream.try_clone().unwrap();
        let closed = Arc::clone(&closed);
        std::thread::spawn(move || {
            let mut sent = 0;
            for byte in head {
                if closed.load(Ordering::SeqCst) || writer.write_all(&[*byte]).is_err() {
                    break;
                }
                sent += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    scrape(address, "a slow client");
    check_rss("a slow client", pid, before);
    let (received, after) = read_until_closed(&mut stream, HEADER_READ_TIMEOUT + Duration::from_secs(10));
    closed.store(true, Ordering::SeqCst);
    let sent = writer.join().unwrap();
    println!(
        "slow client: closed by the server after {:.1} s and {sent} of {} header bytes (header read timeout {} s)",
        after.as_secs_f64() + 3.0,
        head.len(),
        HEADER_READ_TIMEOUT.as_secs()
    );
    assert!(
        sent < head.len(),
        "the slow client completed its head: the timeout did not apply"
    );
    assert!(received.is_empty(), "documented: a plain close, got {received:?}");
}

#[test]
fn a_one_megabyte_header_is_answered_431_and_closed() {
    let exporter = exporter();
    let (address, pid) = (exporter.address, exporter.child.id());
    scrape(address, "warm-up");
    let before = rss_kib(pid);
    let mut stream = TcpStream::connect(address).unwrap();
    let writer = write_until_closed(
        &stream,
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: ".to_vec(),
        b'x',
        1024 * 1024,
    );
    scrape(address, "a 1 MB header");
    check_rss("a 1 MB header", pid, before);
    let (received, _) = read_until_closed(&mut stream, Duration::from_secs(20));
    let written = writer.join().unwrap();
    println!(
        "1 MB header: answered {:?} and closed after the client wrote {written} header bytes",
        status_of(&received)
    );
    assert_eq!(
        status_of(&received),
        Some(431),
        "{}",
        String::from_utf8_lossy(&received)
    );
}

#[test]
fn a_ten_megabyte_body_on_post_collect_is_answered_413_unread_and_closed() {
    let exporter = exporter();
    let (address, pid) = (exporter.address, exporter.child.id());
    scrape(address, "warm-up");
    let collections = total_collections(address);
    let before = rss_kib(pid);
    let mut stream = TcpStream::connect(address).unwrap();
    let size = 10 * 1024 * 1024;
    let writer = write_until_closed(
        &stream,
        format!("POST /collect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n\r\n").into_bytes(),
        b'y',
        size,
    );
    scrape(address, "a 10 MB body");
    check_rss("a 10 MB body", pid, before);
    let (received, _) = read_until_closed(&mut stream, Duration::from_secs(20));
    let written = writer.join().unwrap();
    println!(
        "10 MB body: answered {:?} and closed; the client got {written} of {size} body bytes into the socket before the close",
        status_of(&received)
    );
    let response = parse_response(&received).unwrap_or_else(|e| panic!("{e}: {received:?}"));
    assert_eq!(response.status, 413);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(written < size, "the whole body was taken: it was read");
    // The refused request caused no collection (an interval tick may have: at most one).
    assert!(total_collections(address) <= collections + 1);
}

#[test]
fn a_storm_of_a_thousand_posts_from_fifty_clients_causes_at_most_one_collection_a_second() {
    let exporter = exporter();
    let address = exporter.address;
    let pid = exporter.child.id();
    scrape(address, "warm-up");
    // Past the spacing from the start-up collection, so the storm may cause collections.
    std::thread::sleep(Duration::from_millis(1100));
    let before = rss_kib(pid);
    let collections_before = total_collections(address);
    let started = Instant::now();
    // 50 clients, 20 POSTs each, a POST every 150 ms per client: a storm of some 330 POSTs a
    // second over about 3 s, long enough for the rate rule to let several collections through.
    let clients: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let (mut fresh, mut latest) = (0u32, 0u32);
                for _ in 0..20 {
                    let response = request(address, "POST", "/collect", &[]).unwrap();
                    assert_eq!(response.status, 200, "{}", response.text());
                    let answer = response.json();
                    match answer["fresh"].as_bool() {
                        Some(true) => fresh += 1,
                        Some(false) => {
                            let reason = answer["reason"].as_str().unwrap();
                            assert!(reason.starts_with("rate limited: a collection started "), "{answer}");
                            assert!(answer["retry_after_seconds"].as_f64().unwrap() > 0.0, "{answer}");
                            assert!(response.header("retry-after").is_some(), "{answer}");
                            latest += 1;
                        }
                        None => panic!("no fresh flag: {answer}"),
                    }
                    std::thread::sleep(Duration::from_millis(150));
                }
                (fresh, latest)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    scrape(address, "a POST /collect storm");
    check_rss("a POST /collect storm", pid, before);
    let (mut fresh, mut latest) = (0, 0);
    for client in clients {
        let (f, l) = client.join().unwrap();
        fresh += f;
        latest += l;
    }
    let caused = total_collections(address) - collections_before;
    let elapsed = started.elapsed();
    println!(
        "POST storm: 1,000 POSTs from 50 clients in {:.2} s: {caused} collections (bound {}), {fresh} answers fresh (started or joined), {latest} the latest (rate limited)",
        elapsed.as_secs_f64(),
        elapsed.as_secs() + 1
    );
    assert_eq!(fresh + latest, 1000);
    // Collections start at least 1 s apart; the interval (30 s) does not tick in the window.
    assert!(caused <= elapsed.as_secs() + 1, "{caused} collections in {elapsed:?}");
    assert!(caused >= 1 && fresh >= 1, "the storm caused no collection at all");
    assert!(latest > 0);
}
