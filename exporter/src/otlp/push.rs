//! The push loop: converts each published snapshot, queues it, and delivers it over gRPC with
//! timeouts, retries and exponential backoff, in its own task.
//!
//! - Input is the collection loop's `watch` of the latest snapshot. A `watch` never blocks or
//!   fails its sender, so a slow or dead collector can never stall collection or HTTP. If two
//!   collections are published while the pusher is busy, the `watch` keeps only the newer; the
//!   gap shows in `Snapshot::sequence` and is counted as dropped.
//! - Every snapshot is converted on arrival, in collection order, so that start times and
//!   reset detection see every series even when the request is later dropped.
//! - The queue holds at most `queue_capacity` converted requests waiting; when a new one does
//!   not fit, the oldest is dropped and counted. Values are cumulative, so a newer batch holds
//!   everything an older one did: dropping the oldest loses resolution, never totals.
//! - A retryable failure (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, CANCELLED, ABORTED,
//!   OUT_OF_RANGE, DATA_LOSS: the OTLP spec's list, plus RESOURCE_EXHAUSTED as a collector
//!   under memory pressure answers it) puts the batch back at the head of the queue and waits
//!   `backoff_initial * 2^(n-1)`, capped at `backoff_max`, with jitter so that many hosts behind
//!   one collector do not retry in step. Any other code rejects the batch for good (retrying
//!   an INVALID_ARGUMENT or UNAUTHENTICATED cannot succeed), which is counted and logged.
//! - Recovery needs nothing: the channel is lazy and reconnects on the next attempt, and the
//!   retry timer keeps attempting while the collector is away.

use std::collections::VecDeque;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use tokio::sync::watch;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use super::config::{Compression, OtlpConfig};
use super::convert::{ResourceTemplate, StartTimes, to_request};
use super::health::{OtlpHealth, Outcome};
use crate::model::Snapshot;

/// Why the pusher could not start. Runtime export failures are never errors of `run`: they
/// are retried, counted and shown in [`OtlpHealth`].
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("OTLP endpoint {endpoint}: {source}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Builds the gRPC client. The channel is lazy: nothing connects until the first export, and
/// a lost connection is re-established by the next attempt. Needs a tokio runtime.
pub fn client(config: &OtlpConfig) -> Result<MetricsServiceClient<Channel>, OtlpError> {
    let error = |source| OtlpError::Endpoint {
        endpoint: config.endpoint.clone(),
        source,
    };
    let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
        .map_err(error)?
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .user_agent(concat!("metrics-exporter/", env!("CARGO_PKG_VERSION")))
        .map_err(error)?;
    if config.tls {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().with_native_roots())
            .map_err(error)?;
    }
    let mut client = MetricsServiceClient::new(endpoint.connect_lazy());
    if config.compression == Compression::Gzip {
        client = client
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip);
    }
    Ok(client)
}

/// Whether an attempt that failed with `code` may succeed if repeated.
pub fn is_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Cancelled
            | Code::Aborted
            | Code::OutOfRange
            | Code::DataLoss
    )
}

/// The delay before retry number `failures` (1-based): exponential, capped, with jitter in
/// [d/2, d] ("equal jitter", so the delay still grows).
pub fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(31);
    let full = initial.saturating_mul(1u32 << exponent).min(max);
    // RandomState is seeded randomly per instance: enough entropy for jitter without a
    // dependency.
    let random = std::collections::hash_map::RandomState::new().hash_one(failures);
    let fraction = (random % 1_000) as f64 / 1_000.0;
    full.mul_f64(0.5 + 0.5 * fraction)
}

type Attempt = Pin<Box<dyn Future<Output = Result<ExportMetricsServiceResponse, Status>> + Send>>;

/// One converted collection.
#[derive(Debug)]
struct Batch {
    sequence: u64,
    request: ExportMetricsServiceRequest,
}

/// The pusher's state between events.
struct Pusher {
    config: OtlpConfig,
    client: MetricsServiceClient<Channel>,
    health: Arc<OtlpHealth>,
    template: ResourceTemplate,
    starts: StartTimes,
    queue: VecDeque<Batch>,
    last_sequence: Option<u64>,
    failures: u32,
}

impl Pusher {
    fn ingest(&mut self, snapshot: &Snapshot) {
        if let Some(last) = self.last_sequence {
            if snapshot.sequence <= last {
                return; // already converted (a `watch` can announce the same value again)
            }
            let skipped = snapshot.sequence - last - 1;
            if skipped > 0 {
                self.health.dropped(skipped);
            }
        }
        self.last_sequence = Some(snapshot.sequence);
        let request = to_request(snapshot, &mut self.starts, &self.template);
        self.queue.push_back(Batch {
            sequence: snapshot.sequence,
            request,
        });
        let capacity = self.config.queue_capacity.max(1);
        while self.queue.len() > capacity {
            let dropped = self.queue.pop_front();
            tracing::debug!(
                sequence = dropped.map(|b| b.sequence),
                "OTLP queue full: dropped the oldest batch"
            );
            self.health.dropped(1);
        }
        self.health.set_queued(self.queue.len());
    }

    fn attempt(&self, batch: &Batch) -> Attempt {
        let mut request = tonic::Request::new(batch.request.clone());
        // grpc-timeout tells the collector how long we wait; the channel enforces it locally.
        request.set_timeout(self.config.timeout);
        self.config.headers.apply(request.metadata_mut());
        let mut client = self.client.clone();
        // A local deadline as well, slightly later than the channel's own, so that no stage
        // of the transport (connecting, a stalled HTTP/2 stream) can hold an attempt forever.
        let guard = self.config.timeout + Duration::from_millis(250);
        Box::pin(async move {
            match tokio::time::timeout(guard, client.export(request)).await {
                Ok(result) => result.map(tonic::Response::into_inner),
                Err(_) => Err(Status::deadline_exceeded("export timed out")),
            }
        })
    }

    /// Records an attempt's result for `batch`; returns the batch if it must be retried.
    fn settle(&mut self, batch: Batch, result: Result<ExportMetricsServiceResponse, Status>) -> Option<Batch> {
        let now = SystemTime::now();
        let recovered = self.failures > 0;
        match result {
            Ok(response) => {
                self.failures = 0;
                let partial = response
                    .partial_success
                    .filter(|p| p.rejected_data_points > 0 || !p.error_message.is_empty());
                match partial {
                    Some(p) => {
                        let message = format!(
                            "partial success: {} data points rejected: {}",
                            p.rejected_data_points, p.error_message
                        );
                        tracing::warn!(sequence = batch.sequence, "OTLP export: {message}");
                        self.health.record(Outcome::Partial, Some(message), now);
                    }
                    None => self.health.record(Outcome::Success, None, now),
                }
                if recovered {
                    tracing::info!(endpoint = %self.config.endpoint, "OTLP export recovered");
                }
                None
            }
            Err(status) => {
                let message = format!("{:?}: {}", status.code(), status.message());
                self.failures = self.failures.saturating_add(1);
                if is_retryable(status.code()) {
                    // Log the first failure of an outage loudly and the rest quietly.
                    if self.failures == 1 {
                        tracing::warn!(endpoint = %self.config.endpoint, error = %message, "OTLP export failed; retrying with backoff");
                    } else {
                        tracing::debug!(failures = self.failures, error = %message, "OTLP export failed again");
                    }
                    self.health.record(Outcome::Retryable, Some(message), now);
                    Some(batch)
                } else {
                    tracing::error!(endpoint = %self.config.endpoint, sequence = batch.sequence, error = %message, "OTLP export rejected; batch discarded");
                    self.health.record(Outcome::Rejected, Some(message), now);
                    self.health.dropped(1);
                    None
                }
            }
        }
    }
}

/// Pushes every snapshot published on `snapshots` until `shutdown` completes or the sender
/// is dropped; then makes one last attempt with the newest batch (bounded by the timeout).
///
/// Returns an error only if the client cannot be built (the endpoint was validated, so in
/// practice only a TLS setup failure).
pub async fn run(
    config: OtlpConfig,
    mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    health: Arc<OtlpHealth>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), OtlpError> {
    let client = client(&config)?;
    let template = ResourceTemplate::from_config(&config);
    let mut pusher = Pusher {
        config,
        client,
        health,
        template,
        starts: StartTimes::new(),
        queue: VecDeque::new(),
        last_sequence: None,
        failures: 0,
    };
    let current = snapshots.borrow_and_update().clone();
    if let Some(snapshot) = current {
        pusher.ingest(&snapshot);
    }

    let mut in_flight: Option<(Batch, Attempt)> = None;
    let mut retry_at: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        if in_flight.is_none()
            && retry_at.is_none()
            && let Some(batch) = pusher.queue.pop_front()
        {
            let attempt = pusher.attempt(&batch);
            in_flight = Some((batch, attempt));
        }
        let sleep_until = retry_at.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            changed = snapshots.changed() => {
                if changed.is_err() {
                    break; // the collection loop is gone: the process is stopping
                }
                let latest = snapshots.borrow_and_update().clone();
                if let Some(snapshot) = latest {
                    pusher.ingest(&snapshot);
                }
            }
            result = async { in_flight.as_mut().map(|(_, a)| a).expect("guarded").await }, if in_flight.is_some() => {
                let (batch, _) = in_flight.take().expect("guarded");
                if let Some(batch) = pusher.settle(batch, result) {
                    pusher.queue.push_front(batch);
                    // The failed batch is the oldest: if the queue overflowed meanwhile, it
                    // is the one to go.
                    while pusher.queue.len() > pusher.config.queue_capacity.max(1) {
                        pusher.queue.pop_front();
                        pusher.health.dropped(1);
                    }
                    let delay = backoff(pusher.config.backoff_initial, pusher.config.backoff_max, pusher.failures);
                    retry_at = Some(tokio::time::Instant::now() + delay);
                }
                pusher.health.set_queued(pusher.queue.len());
            }
            () = tokio::time::sleep_until(sleep_until), if retry_at.is_some() => {
                retry_at = None;
            }
        }
    }

    // Last chance for the newest collection: an attempt in flight runs to its end, otherwise
    // the newest waiting batch is tried once. Older ones are superseded by it anyway.
    let last = match in_flight.take() {
        Some((batch, attempt)) => Some((batch, attempt.await)),
        None => match pusher.queue.pop_back() {
            Some(batch) => {
                let attempt = pusher.attempt(&batch);
                Some((batch, attempt.await))
            }
            None => None,
        },
    };
    if let Some((batch, result)) = last {
        pusher.settle(batch, result);
    }
    let undelivered = pusher.queue.len() as u64;
    if undelivered > 0 {
        pusher.health.dropped(undelivered);
    }
    pusher.queue.clear();
    pusher.health.set_queued(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_codes_follow_the_otlp_spec() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Cancelled,
        ] {
            assert!(is_retryable(code), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Unimplemented,
        ] {
            assert!(!is_retryable(code), "{code:?}");
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_bounds() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for failures in 1..40 {
            let full = initial.saturating_mul(1 << (failures - 1).min(31)).min(max);
            let d = backoff(initial, max, failures);
            assert!(d >= full / 2 && d <= full, "{failures}: {d:?}");
        }
    }
}
