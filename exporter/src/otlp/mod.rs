//! OTLP export: pushes every collection to an OpenTelemetry collector over gRPC.
//!
//! The same immutable [`Snapshot`](crate::model::Snapshot) that /metrics serves is converted
//! ([`convert::to_request`]) and pushed ([`push::run`]), so Prometheus and OTLP carry equal
//! values for one collection. Names, resources and temporality are described in [`convert`],
//! variables and their precedence in [`config`], delivery in [`push`], health and self
//! metrics in [`health`].
//!
//! # Why opentelemetry-proto and not the SDK pipeline (opentelemetry-otlp)
//! In `opentelemetry_sdk` 0.33 the metric data types (`ResourceMetrics`, `Sum`, ...) have no
//! public constructors, so `opentelemetry_otlp::MetricExporter` cannot be handed a snapshot.
//! The other SDK route, observable instruments whose callbacks read the latest snapshot, was
//! rejected because it takes from us exactly what this exporter must control: the SDK stamps
//! its own start time per instrument (not the boot, the guest's start or the first observation
//! per series, and no new start after a guest restarts), allows one `Resource` per
//! `SdkMeterProvider` (a provider per guest would come and go with guests), and cannot express
//! a histogram whose buckets are already aggregated by the kernel. So the request is built
//! directly from the generated OTLP types of `opentelemetry-proto` (the opentelemetry-rust
//! project's own protocol crate, the one opentelemetry-otlp itself sends with) and sent with
//! its tonic client. Attribute keys come from `opentelemetry-semantic-conventions`, so resource
//! keys are spelled by the conventions' crate rather than by hand.
//!
//! # Wiring (main)
//! ```ignore
//! let otlp = metrics_exporter::otlp::config::from_env()?;          // start-up error names the variable
//! let health = Arc::new(OtlpHealth::new(&otlp.endpoint));
//! tokio::spawn(metrics_exporter::otlp::run(otlp, snapshot_rx.clone(), health.clone(), shutdown));
//! // each collection: health.add_self_metrics(&mut builder) before finish();
//! // /health: exporter_healthy = health.is_healthy(); /status: health.status()
//! ```

pub mod config;
pub mod convert;
pub mod health;
pub mod push;

pub use config::{OtlpConfig, OtlpRaw};
pub use convert::{ResourceTemplate, StartTimes, to_request};
pub use health::{OtlpHealth, OtlpStatus};
pub use push::{OtlpError, run};
