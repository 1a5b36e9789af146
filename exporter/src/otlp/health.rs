//! The OTLP pusher's shared health: what /health (`exporter_healthy`) and /status read, and
//! the self metrics it adds to every snapshot.
//!
//! The seed said healthy while its export was dead; here `healthy` is false from the first
//! failed attempt until the next delivered batch, and every outcome is counted.

use std::sync::Mutex;
use std::time::SystemTime;

use crate::model::{Kind, MetricDesc, Scope, SnapshotBuilder, Unit};

pub static EXPORTS: MetricDesc = MetricDesc {
    name: "metrics_exporter_otlp_exports_total",
    help: "OTLP export attempts by result: success, partial (the collector rejected some points), \
           retryable (failed, will be retried), rejected (failed permanently, batch discarded).",
    kind: Kind::Counter,
    unit: Unit::Count("{export}"),
    labels: &["result"],
    scope: Scope::Node,
    otel: None,
};

pub static DROPPED: MetricDesc = MetricDesc {
    name: "metrics_exporter_otlp_dropped_batches_total",
    help: "Collections never delivered over OTLP: pushed out of the full queue (oldest first), \
           rejected by the collector, or superseded before the pusher saw them.",
    kind: Kind::Counter,
    unit: Unit::Count("{batch}"),
    labels: &[],
    scope: Scope::Node,
    otel: None,
};

pub static LAST_SUCCESS: MetricDesc = MetricDesc {
    name: "metrics_exporter_otlp_last_success_timestamp_seconds",
    help: "Unix time of the last OTLP export the collector accepted (absent until one is).",
    kind: Kind::Gauge,
    unit: Unit::Seconds,
    labels: &[],
    scope: Scope::Node,
    otel: None,
};

pub static QUEUED: MetricDesc = MetricDesc {
    name: "metrics_exporter_otlp_queued_batches",
    help: "Collections converted and waiting for OTLP delivery, including the one being sent.",
    kind: Kind::Gauge,
    unit: Unit::Count("{batch}"),
    labels: &[],
    scope: Scope::Node,
    otel: None,
};

/// Outcome of one export attempt, the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Partial,
    Retryable,
    Rejected,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Success,
        Outcome::Partial,
        Outcome::Retryable,
        Outcome::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Partial => "partial",
            Outcome::Retryable => "retryable",
            Outcome::Rejected => "rejected",
        }
    }
}

/// A copy of the pusher's state, as /status shows it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct OtlpStatus {
    /// False from a failed attempt until the next delivered batch.
    pub healthy: bool,
    pub endpoint: String,
    /// The last failure (gRPC code and message), kept after recovery for diagnosis.
    pub last_error: Option<String>,
    pub last_error_unix_seconds: Option<f64>,
    pub last_success_unix_seconds: Option<f64>,
    pub exports_success: u64,
    pub exports_partial: u64,
    pub exports_retryable: u64,
    pub exports_rejected: u64,
    pub dropped_batches: u64,
    pub queued_batches: usize,
    /// Consecutive failed attempts of the batch being sent.
    pub consecutive_failures: u32,
}

/// Shared between the pusher (writes) and HTTP (reads); one short lock per event.
#[derive(Debug)]
pub struct OtlpHealth {
    state: Mutex<OtlpStatus>,
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl OtlpHealth {
    /// Healthy until an attempt fails: nothing has gone wrong before the first export.
    pub fn new(endpoint: impl Into<String>) -> Self {
        OtlpHealth {
            state: Mutex::new(OtlpStatus {
                healthy: true,
                endpoint: endpoint.into(),
                ..Default::default()
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut OtlpStatus) -> R) -> R {
        // A panic while holding this lock cannot leave the counters inconsistent in a way
        // that matters more than losing /health, so a poisoned lock is used as is.
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    pub fn status(&self) -> OtlpStatus {
        self.with(|s| s.clone())
    }

    /// What /health reports as `exporter_healthy`.
    pub fn is_healthy(&self) -> bool {
        self.with(|s| s.healthy)
    }

    pub(crate) fn record(&self, outcome: Outcome, error: Option<String>, now: SystemTime) {
        self.with(|s| {
            match outcome {
                Outcome::Success => s.exports_success += 1,
                Outcome::Partial => s.exports_partial += 1,
                Outcome::Retryable => s.exports_retryable += 1,
                Outcome::Rejected => s.exports_rejected += 1,
            }
            match outcome {
                Outcome::Success | Outcome::Partial => {
                    s.healthy = true;
                    s.consecutive_failures = 0;
                    s.last_success_unix_seconds = Some(unix_seconds(now));
                }
                Outcome::Retryable | Outcome::Rejected => {
                    s.healthy = false;
                    s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                }
            }
            if let Some(error) = error {
                s.last_error = Some(error);
                s.last_error_unix_seconds = Some(unix_seconds(now));
            }
        });
    }

    pub(crate) fn dropped(&self, batches: u64) {
        self.with(|s| s.dropped_batches += batches);
    }

    pub(crate) fn set_queued(&self, queued: usize) {
        self.with(|s| s.queued_batches = queued);
    }

    /// Adds the pusher's self metrics (Scope::Node) to a collection. Counters are always
    /// present (0 is a real count here); the last-success gauge only once there was one.
    pub fn add_self_metrics(&self, out: &mut SnapshotBuilder) {
        let s = self.status();
        for outcome in Outcome::ALL {
            let count = match outcome {
                Outcome::Success => s.exports_success,
                Outcome::Partial => s.exports_partial,
                Outcome::Retryable => s.exports_retryable,
                Outcome::Rejected => s.exports_rejected,
            };
            out.push(&EXPORTS, [outcome.as_str()], count as f64);
        }
        out.push(&DROPPED, [] as [&str; 0], s.dropped_batches as f64);
        out.push(&QUEUED, [] as [&str; 0], s.queued_batches as f64);
        if let Some(t) = s.last_success_unix_seconds {
            out.push(&LAST_SUCCESS, [] as [&str; 0], t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn health_flips_and_self_metrics_follow() {
        let h = OtlpHealth::new("http://127.0.0.1:4317");
        assert!(h.is_healthy());
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        h.record(Outcome::Retryable, Some("UNAVAILABLE: down".into()), now);
        assert!(!h.is_healthy());
        let mut b = SnapshotBuilder::new();
        h.add_self_metrics(&mut b);
        let snap = b.finish(Arc::default(), now, 1);
        assert!(
            snap.family(LAST_SUCCESS.name).is_none(),
            "no success yet: absent, not 0"
        );
        h.record(Outcome::Success, None, now);
        h.dropped(2);
        assert!(h.is_healthy());
        let status = h.status();
        assert_eq!(status.last_error.as_deref(), Some("UNAVAILABLE: down"));
        assert_eq!(
            (status.exports_success, status.exports_retryable, status.dropped_batches),
            (1, 1, 2)
        );
        let mut b = SnapshotBuilder::new();
        h.add_self_metrics(&mut b);
        let snap = b.finish(Arc::default(), now, 2);
        assert_eq!(snap.family(EXPORTS.name).unwrap().samples.len(), 4);
        assert_eq!(
            snap.family(DROPPED.name).unwrap().samples[0].value,
            crate::model::Value::Number(2.0)
        );
        assert_eq!(
            snap.family(LAST_SUCCESS.name).unwrap().samples[0].value,
            crate::model::Value::Number(1000.0)
        );
    }
}
