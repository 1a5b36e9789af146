//! The eBPF runtime: loads the programs of `exporter-ebpf`, assigns guest slots, and reads
//! every guest's counters from shared memory.
//!
//! Hooks (see `exporter-ebpf`): the BTF tracepoint `sched_switch` (task field offsets come from
//! the kernel's BTF, [`btf`]), raw tracepoints `sched_process_fork|exec|exit`, and cgroup_skb
//! ingress/egress attached once at the root of the cgroup2 hierarchy. Metrics: the eBPF-only guest families and the
//! `metrics_exporter_ebpf_*` self families of [`metrics`]; per-guest CPU time is handed to the
//! Proxmox collector, which exports it under the same name as its cgroupfs value.
//!
//! Use from a guests collector:
//! 1. [`start`] once at start with the `EBPF` mode and the platform: it returns either a
//!    loaded [`EbpfRuntime`] or the reason there is none ([`EbpfUnavailable`], shown in
//!    /status and as `metrics_exporter_ebpf_enabled 0`), and logs one line either way;
//!    `EBPF=on` turns a failure into [`EbpfFatal`]. After a load it drops every capability of
//!    the process ([`privileges`]): nothing below needs one.
//! 2. [`EbpfRuntime::assign`] when a guest's cgroup is discovered: the slot identifies the
//!    guest from then on; assigning is a write into the mmap-ed slot table (no bpf() call). [`EbpfRuntime::release`] when it goes: the slot is reused later
//!    without carrying counts over (a baseline is taken at the next assignment).
//! 3. Once per collection, [`EbpfRuntime::read_into`] (or [`EbpfRuntime::read_all`]): every
//!    guest's counters from one mmap-ed, per-CPU-striped array, without a syscall.
//!    [`EbpfRuntime::self_stats`] gives the programs' own cost and the maps' fill levels.

pub mod btf;
pub mod logs;
pub mod metrics;
pub mod mmap;
pub mod privileges;

use std::collections::HashMap;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use aya::maps::Map;
use aya::programs::{BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, RawTracePoint};
use aya::{Ebpf, EbpfLoader};
use exporter_common::{
    BTF_TRACEPOINTS, COUNTERS_MAP, EVENT_STATS_LEN, EVENT_STATS_MAP, GLOBAL_PREV_SUM_EXEC_RUNTIME_OFFSET,
    GLOBAL_RUN_DELAY_OFFSET, GLOBAL_SUM_EXEC_RUNTIME_OFFSET, GuestCounters, MAX_GUESTS, RAW_TRACEPOINTS,
    SKB_EGRESS_PROGRAM, SKB_INGRESS_PROGRAM, SLOT_TABLE_ENTRIES, SLOT_TABLE_MAP, SLOT_TABLE_PROBES, STAT_BAD_SLOT,
    STAT_UNSEEN_SWITCH_IN, SlotEntry, SlotTable, slot_home,
};

use crate::config::EbpfMode;
use crate::platform::Platform;

/// The object built by `exporter/build.rs`; empty when built with `AYA_BUILD_SKIP=1`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/exporter-ebpf"));

/// True when this binary was built with `AYA_BUILD_SKIP=1` and carries no eBPF programs.
pub const NOT_BUILT: bool = cfg!(ebpf_object_empty);

/// `statfs` magic of cgroup2 (<https://elixir.bootlin.com/linux/v6.18/source/include/uapi/linux/magic.h>).
const CGROUP2_SUPER_MAGIC: u32 = 0x6367_7270;

/// Why the eBPF programs are not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnavailableKind {
    /// `EBPF=off`.
    Disabled,
    /// `EBPF=auto` inside an LXC container: not tried (a container's user namespace refuses
    /// bpf() and sees no other guest anyway).
    InsideContainer,
    /// Built with `AYA_BUILD_SKIP=1`: the binary has no programs.
    NotBuilt,
    /// No collector that would use them is enabled (the programs count per guest, and only
    /// the `guests` collector discovers guests): not loaded, so they cost nothing.
    NotNeeded,
    /// `--once` or `--check-config`: a run without an observation window (and, for the
    /// report, without touching the kernel), so the programs are not loaded.
    NoObservationWindow,
    /// The kernel refused: EPERM or EACCES (no CAP_BPF/CAP_PERFMON/CAP_NET_ADMIN, a user
    /// namespace, `kernel.unprivileged_bpf_disabled`).
    PermissionDenied,
    /// The kernel lacks something (ENOSYS, EINVAL on an older kernel, a missing hook).
    Unsupported,
    /// Anything else, with its message.
    Failed,
}

/// The reason the programs are not running, kept for /status, the log and
/// `metrics_exporter_ebpf_enabled{reason}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EbpfUnavailable {
    pub kind: UnavailableKind,
    /// The errno of the failing syscall, when there was one.
    pub errno: Option<i32>,
    pub message: String,
}

impl fmt::Display for EbpfUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errno {
            Some(errno) => write!(f, "{} (errno {errno} {})", self.message, errno_name(errno)),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for EbpfUnavailable {}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOSYS => "ENOSYS",
        libc::EINVAL => "EINVAL",
        libc::ENOENT => "ENOENT",
        libc::ENOMEM => "ENOMEM",
        libc::E2BIG => "E2BIG",
        libc::EBUSY => "EBUSY",
        _ => "",
    }
}

impl EbpfUnavailable {
    pub fn new(kind: UnavailableKind, message: impl Into<String>) -> Self {
        EbpfUnavailable {
            kind,
            errno: None,
            message: message.into(),
        }
    }

    /// Classifies a load error by the errno found in its source chain (never by a map or
    /// program name, which varies with what the kernel happens to refuse first).
    fn from_error(context: &str, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut errno = None;
        let mut message = format!("{context}: {error}");
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                errno = io.raw_os_error();
            }
            if e.source().is_none() && !std::ptr::eq(e, error) {
                message = format!("{context}: {error}: {e}");
            }
            source = e.source();
        }
        let kind = match errno {
            Some(libc::EPERM | libc::EACCES) => UnavailableKind::PermissionDenied,
            Some(libc::ENOSYS | libc::EINVAL | libc::ENOENT | libc::EOPNOTSUPP) => UnavailableKind::Unsupported,
            _ => UnavailableKind::Failed,
        };
        EbpfUnavailable { kind, errno, message }
    }
}

/// `EBPF=on` and the programs could not be loaded: the exporter must not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EBPF=on but the eBPF programs cannot run: {0}")]
pub struct EbpfFatal(pub EbpfUnavailable);

/// What [`start`] decided.
#[derive(Debug)]
pub enum EbpfState {
    Loaded(Box<EbpfRuntime>),
    Unavailable(EbpfUnavailable),
}

/// Where the cgroup2 hierarchy is, and how to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The cgroup2 mount point (`Environment::cgroup_path`).
    pub cgroup_mount: PathBuf,
    /// The mount's root inside the hierarchy (mountinfo's 4th field): `/` on a host; deeper
    /// for a bind mount or inside a cgroup namespace. Guest levels count from the real root.
    pub cgroup_mount_root: PathBuf,
    /// Turn on the kernel's bpf run-time statistics (BPF_ENABLE_STATS) for as long as the
    /// runtime lives, for the `metrics_exporter_ebpf_program_*` series. The kernel then times
    /// every bpf program on the machine (two clock reads per run, ~20-50 ns here); it needs
    /// CAP_SYS_ADMIN, and without it the series are absent and /status says why.
    pub enable_stats: bool,
    /// Forward the kernel side's aya-log records to tracing (one thread).
    pub forward_logs: bool,
}

impl LoadOptions {
    pub fn new(cgroup_mount: impl Into<PathBuf>) -> Self {
        LoadOptions {
            cgroup_mount: cgroup_mount.into(),
            cgroup_mount_root: PathBuf::from("/"),
            enable_stats: true,
            forward_logs: true,
        }
    }
}

/// What `/proc/self/ns/cgroup` links to in the initial cgroup namespace (`PROC_CGROUP_INIT_INO`
/// of include/linux/proc_ns.h), and only there.
const INITIAL_CGROUP_NAMESPACE: &str = "cgroup:[4026531835]";

/// Why the programs are not loaded in a cgroup namespace below the host's.
pub const CGROUP_NAMESPACE_REFUSAL: &str = "the process is in a cgroup namespace below the host's (a container's, or Docker's default --cgroupns=private): the programs find a task's guest by its absolute cgroup level, which cannot be known from inside one, so every guest would count nothing; run the exporter in the host's cgroup namespace";

/// Whether this process is in a cgroup namespace other than the initial one (always the real
/// `/proc/self`: a property of this process); `None` when the kernel has no cgroup namespaces.
/// Found under a real systemd in a container: there the guests' levels seen through the
/// namespace are not the kernel's, and every guest counted 0 forks, execs and exits.
pub fn in_nested_cgroup_namespace() -> Option<bool> {
    std::fs::read_link("/proc/self/ns/cgroup")
        .ok()
        .map(|link| link.as_os_str() != INITIAL_CGROUP_NAMESPACE)
}

/// Decides and loads according to `EBPF` and the platform, logging one line.
///
/// When it tried to load (whatever the outcome), it then drops every capability of the process
/// ([`privileges::drop_after_start`]): they serve only to load and attach. It must be called
/// while the process has one thread; the eBPF log reader thread is started after the drop.
pub fn start(mode: EbpfMode, platform: Platform, options: &LoadOptions) -> Result<EbpfState, EbpfFatal> {
    let outcome = match mode {
        EbpfMode::Off => Err(EbpfUnavailable::new(UnavailableKind::Disabled, "EBPF=off")),
        EbpfMode::Auto if platform == Platform::Lxc => Err(EbpfUnavailable::new(
            UnavailableKind::InsideContainer,
            "inside an LXC container eBPF is refused and sees no other guest: not tried (EBPF=auto)",
        )),
        EbpfMode::Auto | EbpfMode::On if in_nested_cgroup_namespace() == Some(true) => Err(EbpfUnavailable::new(
            UnavailableKind::Unsupported,
            CGROUP_NAMESPACE_REFUSAL,
        )),
        EbpfMode::Auto | EbpfMode::On => {
            // The log reader thread starts after the drop, so that it holds no capability.
            let without_logs = LoadOptions {
                forward_logs: false,
                ..options.clone()
            };
            EbpfRuntime::load(&without_logs).map(Box::new)
        }
    };
    // A binary without programs touched nothing: there is no load to drop after.
    let tried = match &outcome {
        Ok(_) => true,
        Err(why) => !matches!(
            why.kind,
            UnavailableKind::Disabled | UnavailableKind::InsideContainer | UnavailableKind::NotBuilt
        ),
    };
    match outcome {
        Ok(mut runtime) => {
            tracing::info!(
                programs = BTF_TRACEPOINTS.len() + RAW_TRACEPOINTS.len() + 2,
                bpf_stats = runtime.stats_error.is_none(),
                "eBPF programs loaded: guest CPU, run-queue, task and socket counters come from kernel maps"
            );
            privileges::drop_after_start();
            if options.forward_logs {
                runtime.forward_logs();
            }
            Ok(EbpfState::Loaded(runtime))
        }
        Err(why) if mode == EbpfMode::On => {
            tracing::error!(reason = %why, "EBPF=on but the eBPF programs cannot run");
            Err(EbpfFatal(why))
        }
        Err(why) => {
            if matches!(why.kind, UnavailableKind::Disabled | UnavailableKind::InsideContainer) {
                tracing::info!(reason = %why, "eBPF not used: guest metrics come from cgroupfs and sysfs");
            } else {
                tracing::warn!(reason = %why, "eBPF unavailable, falling back to cgroupfs and sysfs");
            }
            if tried {
                privileges::drop_after_start();
            }
            Ok(EbpfState::Unavailable(why))
        }
    }
}

/// A guest slot: an index into the counters, stable while the guest lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Slot(u32);

impl Slot {
    pub fn index(self) -> u32 {
        self.0
    }
}

/// One guest's counters since its assignment (baseline subtracted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestReading {
    pub slot: Slot,
    pub counters: GuestCounters,
}

impl GuestReading {
    /// On-CPU time in seconds: the quantity of cpu.stat `usage_usec`, exported by the guests
    /// collector as `container_cpu_usage_seconds_total` whichever source fed it.
    pub fn cpu_seconds(&self) -> f64 {
        self.counters.cpu_ns as f64 / 1e9
    }
}

/// Why a guest could not get a slot. The guest's metrics then come from cgroupfs.
#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a directory on a cgroup2 filesystem")]
    NotCgroup2 { path: PathBuf },
    #[error("{path}: not below the cgroup2 mount {mount}")]
    OutsideMount { path: PathBuf, mount: PathBuf },
    #[error(
        "{path}: guest at cgroup level {level}, but guests are at level {expected} (the programs fold to one level)"
    )]
    LevelMismatch { path: PathBuf, level: u32, expected: u32 },
    #[error("{path}: no free guest slot ({used} of {capacity} in use)")]
    Full { path: PathBuf, used: usize, capacity: u32 },
    #[error("{path}: the slot table has no free entry within {probes} probes of this cgroup id")]
    TableCrowded { path: PathBuf, probes: usize },
    #[error("{path}: cgroup already assigned to guest {key:?}")]
    Duplicate { path: PathBuf, key: String },
}

#[derive(Debug)]
struct Guest {
    key: String,
    cgroup_id: u64,
    table_index: usize,
    baseline: GuestCounters,
}

/// One program's cumulative cost from the kernel's bpf stats.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProgramStats {
    pub name: &'static str,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// The eBPF side's own observability.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SelfStats {
    pub bpf_stats_enabled: bool,
    /// Why bpf stats are off, when they are.
    pub bpf_stats_error: Option<String>,
    pub programs: Vec<ProgramStats>,
    pub slots_used: usize,
    pub slots_capacity: u32,
    pub slot_table_capacity: usize,
    pub guests_rejected: u64,
    /// Kernel-side event counters; `None` when the map could not be read.
    pub unseen_switch_in: Option<u64>,
    pub bad_slot: Option<u64>,
    pub nr_cpus: usize,
}

/// The loaded programs and their maps. Dropping it detaches everything (links are fd-owned).
pub struct EbpfRuntime {
    // Field order is drop order: stop the log thread, unmap, then close the object.
    logs: Option<logs::LogForwarder>,
    counters: mmap::Mapping,
    table: mmap::Mapping,
    events: mmap::Mapping,
    stats_fd: Option<OwnedFd>,
    stats_error: Option<String>,
    nr_cpus: usize,
    level: Option<u32>,
    guests: Vec<Option<Guest>>,
    /// Assigned slots in ascending order: what a read walks (the slot vector itself is large).
    assigned: Vec<u32>,
    by_cgroup: HashMap<u64, Slot>,
    rejected: u64,
    cgroup_mount: PathBuf,
    cgroup_mount_root: PathBuf,
    ebpf: Ebpf,
}

impl fmt::Debug for EbpfRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EbpfRuntime")
            .field("nr_cpus", &self.nr_cpus)
            .field("level", &self.level)
            .field("guests", &self.by_cgroup.len())
            .field("bpf_stats", &self.stats_fd.is_some())
            .finish_non_exhaustive()
    }
}

/// Byte offsets inside [`SlotTable`] (asserted in exporter-common's size checks).
const TABLE_ENTRIES_OFFSET: usize = 8;
const ENTRY_WORDS: usize = std::mem::size_of::<SlotEntry>() / 8;

impl EbpfRuntime {
    /// Loads and attaches every program (the tracepoints, and the cgroup_skb programs at the
    /// root of the cgroup2 hierarchy, `options.cgroup_mount`) and maps the counters, the event
    /// counts and the slot table. Nothing later needs a bpf() call or a capability.
    pub fn load(options: &LoadOptions) -> Result<EbpfRuntime, EbpfUnavailable> {
        if NOT_BUILT || OBJECT.is_empty() {
            return Err(EbpfUnavailable::new(
                UnavailableKind::NotBuilt,
                "this binary was built with AYA_BUILD_SKIP=1 and contains no eBPF programs",
            ));
        }
        let nr_cpus = aya::util::nr_cpus().map_err(|(what, e)| EbpfUnavailable::from_error(what, &e))?;
        let stripes = u32::try_from(nr_cpus * MAX_GUESTS as usize).map_err(|_| {
            EbpfUnavailable::new(UnavailableKind::Failed, format!("{nr_cpus} CPUs: counters too large"))
        })?;
        // Before loading, so that the first runs are already counted.
        let (stats_fd, stats_error) = if options.enable_stats {
            match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => (Some(fd), None),
                Err(e) => (
                    None,
                    Some(format!("BPF_ENABLE_STATS: {} (needs CAP_SYS_ADMIN)", e.io_error)),
                ),
            }
        } else {
            (None, Some("not requested".to_owned()))
        };
        // Task field offsets, read from the same BTF the tp_btf program is verified against.
        let btf_path = "/sys/kernel/btf/vmlinux";
        let raw_btf = std::fs::read(btf_path).map_err(|e| EbpfUnavailable::from_error(btf_path, &e))?;
        let offsets = btf::task_offsets(&raw_btf)
            .map_err(|e| EbpfUnavailable::new(UnavailableKind::Unsupported, format!("{btf_path}: {e}")))?;
        let kernel_btf = aya::Btf::from_sys_fs().map_err(|e| EbpfUnavailable::from_error(btf_path, &e))?;
        let event_stripes = u32::try_from(nr_cpus * EVENT_STATS_LEN as usize).map_err(|_| {
            EbpfUnavailable::new(
                UnavailableKind::Failed,
                format!("{nr_cpus} CPUs: event counts too large"),
            )
        })?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(COUNTERS_MAP, stripes)
            .map_max_entries(EVENT_STATS_MAP, event_stripes)
            .override_global(GLOBAL_SUM_EXEC_RUNTIME_OFFSET, &offsets.sum_exec_runtime, true)
            .override_global(GLOBAL_RUN_DELAY_OFFSET, &offsets.run_delay, true)
            .override_global(
                GLOBAL_PREV_SUM_EXEC_RUNTIME_OFFSET,
                &offsets.prev_sum_exec_runtime,
                true,
            )
            .load(OBJECT)
            .map_err(|e| EbpfUnavailable::from_error("loading the eBPF object", &e))?;
        let logs = if options.forward_logs {
            match logs::LogForwarder::start(&mut ebpf) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!("eBPF log records will not reach the log: {e}");
                    None
                }
            }
        } else {
            None
        };
        for (name, tracepoint) in BTF_TRACEPOINTS {
            let program: &mut BtfTracePoint = typed_program(&mut ebpf, name)?;
            program
                .load(tracepoint, &kernel_btf)
                .map_err(|e| EbpfUnavailable::from_error(&format!("loading {name}"), &e))?;
            program.attach().map_err(|e| {
                EbpfUnavailable::from_error(&format!("attaching {name} to BTF tracepoint {tracepoint}"), &e)
            })?;
        }
        for (name, tracepoint) in RAW_TRACEPOINTS {
            let program: &mut RawTracePoint = typed_program(&mut ebpf, name)?;
            program
                .load()
                .map_err(|e| EbpfUnavailable::from_error(&format!("loading {name}"), &e))?;
            program.attach(tracepoint).map_err(|e| {
                EbpfUnavailable::from_error(&format!("attaching {name} to raw tracepoint {tracepoint}"), &e)
            })?;
        }
        // One attachment at the root covers every present and future guest: the programs look
        // the socket's guest up in the slot table, which userspace fills by a memory write.
        // A read-only directory descriptor is enough to attach.
        let root = &options.cgroup_mount;
        if !is_cgroup2(root) {
            return Err(EbpfUnavailable::new(
                UnavailableKind::Unsupported,
                format!(
                    "{}: not a cgroup2 mount, cannot attach the cgroup_skb programs",
                    root.display()
                ),
            ));
        }
        let root_dir =
            std::fs::File::open(root).map_err(|e| EbpfUnavailable::from_error(&root.display().to_string(), &e))?;
        for (name, attach) in [
            (SKB_INGRESS_PROGRAM, CgroupSkbAttachType::Ingress),
            (SKB_EGRESS_PROGRAM, CgroupSkbAttachType::Egress),
        ] {
            let program: &mut CgroupSkb = typed_program(&mut ebpf, name)?;
            program
                .load()
                .map_err(|e| EbpfUnavailable::from_error(&format!("loading {name}"), &e))?;
            // Single: aya 0.14 passes BPF_F_ALLOW_MULTI to link_create for AllowMultiple,
            // which 6.18 refuses with EINVAL; a bpf_link attachment (no flags) coexists with
            // other programs on the same cgroup and below either way (docs/TOOLCHAIN.md). The
            // link is owned by the program, so by this runtime: detached when it is dropped.
            program
                .attach(root_dir.as_fd(), attach, CgroupAttachMode::Single)
                .map_err(|e| EbpfUnavailable::from_error(&format!("attaching {name} to {}", root.display()), &e))?;
        }
        let counters_len = nr_cpus * MAX_GUESTS as usize * std::mem::size_of::<GuestCounters>();
        let counters = map_array(&ebpf, COUNTERS_MAP, counters_len, false)?;
        let table = map_array(&ebpf, SLOT_TABLE_MAP, std::mem::size_of::<SlotTable>(), true)?;
        let events = map_array(&ebpf, EVENT_STATS_MAP, nr_cpus * EVENT_STATS_LEN as usize * 8, false)?;
        Ok(EbpfRuntime {
            logs,
            counters,
            table,
            events,
            stats_fd,
            stats_error,
            nr_cpus,
            level: None,
            guests: (0..MAX_GUESTS).map(|_| None).collect(),
            assigned: Vec::new(),
            by_cgroup: HashMap::new(),
            rejected: 0,
            cgroup_mount: options.cgroup_mount.clone(),
            cgroup_mount_root: options.cgroup_mount_root.clone(),
            ebpf,
        })
    }

    /// Whether the kernel side's log records reach tracing.
    pub fn logs_forwarded(&self) -> bool {
        self.logs.is_some()
    }

    /// Starts forwarding the kernel side's log records to tracing (one thread), when not yet
    /// done. It maps the ring buffer and makes no bpf() call, so it works after the
    /// capabilities were dropped, and the thread is created without any.
    pub fn forward_logs(&mut self) {
        if self.logs.is_some() {
            return;
        }
        match logs::LogForwarder::start(&mut self.ebpf) {
            Ok(l) => self.logs = Some(l),
            Err(e) => tracing::warn!("eBPF log records will not reach the log: {e}"),
        }
    }

    /// Possible CPUs, the number of counter stripes.
    pub fn nr_cpus(&self) -> usize {
        self.nr_cpus
    }

    /// The cgroup level guests are folded to, once the first guest is assigned.
    pub fn guest_level(&self) -> Option<u32> {
        self.level
    }

    /// Gives the guest whose cgroup is `cgroup_dir` (e.g. `/sys/fs/cgroup/lxc/101`) a slot and
    /// starts counting it: tasks and sockets in any cgroup below it are folded to it. It only
    /// reads the directory's metadata and writes the mmap-ed slot table: no bpf() call, no
    /// capability. `key` names the guest in errors (its vmid).
    pub fn assign(&mut self, key: &str, cgroup_dir: &Path) -> Result<Slot, AssignError> {
        let path = cgroup_dir.to_path_buf();
        let meta = std::fs::metadata(cgroup_dir).map_err(|source| AssignError::Io {
            path: path.clone(),
            source,
        })?;
        if !meta.is_dir() || !is_cgroup2(cgroup_dir) {
            return Err(AssignError::NotCgroup2 { path });
        }
        let cgroup_id = meta.ino();
        if let Some(&slot) = self.by_cgroup.get(&cgroup_id) {
            let guest = self.guests[slot.0 as usize]
                .as_ref()
                .map(|g| g.key.clone())
                .unwrap_or_default();
            return Err(AssignError::Duplicate { path, key: guest });
        }
        let level = cgroup_level(&self.cgroup_mount, &self.cgroup_mount_root, cgroup_dir).ok_or_else(|| {
            AssignError::OutsideMount {
                path: path.clone(),
                mount: self.cgroup_mount.clone(),
            }
        })?;
        if let Some(expected) = self.level
            && expected != level
        {
            return Err(AssignError::LevelMismatch { path, level, expected });
        }
        let Some(free) = self.guests.iter().position(Option::is_none) else {
            self.rejected += 1;
            return Err(AssignError::Full {
                path,
                used: self.by_cgroup.len(),
                capacity: MAX_GUESTS,
            });
        };
        let Some(table_index) = place(|i| self.table.read_u64(entry_word(i)), cgroup_id) else {
            self.rejected += 1;
            return Err(AssignError::TableCrowded {
                path,
                probes: SLOT_TABLE_PROBES,
            });
        };
        let slot = Slot(free as u32);

        if self.level.is_none() {
            self.table.write_u32(0, level);
            self.level = Some(level);
        }
        // The baseline hides whatever a previous guest of this slot left behind; taken before
        // the table entry is published, so nothing of the new guest is in it.
        let baseline = self.sum_slot(slot);
        // Slot first, id last: a kernel reader that matches the id finds the right slot.
        let word = entry_word(table_index);
        self.table.write_u64(word + 1, u64::from(slot.0));
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.table.write_u64(word, cgroup_id);
        self.guests[free] = Some(Guest {
            key: key.to_owned(),
            cgroup_id,
            table_index,
            baseline,
        });
        self.by_cgroup.insert(cgroup_id, slot);
        if let Err(at) = self.assigned.binary_search(&slot.0) {
            self.assigned.insert(at, slot.0);
        }
        Ok(slot)
    }

    /// Stops counting a guest and frees its slot. Counting stops at once (the table entry is
    /// cleared first); the slot's counters are left as they are and the next guest of the slot
    /// starts from a baseline.
    pub fn release(&mut self, slot: Slot) {
        let Some(guest) = self.guests.get_mut(slot.0 as usize).and_then(Option::take) else {
            return;
        };
        self.table.write_u64(entry_word(guest.table_index), 0);
        self.by_cgroup.remove(&guest.cgroup_id);
        if let Ok(at) = self.assigned.binary_search(&slot.0) {
            self.assigned.remove(at);
        }
    }

    /// The guest key given at assignment.
    pub fn key(&self, slot: Slot) -> Option<&str> {
        self.guests.get(slot.0 as usize)?.as_ref().map(|g| g.key.as_str())
    }

    /// Every assigned guest's counters, into `out` (cleared first; reuse it across
    /// collections to avoid allocating).
    pub fn read_into(&self, out: &mut Vec<GuestReading>) {
        out.clear();
        out.reserve(self.assigned.len());
        for &i in &self.assigned {
            if let Some(guest) = &self.guests[i as usize] {
                let slot = Slot(i);
                let mut counters = self.sum_slot(slot);
                subtract(&mut counters, &guest.baseline);
                out.push(GuestReading { slot, counters });
            }
        }
    }

    pub fn read_all(&self) -> Vec<GuestReading> {
        let mut out = Vec::with_capacity(self.by_cgroup.len());
        self.read_into(&mut out);
        out
    }

    /// One guest's counters, `None` if the slot is free.
    pub fn read(&self, slot: Slot) -> Option<GuestReading> {
        let guest = self.guests.get(slot.0 as usize)?.as_ref()?;
        let mut counters = self.sum_slot(slot);
        subtract(&mut counters, &guest.baseline);
        Some(GuestReading { slot, counters })
    }

    /// Run counts and times of every program, fill levels and losses. Without a bpf() call:
    /// run counts come from the programs' `/proc/self/fdinfo` entries, event counts from the
    /// mapped stripes.
    pub fn self_stats(&self) -> SelfStats {
        let mut programs = Vec::new();
        for (name, _) in BTF_TRACEPOINTS.iter().chain(RAW_TRACEPOINTS) {
            programs.push(*name);
        }
        programs.push(SKB_INGRESS_PROGRAM);
        programs.push(SKB_EGRESS_PROGRAM);
        let programs = programs
            .into_iter()
            .filter_map(|name| {
                let fd = self.ebpf.program(name)?.fd().ok()?.as_fd().as_raw_fd();
                let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
                let (run_time_ns, run_count) = parse_program_fdinfo(&text)?;
                Some(ProgramStats {
                    name,
                    run_count,
                    run_time_ns,
                })
            })
            .collect();
        let event = |index: u32| -> Option<u64> {
            let words = EVENT_STATS_LEN as usize;
            let sum = (0..self.nr_cpus)
                .map(|cpu| self.events.read_u64(cpu * words + index as usize))
                .fold(0u64, u64::wrapping_add);
            Some(sum)
        };
        SelfStats {
            bpf_stats_enabled: self.stats_fd.is_some(),
            bpf_stats_error: self.stats_error.clone(),
            programs,
            slots_used: self.by_cgroup.len(),
            slots_capacity: MAX_GUESTS,
            slot_table_capacity: SLOT_TABLE_ENTRIES,
            guests_rejected: self.rejected,
            unseen_switch_in: event(STAT_UNSEEN_SWITCH_IN),
            bad_slot: event(STAT_BAD_SLOT),
            nr_cpus: self.nr_cpus,
        }
    }

    /// Names of every map of the loaded object (for diagnostics and the capability check).
    pub fn map_names(&self) -> Vec<String> {
        self.ebpf.maps().map(|(name, _)| name.to_owned()).collect()
    }

    /// A slot's counters summed over the CPU stripes.
    #[inline]
    fn sum_slot(&self, slot: Slot) -> GuestCounters {
        const WORDS: usize = GuestCounters::WORDS;
        let mut sum = [0u64; WORDS];
        let stride = MAX_GUESTS as usize * WORDS;
        let last = ((self.nr_cpus - 1) * MAX_GUESTS as usize + slot.0 as usize + 1) * WORDS;
        assert!(
            slot.0 < MAX_GUESTS && last * 8 <= self.counters.len(),
            "slot {} outside the counters",
            slot.0
        );
        let base = self.counters.words();
        for cpu in 0..self.nr_cpus {
            let first = cpu * stride + slot.0 as usize * WORDS;
            // SAFETY: first + WORDS <= last (asserted in bounds above), 8-aligned. One
            // volatile read of the whole record (the kernel writes it concurrently; each u64
            // is written whole) lets the compiler use wide loads and a vectorized sum.
            let stripe = unsafe { std::ptr::read_volatile(base.add(first).cast::<[u64; WORDS]>()) };
            for (s, v) in sum.iter_mut().zip(stripe) {
                *s += v;
            }
        }
        counters_from_words(&sum)
    }
}

/// The program `name` of the loaded object, as its kind `T` (a tracepoint, a cgroup_skb...).
fn typed_program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, EbpfUnavailable>
where
    &'a mut aya::programs::Program: TryInto<&'a mut T, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| missing("program", name))?
        .try_into()
        .map_err(|e| EbpfUnavailable::from_error(name, &e))
}

fn missing(what: &str, name: &str) -> EbpfUnavailable {
    EbpfUnavailable::new(
        UnavailableKind::Failed,
        format!("{what} {name} missing from the eBPF object"),
    )
}

fn map_array(ebpf: &Ebpf, name: &str, len: usize, writable: bool) -> Result<mmap::Mapping, EbpfUnavailable> {
    let Some(Map::Array(data)) = ebpf.map(name) else {
        return Err(missing("array map", name));
    };
    mmap::Mapping::new(data.fd().as_fd(), len, writable)
        .map_err(|e| EbpfUnavailable::from_error(&format!("mmap of map {name}"), &e))
}

/// `(run_time_ns, run_cnt)` of a bpf program's `/proc/<pid>/fdinfo/<fd>` text (present since
/// Linux 5.1: <https://elixir.bootlin.com/linux/v6.18/source/kernel/bpf/syscall.c>,
/// `bpf_prog_show_fdinfo`). Reading it needs no capability, unlike BPF_OBJ_GET_INFO_BY_FD
/// before Linux 6.5.
pub fn parse_program_fdinfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
            .trim()
            .parse::<u64>()
            .ok()
    };
    Some((field("run_time_ns")?, field("run_cnt")?))
}

/// The first word of slot-table entry `i` in the mapping.
fn entry_word(i: usize) -> usize {
    (TABLE_ENTRIES_OFFSET + i * std::mem::size_of::<SlotEntry>()) / 8
}

/// Where a new cgroup id goes: the first empty entry among the ones the kernel probes.
fn place(read_id: impl Fn(usize) -> u64, cgroup_id: u64) -> Option<usize> {
    let home = slot_home(cgroup_id);
    (0..SLOT_TABLE_PROBES)
        .map(|i| (home + i) % SLOT_TABLE_ENTRIES)
        .find(|&i| read_id(i) == 0)
}

const _: () = assert!(ENTRY_WORDS == 2);

/// The absolute cgroup2 level of `dir` (root = 0), from its path below the mount and the
/// mount's own root in the hierarchy.
pub fn cgroup_level(mount: &Path, mount_root: &Path, dir: &Path) -> Option<u32> {
    let relative = dir.strip_prefix(mount).ok()?;
    let mut level = 0u32;
    for component in mount_root.components().chain(relative.components()) {
        match component {
            Component::Normal(_) => level += 1,
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(level)
}

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: a NUL-terminated path and a buffer of the right type.
    if unsafe { libc::statfs(c.as_ptr(), buf.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: statfs succeeded and filled the buffer.
    let buf = unsafe { buf.assume_init() };
    // f_type is a signed word of platform width; the magic fits in its low 32 bits.
    buf.f_type as u32 == CGROUP2_SUPER_MAGIC
}

fn counters_from_words(words: &[u64; GuestCounters::WORDS]) -> GuestCounters {
    let mut c = GuestCounters::ZERO;
    let [cpu, forks, execs, exits, rxp, rxb, txp, txb, wait, buckets @ ..] = words;
    c.cpu_ns = *cpu;
    c.forks = *forks;
    c.execs = *execs;
    c.exits = *exits;
    c.rx_packets = *rxp;
    c.rx_bytes = *rxb;
    c.tx_packets = *txp;
    c.tx_bytes = *txb;
    c.runq_wait_ns = *wait;
    c.runq_buckets.copy_from_slice(buckets);
    c
}

fn subtract(c: &mut GuestCounters, b: &GuestCounters) {
    c.cpu_ns = c.cpu_ns.wrapping_sub(b.cpu_ns);
    c.forks = c.forks.wrapping_sub(b.forks);
    c.execs = c.execs.wrapping_sub(b.execs);
    c.exits = c.exits.wrapping_sub(b.exits);
    c.rx_packets = c.rx_packets.wrapping_sub(b.rx_packets);
    c.rx_bytes = c.rx_bytes.wrapping_sub(b.rx_bytes);
    c.tx_packets = c.tx_packets.wrapping_sub(b.tx_packets);
    c.tx_bytes = c.tx_bytes.wrapping_sub(b.tx_bytes);
    c.runq_wait_ns = c.runq_wait_ns.wrapping_sub(b.runq_wait_ns);
    for (x, y) in c.runq_buckets.iter_mut().zip(b.runq_buckets.iter()) {
        *x = x.wrapping_sub(*y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_count_from_the_hierarchy_root() {
        let m = Path::new("/sys/fs/cgroup");
        assert_eq!(
            cgroup_level(m, Path::new("/"), Path::new("/sys/fs/cgroup/lxc/101")),
            Some(2)
        );
        assert_eq!(cgroup_level(m, Path::new("/"), Path::new("/sys/fs/cgroup")), Some(0));
        // A mount whose root is a subtree (cgroup namespace or bind mount).
        assert_eq!(
            cgroup_level(m, Path::new("/lxc/101/ns"), Path::new("/sys/fs/cgroup/a")),
            Some(4)
        );
        assert_eq!(cgroup_level(m, Path::new("/"), Path::new("/elsewhere/lxc")), None);
        assert_eq!(cgroup_level(m, Path::new("/"), Path::new("/sys/fs/cgroup/../x")), None);
    }

    #[test]
    fn placement_uses_the_probed_window_only() {
        let id = 12345u64;
        let home = slot_home(id);
        assert_eq!(place(|_| 0, id), Some(home));
        // The first three probes taken: the fourth.
        let taken = |i: usize| {
            if (0..3).any(|k| (home + k) % SLOT_TABLE_ENTRIES == i) {
                7
            } else {
                0
            }
        };
        assert_eq!(place(taken, id), Some((home + 3) % SLOT_TABLE_ENTRIES));
        // Every probe taken: refused, even though other entries are free.
        assert_eq!(
            place(
                |i| u64::from((i + SLOT_TABLE_ENTRIES - home) % SLOT_TABLE_ENTRIES < SLOT_TABLE_PROBES),
                id
            ),
            None
        );
    }

    #[test]
    fn words_map_to_fields_in_order() {
        let mut words = [0u64; GuestCounters::WORDS];
        for (i, w) in words.iter_mut().enumerate() {
            *w = i as u64 + 1;
        }
        let c = counters_from_words(&words);
        assert_eq!((c.cpu_ns, c.forks, c.execs, c.exits), (1, 2, 3, 4));
        assert_eq!(
            (c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes, c.runq_wait_ns),
            (5, 6, 7, 8, 9)
        );
        assert_eq!(c.runq_buckets[0], 10);
        assert_eq!(
            c.runq_buckets[exporter_common::RUNQ_BUCKETS - 1],
            GuestCounters::WORDS as u64
        );
        // The same order as the #[repr(C)] layout the kernel writes.
        // SAFETY: GuestCounters is #[repr(C)] of u64 only.
        let raw: [u64; GuestCounters::WORDS] = unsafe { std::mem::transmute(c) };
        assert_eq!(raw, words);
    }

    #[test]
    fn program_run_counts_come_from_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t2071\nprog_type:\t8\nprog_jited:\t1\n\
                    prog_tag:\t4bbd5e3f1ad7a4f5\nmemlock:\t4096\nprog_id:\t812\nrun_time_ns:\t123456\n\
                    run_cnt:\t789\nrecursion_misses:\t0\nverified_insns:\t95\n";
        assert_eq!(parse_program_fdinfo(text), Some((123_456, 789)));
        // A kernel without the fields (before 5.1), or a map's fdinfo: no statistics.
        assert_eq!(parse_program_fdinfo("prog_type:\t8\nprog_id:\t812\n"), None);
        assert_eq!(parse_program_fdinfo("run_time_ns:\tx\nrun_cnt:\t1\n"), None);
    }

    #[test]
    fn unavailable_is_classified_by_errno() {
        let e = std::io::Error::from_raw_os_error(libc::EPERM);
        let u = EbpfUnavailable::from_error("loading", &e);
        assert_eq!(u.kind, UnavailableKind::PermissionDenied);
        assert_eq!(u.errno, Some(libc::EPERM));
        assert!(u.to_string().contains("EPERM"), "{u}");
    }

    #[test]
    fn off_and_container_never_load() {
        let opts = LoadOptions::new("/nonexistent");
        match start(EbpfMode::Off, Platform::Proxmox, &opts) {
            Ok(EbpfState::Unavailable(u)) => assert_eq!(u.kind, UnavailableKind::Disabled),
            other => panic!("{other:?}"),
        }
        match start(EbpfMode::Auto, Platform::Lxc, &opts) {
            Ok(EbpfState::Unavailable(u)) => assert_eq!(u.kind, UnavailableKind::InsideContainer),
            other => panic!("{other:?}"),
        }
    }

    #[cfg(ebpf_object_empty)]
    #[test]
    fn a_build_without_ebpf_says_so() {
        let opts = LoadOptions::new("/sys/fs/cgroup");
        match start(EbpfMode::Auto, Platform::Host, &opts) {
            Ok(EbpfState::Unavailable(u)) => assert_eq!(u.kind, UnavailableKind::NotBuilt),
            other => panic!("{other:?}"),
        }
        assert!(start(EbpfMode::On, Platform::Host, &opts).is_err());
    }
}
