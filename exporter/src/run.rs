//! Start-up and the service's lifetime: configuration is validated, the platform detected,
//! collectors built, then either one collection (`--once`), a configuration report
//! (`--check-config`), or the service (collection loop + HTTP server until SIGTERM/SIGINT).
//!
//! Only the service loads the eBPF programs. `--once` has no observation window (its counters
//! would all read 0 since the programs were attached a moment before), and `--check-config`
//! must not touch the kernel: both report what the service would do, judged by [`plan_ebpf`]
//! from the configuration and the process's capabilities (`/proc/self/status` CapEff,
//! `/proc/self/uid_map`, `/sys/kernel/btf/vmlinux`) without a bpf() call.

use std::path::{Path, PathBuf};
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

/// What the process was started to do: it decides whether the eBPF programs are loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The service: the programs are loaded (per `EBPF`) and count from start on.
    Serve,
    /// `--once`: one collection, no observation window, so no eBPF counters.
    Once,
    /// `--check-config`: a report; nothing is loaded or attached.
    CheckConfig,
}

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
    /// What the service would do with the eBPF programs, judged without loading them.
    pub ebpf_plan: EbpfPlan,
    /// Set when EXPORT_FORMAT includes otlp.
    pub otlp: Option<crate::otlp::OtlpConfig>,
    /// WEB_CONFIG_FILE, loaded and checked (TLS, basic auth, headers).
    pub web: Option<Arc<crate::tls::WebLayer>>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// Installs the tracing subscriber: JSON lines (default) or text, on stderr. Text is coloured
/// only when stderr is a terminal: escape codes in a journal, a file or a pipe are noise.
pub fn init_logging(config: &Config) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::new(config.log_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Detects the platform and builds the collectors; loads the eBPF programs only to serve.
pub fn prepare(config: Config, purpose: Purpose) -> anyhow::Result<Prepared> {
    let otlp = if config.export_format.otlp {
        Some(crate::otlp::config::from_env().map_err(|e| StartupConfigError(e.to_string()))?)
    } else {
        None
    };
    let web = match &config.web_config_file {
        Some(path) => Some(Arc::new(
            crate::tls::WebLayer::load(path).map_err(|e| StartupConfigError(e.to_string()))?,
        )),
        None => None,
    };
    // Retrying less often than collections are made would leave a collector that comes back
    // without data for several intervals (after a long outage the backoff reaches its 30 s
    // cap): the backoff stops growing at one interval, so delivery resumes within one.
    let otlp = otlp.map(|mut otlp| {
        otlp.backoff_max = otlp.backoff_max.min(config.collection_interval);
        otlp
    });
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
        local_configs: Default::default(),
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
    let ebpf_plan = plan_ebpf(&EbpfInputs::observe(&config, detection.platform, guests.is_some()));
    let ebpf = match purpose {
        Purpose::Serve => start_ebpf(&config, detection.platform, &environment, guests.is_some())?,
        // EBPF=on promises that a start without the programs fails; --once keeps that promise
        // from the plan, since it does not load them.
        Purpose::Once if ebpf_plan.start_would_fail => {
            return Err(StartupFatal(format!(
                "EBPF=on but the eBPF programs cannot run: {}; set EBPF=auto to fall back to cgroupfs",
                ebpf_plan.reason
            ))
            .into());
        }
        Purpose::Once | Purpose::CheckConfig => ebpf::EbpfState::Unavailable(ebpf_plan.not_loaded_because(purpose)),
    };
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
    engine.set_collector_deadline(crate::engine::collector_deadline(config.collection_interval));
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
        ebpf_plan,
        otlp,
        web,
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
        serde_json::json!({
            "enabled": self.enabled,
            "built_in": !ebpf::NOT_BUILT,
            "reason": self.reason,
            "capabilities": ebpf::privileges::outcome(),
        })
    }
}

impl crate::engine::SelfMetrics for EbpfReport {
    fn add(&self, out: &mut crate::model::SnapshotBuilder) {
        if let Some(why) = &self.reason {
            ebpf::metrics::push_unavailable(out, why);
        }
        if let Some(drop) = ebpf::privileges::outcome() {
            ebpf::metrics::push_capabilities(out, drop);
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
    let options = match cgroup2_for_ebpf(environment) {
        Some((mount, root)) => {
            let mut options = ebpf::LoadOptions::new(mount);
            options.cgroup_mount_root = root;
            options
        }
        None => ebpf::LoadOptions::new("/sys/fs/cgroup"),
    };
    ebpf::start(config.ebpf, platform, &options).map_err(|fatal| {
        anyhow::Error::new(StartupFatal(format!(
            "EBPF=on but the eBPF programs cannot run: {}; set EBPF=auto to fall back to cgroupfs",
            fatal.0
        )))
    })
}

/// The cgroup2 hierarchy the programs fold guest cgroups in, and the mount's root inside it.
/// They count levels from the hierarchy's real root, so they need the actual cgroup2 mount,
/// not CGROUP_PATH (which may be a subtree); CGROUP_PATH only where no mount is listed.
fn cgroup2_for_ebpf(environment: &Environment) -> Option<(PathBuf, PathBuf)> {
    let mount = environment.mounts.iter().rev().find(|m| m.fs_type == "cgroup2");
    match (mount, &environment.cgroup_path) {
        (Some(m), _) => Some((
            environment.root_path.join(m.mount_point.trim_start_matches('/')),
            PathBuf::from(&m.root),
        )),
        (None, Some(path)) => Some((path.clone(), PathBuf::from("/"))),
        (None, None) => None,
    }
}

/// Linux capability numbers (<https://elixir.bootlin.com/linux/v6.18/source/include/uapi/linux/capability.h>).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What decides, without a bpf() call, whether the service would load the eBPF programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EbpfInputs {
    pub mode: EbpfMode,
    pub platform: Platform,
    pub guests_enabled: bool,
    pub built_in: bool,
    /// The effective capability set (`CapEff` of /proc/self/status); `None` if unreadable.
    pub effective_capabilities: Option<u64>,
    /// True when the process is in a user namespace other than the initial one: the kernel
    /// checks CAP_BPF and CAP_PERFMON in the initial namespace, so capabilities held there
    /// (`unshare -U -r`, an unprivileged container) do not count.
    pub in_user_namespace: Option<bool>,
    /// True when the process is in a cgroup namespace below the host's
    /// ([`ebpf::in_nested_cgroup_namespace`]).
    pub in_cgroup_namespace: Option<bool>,
    pub btf_present: bool,
}

impl EbpfInputs {
    /// Reads the process's own capabilities and user namespace (always the real
    /// `/proc/self`: they are properties of this process, not of PROC_PATH's system) and
    /// whether the kernel's BTF, which the programs are built against, is there.
    pub fn observe(config: &Config, platform: Platform, guests_enabled: bool) -> Self {
        let status = std::fs::read_to_string("/proc/self/status").ok();
        let uid_map = std::fs::read_to_string("/proc/self/uid_map").ok();
        EbpfInputs {
            mode: config.ebpf,
            platform,
            guests_enabled,
            built_in: !ebpf::NOT_BUILT && !ebpf::OBJECT.is_empty(),
            effective_capabilities: status.as_deref().and_then(parse_effective_capabilities),
            in_user_namespace: uid_map.as_deref().map(is_nested_user_namespace),
            in_cgroup_namespace: ebpf::in_nested_cgroup_namespace(),
            btf_present: Path::new("/sys/kernel/btf/vmlinux").exists(),
        }
    }
}

/// The `CapEff:` mask of a `/proc/<pid>/status` text.
pub fn parse_effective_capabilities(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Whether a `/proc/<pid>/uid_map` text is that of a user namespace below the initial one
/// (the initial namespace maps the whole range: `0 0 4294967295`).
pub fn is_nested_user_namespace(uid_map: &str) -> bool {
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    fields != ["0", "0", "4294967295"]
}

/// What the service would do with the eBPF programs; the `ebpf` object of `--check-config`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EbpfPlan {
    pub mode: EbpfMode,
    pub would_load: bool,
    /// Why not, as the running service would report it; `None` when it would load.
    pub kind: Option<ebpf::UnavailableKind>,
    pub reason: String,
    /// `EBPF=on` and the programs would not load: the service would refuse to start.
    pub start_would_fail: bool,
}

impl EbpfPlan {
    /// The state `--once` and `--check-config` report: the plan's own reason when the
    /// service would not load either, else that this run does not load them.
    fn not_loaded_because(&self, purpose: Purpose) -> ebpf::EbpfUnavailable {
        if let (false, Some(kind)) = (self.would_load, self.kind) {
            return ebpf::EbpfUnavailable::new(kind, self.reason.clone());
        }
        let message = match purpose {
            Purpose::Once => {
                "--once runs one collection, which has no observation window for the eBPF counters: not loaded"
            }
            Purpose::CheckConfig | Purpose::Serve => "--check-config does not touch the kernel: not loaded",
        };
        ebpf::EbpfUnavailable::new(ebpf::UnavailableKind::NoObservationWindow, message)
    }
}

/// Judges, from configuration and capabilities alone, whether the service would load the
/// programs. It mirrors `start_ebpf` and [`ebpf::start`]; what it cannot know without
/// loading (the verifier's verdict, a seccomp filter, `kernel.unprivileged_bpf_disabled` for
/// a process without capabilities) is said in the reason.
pub fn plan_ebpf(inputs: &EbpfInputs) -> EbpfPlan {
    use ebpf::UnavailableKind as Kind;
    let has = |cap: u32| inputs.effective_capabilities.map(|mask| mask & (1u64 << cap) != 0);
    let missing: Vec<&str> = [
        ("CAP_BPF", CAP_BPF),
        ("CAP_PERFMON", CAP_PERFMON),
        ("CAP_NET_ADMIN", CAP_NET_ADMIN),
    ]
    .into_iter()
    // CAP_SYS_ADMIN stands in for each of them.
    .filter(|(_, cap)| has(*cap) == Some(false) && has(CAP_SYS_ADMIN) == Some(false))
    .map(|(name, _)| name)
    .collect();
    let refusal: Option<(Kind, String)> = if inputs.mode == EbpfMode::Off {
        Some((Kind::Disabled, "EBPF=off".into()))
    } else if !inputs.guests_enabled && inputs.mode != EbpfMode::On {
        Some((
            Kind::NotNeeded,
            "the guests collector is not enabled, so there are no guest cgroups to count for".into(),
        ))
    } else if inputs.mode == EbpfMode::Auto && inputs.platform == Platform::Lxc {
        Some((
            Kind::InsideContainer,
            "inside an LXC container eBPF is refused and sees no other guest: not tried (EBPF=auto)".into(),
        ))
    } else if !inputs.built_in {
        Some((
            Kind::NotBuilt,
            "this binary was built with AYA_BUILD_SKIP=1 and contains no eBPF programs".into(),
        ))
    } else if inputs.in_user_namespace == Some(true) {
        Some((
            Kind::PermissionDenied,
            "the process is in a user namespace: the kernel refuses bpf() there (EPERM)".into(),
        ))
    } else if inputs.in_cgroup_namespace == Some(true) {
        Some((Kind::Unsupported, ebpf::CGROUP_NAMESPACE_REFUSAL.into()))
    } else if !missing.is_empty() {
        Some((
            Kind::PermissionDenied,
            format!("the process lacks {} (and CAP_SYS_ADMIN)", missing.join(", ")),
        ))
    } else if !inputs.btf_present {
        Some((
            Kind::Unsupported,
            "/sys/kernel/btf/vmlinux is missing: the kernel has no BTF for the sched_switch program".into(),
        ))
    } else {
        None
    };
    match refusal {
        Some((kind, reason)) => EbpfPlan {
            mode: inputs.mode,
            would_load: false,
            kind: Some(kind),
            start_would_fail: inputs.mode == EbpfMode::On,
            reason,
        },
        None => EbpfPlan {
            mode: inputs.mode,
            would_load: true,
            kind: None,
            start_would_fail: false,
            reason: format!(
                "EBPF={}: the capabilities and the kernel's BTF are there; the verifier's verdict is known only when the service loads them{}",
                match inputs.mode {
                    EbpfMode::On => "on",
                    EbpfMode::Auto | EbpfMode::Off => "auto",
                },
                if inputs.effective_capabilities.is_none() {
                    " (capabilities unreadable)"
                } else {
                    ""
                }
            ),
        },
    }
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
        "ebpf": prepared.ebpf_plan,
        "web_config": prepared.web.as_ref().map(|w| w.status()),
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
        web,
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
    if let Some(web) = &web {
        components.push(Arc::clone(web) as Arc<dyn Component>);
    }
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
        tls = web.as_ref().is_some_and(|w| w.tls()),
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
    let server = tokio::spawn(crate::http::serve_with(
        listener,
        Arc::clone(&app),
        crate::http::Limits::default(),
        web,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::UnavailableKind as Kind;

    /// Root on a Proxmox host: every capability, the initial user namespace, BTF.
    fn root_on_a_host() -> EbpfInputs {
        EbpfInputs {
            mode: EbpfMode::Auto,
            platform: Platform::Proxmox,
            guests_enabled: true,
            built_in: true,
            effective_capabilities: parse_effective_capabilities("CapEff:\t000001ffffffffff\n"),
            in_user_namespace: Some(is_nested_user_namespace("         0          0 4294967295\n")),
            in_cgroup_namespace: Some(false),
            btf_present: true,
        }
    }

    #[test]
    fn status_and_uid_map_texts() {
        let status = "Name:\tmetrics-exporter\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000000c000001000\n";
        assert_eq!(
            parse_effective_capabilities(status),
            Some((1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN))
        );
        assert_eq!(parse_effective_capabilities("Name:\tx\n"), None);
        assert!(!is_nested_user_namespace("         0          0 4294967295\n"));
        // `unshare -U -r` maps root to the caller's uid, one id wide.
        assert!(is_nested_user_namespace("         0       1000          1\n"));
        assert!(is_nested_user_namespace("         0     100000      65536\n"));
    }

    #[test]
    fn root_on_a_host_would_load() {
        let plan = plan_ebpf(&root_on_a_host());
        assert!(plan.would_load, "{plan:?}");
        assert_eq!(plan.kind, None);
        assert!(!plan.start_would_fail);
    }

    #[test]
    fn each_refusal_says_why() {
        let case = |change: &dyn Fn(&mut EbpfInputs)| {
            let mut inputs = root_on_a_host();
            change(&mut inputs);
            plan_ebpf(&inputs)
        };
        let off = case(&|i| i.mode = EbpfMode::Off);
        assert_eq!((off.would_load, off.kind), (false, Some(Kind::Disabled)));
        let unused = case(&|i| i.guests_enabled = false);
        assert_eq!(unused.kind, Some(Kind::NotNeeded));
        // EBPF=on loads even without the guests collector, as the service does.
        assert!(
            case(&|i| {
                i.guests_enabled = false;
                i.mode = EbpfMode::On
            })
            .would_load
        );
        assert_eq!(case(&|i| i.platform = Platform::Lxc).kind, Some(Kind::InsideContainer));
        assert_eq!(case(&|i| i.built_in = false).kind, Some(Kind::NotBuilt));
        let userns = case(&|i| i.in_user_namespace = Some(true));
        assert_eq!(userns.kind, Some(Kind::PermissionDenied));
        assert!(userns.reason.contains("user namespace"), "{}", userns.reason);
        let cgroupns = case(&|i| i.in_cgroup_namespace = Some(true));
        assert_eq!(cgroupns.kind, Some(Kind::Unsupported));
        assert!(cgroupns.reason.contains("cgroup namespace"), "{}", cgroupns.reason);
        // Only CAP_BPF and CAP_NET_ADMIN: CAP_PERFMON is named as missing.
        let caps = case(&|i| i.effective_capabilities = Some((1 << CAP_BPF) | (1 << CAP_NET_ADMIN)));
        assert_eq!(caps.kind, Some(Kind::PermissionDenied));
        assert!(
            caps.reason.contains("CAP_PERFMON") && !caps.reason.contains("CAP_BPF,"),
            "{}",
            caps.reason
        );
        // CAP_SYS_ADMIN alone stands in for all three.
        assert!(case(&|i| i.effective_capabilities = Some(1 << CAP_SYS_ADMIN)).would_load);
        assert_eq!(case(&|i| i.btf_present = false).kind, Some(Kind::Unsupported));
        let fatal = case(&|i| {
            i.mode = EbpfMode::On;
            i.effective_capabilities = Some(0)
        });
        assert!(!fatal.would_load && fatal.start_would_fail);
    }

    #[test]
    fn once_reports_no_window_or_the_plans_own_reason() {
        let plan = plan_ebpf(&root_on_a_host());
        let why = plan.not_loaded_because(Purpose::Once);
        assert_eq!(why.kind, Kind::NoObservationWindow);
        assert!(why.message.contains("--once"), "{why}");
        let mut inputs = root_on_a_host();
        inputs.mode = EbpfMode::Off;
        assert_eq!(
            plan_ebpf(&inputs).not_loaded_because(Purpose::Once).kind,
            Kind::Disabled
        );
    }
}
