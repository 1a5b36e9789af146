//! Start-up and the service's lifetime: configuration is validated, the platform detected,
//! collectors built, then either one collection (`--once`), a configuration report
//! (`--check-config`), or the service (collection loop + HTTP server until SIGTERM/SIGINT).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use crate::collectors::{self, Collector, Environment};
use crate::config::{Config, EbpfMode, LogFormat};
use crate::ebpf;
use crate::engine::Engine;
use crate::model::Identity;
use crate::platform::{self, Detection, IdentitySources, Platform};
use crate::promfile::{self, FileOutput};
use crate::service::{self, AppParts, Component};

/// An error that is the user's configuration: reported as one line, exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupConfigError(pub String);

/// Everything decided before collecting.
pub struct Prepared {
    pub config: Config,
    pub detection: Detection,
    pub identity: Arc<Identity>,
    pub identity_sources: IdentitySources,
    pub environment: Environment,
    pub enabled: Vec<&'static str>,
    pub engine: Engine,
    /// Whether the eBPF programs run, and why not.
    pub ebpf: Arc<EbpfReport>,
    /// Set when EXPORT_FORMAT includes otlp.
    pub otlp: Option<crate::otlp::OtlpConfig>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// Installs the tracing subscriber: JSON lines (default) or text, on stderr.
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(config.log_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Detects the platform and builds the collectors.
pub fn prepare(config: Config) -> anyhow::Result<Prepared> {
    let otlp = if config.export_format.otlp {
        Some(crate::otlp::config::from_env().map_err(|e| StartupConfigError(e.to_string()))?)
    } else {
        None
    };
    if let Some(path) = &config.prometheus_file {
        promfile::check_target(path).map_err(|e| {
            StartupConfigError(format!(
                "invalid PROMETHEUS_FILE={:?}: its directory is unusable: {e}",
                path.display().to_string()
            ))
        })?;
    }
    let observations = platform::observe(&config);
    let detection = platform::decide(&observations, config.platform);
    let mounts = observations.mounts.clone().unwrap_or_default();
    let cgroup_path: Option<PathBuf> = match &config.cgroup_path {
        Some(path) => {
            if !path.is_dir() {
                return Err(StartupConfigError(format!(
                    "invalid CGROUP_PATH={:?}: accepted values: an existing directory (the cgroup2 mount)",
                    path.display().to_string()
                ))
                .into());
            }
            Some(path.clone())
        }
        None => platform::cgroup2_mount(&mounts, &config.proc_path),
    };
    let (identity, identity_sources) = platform::identity(&config, detection.platform, &mounts);
    let identity = Arc::new(identity);
    let environment = Environment {
        platform: detection.platform,
        proc_path: config.proc_path.clone(),
        sys_path: config.sys_path.clone(),
        root_path: platform::root_of(&config.proc_path),
        cgroup_path,
        pve_path: config.pve_path.clone(),
        mounts,
    };
    let enabled: Vec<&'static str> = match &config.enabled_collectors {
        Some(names) => collectors::names()
            .into_iter()
            .filter(|n| names.iter().any(|m| m == n))
            .collect(),
        None => collectors::defaults_for(detection.platform),
    };
    // The guests collector is made before the eBPF programs are loaded: it sizes the
    // descriptor table while the process has one thread (the eBPF log reader is a second
    // one), see collectors::proxmox::files::FdBudget::reserve_table.
    let mut guests = enabled
        .contains(&"guests")
        .then(|| collectors::proxmox::guests::GuestsCollector::new(&environment));
    let ebpf = start_ebpf(&config, detection.platform, &environment, guests.is_some())?;
    let mut ebpf_runtime = None;
    let ebpf_report = match ebpf {
        ebpf::EbpfState::Loaded(runtime) => {
            ebpf_runtime = Some(runtime);
            EbpfReport {
                enabled: true,
                reason: None,
            }
        }
        ebpf::EbpfState::Unavailable(why) => EbpfReport {
            enabled: false,
            reason: Some(why),
        },
    };
    let mut built: Vec<Box<dyn Collector>> = Vec::new();
    for name in &enabled {
        if *name == "guests"
            && let Some(mut guests) = guests.take()
        {
            if let Some(runtime) = ebpf_runtime.take() {
                guests = guests.with_ebpf(runtime);
            }
            built.push(Box::new(guests));
            continue;
        }
        match collectors::create(name, &environment) {
            Some(collector) => built.push(collector),
            None => anyhow::bail!("collector {name} is in the catalogue but has no implementation"),
        }
    }
    let mut engine = Engine::new(
        built,
        Arc::clone(&identity),
        config.proc_path.clone(),
        detection.platform.as_str(),
    );
    engine.set_ebpf_label(if ebpf_report.enabled { "yes" } else { "no" });
    let ebpf_report = Arc::new(ebpf_report);
    engine.add_self_metrics(Arc::clone(&ebpf_report) as Arc<dyn crate::engine::SelfMetrics>);
    Ok(Prepared {
        config,
        detection,
        identity,
        identity_sources,
        environment,
        enabled,
        engine,
        ebpf: ebpf_report,
        otlp,
    })
}

/// Whether the eBPF programs run; a [`Component`] for /status and a source of
/// `metrics_exporter_ebpf_enabled 0{reason}` when they do not (the guests collector reports
/// the running case with the programs' own statistics).
#[derive(Debug)]
pub struct EbpfReport {
    pub enabled: bool,
    pub reason: Option<ebpf::EbpfUnavailable>,
}

impl Component for EbpfReport {
    fn name(&self) -> &'static str {
        "ebpf"
    }
    fn healthy(&self) -> Option<bool> {
        // Falling back to cgroupfs is a supported mode, not a failure of the exporter.
        None
    }
    fn status(&self) -> serde_json::Value {
        serde_json::json!({ "enabled": self.enabled, "built_in": !ebpf::NOT_BUILT, "reason": self.reason })
    }
}

impl crate::engine::SelfMetrics for EbpfReport {
    fn add(&self, out: &mut crate::model::SnapshotBuilder) {
        if let Some(why) = &self.reason {
            ebpf::metrics::push_unavailable(out, why);
        }
    }
}

/// Loads the eBPF programs when they have a use (the guests collector) or EBPF=on demands
/// them. A failure under EBPF=on stops the start.
fn start_ebpf(
    config: &Config,
    platform: Platform,
    environment: &Environment,
    guests_enabled: bool,
) -> anyhow::Result<ebpf::EbpfState> {
    if ebpf::NOT_BUILT {
        tracing::warn!(
            "this binary was built without eBPF programs (AYA_BUILD_SKIP): guest metrics come from cgroupfs and sysfs only"
        );
    }
    if !guests_enabled && config.ebpf != EbpfMode::On {
        return Ok(ebpf::EbpfState::Unavailable(ebpf::EbpfUnavailable::new(
            ebpf::UnavailableKind::NotNeeded,
            "the guests collector is not enabled, so there are no guest cgroups to count for",
        )));
    }
    // The programs fold cgroups to the guest level counted from the hierarchy's real root, so
    // they need the actual cgroup2 mount and its root, not CGROUP_PATH (which may be a subtree).
    let mount = environment.mounts.iter().rev().find(|m| m.fs_type == "cgroup2");
    let options = match (mount, &environment.cgroup_path) {
        (Some(m), _) => {
            let mut options = ebpf::LoadOptions::new(environment.root_path.join(m.mount_point.trim_start_matches('/')));
            options.cgroup_mount_root = PathBuf::from(&m.root);
            options
        }
        (None, Some(path)) => ebpf::LoadOptions::new(path),
        (None, None) => ebpf::LoadOptions::new("/sys/fs/cgroup"),
    };
    ebpf::start(config.ebpf, platform, &options).map_err(|fatal| {
        anyhow::Error::new(StartupFatal(format!(
            "EBPF=on but the eBPF programs cannot run: {}; set EBPF=auto to fall back to cgroupfs",
            fatal.0
        )))
    })
}

/// A start-up failure that is not the configuration's fault (exit status 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupFatal(pub String);

/// `--check-config`: the effective configuration and the detection with its evidence.
pub fn check_config_report(prepared: &Prepared) -> serde_json::Value {
    serde_json::json!({
        "config": prepared.config,
        "platform": prepared.detection,
        "identity": *prepared.identity,
        "identity_sources": prepared.identity_sources,
        "cgroup_path": prepared.environment.cgroup_path,
        "enabled_collectors": prepared.enabled,
        "otlp": prepared.otlp,
        "ebpf": prepared.ebpf.status(),
    })
}

/// `--once`: one collection as Prometheus text; `Ok(false)` when every collector failed.
pub fn once(mut prepared: Prepared) -> (String, bool) {
    let collection = prepared.engine.collect();
    let text = crate::encode::prometheus::encode_text(&collection.snapshot);
    (text, collection.any_success())
}

/// Runs the service until SIGTERM or SIGINT.
pub async fn serve(prepared: Prepared) -> anyhow::Result<()> {
    let Prepared {
        config,
        detection,
        identity,
        identity_sources,
        enabled,
        mut engine,
        otlp,
        ebpf: ebpf_report,
        ..
    } = prepared;
    let address = std::net::SocketAddr::new(config.listen_address, config.metrics_port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (LISTEN_ADDRESS, METRICS_PORT)"))?;
    let mut components: Vec<Arc<dyn Component>> = Vec::new();
    let file = config
        .prometheus_file
        .clone()
        .map(|path| Arc::new(FileOutput::new(path)));
    if let Some(file) = &file {
        components.push(Arc::clone(file) as Arc<dyn Component>);
        engine.add_self_metrics(Arc::clone(file) as Arc<dyn crate::engine::SelfMetrics>);
    }
    components.push(Arc::clone(&ebpf_report) as Arc<dyn Component>);
    let otlp_health = otlp
        .as_ref()
        .map(|c| Arc::new(crate::otlp::OtlpHealth::new(c.endpoint.clone())));
    if let Some(health) = &otlp_health {
        components.push(Arc::clone(health) as Arc<dyn Component>);
        engine.add_self_metrics(Arc::clone(health) as Arc<dyn crate::engine::SelfMetrics>);
    }
    let notes = engine.notes();
    let platform: Platform = detection.platform;
    let parts = AppParts {
        config,
        detection,
        identity,
        identity_sources,
        catalogue: collectors::CATALOGUE,
        enabled,
        notes,
    };
    let (app, handles) = service::new_app(parts, components);
    let (stop_tx, stop_rx) = watch::channel(false);
    tracing::info!(
        %address,
        platform = platform.as_str(),
        collectors = ?app.enabled,
        interval_seconds = app.config.collection_interval.as_secs(),
        "metrics-exporter started"
    );
    let otlp_task = match (otlp, otlp_health) {
        (Some(otlp_config), Some(health)) => {
            let snapshots = service::subscribe_snapshots(&handles);
            let mut stop = stop_rx.clone();
            let shutdown = async move { service::stopped(&mut stop).await };
            Some(tokio::spawn(crate::otlp::run(otlp_config, snapshots, health, shutdown)))
        }
        _ => None,
    };
    let collection_loop = tokio::spawn(service::run_loop(
        engine,
        Arc::clone(&app),
        handles,
        file,
        stop_rx.clone(),
    ));
    let server = tokio::spawn(crate::http::serve(
        listener,
        Arc::clone(&app),
        crate::http::Limits::default(),
        stop_rx,
    ));
    wait_for_signal().await?;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = collection_loop.await;
    if let Some(task) = otlp_task {
        match task.await {
            Ok(Err(e)) => tracing::error!(error = %e, "the OTLP exporter failed"),
            Err(e) => tracing::error!(error = %e, "the OTLP exporter task failed"),
            Ok(Ok(())) => {}
        }
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
