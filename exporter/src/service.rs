//! The running service: the one collection loop and the state the HTTP side reads.
//!
//! The loop owns the [`Engine`]; it collects on every interval tick and when POST /collect
//! asks, runs the collection on a blocking thread, encodes the snapshot once, publishes it
//! through a `watch` channel and writes PROMETHEUS_FILE. Requests that arrive while a
//! collection is in flight join it, and a request that arrives less than
//! [`COLLECT_REQUEST_MIN_SPACING`] after the start of the last collection (whatever started
//! it) gets the latest published one at once, marked as not fresh: no client can make the
//! exporter collect more than once a second. Readers never touch /proc or the collectors.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::collectors::CollectorInfo;
use crate::config::Config;
use crate::encode::prometheus::{encode_openmetrics, encode_text};
use crate::engine::{Collection, CollectorOutcome, Engine};
use crate::model::Identity;
use crate::platform::{Detection, IdentitySources};
use crate::promfile::FileOutput;

/// A published collection with its encodings, each computed at most once and only when first
/// asked for: the 0.0.4 text by the first scrape after the collection (or by the file writer,
/// which needs it every collection), so an OTLP-only setup never pays for text, and OpenMetrics
/// and gzip only when a scraper asks for them.
///
/// Uncompressed text is kept only for snapshots of up to [`KEEP_TEXT_MAX_SERIES`] series;
/// larger ones are encoded again for each uncompressed request and not kept. Compressed bodies
/// are always kept.
#[derive(Debug)]
pub struct Published {
    pub collection: Collection,
    text: OnceLock<Bytes>,
    openmetrics: OnceLock<Bytes>,
    text_gzip: OnceLock<Bytes>,
    openmetrics_gzip: OnceLock<Bytes>,
}

/// Snapshots up to this many series keep their uncompressed text (about 100 bytes a series).
/// Why a limit: a Proxmox host of a thousand guests has 51,000 series, whose text is 4.9 MB,
/// a third of the process's memory if kept for the whole interval; encoding it costs about
/// 13 ms of CPU, paid per uncompressed scrape instead. Prometheus asks for gzip, whose body
/// (0.45 MB there) is kept, so it scrapes those hosts from memory all the same; a node or a
/// container (some hundreds of series) keeps everything.
pub const KEEP_TEXT_MAX_SERIES: usize = 10_000;

impl Published {
    pub fn new(collection: Collection) -> Self {
        Published {
            collection,
            text: OnceLock::new(),
            openmetrics: OnceLock::new(),
            text_gzip: OnceLock::new(),
            openmetrics_gzip: OnceLock::new(),
        }
    }

    /// Whether the uncompressed encodings are kept (see [`KEEP_TEXT_MAX_SERIES`]).
    fn keeps_text(&self) -> bool {
        self.collection.snapshot.series_count() <= KEEP_TEXT_MAX_SERIES
    }

    /// An uncompressed encoding, kept in `cell` when [`Published::keeps_text`]. Concurrent
    /// first callers wait for one encoding.
    fn uncompressed(&self, cell: &OnceLock<Bytes>, encode: fn(&Arc<crate::model::Snapshot>) -> String) -> Bytes {
        let encode = || Bytes::from(encode(&self.collection.snapshot));
        if self.keeps_text() {
            cell.get_or_init(encode).clone()
        } else {
            encode()
        }
    }

    /// Prometheus text 0.0.4.
    pub fn text(&self) -> Bytes {
        self.uncompressed(&self.text, encode_text)
    }

    pub fn openmetrics(&self) -> Bytes {
        self.uncompressed(&self.openmetrics, encode_openmetrics)
    }

    pub fn text_gzip(&self) -> Bytes {
        self.text_gzip.get_or_init(|| gzip(&self.text())).clone()
    }

    pub fn openmetrics_gzip(&self) -> Bytes {
        self.openmetrics_gzip.get_or_init(|| gzip(&self.openmetrics())).clone()
    }
}

fn gzip(data: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 4), flate2::Compression::fast());
    encoder.write_all(data).expect("writing to a Vec cannot fail");
    let mut compressed = encoder.finish().expect("writing to a Vec cannot fail");
    // `Bytes` keeps the whole allocation alive for the snapshot's lifetime: hand back the slack.
    compressed.shrink_to_fit();
    Bytes::from(compressed)
}

/// An output or accelerator that reports its health and state (file, OTLP, eBPF).
pub trait Component: Send + Sync {
    fn name(&self) -> &'static str;
    /// Whether it currently works; `None` when health does not apply (informational only).
    fn healthy(&self) -> Option<bool>;
    fn status(&self) -> serde_json::Value;
}

impl Component for FileOutput {
    fn name(&self) -> &'static str {
        "prometheus_file"
    }
    fn healthy(&self) -> Option<bool> {
        Some(self.state().healthy)
    }
    fn status(&self) -> serde_json::Value {
        serde_json::json!({ "path": self.path, "state": self.state() })
    }
}

impl Component for crate::otlp::OtlpHealth {
    fn name(&self) -> &'static str {
        "otlp"
    }
    fn healthy(&self) -> Option<bool> {
        Some(self.is_healthy())
    }
    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.status()).unwrap_or_default()
    }
}

impl crate::engine::SelfMetrics for crate::otlp::OtlpHealth {
    fn add(&self, out: &mut crate::model::SnapshotBuilder) {
        self.add_self_metrics(out);
    }
}

/// The least time between the start of one collection and a collection caused by POST
/// /collect. Why 1 s: a collection of a 1000-guest host costs some 100 ms of CPU; a client
/// looping on POST /collect may take at most a tenth of a core, and a human or a script asking
/// for a fresh collection after a change waits at most a second.
pub const COLLECT_REQUEST_MIN_SPACING: Duration = Duration::from_secs(1);

/// How a POST /collect request was answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Freshness {
    /// A collection was started for this request.
    Started,
    /// The request arrived while a collection was in flight and got its result.
    Joined,
    /// A collection started `since` ago, less than [`COLLECT_REQUEST_MIN_SPACING`]: the
    /// request got the latest published collection; a new one may be asked for after
    /// `retry_after`.
    RateLimited { since: Duration, retry_after: Duration },
}

/// The answer to POST /collect: a published collection and how fresh it is.
#[derive(Debug, Clone)]
pub struct CollectAnswer {
    pub published: Arc<Published>,
    pub freshness: Freshness,
}

/// A POST /collect request: where to send the answer, and whether it would rather wait for
/// the rate rule to allow a new collection than get the latest one (`?wait`).
#[derive(Debug)]
struct CollectRequest {
    reply: oneshot::Sender<CollectAnswer>,
    wait: bool,
}

/// Counters about collections, updated by the loop.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub total_collections: u64,
    /// Collections in which at least one collector failed.
    pub collection_errors: u64,
    #[serde(skip)]
    pub last_collection: Option<Instant>,
    #[serde(skip)]
    pub last_success: Option<Instant>,
    pub last_duration_seconds: Option<f64>,
    pub last_outcomes: Vec<CollectorOutcome>,
}

/// Everything the HTTP side reads. Built once at start.
pub struct App {
    pub config: Config,
    pub detection: Detection,
    pub identity: Arc<Identity>,
    pub identity_sources: IdentitySources,
    pub catalogue: &'static [CollectorInfo],
    pub enabled: Vec<&'static str>,
    pub notes: Vec<(&'static str, Vec<String>)>,
    pub components: Vec<Arc<dyn Component>>,
    pub started: Instant,
    pub stats: Mutex<Stats>,
    latest: watch::Receiver<Option<Arc<Published>>>,
    requests: mpsc::Sender<CollectRequest>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// Why POST /collect could not be answered.
#[derive(Debug, thiserror::Error)]
#[error("the collection loop is not running")]
pub struct LoopGone;

impl App {
    /// The latest published collection, if any.
    pub fn latest(&self) -> Option<Arc<Published>> {
        self.latest.borrow().clone()
    }

    /// Asks the loop for a collection and waits for it: a new one, the one in flight, or,
    /// within [`COLLECT_REQUEST_MIN_SPACING`] of the last start, the latest published one;
    /// with `wait`, a new one once the spacing allows it (still one for all who wait).
    pub async fn collect_now(&self, wait: bool) -> Result<CollectAnswer, LoopGone> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(CollectRequest { reply, wait })
            .await
            .map_err(|_| LoopGone)?;
        rx.await.map_err(|_| LoopGone)
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// True when every component that has a health says healthy.
    pub fn exporter_healthy(&self) -> bool {
        self.components.iter().all(|c| c.healthy() != Some(false))
    }
}

/// The loop's handles, created with the App.
#[derive(Debug)]
pub struct LoopHandles {
    publisher: watch::Sender<Option<Arc<Published>>>,
    /// The bare snapshots, for outputs that encode on their own (OTLP).
    snapshots: watch::Sender<Option<Arc<crate::model::Snapshot>>>,
    requests: mpsc::Receiver<CollectRequest>,
}

/// Static facts the App is built from.
#[derive(Debug)]
pub struct AppParts {
    pub config: Config,
    pub detection: Detection,
    pub identity: Arc<Identity>,
    pub identity_sources: IdentitySources,
    pub catalogue: &'static [CollectorInfo],
    pub enabled: Vec<&'static str>,
    pub notes: Vec<(&'static str, Vec<String>)>,
}

pub fn new_app(parts: AppParts, components: Vec<Arc<dyn Component>>) -> (Arc<App>, LoopHandles) {
    let (publisher, latest) = watch::channel(None);
    let (request_tx, requests) = mpsc::channel(1024);
    let app = Arc::new(App {
        config: parts.config,
        detection: parts.detection,
        identity: parts.identity,
        identity_sources: parts.identity_sources,
        catalogue: parts.catalogue,
        enabled: parts.enabled,
        notes: parts.notes,
        components,
        started: Instant::now(),
        stats: Mutex::new(Stats::default()),
        latest,
        requests: request_tx,
    });
    let (snapshots, _) = watch::channel(None);
    (
        app,
        LoopHandles {
            publisher,
            snapshots,
            requests,
        },
    )
}

/// Subscribes to published snapshots (for the OTLP pusher).
pub fn subscribe_snapshots(handles: &LoopHandles) -> watch::Receiver<Option<Arc<crate::model::Snapshot>>> {
    handles.snapshots.subscribe()
}

/// Runs collections until `shutdown` turns true. Returns the engine (for tests).
pub async fn run_loop(
    mut engine: Engine,
    app: Arc<App>,
    handles: LoopHandles,
    file: Option<Arc<FileOutput>>,
    mut shutdown: watch::Receiver<bool>,
) -> Engine {
    let LoopHandles {
        publisher,
        snapshots,
        mut requests,
    } = handles;
    let mut ticker = tokio::time::interval(app.config.collection_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The start and result of the last collection, for rate-limited answers.
    let mut last: Option<(Instant, Arc<Published>)> = None;
    // Requests (`?wait`) for the next collection the spacing allows.
    let mut deferred: Vec<oneshot::Sender<CollectAnswer>> = Vec::new();
    loop {
        let mut waiters = Vec::new();
        let next_allowed = last
            .as_ref()
            .map_or_else(Instant::now, |(started, _)| *started + COLLECT_REQUEST_MIN_SPACING);
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::time::sleep_until(next_allowed.into()), if !deferred.is_empty() => {}
            Some(request) = requests.recv() => {
                if let Some((started, published)) = &last {
                    let since = started.elapsed();
                    if since < COLLECT_REQUEST_MIN_SPACING {
                        if request.wait {
                            deferred.push(request.reply);
                        } else {
                            let _ = request.reply.send(CollectAnswer {
                                published: Arc::clone(published),
                                freshness: Freshness::RateLimited {
                                    since,
                                    retry_after: COLLECT_REQUEST_MIN_SPACING - since,
                                },
                            });
                        }
                        continue;
                    }
                }
                waiters.push(request.reply);
            }
            _ = crate::service::stopped(&mut shutdown) => break,
        }
        waiters.append(&mut deferred);
        let started = Instant::now();
        let file_for_task = file.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let collection = engine.collect();
            let published = Arc::new(Published::new(collection));
            if let Some(file) = file_for_task {
                file.write(&published.text());
            }
            (engine, published)
        })
        .await;
        let (returned, published) = match joined {
            Ok(pair) => pair,
            Err(e) => {
                // The engine isolates collectors, so this is a bug in the engine itself.
                tracing::error!(error = %e, "collection task failed; the collection loop stops");
                return std::future::pending().await;
            }
        };
        engine = returned;
        {
            let mut stats = app.stats.lock().unwrap_or_else(|e| e.into_inner());
            stats.total_collections += 1;
            if published.collection.outcomes.iter().any(|o| !o.success) {
                stats.collection_errors += 1;
            }
            stats.last_collection = Some(started);
            if published.collection.any_success() {
                stats.last_success = Some(started);
            }
            stats.last_duration_seconds = Some(published.collection.duration.as_secs_f64());
            stats.last_outcomes = published.collection.outcomes.clone();
        }
        tracing::debug!(
            sequence = published.collection.snapshot.sequence,
            series = published.collection.snapshot.series_count(),
            seconds = published.collection.duration.as_secs_f64(),
            "collection finished"
        );
        publisher.send_replace(Some(Arc::clone(&published)));
        snapshots.send_replace(Some(Arc::clone(&published.collection.snapshot)));
        for waiter in waiters {
            let _ = waiter.send(CollectAnswer {
                published: Arc::clone(&published),
                freshness: Freshness::Started,
            });
        }
        // Requests that arrived during the collection join it rather than start another.
        while let Ok(request) = requests.try_recv() {
            let _ = request.reply.send(CollectAnswer {
                published: Arc::clone(&published),
                freshness: Freshness::Joined,
            });
        }
        last = Some((started, published));
        // The previous snapshot and its encodings were freed by send_replace (unless a response
        // still holds them); give glibc's free pages back to the kernel so RSS follows the live
        // data instead of the high-water mark of a collection.
        trim_heap();
    }
    engine
}

/// Returns the free memory at the top of glibc's heaps (and whole free pages inside them) to
/// the kernel. A collection at 1000 guests allocates and frees some MB of small objects
/// (strings read from cgroupfs, label arrays, the previous snapshot): without this, RSS stays at
/// the collection's high-water mark. It costs a walk of the free lists, well under a
/// millisecond here, once per collection.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only operates on the allocator's own state; any pad is valid.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resolves once the shutdown flag is true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard returned by wait_for is dropped here, so callers stay Send.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

/// Seconds since the Unix epoch of a `SystemTime`.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, MetricDesc, Scope, SnapshotBuilder, Unit};

    static GAUGE: MetricDesc = MetricDesc {
        name: "test_series",
        help: "A test series.",
        kind: Kind::Gauge,
        unit: Unit::Count("{series}"),
        labels: &["n"],
        scope: Scope::Guest,
        otel: None,
    };

    fn published(series: usize) -> Published {
        let mut b = SnapshotBuilder::new();
        for n in 0..series {
            b.push(&GAUGE, [n.to_string()], n as f64);
        }
        let snapshot = Arc::new(b.finish(Arc::default(), SystemTime::UNIX_EPOCH, 1));
        Published::new(Collection {
            snapshot,
            outcomes: Vec::new(),
            duration: Duration::ZERO,
        })
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn small_snapshots_keep_their_text_large_ones_only_the_compressed_body() {
        let small = published(KEEP_TEXT_MAX_SERIES);
        let (a, b) = (small.text(), small.text());
        assert_eq!(a.as_ptr(), b.as_ptr(), "kept: the same bytes twice");
        let last = KEEP_TEXT_MAX_SERIES - 1;
        assert!(a.ends_with(format!("test_series{{n=\"{last}\"}} {last}.0\n").as_bytes()));

        let large = published(KEEP_TEXT_MAX_SERIES + 1);
        let (a, b) = (large.text(), large.text());
        assert_eq!(a, b, "the same text each time");
        assert_ne!(a.as_ptr(), b.as_ptr(), "not kept: encoded for each request");
        let (za, zb) = (large.text_gzip(), large.text_gzip());
        assert_eq!(za.as_ptr(), zb.as_ptr(), "the compressed body is kept");
        assert_eq!(gunzip(&za), a.as_ref());
        let (oa, ob) = (large.openmetrics(), large.openmetrics());
        assert_ne!(oa.as_ptr(), ob.as_ptr());
        assert!(oa.ends_with(b"# EOF\n"));
        assert_eq!(gunzip(&large.openmetrics_gzip()), oa.as_ref());
    }
}
