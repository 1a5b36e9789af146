//! Delivery under failure, against an in-process receiver on 127.0.0.1: a collector that is
//! absent for several intervals and then appears, one that answers UNAVAILABLE a few times,
//! and one that rejects a batch for good. Intervals are 100 ms; nothing asserts a duration.

mod otlp_support;

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter::model::{Snapshot, SnapshotBuilder, Value};
use metrics_exporter::otlp::health::{DROPPED, EXPORTS, LAST_SUCCESS};
use metrics_exporter::otlp::{OtlpConfig, OtlpHealth, run};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use otlp_support::*;
use tokio::sync::{oneshot, watch};
use tonic::Code;

struct Running {
    publish: watch::Sender<Option<Arc<Snapshot>>>,
    health: Arc<OtlpHealth>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(config: OtlpConfig) -> Running {
        let (publish, snapshots) = watch::channel(None);
        let health = Arc::new(OtlpHealth::new(&config.endpoint));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config, snapshots, health.clone(), async {
            let _ = stopped.await;
        }));
        let task = tokio::spawn(async move { task.await.unwrap().expect("pusher starts") });
        Running {
            publish,
            health,
            stop: Some(stop),
            task,
        }
    }

    fn publish(&self, sequence: u64) {
        self.publish
            .send_replace(Some(Arc::new(snapshot(sequence, sequence as f64))));
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
}

/// The collection a request came from, read back from the network counter (1e6 + sequence).
fn sequence_of(received: &Received) -> u64 {
    let rm = &received.request.resource_metrics[0];
    let m = rm.scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == "system.network.io")
        .unwrap();
    let Some(metric::Data::Sum(sum)) = &m.data else {
        panic!("sum")
    };
    let Some(number_data_point::Value::AsDouble(v)) = sum.data_points[0].value else {
        panic!()
    };
    (v - 1.0e6) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_recovers_by_itself_after_an_outage_with_a_bounded_queue() {
    let addr = free_port();
    let mut config = config(&addr.to_string(), |raw| {
        raw.otel_exporter_otlp_timeout = Some("300".into())
    });
    config.queue_capacity = 3;
    let exporter = Running::start(config);

    // Ten intervals with no collector.
    let mut max_queued = 0;
    for sequence in 1..=10 {
        exporter.publish(sequence);
        tokio::time::sleep(Duration::from_millis(100)).await;
        max_queued = max_queued.max(exporter.health.status().queued_batches);
    }
    eventually("exporter unhealthy", || !exporter.health.is_healthy()).await;
    let during = exporter.health.status();
    assert!(max_queued <= 3, "queue bounded: {max_queued}");
    assert!(during.queued_batches <= 3);
    assert_eq!(during.exports_success, 0);
    assert!(during.exports_retryable >= 1);
    assert!(
        during.dropped_batches >= 6,
        "10 collections, room for 3 + 1 in flight: {during:?}"
    );
    assert!(
        during.last_error.as_deref().unwrap().contains("Unavailable"),
        "{during:?}"
    );
    assert_eq!(during.last_success_unix_seconds, None);

    // The collector appears on the same address; collections go on.
    let receiver = Receiver::start_on(addr, Vec::new()).await;
    let mut sequence = 10;
    for _ in 0..200 {
        if exporter.health.is_healthy() && receiver.received().iter().any(|r| sequence_of(r) > 10) {
            break;
        }
        sequence += 1;
        exporter.publish(sequence);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = exporter.health.status();
    assert!(after.healthy, "recovered without a restart: {after:?}");
    assert!(after.last_success_unix_seconds.is_some());
    assert!(after.queued_batches <= 3);

    // Delivered in collection order; what was still queued arrives, the rest was counted.
    let delivered: Vec<u64> = receiver.received().iter().map(sequence_of).collect();
    assert!(delivered.windows(2).all(|w| w[0] < w[1]), "{delivered:?}");
    assert!(delivered.iter().filter(|s| **s <= 10).count() <= 4, "{delivered:?}");
    let published = sequence;
    let status = exporter.health.status();
    assert!(delivered.len() as u64 + status.dropped_batches + status.queued_batches as u64 <= published);

    // The self metrics say the same.
    let mut b = SnapshotBuilder::new();
    exporter.health.add_self_metrics(&mut b);
    let own = b.finish(Arc::default(), std::time::SystemTime::now(), 1);
    let dropped = &own.family(DROPPED.name).unwrap().samples[0].value;
    assert!(matches!(dropped, Value::Number(n) if *n >= 6.0), "{dropped:?}");
    assert!(own.family(LAST_SUCCESS.name).is_some());
    let exports = own.family(EXPORTS.name).unwrap();
    let success = exports.samples.iter().find(|s| &*s.labels[0] == "success").unwrap();
    assert!(matches!(success.value, Value::Number(n) if n >= 1.0));
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_retries_through_unavailable() {
    let receiver = Receiver::start_on("127.0.0.1:0".parse().unwrap(), vec![Code::Unavailable; 3]).await;
    let exporter = Running::start(config(&receiver.endpoint(), |_| {}));
    exporter.publish(1);
    // The receiver holds the batch before the exporter has read its answer: wait for both.
    eventually("delivered after retries, and the exporter knows it", || {
        receiver.received().len() == 1 && exporter.health.status().exports_success > 0
    })
    .await;
    let status = exporter.health.status();
    assert_eq!(receiver.calls(), 4);
    assert_eq!(
        (status.exports_retryable, status.exports_success, status.dropped_batches),
        (3, 1, 0)
    );
    assert!(status.healthy);
    assert!(status.last_error.unwrap().contains("Unavailable"));
    assert_eq!(sequence_of(&receiver.received()[0]), 1, "the same batch, retried");
    exporter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_permanent_rejection_drops_the_batch_and_the_next_one_recovers() {
    let receiver = Receiver::start_on("127.0.0.1:0".parse().unwrap(), vec![Code::InvalidArgument]).await;
    let exporter = Running::start(config(&receiver.endpoint(), |_| {}));
    exporter.publish(1);
    eventually("rejected", || exporter.health.status().exports_rejected == 1).await;
    assert!(!exporter.health.is_healthy());
    assert_eq!(exporter.health.status().dropped_batches, 1);
    assert_eq!(receiver.calls(), 1, "not retried");
    exporter.publish(2);
    eventually("next batch delivered", || receiver.received().len() == 1).await;
    eventually("healthy again", || exporter.health.is_healthy()).await;
    assert_eq!(sequence_of(&receiver.received()[0]), 2);
    exporter.shutdown().await;
}
