//! Encoders of a [`crate::model::Snapshot`]: Prometheus text 0.0.4 and OpenMetrics 1.0, both through
//! prometheus-client, whose 0.26 encoders escape label values (`\`, `"`, newline) and HELP
//! text. The encoders are pure: snapshot in, text out.

pub mod prometheus;
