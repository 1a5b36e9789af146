//! The binary with EXPORT_FORMAT=prometheus,otlp: one collection reaches both outputs with
//! equal values, /health follows the collector (healthy, then not once it is gone), and
//! SIGTERM still exits 0 while exports fail.

mod common;
mod otlp_support;

use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as PointValue;

use common::{Exporter, fixture_env, parse_exposition, value};
use otlp_support::{Receiver, eventually};

/// The value of the `system.network.io` point for `interface` and `direction` in `received`.
fn network_io(received: &[otlp_support::Received], interface: &str, direction: &str) -> Option<f64> {
    let attr = |kv: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str| {
        kv.iter()
            .find(|a| a.key == key)
            .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            })
    };
    let last = received.last()?;
    for resource in &last.request.resource_metrics {
        for scope in &resource.scope_metrics {
            for metric in scope.metrics.iter().filter(|m| m.name == "system.network.io") {
                let Some(Data::Sum(sum)) = &metric.data else { continue };
                for point in &sum.data_points {
                    if attr(&point.attributes, "network.interface.name").as_deref() == Some(interface)
                        && attr(&point.attributes, "network.io.direction").as_deref() == Some(direction)
                    {
                        return match point.value {
                            Some(PointValue::AsDouble(v)) => Some(v),
                            Some(PointValue::AsInt(v)) => Some(v as f64),
                            None => None,
                        };
                    }
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_and_otlp_carry_the_same_values_and_health_follows_the_collector() {
    let receiver = Receiver::start().await;
    let mut env = fixture_env("lxc-container", "lxc");
    env.push(("EXPORT_FORMAT".into(), "prometheus,otlp".into()));
    env.push(("OTEL_ENDPOINT".into(), receiver.endpoint()));
    env.push(("OTEL_EXPORTER_OTLP_TIMEOUT".into(), "500".into()));
    env.push(("COLLECTION_INTERVAL".into(), "1".into()));
    let mut exporter = tokio::task::spawn_blocking(move || Exporter::start(&env))
        .await
        .unwrap();

    eventually("an OTLP export", || !receiver.received().is_empty()).await;
    let otlp = network_io(&receiver.received(), "eth0", "receive");
    let series = parse_exposition(&exporter.get("/metrics").text());
    let prometheus = value(&series, "node_network_receive_bytes_total", &[("device", "eth0")]);
    assert_eq!(prometheus, Some(27908331540.0));
    assert_eq!(otlp, prometheus);
    assert_eq!(
        network_io(&receiver.received(), "eth0", "transmit"),
        Some(318442907166.0)
    );
    let health = exporter.get("/health").json();
    assert_eq!(health["export_format"], "prometheus,otlp");
    assert_eq!(health["exporter_healthy"], true);

    // The collector goes away: exports fail and /health says so, collection goes on.
    receiver.stop().await;
    let address = exporter.address;
    eventually("exporter_healthy false", || {
        common::get(address, "/health")
            .map(|r| r.json()["exporter_healthy"] == false)
            .unwrap_or(false)
    })
    .await;
    let status = exporter.get("/status").json();
    assert_eq!(status["exporter"]["components"]["otlp"]["healthy"], false);
    assert_eq!(exporter.get("/metrics").status, 200);
    let status = tokio::task::spawn_blocking(move || exporter.terminate()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}
