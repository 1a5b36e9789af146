//! What reaches the collector besides the metrics: authentication headers and gzip, checked on
//! an in-process receiver on 127.0.0.1; and the start-up errors for endpoint and header values.

mod otlp_support;

use std::sync::Arc;

use metrics_exporter::otlp::config::{OtlpRaw, validate};
use metrics_exporter::otlp::{OtlpHealth, run};
use otlp_support::*;
use tokio::sync::{oneshot, watch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_headers_and_gzip_reach_the_receiver() {
    let receiver = Receiver::start().await;
    let config = config(&format!("http://{}", receiver.endpoint()), |raw| {
        raw.otel_exporter_otlp_headers = Some("Authorization=Bearer%20t0ken, X-Scope-OrgID=tenant-a".into());
        raw.otel_exporter_otlp_compression = Some("gzip".into());
    });
    assert!(!format!("{config:?}").contains("t0ken"), "credentials never in Debug");
    let (publish, snapshots) = watch::channel(None);
    let health = Arc::new(OtlpHealth::new(&config.endpoint));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(config, snapshots, health.clone(), async {
        let _ = stopped.await;
    }));
    publish.send_replace(Some(Arc::new(snapshot(1, 1.0))));
    eventually("delivered", || receiver.received().len() == 1).await;

    let metadata = &receiver.received()[0].metadata;
    assert_eq!(metadata.get("authorization").unwrap().to_str().unwrap(), "Bearer t0ken");
    assert_eq!(metadata.get("x-scope-orgid").unwrap().to_str().unwrap(), "tenant-a");
    assert_eq!(metadata.get("grpc-encoding").unwrap().to_str().unwrap(), "gzip");
    assert!(metadata.get("grpc-timeout").is_some(), "the deadline is sent");
    assert!(!format!("{:?}", health.status()).contains("t0ken"));
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[test]
fn otlp_invalid_endpoint_and_header_values_are_start_up_errors_naming_the_variable() {
    type Case = (&'static str, fn(&mut OtlpRaw));
    let cases: [Case; 5] = [
        ("OTEL_ENDPOINT", |r| r.otel_endpoint = Some("collector:port".into())),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", |r| {
            r.otel_exporter_otlp_endpoint = Some("ftp://collector:4317".into())
        }),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", |r| {
            r.otel_exporter_otlp_metrics_endpoint = Some("http://collector:4318/v1/metrics".into())
        }),
        ("OTEL_EXPORTER_OTLP_HEADERS", |r| {
            r.otel_exporter_otlp_headers = Some("authorization".into())
        }),
        ("OTEL_EXPORTER_OTLP_HEADERS", |r| {
            r.otel_exporter_otlp_headers = Some("api-key=s3cr3t\u{7f}".into())
        }),
    ];
    for (variable, set) in cases {
        let mut raw = OtlpRaw::default();
        set(&mut raw);
        let error = validate(&raw).unwrap_err();
        let line = error.to_string();
        assert_eq!(error.variable, variable, "{line}");
        assert!(line.starts_with(&format!("invalid {variable}=")), "{line}");
        assert!(!line.contains('\n') && !line.contains("s3cr3t"), "{line}");
    }
}
