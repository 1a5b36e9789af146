//! Shared by the otlp_* integration tests: an in-process OTLP/gRPC receiver on 127.0.0.1
//! (opentelemetry-proto's generated server), synthetic metric declarations and snapshots, and
//! a bounded wait. Each test binary uses a different subset, hence the dead_code allowance.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use metrics_exporter::model::{
    Histogram, Identity, Kind, MetricDesc, OtelName, Scope, Snapshot, SnapshotBuilder, Unit, Value,
};
use metrics_exporter::otlp::config::{OtlpConfig, OtlpRaw, validate};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use tokio::sync::oneshot;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

/// One export the receiver accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub request: ExportMetricsServiceRequest,
    pub metadata: MetadataMap,
}

#[derive(Debug, Default)]
struct State {
    received: Vec<Received>,
    /// Codes to answer, one per call, before accepting.
    script: VecDeque<Code>,
    calls: usize,
}

#[derive(Debug, Clone, Default)]
struct Service(Arc<Mutex<State>>);

#[tonic::async_trait]
impl MetricsService for Service {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut state = self.0.lock().unwrap();
        state.calls += 1;
        if let Some(code) = state.script.pop_front() {
            return Err(Status::new(code, "scripted failure"));
        }
        let metadata = request.metadata().clone();
        state.received.push(Received {
            request: request.into_inner(),
            metadata,
        });
        Ok(Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> Receiver {
        Self::start_on("127.0.0.1:0".parse().unwrap(), Vec::new()).await
    }

    /// Starts on `addr`, answering the scripted codes first.
    pub async fn start_on(addr: SocketAddr, script: Vec<Code>) -> Receiver {
        let incoming = TcpIncoming::bind(addr).expect("bind loopback receiver");
        let addr = incoming.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            ..Default::default()
        }));
        let service = MetricsServiceServer::new(Service(state.clone())).accept_compressed(CompressionEncoding::Gzip);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // One service needs no router: the generated server answers UNIMPLEMENTED for
            // any other path itself.
            Server::builder()
                .serve_with_incoming_shutdown(service, incoming, async {
                    let _ = stopped.await;
                })
                .await
                .expect("receiver serves");
        });
        Receiver {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops accepting and waits until the port is closed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn calls(&self) -> usize {
        self.state.lock().unwrap().calls
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A loopback port that was free a moment ago (for a receiver that appears later).
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A validated configuration for `endpoint` with test-sized intervals.
pub fn config(endpoint: &str, extra: impl FnOnce(&mut OtlpRaw)) -> OtlpConfig {
    let mut raw = OtlpRaw {
        otel_endpoint: Some(endpoint.to_owned()),
        otel_service_name: Some("otlp-test".to_owned()),
        otel_service_version: Some("9.9.9".to_owned()),
        otel_exporter_otlp_timeout: Some("1000".to_owned()),
        ..Default::default()
    };
    extra(&mut raw);
    let mut config = validate(&raw).expect("valid test configuration");
    config.backoff_initial = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(200);
    config
}

/// Polls `condition` every 20 ms; panics after 20 s so a broken exporter fails instead of
/// hanging. Nothing asserts how long it took.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub static CONTAINER_CPU: MetricDesc = MetricDesc {
    name: "container_cpu_usage_seconds_total",
    help: "CPU time of the guest by mode.",
    kind: Kind::Counter,
    unit: Unit::Seconds,
    labels: &["container_id", "host_name", "type", "mode"],
    scope: Scope::Guest,
    otel: Some(OtelName {
        name: "container.cpu.time",
        attributes: &["container.id", "container.name", "proxmox.guest.type", "cpu.mode"],
        fixed: &[],
    }),
};

pub static CONTAINER_MEMORY: MetricDesc = MetricDesc {
    name: "container_memory_usage_bytes",
    help: "Memory of the guest.",
    kind: Kind::Gauge,
    unit: Unit::Bytes,
    labels: &["container_id", "host_name", "type"],
    scope: Scope::Guest,
    otel: Some(OtelName {
        name: "container.memory.usage",
        attributes: &[],
        fixed: &[],
    }),
};

pub static MEMORY_USAGE: MetricDesc = MetricDesc {
    name: "node_memory_usage_bytes",
    help: "Memory in use.",
    kind: Kind::Gauge,
    unit: Unit::Bytes,
    labels: &[],
    scope: Scope::Node,
    otel: Some(OtelName {
        name: "system.memory.usage",
        attributes: &[],
        fixed: &[("system.memory.state", "used")],
    }),
};

pub static NETWORK_RX: MetricDesc = MetricDesc {
    name: "node_network_receive_bytes_total",
    help: "Bytes received.",
    kind: Kind::Counter,
    unit: Unit::Bytes,
    labels: &["device"],
    scope: Scope::Node,
    otel: Some(OtelName {
        name: "system.network.io",
        attributes: &["network.interface.name"],
        fixed: &[("network.io.direction", "receive")],
    }),
};

pub static PROCESSES: MetricDesc = MetricDesc {
    name: "node_processes_total",
    help: "Processes.",
    kind: Kind::Gauge,
    unit: Unit::Count("{process}"),
    labels: &[],
    scope: Scope::Node,
    otel: None,
};

pub static PRESSURE: MetricDesc = MetricDesc {
    name: "container_pressure_cpu_waiting_seconds_total",
    help: "PSI some of the guest.",
    kind: Kind::Counter,
    unit: Unit::Seconds,
    labels: &["container_id", "host_name", "type"],
    scope: Scope::Guest,
    otel: None,
};

pub static GUEST_INFO: MetricDesc = MetricDesc {
    name: "pve_guest_info",
    help: "Guest facts.",
    kind: Kind::Info,
    unit: Unit::Ratio,
    labels: &["container_id", "host_name", "type", "template"],
    scope: Scope::Guest,
    otel: None,
};

pub static RUNQ: MetricDesc = MetricDesc {
    name: "container_runqueue_latency_seconds",
    help: "Run-queue latency of the guest's tasks.",
    kind: Kind::Histogram,
    unit: Unit::Seconds,
    labels: &["container_id", "host_name", "type"],
    scope: Scope::Guest,
    otel: None,
};

/// A collection of two guests and the node; `cpu` is guest 101's user CPU counter.
pub fn snapshot(sequence: u64, cpu: f64) -> Snapshot {
    let mut b = SnapshotBuilder::new();
    b.push(&MEMORY_USAGE, [] as [&str; 0], 4.0e9);
    b.push(&NETWORK_RX, ["eth0"], 1.0e6 + sequence as f64);
    b.push(&PROCESSES, [] as [&str; 0], 312.0);
    for (id, name) in [("101", "web"), ("102", "db")] {
        let own = if id == "101" { cpu } else { 50.0 + sequence as f64 };
        b.push(&CONTAINER_CPU, [id, name, "lxc", "user"], own);
        b.push(&CONTAINER_CPU, [id, name, "lxc", "system"], own / 2.0);
        b.push(&CONTAINER_MEMORY, [id, name, "lxc"], 2.5e8);
        b.push(&PRESSURE, [id, name, "lxc"], 0.25 * sequence as f64);
        b.push(&GUEST_INFO, [id, name, "lxc", "0"], 1.0);
        b.push_value(
            &RUNQ,
            [id, name, "lxc"],
            Value::Histogram(Box::new(Histogram {
                buckets: vec![(0.0001, 10 * sequence), (0.001, 15 * sequence), (0.01, 17 * sequence)],
                sum: 0.003 * sequence as f64,
                count: 18 * sequence,
            })),
        );
    }
    let identity = Identity {
        host_name: "pve1".to_owned(),
        container_id: None,
        instance: "pve1".to_owned(),
    };
    b.finish(Arc::new(identity), SystemTime::now(), sequence)
}
