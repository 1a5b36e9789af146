//! Collector `guests`: every local Proxmox guest's CPU, memory, pressure, I/O, processes and
//! network, with names, tags and status.
//!
//! Reads, on every collection:
//! - `$CGROUP_PATH/lxc/<vmid>` (running containers) and `$CGROUP_PATH/qemu.slice/<vmid>.scope`
//!   (running VMs): directory listings for discovery, then per guest `cpu.stat`, `cpu.max`,
//!   `{cpu,memory,io}.pressure`, `memory.{current,stat,max,high,swap.current,swap.max,events}`,
//!   `io.stat`, `pids.{current,max}`, `cgroup.stat` and `cgroup.procs` of the guest cgroup and
//!   every cgroup below it. On a hybrid layout memory, pids, CPU bandwidth and block IO come
//!   from the v1 hierarchies (`memory.usage_in_bytes`, `memory.stat` `total_*`,
//!   `memory.limit_in_bytes`, `memory.memsw.limit_in_bytes`, `memory.oom_control` of every
//!   cgroup of the guest's subtree, `pids.current`, `pids.max`, `cpu.stat`,
//!   `cpu.cfs_quota_us`, `cpu.cfs_period_us`, `blkio.throttle.io_service_bytes_recursive`,
//!   `blkio.throttle.io_serviced_recursive`; `cpuacct.usage`, `cpuacct.stat` where cgroup2 has
//!   no `cpu.stat`), see [`super::layout`]. Under `memory_localevents` the guest's
//!   `memory.events` is summed over its subtree;
//! - `$PROC_PATH/net/dev` once: the host side of every guest interface (`veth<vmid>i<N>`,
//!   `tap<vmid>i<N>`) in one read;
//! - `$PVE_PATH/lxc/*.conf`, `$PVE_PATH/qemu-server/*.conf` (this node's guests; re-read only
//!   when inode, size or mtime changed: names, tags, sizes, `lock`, `onboot`, `template`, and
//!   the snapshot sections' names and `snaptime`; one scan per collection shared with
//!   `backup`, see [`super::local_configs`]) and `$PVE_PATH/.members` (the node name;
//!   fallback: the host name);
//! - `$PVE_PATH/ha/manager_status` (the HA CRM's state of each resource), or where it is absent
//!   `$PVE_PATH/ha/resources.cfg` (the requested state); each re-read only when its stamp
//!   changed.
//!
//! Produces the per-guest families of [`super::metrics`] (`container_*`, `pve_guest_*`), each
//! labelled `container_id`, `host_name`, `type`; interface series carry `interface="net<N>"`
//! (from `veth<vmid>i<N>` / `tap<vmid>i<N>`), and `pve_guest_network_info` maps it to the host
//! device and the config's in-guest name, bridge and MAC address. From the configs and the HA
//! files, for every guest of this node: `pve_guest_info` (with `template`), `pve_guest_lock`,
//! `pve_guest_onboot`, `pve_guest_ha_state`, `pve_guest_snapshots` and
//! `pve_guest_snapshot_oldest_timestamp_seconds`.
//!
//! Cost: descriptors are kept open per guest and read with `pread` at offset 0 (see
//! `files.rs`); the subtree of a guest is walked again only when the shape `cgroup.stat`
//! describes (`nr_descendants`, `nr_subsys_*`) changes or one of its cgroups disappears.
//!
//! Missing is not zero: a stopped guest has its info series only; a file the layout or kernel
//! lacks makes its metric absent; `max` limits are absent; a guest whose cgroup disappears while
//! it is read is left out of this collection entirely.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::files::{FdBudget, KeptFile};
use super::layout::{Layout, Source};
use super::local_configs::LocalConfigs;
use super::metrics::{GUEST_METRICS, Id};
use crate::collectors::{Collector, Environment};
use crate::error::{CollectError, ParseError};
use crate::model::{LabelValue, Sample, SnapshotBuilder, Value};
use crate::parse::cgroup::{self, Limit};
use crate::parse::netdev;
use crate::parse::pve::{self, GuestType};

pub(crate) type Key = (GuestType, u32);

/// Memory files of one guest, by layout. One per guest, never moved around: the size of the
/// unboxed V2 variant costs nothing.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum MemoryFiles {
    V2 {
        current: KeptFile,
        stat: KeptFile,
        max: KeptFile,
        high: KeptFile,
        swap_current: KeptFile,
        swap_max: KeptFile,
        events: KeptFile,
    },
    V1 {
        usage: KeptFile,
        stat: KeptFile,
        limit: KeptFile,
        /// `memory.memsw.usage_in_bytes` and `memory.memsw.limit_in_bytes` (memory + swap),
        /// there only with swap accounting.
        memsw_usage: KeptFile,
        memsw_limit: KeptFile,
    },
    None,
}

/// CPU bandwidth files of one guest, by layout.
#[derive(Debug)]
enum CpuBandwidthFiles {
    /// cgroup2 `cpu.max`; the throttling counters are lines of the cgroup2 `cpu.stat`.
    V2 {
        max: KeptFile,
    },
    /// The v1 `cpu` hierarchy: `cpu.stat` (throttling), `cpu.cfs_quota_us`, `cpu.cfs_period_us`.
    V1 {
        stat: KeptFile,
        quota: KeptFile,
        period: KeptFile,
    },
    None,
}

/// v1 `cpuacct` files: the guest's CPU time where the cgroup2 tree has no `cpu.stat`. Opened
/// only when needed, so not part of [`Guest::files_mut`].
#[derive(Debug)]
struct CpuacctFiles {
    usage: KeptFile,
    stat: KeptFile,
}

/// Block IO files of one guest, by layout.
#[derive(Debug)]
enum IoFiles {
    /// cgroup2 `io.stat`.
    V2 {
        stat: KeptFile,
    },
    /// v1 `blkio.throttle.io_service_bytes_recursive` and `io_serviced_recursive`.
    V1 {
        bytes: KeptFile,
        serviced: KeptFile,
    },
    None,
}

/// A flat-keyed file summed over every cgroup of a guest's subtree, for counters the kernel
/// keeps only in the cgroup where the event happened: cgroup v1 counts an OOM kill only in the
/// victim's memcg (mm/memcontrol.c `memcg_memory_event` stops after the first memcg when the
/// memory controller is not on the default hierarchy), e.g. `lxc/<vmid>/ns/init.scope`, and
/// cgroup2 mounted with `memory_localevents` does the same for every `memory.events` key.
///
/// Descriptors are kept per cgroup; the subtree is listed again only when the guest's
/// cgroup2 subtree changed shape (the walk for `cgroup.procs` saw it), a kept cgroup went away,
/// or every [`WALK_EVERY`] collections (a v1 hierarchy can change without the cgroup2 tree
/// changing). Counts of a cgroup that goes away stay in the sum, as cgroup2's hierarchical
/// counters keep them: a service OOM-killed and restarted by systemd gets a new cgroup, and
/// the kill must not disappear from the guest's total.
#[derive(Debug)]
struct SubtreeSum {
    root: Arc<Path>,
    name: &'static str,
    keys: &'static [&'static str; 4],
    /// The kept files, and the values last read from each (same order).
    files: Vec<(KeptFile, [Option<u64>; 4])>,
    /// Counts of cgroups that went away since the guest started.
    gone: [u64; 4],
    /// The cgroup2 walk's shape when this subtree was listed; `None` before the first listing.
    listed: Option<Option<cgroup::SubtreeShape>>,
    /// Collections until the next listing even if nothing says the subtree changed.
    due: u32,
    /// A kept cgroup vanished at the last read: list again.
    stale: bool,
}

/// Keys of v1 `memory.oom_control` summed: only `oom_kill` (4.13+); the rest is padding.
const V1_OOM_KEYS: [&str; 4] = ["oom_kill", "", "", ""];
/// Keys of cgroup2 `memory.events` summed under `memory_localevents`: `oom_kill`, then
/// [`MEMORY_EVENTS`].
const V2_EVENT_KEYS: [&str; 4] = ["oom_kill", "high", "max", "oom"];

/// One running guest and the descriptors kept for it.
#[derive(Debug)]
struct Guest {
    /// The guest cgroup, shared with its kept files.
    dir: Arc<Path>,
    cpu_stat: KeptFile,
    cpu_bandwidth: CpuBandwidthFiles,
    /// `None` unless the layout has a v1 cpuacct hierarchy.
    cpuacct: Option<CpuacctFiles>,
    cpu_pressure: KeptFile,
    memory_pressure: KeptFile,
    io_pressure: KeptFile,
    io: IoFiles,
    memory: MemoryFiles,
    /// OOM kills (and, under `memory_localevents`, the other memory events) summed over the
    /// subtree; `None` where the guest cgroup's own `memory.events` is hierarchical.
    events_sum: Option<SubtreeSum>,
    pids_current: Option<KeptFile>,
    pids_max: Option<KeptFile>,
    cgroup_stat: KeptFile,
    /// `cgroup.procs` of the guest cgroup and every descendant, from the last walk.
    procs: Vec<KeptFile>,
    /// The subtree's shape by `cgroup.stat` at the last walk; `None` when cgroup.stat is not
    /// there (walk always).
    walked_shape: Option<cgroup::SubtreeShape>,
    /// Limit series of the last limit read, repeated until the next one.
    limits: Vec<(Id, f64)>,
    /// Collections until the limit files are read again; `None` before the first read.
    limits_due: Option<u32>,
    /// The guest config's stamp at the last limit read: Proxmox changes limits (`pct set`,
    /// `qm set`) by writing the config, so a new stamp means new limits.
    config_stamp: Option<Stamp>,
    /// When the guest started (its counters' start for OTLP), read once per guest life.
    start: crate::starts::StartSlot,
}

/// Limits (cpu.max, memory.max, memory.high, memory.swap.max, pids.max, v1
/// memory.limit_in_bytes) change only when someone reconfigures the guest: they are read when
/// the guest's config changes and otherwise every this many collections (for limits written to
/// cgroupfs directly). Each skipped read saves five preads per guest.
const LIMITS_EVERY: u32 = 8;

/// A summed v1 subtree ([`SubtreeSum`]) is listed again at least every this many collections:
/// a v1 hierarchy can change without the guest's cgroup2 subtree changing shape.
const WALK_EVERY: u32 = 16;

impl Guest {
    fn new(dir: PathBuf, relative: &Path, layout: &Layout, budget: &FdBudget) -> Self {
        let shared: Arc<Path> = Arc::from(dir.as_path());
        let f = |name: &'static str| KeptFile::new(&shared, name, budget);
        // Limits are read every LIMITS_EVERY collections only.
        let rare = |name: &'static str| KeptFile::rare(&shared, name, budget);
        let memory = match &layout.memory {
            Source::Unified => MemoryFiles::V2 {
                current: f("memory.current"),
                stat: f("memory.stat"),
                max: rare("memory.max"),
                high: rare("memory.high"),
                swap_current: f("memory.swap.current"),
                swap_max: rare("memory.swap.max"),
                events: f("memory.events"),
            },
            Source::V1(root) => {
                let d: Arc<Path> = Arc::from(root.join(relative));
                let g = |name: &'static str| KeptFile::new(&d, name, budget);
                MemoryFiles::V1 {
                    usage: g("memory.usage_in_bytes"),
                    stat: g("memory.stat"),
                    limit: KeptFile::rare(&d, "memory.limit_in_bytes", budget),
                    memsw_usage: g("memory.memsw.usage_in_bytes"),
                    memsw_limit: KeptFile::rare(&d, "memory.memsw.limit_in_bytes", budget),
                }
            }
            Source::None => MemoryFiles::None,
        };
        let events_sum = match &layout.memory {
            Source::V1(root) => Some(SubtreeSum::new(
                Arc::from(root.join(relative)),
                "memory.oom_control",
                &V1_OOM_KEYS,
            )),
            Source::Unified if layout.memory_local_events => {
                Some(SubtreeSum::new(Arc::clone(&shared), "memory.events", &V2_EVENT_KEYS))
            }
            _ => None,
        };
        let cpu_bandwidth = match &layout.cpu {
            Source::Unified => CpuBandwidthFiles::V2 { max: rare("cpu.max") },
            Source::V1(root) => {
                let d: Arc<Path> = Arc::from(root.join(relative));
                CpuBandwidthFiles::V1 {
                    stat: KeptFile::new(&d, "cpu.stat", budget),
                    quota: KeptFile::rare(&d, "cpu.cfs_quota_us", budget),
                    period: KeptFile::rare(&d, "cpu.cfs_period_us", budget),
                }
            }
            Source::None => CpuBandwidthFiles::None,
        };
        let cpuacct = match &layout.cpuacct {
            Source::V1(root) => {
                let d: Arc<Path> = Arc::from(root.join(relative));
                Some(CpuacctFiles {
                    usage: KeptFile::new(&d, "cpuacct.usage", budget),
                    stat: KeptFile::new(&d, "cpuacct.stat", budget),
                })
            }
            _ => None,
        };
        let io = match &layout.io {
            Source::Unified => IoFiles::V2 { stat: f("io.stat") },
            Source::V1(root) => {
                let d: Arc<Path> = Arc::from(root.join(relative));
                IoFiles::V1 {
                    bytes: KeptFile::new(&d, "blkio.throttle.io_service_bytes_recursive", budget),
                    serviced: KeptFile::new(&d, "blkio.throttle.io_serviced_recursive", budget),
                }
            }
            Source::None => IoFiles::None,
        };
        let pids_dir: Option<Arc<Path>> = match &layout.pids {
            Source::Unified => Some(Arc::clone(&shared)),
            Source::V1(root) => Some(Arc::from(root.join(relative))),
            Source::None => None,
        };
        Guest {
            cpu_stat: f("cpu.stat"),
            cpu_bandwidth,
            cpuacct,
            cpu_pressure: f("cpu.pressure"),
            memory_pressure: f("memory.pressure"),
            io_pressure: f("io.pressure"),
            io,
            memory,
            events_sum,
            pids_current: pids_dir.as_ref().map(|d| KeptFile::new(d, "pids.current", budget)),
            pids_max: pids_dir.as_ref().map(|d| KeptFile::rare(d, "pids.max", budget)),
            cgroup_stat: f("cgroup.stat"),
            procs: Vec::new(),
            walked_shape: None,
            limits: Vec::new(),
            limits_due: None,
            config_stamp: None,
            start: crate::starts::StartSlot::default(),
            dir: shared,
        }
    }

    /// Every file of the guest cgroup itself (not the `cgroup.procs` of its subtree).
    fn files_mut(&mut self) -> impl Iterator<Item = &mut KeptFile> {
        let memory: Vec<&mut KeptFile> = match &mut self.memory {
            MemoryFiles::V2 {
                current,
                stat,
                max,
                high,
                swap_current,
                swap_max,
                events,
            } => vec![current, stat, max, high, swap_current, swap_max, events],
            MemoryFiles::V1 {
                usage,
                stat,
                limit,
                memsw_usage,
                memsw_limit,
            } => vec![usage, stat, limit, memsw_usage, memsw_limit],
            MemoryFiles::None => Vec::new(),
        };
        let cpu: Vec<&mut KeptFile> = match &mut self.cpu_bandwidth {
            CpuBandwidthFiles::V2 { max } => vec![max],
            CpuBandwidthFiles::V1 { stat, quota, period } => vec![stat, quota, period],
            CpuBandwidthFiles::None => Vec::new(),
        };
        let io: Vec<&mut KeptFile> = match &mut self.io {
            IoFiles::V2 { stat } => vec![stat],
            IoFiles::V1 { bytes, serviced } => vec![bytes, serviced],
            IoFiles::None => Vec::new(),
        };
        [
            &mut self.cpu_stat,
            &mut self.cpu_pressure,
            &mut self.memory_pressure,
            &mut self.io_pressure,
            &mut self.cgroup_stat,
        ]
        .into_iter()
        .chain(cpu)
        .chain(io)
        .chain(memory)
        .chain(self.pids_current.iter_mut())
        .chain(self.pids_max.iter_mut())
    }

    /// Opens every file of a guest seen for the first time and walks its subtree, without
    /// producing anything: what is left for [`read_guest`] are preads. Failures are left for
    /// that read to find and report.
    fn open_ahead(&mut self, buf: &mut Vec<u8>, budget: &FdBudget) {
        for file in self.files_mut() {
            file.open_ahead();
        }
        // Errors here are found again, and reported, by the read that follows.
        let mut ignored = Vec::new();
        if let Ok(shape) = read_parsed(
            &mut self.cgroup_stat,
            buf,
            &mut ignored,
            &mut false,
            cgroup::parse_subtree_shape,
        ) {
            let _ = rewalk(self, shape, budget);
            for file in &mut self.procs {
                file.open_ahead();
            }
        }
    }

    /// Closes every descriptor so the next read reopens the paths (the cgroup was replaced).
    fn reset(&mut self) {
        for file in self.files_mut() {
            file.reset();
        }
        if let Some(cpuacct) = &mut self.cpuacct {
            cpuacct.usage.reset();
            cpuacct.stat.reset();
        }
        if let Some(sum) = &mut self.events_sum {
            sum.reset();
        }
        self.procs.clear();
        self.walked_shape = None;
        self.limits.clear();
        self.limits_due = None;
        self.start.forget();
    }
}

impl SubtreeSum {
    fn new(root: Arc<Path>, name: &'static str, keys: &'static [&'static str; 4]) -> Self {
        SubtreeSum {
            root,
            name,
            keys,
            files: Vec::new(),
            gone: [0; 4],
            listed: None,
            due: 0,
            stale: false,
        }
    }

    /// Forgets everything: the guest's cgroup was replaced, and a restarted guest's counters
    /// start from zero.
    fn reset(&mut self) {
        self.files.clear();
        self.gone = [0; 4];
        self.listed = None;
        self.due = 0;
        self.stale = false;
    }

    fn retire(gone: &mut [u64; 4], last: &mut [Option<u64>; 4]) {
        for (total, value) in gone.iter_mut().zip(last.iter_mut()) {
            *total = total.saturating_add(value.take().unwrap_or(0));
        }
    }

    /// Lists the subtree again. Descriptors (and last values) of cgroups found again are kept;
    /// the last values of cgroups that are gone are added to [`SubtreeSum::gone`].
    /// `Ok(false)`: the subtree's root is not there.
    fn relist(&mut self, shape: Option<cgroup::SubtreeShape>, budget: &FdBudget) -> Result<bool, CollectError> {
        let mut dirs = Vec::new();
        match list_subtree(&self.root, &mut dirs) {
            Ok(()) => {}
            Err(e) if e.is_vanished() => return Ok(false),
            Err(e) => return Err(e),
        }
        let mut previous = std::mem::take(&mut self.files);
        // A file found absent at its last open gets a fresh one (its cgroup may have been
        // created again, and an absent file waits some reads before the next open); its last
        // values were retired when it went.
        self.files = dirs
            .into_iter()
            .map(
                |d| match previous.iter().position(|(f, _)| f.dir() == d && !f.is_absent()) {
                    Some(i) => previous.swap_remove(i),
                    None => (KeptFile::new(&Arc::from(d), self.name, budget), [None; 4]),
                },
            )
            .collect();
        for (_, mut last) in previous {
            Self::retire(&mut self.gone, &mut last);
        }
        self.listed = Some(shape);
        self.due = WALK_EVERY;
        self.stale = false;
        Ok(true)
    }

    /// The sum of each key over the subtree, counts of cgroups gone included; a key no file
    /// prints is `None`. `Ok(None)`: the root is not there (`absent_new` is set so the caller
    /// checks whether the guest went away) or a file could not be read or parsed (recorded in
    /// `errors`): no sum rather than a partial one. `shape` is the shape of the guest's
    /// cgroup2 subtree at its last walk: a change lists this subtree again.
    fn read(
        &mut self,
        shape: Option<cgroup::SubtreeShape>,
        buf: &mut Vec<u8>,
        budget: &FdBudget,
        errors: &mut Vec<CollectError>,
        absent_new: &mut bool,
    ) -> Result<Option<[Option<u64>; 4]>, CollectError> {
        let changed = self.listed != Some(shape) || shape.is_none();
        if (self.stale || self.due == 0 || changed) && !self.relist(shape, budget)? {
            *absent_new = true;
            return Ok(None);
        }
        self.due = self.due.saturating_sub(1);
        let mut sums = [None::<u64>; 4];
        for (file, last) in &mut self.files {
            match file.read(buf) {
                Ok(true) => {}
                // Only a cgroup that went away makes the listing stale; a file the cgroup
                // lacks (cgroup2 without the memory controller there) stays absent.
                Ok(false) => {
                    if file.newly_absent() && !file.dir().is_dir() {
                        Self::retire(&mut self.gone, last);
                        self.stale = true;
                    }
                    continue;
                }
                Err(e) if e.is_vanished() => {
                    Self::retire(&mut self.gone, last);
                    self.stale = true;
                    continue;
                }
                Err(e) => {
                    errors.push(e);
                    return Ok(None);
                }
            }
            let values = match std::str::from_utf8(buf)
                .map_err(|e| ParseError::new(e.to_string()))
                .and_then(|t| cgroup::flat_keyed_values(t, self.keys))
            {
                Ok(values) => values,
                Err(e) => {
                    errors.push(CollectError::parse(&file.path(), e));
                    return Ok(None);
                }
            };
            *last = values;
            for (sum, value) in sums.iter_mut().zip(values) {
                if let Some(v) = value {
                    *sum = Some(sum.unwrap_or(0).saturating_add(v));
                }
            }
        }
        for (sum, gone) in sums.iter_mut().zip(self.gone) {
            *sum = sum.map(|s| s.saturating_add(gone));
        }
        Ok(Some(sums))
    }
}

/// Every cgroup directory at and below `dir`, `dir` first.
fn list_subtree(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CollectError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CollectError::io(dir, e))?;
    out.push(dir.to_path_buf());
    for entry in entries {
        let entry = entry.map_err(|e| CollectError::io(dir, e))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            match list_subtree(&entry.path(), out) {
                Ok(()) => {}
                // A child removed during the listing is simply not there.
                Err(e) if e.is_vanished() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// USER_HZ, the unit of v1 `cpuacct.stat` (100 on every Linux architecture Proxmox runs on;
/// asked once from the C library all the same).
fn user_hz() -> f64 {
    static USER_HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *USER_HZ.get_or_init(|| {
        // SAFETY: sysconf reads a constant of the C library and has no other effect.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if ticks > 0 { ticks as f64 } else { 100.0 }
    })
}

/// Identifies a file version without reading it: pmxcfs and ordinary filesystems both change
/// one of these on every write (a rename gives a new inode, a rewrite a new mtime or size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

/// One HA file as last parsed: its stamp, and the guests' states or why there are none.
#[derive(Debug)]
struct HaFile {
    stamp: Stamp,
    parsed: Result<BTreeMap<Key, String>, CollectError>,
    /// Lines of the file that were not used (the states of the other guests are kept).
    problems: Vec<String>,
}

/// The guests' HA states in a file, and the lines that were not used.
type HaParse = (BTreeMap<Key, String>, Vec<String>);

/// The HA state of every HA resource that is a guest, from `$PVE_PATH/ha/manager_status` (the
/// CRM's view) or, where that file is absent (no CRM master has written it yet), the
/// requested states of `$PVE_PATH/ha/resources.cfg`. Each file is read again only when its
/// stamp (inode, size, mtime) changes: a collection costs one `stat`, two without
/// manager_status.
#[derive(Debug, Default)]
struct HaStates {
    manager_status: Option<HaFile>,
    /// Read only while manager_status is absent.
    resources: Option<HaFile>,
}

impl HaStates {
    /// Brings the states up to date. A file that cannot be read or parsed is reported on
    /// every collection while it stays so (in `errors`, with its path), and no guest has an
    /// HA state meanwhile; nothing else depends on it.
    fn refresh(&mut self, pve_path: &Path, errors: &mut Vec<CollectError>) {
        let ha = pve_path.join("ha");
        let present = HaFile::refresh(
            &mut self.manager_status,
            &ha.join("manager_status"),
            |text| pve::parse_ha_manager_status(text).map(|states| (states, Vec::new())),
            errors,
        );
        if present {
            self.resources = None;
            return;
        }
        HaFile::refresh(
            &mut self.resources,
            &ha.join("resources.cfg"),
            |text| Ok::<_, ParseError>(pve::parse_ha_resources(text)),
            errors,
        );
    }

    /// The states of the last [`HaStates::refresh`]; `None` when neither file gave any.
    fn current(&self) -> Option<&BTreeMap<Key, String>> {
        [&self.manager_status, &self.resources]
            .into_iter()
            .flatten()
            .find_map(|f| f.parsed.as_ref().ok())
    }
}

impl HaFile {
    /// Re-reads `path` into `slot` when its stamp changed; `false` when the file is absent
    /// (the slot is then emptied). A failure is kept in the slot and pushed to `errors`.
    fn refresh<E: std::fmt::Display>(
        slot: &mut Option<HaFile>,
        path: &Path,
        parse: impl FnOnce(&str) -> Result<HaParse, E>,
        errors: &mut Vec<CollectError>,
    ) -> bool {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *slot = None;
                return false;
            }
            Err(e) => {
                *slot = None;
                errors.push(CollectError::io(path, e));
                return true;
            }
        };
        let stamp = Stamp::of(&meta);
        if slot.as_ref().is_none_or(|f| f.stamp != stamp) {
            let parsed = match std::fs::read(path) {
                Ok(bytes) => match std::str::from_utf8(&bytes) {
                    Ok(text) => parse(text).map_err(|e| CollectError::parse(path, e)),
                    Err(e) => Err(CollectError::parse(path, e)),
                },
                Err(e) => Err(CollectError::io(path, e)),
            };
            let (parsed, problems) = match parsed {
                Ok((states, problems)) => (Ok(states), problems),
                Err(e) => (Err(e), Vec::new()),
            };
            *slot = Some(HaFile {
                stamp,
                parsed,
                problems,
            });
        }
        let file = slot.as_ref().expect("set above");
        match &file.parsed {
            Err(CollectError::Parse { path, message }) => errors.push(CollectError::parse(path, message)),
            Err(other) => errors.push(CollectError::Other(other.to_string())),
            Ok(_) => {}
        }
        for problem in &file.problems {
            errors.push(CollectError::parse(path, problem));
        }
        true
    }
}

/// Per-collection sample buffers, one per family, so that a sample costs no family lookup.
/// They are handed to the snapshot whole at the end of a collection, so nothing of them stays
/// allocated between collections; the next collection sizes them from the last one.
#[derive(Debug)]
struct Families {
    samples: Vec<Vec<Sample>>,
    /// Samples per family at the last flush.
    last: Vec<usize>,
}

impl Families {
    fn new() -> Self {
        Families {
            samples: GUEST_METRICS.iter().map(|_| Vec::new()).collect(),
            last: vec![0; GUEST_METRICS.len()],
        }
    }

    /// Room for as many samples as the last collection had (guests come and go slowly), so a
    /// family's vector is allocated once, to size, instead of doubling its way up.
    fn reserve(&mut self) {
        for (samples, &n) in self.samples.iter_mut().zip(&self.last) {
            samples.reserve_exact(n);
        }
    }

    fn flush(&mut self, out: &mut SnapshotBuilder) {
        for ((desc, samples), last) in GUEST_METRICS.iter().zip(self.samples.iter_mut()).zip(&mut self.last) {
            *last = samples.len();
            if !samples.is_empty() {
                out.family(desc).take_samples(std::mem::take(samples));
            }
        }
    }
}

/// The samples of one guest, kept apart until the guest has been read completely: a guest
/// that vanishes half-way contributes nothing.
#[derive(Debug, Default)]
struct Staged {
    samples: Vec<(Id, Sample)>,
}

impl Staged {
    /// Stages one sample; the label array is shared, so this allocates nothing once the
    /// buffer has grown.
    fn push(&mut self, id: Id, labels: &Arc<[LabelValue]>, value: f64) {
        self.samples.push((
            id,
            Sample {
                labels: Arc::clone(labels),
                value: Value::Number(value),
            },
        ));
    }

    fn commit(&mut self, families: &mut Families) {
        for (id, sample) in self.samples.drain(..) {
            families.samples[id as usize].push(sample);
        }
    }
}

/// memory.events keys exported as `container_memory_events_total{event}`, in the order of
/// [`V2_EVENT_KEYS`] after `oom_kill`.
const MEMORY_EVENTS: [&str; 3] = ["high", "max", "oom"];

/// A label array shared by many samples.
type Shared = Arc<[LabelValue]>;

/// The label arrays of one guest, built once and shared by every sample of the guest (an
/// `Arc` clone per sample instead of an allocation and three reference counts): a collection
/// at a thousand guests emits some forty thousand samples, and building their label arrays
/// afresh was a tenth of its CPU time. Rebuilt when the guest's name changes.
#[derive(Debug)]
struct GuestLabels {
    /// `container_id`, `host_name`, `type` (for the eBPF series, which take them by value).
    values: [LabelValue; 3],
    /// Whether `host_name` is the default name (the config names none).
    default_name: bool,
    /// The same three, shared by the samples.
    base: Arc<[LabelValue]>,
    /// With `event` = [`MEMORY_EVENTS`], in that order.
    events: [Arc<[LabelValue]>; 3],
    /// With `device`, per io.stat `(major, minor)` seen.
    devices: Vec<((u32, u32), Shared)>,
    /// Per host-side device name seen: the labels with `interface`, and those of
    /// `pve_guest_network_info`; cleared when the guest's config changes (the config gives
    /// the info's name, bridge and hwaddr).
    interfaces: Vec<(Box<str>, Shared, Shared)>,
    interfaces_stamp: Option<Stamp>,
    /// `pve_guest_info`'s labels and what they were built from: node, config stamp, status.
    info: Option<(LabelValue, Option<Stamp>, &'static str, Shared)>,
    /// `pve_guest_lock`'s labels (the lock is the fourth value), kept while the lock stays.
    lock: Option<Shared>,
    /// `pve_guest_ha_state`'s labels (the state is the fourth value), kept while it stays.
    ha_state: Option<Shared>,
}

/// Label caches keep at most this many devices or interfaces per guest: a guest whose devices
/// keep changing rebuilds its cache rather than growing it.
const LABEL_CACHE_MAX: usize = 64;

impl GuestLabels {
    fn new(key: Key, name: Option<&str>) -> Self {
        let name = match name {
            Some(name) => LabelValue::from(name),
            None => LabelValue::from(pve::default_name(key.0, key.1)),
        };
        let values = [LabelValue::from(key.1.to_string()), name, type_label(key.0)];
        let with = |extra: &str| -> Arc<[LabelValue]> {
            let [a, b, c] = values.clone();
            Arc::new([a, b, c, LabelValue::from(extra)])
        };
        GuestLabels {
            default_name: false,
            base: Arc::new(values.clone()),
            events: MEMORY_EVENTS.map(with),
            devices: Vec::new(),
            interfaces: Vec::new(),
            interfaces_stamp: None,
            info: None,
            lock: None,
            ha_state: None,
            values,
        }
    }

    /// The labels with a fourth value.
    fn with(&self, extra: &str) -> Arc<[LabelValue]> {
        let [a, b, c] = self.values.clone();
        Arc::new([a, b, c, LabelValue::from(extra)])
    }

    /// The labels with a fourth value, from `cache` when it holds them, else built and kept
    /// there: a lock or an HA state lasts many collections, and its labels are built once.
    fn cached_with<'a>(values: &[LabelValue; 3], cache: &'a mut Option<Shared>, extra: &str) -> &'a Shared {
        if cache.as_ref().is_none_or(|l| &*l[3] != extra) {
            let [a, b, c] = values.clone();
            *cache = Some(Arc::new([a, b, c, LabelValue::from(extra)]));
        }
        cache.as_ref().expect("set above")
    }

    /// The labels with `device` = `major:minor`, built the first time the device is seen.
    fn device(&mut self, major: u32, minor: u32) -> &Arc<[LabelValue]> {
        let index = match self.devices.iter().position(|(k, _)| *k == (major, minor)) {
            Some(i) => i,
            None => {
                if self.devices.len() >= LABEL_CACHE_MAX {
                    self.devices.clear();
                }
                let labels = self.with(&format!("{major}:{minor}"));
                self.devices.push(((major, minor), labels));
                self.devices.len() - 1
            }
        };
        &self.devices[index].1
    }

    /// The labels of the guest's interface `net<index>` on the host-side device `host`: with
    /// `interface` for the traffic series, and those of `pve_guest_network_info` (from `net`,
    /// the config's line, where there is one). Built the first time the device is seen and
    /// kept until the config changes.
    fn interface(
        &mut self,
        host: &str,
        index: u32,
        stamp: Option<Stamp>,
        net: Option<&pve::NetConfig>,
    ) -> (&Shared, &Shared) {
        if self.interfaces_stamp != stamp {
            self.interfaces.clear();
            self.interfaces_stamp = stamp;
        }
        let position = match self.interfaces.iter().position(|(k, _, _)| **k == *host) {
            Some(i) => i,
            None => {
                if self.interfaces.len() >= LABEL_CACHE_MAX {
                    self.interfaces.clear();
                }
                let interface = pve::net_key(index);
                let labels = self.with(&interface);
                let given = |value: Option<&String>| LabelValue::from(value.map_or("", String::as_str));
                let [a, b, c] = self.values.clone();
                let info: Shared = Arc::new([
                    a,
                    b,
                    c,
                    LabelValue::from(interface),
                    LabelValue::from(host),
                    given(net.and_then(|n| n.name.as_ref())),
                    given(net.and_then(|n| n.bridge.as_ref())),
                    given(net.and_then(|n| n.hwaddr.as_ref())),
                ]);
                self.interfaces.push((host.into(), labels, info));
                self.interfaces.len() - 1
            }
        };
        let (_, labels, info) = &self.interfaces[position];
        (labels, info)
    }
}

/// One guest interface from the host's /proc/net/dev, kept between the read of the file and
/// the guest's samples without allocating: the name is a range of [`GuestsCollector::net_names`].
#[derive(Debug, Clone, Copy)]
struct NetRow {
    key: Key,
    index: u32,
    name: (usize, usize),
    /// The guest's view: host transmit is guest receive. Receive bytes, transmit bytes,
    /// receive packets, transmit packets, receive errors, transmit errors, receive drops,
    /// transmit drops.
    counters: [u64; 8],
}

/// The `guests` collector. Create it once and call `collect` repeatedly: its value is the
/// state it keeps between collections.
#[derive(Debug)]
pub struct GuestsCollector {
    cgroup_path: Option<PathBuf>,
    pve_path: PathBuf,
    proc_path: PathBuf,
    root_path: PathBuf,
    layout: Layout,
    budget: FdBudget,
    netdev: KeptFile,
    /// Boxed: a `Guest` is some 1.4 KB, and B-tree nodes are about half full.
    guests: BTreeMap<Key, Box<Guest>>,
    /// This node's guest configs, scanned once per collection with `backup`.
    local_configs: LocalConfigs,
    /// The number of the last scan of `local_configs` this collector used.
    configs_used: u64,
    members: Option<(Stamp, Option<String>)>,
    /// HA states of the guests, from `ha/manager_status` or `ha/resources.cfg`.
    ha: HaStates,
    /// Guest label arrays, rebuilt only when a name changes.
    labels: HashMap<Key, GuestLabels>,
    families: Families,
    staged: Staged,
    buf: Vec<u8>,
    pids: Vec<u32>,
    /// Guest interfaces of the last /proc/net/dev read, sorted by guest, and their names.
    net_rows: Vec<NetRow>,
    net_names: String,
    /// io.stat rows of the guest being read.
    io_rows: Vec<cgroup::IoCounters>,
    /// The eBPF programs, when they run: a slot per running guest, read once per collection.
    ebpf: Option<GuestEbpf>,
    /// Reads each guest's start when it is first seen or restarted.
    starts: crate::starts::GuestStarts,
}

/// The eBPF side of the guests collector. CPU time, memory, pressure and interface traffic
/// stay with cgroupfs and sysfs, which the kernel keeps exactly since the guest started; the
/// kernel maps add what cgroupfs cannot give (run-queue latency, task fork/exec/exit, socket
/// traffic), counted from the moment the guest got its slot.
struct GuestEbpf {
    runtime: Box<crate::ebpf::EbpfRuntime>,
    slots: HashMap<Key, crate::ebpf::Slot>,
    keys: HashMap<crate::ebpf::Slot, Key>,
    readings: Vec<crate::ebpf::GuestReading>,
    /// Guests refused a slot (map full, unexpected cgroup level): their eBPF series are absent.
    refused: BTreeMap<Key, String>,
}

impl std::fmt::Debug for GuestEbpf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestEbpf")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl GuestEbpf {
    /// Gives every running guest a slot and frees the slots of guests that are gone; a freed
    /// slot is reused without carrying counts over (the runtime keeps a baseline).
    fn sync(&mut self, alive: &BTreeSet<Key>, dirs: &BTreeMap<Key, Box<Guest>>) {
        let gone: Vec<Key> = self.slots.keys().filter(|k| !alive.contains(k)).copied().collect();
        for key in gone {
            if let Some(slot) = self.slots.remove(&key) {
                self.keys.remove(&slot);
                self.runtime.release(slot);
            }
        }
        self.refused.retain(|k, _| alive.contains(k));
        for key in alive {
            if self.slots.contains_key(key) || self.refused.contains_key(key) {
                continue;
            }
            let Some(guest) = dirs.get(key) else { continue };
            match self
                .runtime
                .assign(&format!("{}/{}", key.0.as_str(), key.1), &guest.dir)
            {
                Ok(slot) => {
                    self.slots.insert(*key, slot);
                    self.keys.insert(slot, *key);
                }
                Err(e) => {
                    tracing::warn!(vmid = key.1, error = %e, "no eBPF slot for this guest: its eBPF series are absent");
                    self.refused.insert(*key, e.to_string());
                }
            }
        }
    }
}

/// Label values of `type`.
fn type_label(kind: GuestType) -> LabelValue {
    LabelValue::from(kind.as_str())
}

impl GuestsCollector {
    /// Decides the cgroup layout (once) and prepares empty state; nothing is read yet.
    pub fn new(env: &Environment) -> Self {
        let layout = match &env.cgroup_path {
            Some(path) => super::layout::detect(&env.proc_path, &env.root_path, path, &env.mounts),
            None => Layout::none(),
        };
        let budget = FdBudget::from_rlimit();
        let collector = GuestsCollector {
            cgroup_path: env.cgroup_path.clone(),
            pve_path: env.pve_path.clone(),
            proc_path: env.proc_path.clone(),
            root_path: env.root_path.clone(),
            netdev: KeptFile::new(&Arc::from(env.proc_path.join("net")), "dev", &budget),
            layout,
            budget,
            guests: BTreeMap::new(),
            local_configs: env.local_configs.clone(),
            configs_used: 0,
            members: None,
            ha: HaStates::default(),
            labels: HashMap::new(),
            families: Families::new(),
            staged: Staged::default(),
            buf: Vec::with_capacity(16 * 1024),
            pids: Vec::new(),
            net_rows: Vec::new(),
            net_names: String::new(),
            io_rows: Vec::new(),
            ebpf: None,
            starts: crate::starts::GuestStarts::new(&env.proc_path),
        };
        // Room in the descriptor table for the guests running now, made while the process
        // has one thread (see FdBudget::reserve_table).
        let running = collector.discover(&mut Vec::new()).len();
        collector.budget.reserve_table(running * DESCRIPTORS_PER_GUEST + 64);
        collector.budget.expect(running * DESCRIPTORS_PER_GUEST);
        collector
    }

    /// Adds the eBPF programs as a source of the eBPF-only guest series.
    pub fn with_ebpf(mut self, runtime: Box<crate::ebpf::EbpfRuntime>) -> Self {
        self.ebpf = Some(GuestEbpf {
            runtime,
            slots: HashMap::new(),
            keys: HashMap::new(),
            readings: Vec::new(),
            refused: BTreeMap::new(),
        });
        self
    }

    /// Slots held by running guests (for tests and /status).
    pub fn ebpf_slots(&self) -> Option<usize> {
        self.ebpf.as_ref().map(|e| e.slots.len())
    }

    /// The layout decided at start.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Descriptors kept open now (for tests and /status).
    pub fn open_descriptors(&self) -> usize {
        self.budget.in_use()
    }

    /// Running guests found by the last collection.
    pub fn running(&self) -> Vec<(GuestType, u32)> {
        self.guests.keys().copied().collect()
    }

    /// The local node name: `.members` nodename, else the host name.
    fn node_name(&mut self, errors: &mut Vec<CollectError>) -> Option<String> {
        let (pve, proc, root) = (&self.pve_path, &self.proc_path, &self.root_path);
        Self::local_node_name(pve, proc, root, &mut self.members, errors)
    }

    /// [`Self::node_name`] for any collector: `members` caches `.members` by its stamp.
    pub(crate) fn local_node_name(
        pve_path: &Path,
        proc_path: &Path,
        root_path: &Path,
        members: &mut Option<(Stamp, Option<String>)>,
        errors: &mut Vec<CollectError>,
    ) -> Option<String> {
        let path = pve_path.join(".members");
        match std::fs::metadata(&path) {
            Ok(meta) => {
                let stamp = Stamp::of(&meta);
                if members.as_ref().is_none_or(|(s, _)| *s != stamp) {
                    let name = match crate::error::read_parsed(&path, pve::parse_members) {
                        Ok(members) => Some(members.nodename),
                        Err(e) => {
                            errors.push(e);
                            None
                        }
                    };
                    *members = Some((stamp, name));
                }
            }
            Err(_) => *members = None,
        }
        if let Some((_, Some(name))) = &members {
            return Some(name.clone());
        }
        let candidates = [proc_path.join("sys/kernel/hostname"), root_path.join("etc/hostname")];
        candidates
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_owned())
            .find(|s| !s.is_empty())
    }

    /// Running guests: `lxc/<vmid>` and `qemu.slice/<vmid>.scope` directories.
    fn discover(&self, errors: &mut Vec<CollectError>) -> BTreeSet<Key> {
        let mut running = BTreeSet::new();
        let Some(root) = &self.cgroup_path else {
            return running;
        };
        for (kind, sub) in [(GuestType::Lxc, "lxc"), (GuestType::Qemu, "qemu.slice")] {
            let dir = root.join(sub);
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    errors.push(CollectError::io(&dir, e));
                    continue;
                }
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let vmid = match kind {
                    GuestType::Lxc => parse_vmid(name),
                    GuestType::Qemu => name.strip_suffix(".scope").and_then(parse_vmid),
                };
                if let Some(vmid) = vmid {
                    running.insert((kind, vmid));
                }
            }
        }
        running
    }

    /// Brings the guest's label arrays up to date with its configured name (no allocation
    /// when the name is unchanged).
    fn update_labels(&mut self, key: Key, name: Option<&str>) {
        let current = self.labels.get(&key).is_some_and(|l| match name {
            Some(name) => !l.default_name && &*l.values[1] == name,
            None => l.default_name,
        });
        if !current {
            let mut labels = GuestLabels::new(key, name);
            labels.default_name = name.is_none();
            self.labels.insert(key, labels);
        }
    }
}

/// Descriptors a guest keeps open, about: some twenty files of its cgroup and a `cgroup.procs`
/// per cgroup of a container with systemd inside (sixteen to twenty-two: init.scope, a dozen
/// services, the slices, a login session).
const DESCRIPTORS_PER_GUEST: usize = 40;

/// New guests from which [`open_ahead`] uses more than one thread.
const OPEN_AHEAD_PARALLEL_MIN: usize = 64;

/// Opens the files of guests seen for the first time ([`Guest::open_ahead`]), on every core
/// (at most four) when there are many. Why: an open costs several times a pread, and a guest
/// has some twenty files; at a thousand guests the first collection is mostly opens, and the
/// first collection is most of the time from start to the first served /metrics. Path lookups
/// scale across cores, so the wall time of this step divides by the number of threads; the
/// CPU time stays what it is.
fn open_ahead(mut guests: Vec<&mut Guest>, budget: &FdBudget) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    if threads == 1 || guests.len() < OPEN_AHEAD_PARALLEL_MIN {
        let mut buf = Vec::new();
        for guest in guests {
            guest.open_ahead(&mut buf, budget);
        }
        return;
    }
    let per_thread = guests.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for chunk in guests.chunks_mut(per_thread) {
            scope.spawn(move || {
                let mut buf = Vec::new();
                for guest in chunk.iter_mut() {
                    guest.open_ahead(&mut buf, budget);
                }
            });
        }
    });
}

/// A vmid: a decimal number without sign or leading zero, as Proxmox allocates them (100 up).
pub(crate) fn parse_vmid(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.starts_with('0') {
        return None;
    }
    text.parse().ok()
}

/// Reads `file` and parses it. `Ok(None)`: absent, or unreadable/malformed (recorded in
/// `errors`, the metric is then absent). `Err`: only when the cgroup vanished.
fn read_parsed<T>(
    file: &mut KeptFile,
    buf: &mut Vec<u8>,
    errors: &mut Vec<CollectError>,
    absent_new: &mut bool,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<Option<T>, CollectError> {
    match file.read(buf) {
        Ok(true) => {}
        Ok(false) => {
            *absent_new |= file.newly_absent();
            return Ok(None);
        }
        Err(e) if e.is_vanished() => return Err(e),
        Err(e) => {
            errors.push(e);
            return Ok(None);
        }
    }
    let parsed = std::str::from_utf8(buf)
        .map_err(|e| ParseError::new(e.to_string()))
        .and_then(parse);
    match parsed {
        Ok(value) => Ok(Some(value)),
        Err(e) => {
            errors.push(CollectError::parse(&file.path(), e));
            Ok(None)
        }
    }
}

/// cgroup v1 reports "no limit" as the largest page-aligned value below 2^63
/// (PAGE_COUNTER_MAX pages); anything that large is no limit.
fn v1_limit(value: u64) -> Option<u64> {
    (value < (1 << 62)).then_some(value)
}

fn seconds(usec: u64) -> f64 {
    usec as f64 / 1e6
}

/// What [`read_guest`] works with besides the guest: reused buffers and the output.
struct Scratch<'a> {
    buf: &'a mut Vec<u8>,
    pids: &'a mut Vec<u32>,
    io_rows: &'a mut Vec<cgroup::IoCounters>,
    budget: &'a FdBudget,
    staged: &'a mut Staged,
    errors: &'a mut Vec<CollectError>,
}

/// Reads one guest into `staged`. `Err` only when the guest's cgroup vanished. Limit files
/// are read only when `read_limits`; otherwise the last values read are repeated.
fn read_guest(
    guest: &mut Guest,
    labels: &mut GuestLabels,
    x: Scratch<'_>,
    read_limits: bool,
) -> Result<(), CollectError> {
    let Scratch {
        buf,
        pids,
        io_rows,
        budget,
        staged,
        errors,
    } = x;
    let base = &labels.base;
    let mut absent_new = false;
    let mut limits: Vec<(Id, f64)> = Vec::new();
    // cpu.stat exists in every cgroup2 directory (kernels 4.15+): its absence means the guest
    // is gone. Only where a v1 cpuacct hierarchy exists may it be missing on purpose (an older
    // cgroup2 that prints it only with the cpu controller), and cpuacct then has the time.
    let cpu = if guest.cpuacct.is_none() {
        guest.cpu_stat.read_required(buf)?;
        match std::str::from_utf8(buf)
            .map_err(|e| ParseError::new(e.to_string()))
            .and_then(cgroup::parse_cpu_stat)
        {
            Ok(cpu) => Some(cpu),
            Err(e) => {
                errors.push(CollectError::parse(&guest.cpu_stat.path(), e));
                None
            }
        }
    } else {
        read_parsed(
            &mut guest.cpu_stat,
            buf,
            errors,
            &mut absent_new,
            cgroup::parse_cpu_stat,
        )?
    };
    // Throttling counters come from cgroup2's cpu.stat where the cpu controller is enabled
    // there, else from the v1 cpu hierarchy: never both.
    let mut throttling_seen = false;
    if let Some(cpu) = cpu {
        staged.push(Id::CPU_USAGE, base, seconds(cpu.usage_usec));
        staged.push(Id::CPU_USER, base, seconds(cpu.user_usec));
        staged.push(Id::CPU_SYSTEM, base, seconds(cpu.system_usec));
        for (value, id) in [
            (cpu.nr_periods, Id::CPU_PERIODS),
            (cpu.nr_throttled, Id::CPU_THROTTLED_PERIODS),
        ] {
            if let Some(v) = value {
                staged.push(id, base, v as f64);
                throttling_seen = true;
            }
        }
        if let Some(v) = cpu.throttled_usec {
            staged.push(Id::CPU_THROTTLED, base, seconds(v));
            throttling_seen = true;
        }
    } else if guest.cpu_stat.is_absent()
        && let Some(acct) = &mut guest.cpuacct
    {
        if let Some(ns) = read_parsed(&mut acct.usage, buf, errors, &mut absent_new, cgroup::parse_u64)? {
            staged.push(Id::CPU_USAGE, base, ns as f64 / 1e9);
        }
        if let Some(stat) = read_parsed(&mut acct.stat, buf, errors, &mut absent_new, cgroup::parse_cpuacct_stat)? {
            staged.push(Id::CPU_USER, base, stat.user_ticks as f64 / user_hz());
            staged.push(Id::CPU_SYSTEM, base, stat.system_ticks as f64 / user_hz());
        }
    }
    match &mut guest.cpu_bandwidth {
        CpuBandwidthFiles::V2 { max } => {
            if read_limits
                && let Some(max) = read_parsed(max, buf, errors, &mut absent_new, cgroup::parse_cpu_max)?
                && let Some(cores) = max.cpus()
            {
                limits.push((Id::CPU_LIMIT, cores));
            }
        }
        CpuBandwidthFiles::V1 { stat, quota, period } => {
            if !throttling_seen
                && let Some(v1) = read_parsed(stat, buf, errors, &mut absent_new, cgroup::parse_v1_cpu_stat)?
            {
                for (value, id) in [
                    (v1.nr_periods, Id::CPU_PERIODS),
                    (v1.nr_throttled, Id::CPU_THROTTLED_PERIODS),
                ] {
                    if let Some(v) = value {
                        staged.push(id, base, v as f64);
                    }
                }
                if let Some(ns) = v1.throttled_time_ns {
                    staged.push(Id::CPU_THROTTLED, base, ns as f64 / 1e9);
                }
            }
            if read_limits {
                let quota = read_parsed(quota, buf, errors, &mut absent_new, cgroup::parse_cfs_quota)?;
                let period = read_parsed(period, buf, errors, &mut absent_new, cgroup::parse_u64)?;
                if let (Some(quota_usec), Some(period_usec)) = (quota, period)
                    && let Some(cores) = (cgroup::CpuMax {
                        quota_usec,
                        period_usec,
                    })
                    .cpus()
                {
                    limits.push((Id::CPU_LIMIT, cores));
                }
            }
        }
        CpuBandwidthFiles::None => {}
    }
    for (file, some, full) in [
        (&mut guest.cpu_pressure, Id::CPU_WAITING, Id::CPU_STALLED),
        (&mut guest.memory_pressure, Id::MEMORY_WAITING, Id::MEMORY_STALLED),
        (&mut guest.io_pressure, Id::IO_WAITING, Id::IO_STALLED),
    ] {
        if let Some(p) = read_parsed(file, buf, errors, &mut absent_new, cgroup::parse_pressure)? {
            staged.push(some, base, seconds(p.some.total_usec));
            if let Some(full_line) = p.full {
                staged.push(full, base, seconds(full_line.total_usec));
            }
        }
    }

    // Under memory_localevents the guest cgroup's own memory.events holds only its own
    // events: the subtree's sum is read after the walk below instead.
    let events_summed = guest.events_sum.is_some();
    match &mut guest.memory {
        MemoryFiles::V2 {
            current,
            stat,
            max,
            high,
            swap_current,
            swap_max,
            events,
        } => {
            let usage = read_parsed(current, buf, errors, &mut absent_new, cgroup::parse_u64)?;
            // Two of memory.stat's fifty-odd keys: parsed without building a map.
            let stat = read_parsed(stat, buf, errors, &mut absent_new, |t| {
                cgroup::flat_keyed_values(t, &["inactive_file", "file"])
            })?;
            if let Some(usage) = usage {
                staged.push(Id::MEMORY_USAGE, base, usage as f64);
                if let Some([Some(inactive), _]) = stat {
                    staged.push(Id::MEMORY_WORKING_SET, base, usage.saturating_sub(inactive) as f64);
                }
                if let Some([_, Some(file)]) = stat {
                    staged.push(Id::MEMORY_PVE_USED, base, usage.saturating_sub(file) as f64);
                }
            }
            for (file, id) in [
                (max, Id::MEMORY_LIMIT),
                (high, Id::MEMORY_SOFT_LIMIT),
                (swap_max, Id::SWAP_LIMIT),
            ] {
                if read_limits
                    && let Some(Limit::Value(v)) = read_parsed(file, buf, errors, &mut absent_new, cgroup::parse_limit)?
                {
                    limits.push((id, v as f64));
                }
            }
            if let Some(v) = read_parsed(swap_current, buf, errors, &mut absent_new, cgroup::parse_u64)? {
                staged.push(Id::MEMORY_SWAP, base, v as f64);
            }
            if !events_summed
                && let Some([oom_kill, events @ ..]) = read_parsed(events, buf, errors, &mut absent_new, |t| {
                    cgroup::flat_keyed_values(t, &V2_EVENT_KEYS)
                })?
            {
                if let Some(v) = oom_kill {
                    staged.push(Id::OOM_KILLS, base, v as f64);
                }
                for (value, event_labels) in events.into_iter().zip(&labels.events) {
                    if let Some(v) = value {
                        staged.push(Id::MEMORY_EVENTS, event_labels, v as f64);
                    }
                }
            }
        }
        MemoryFiles::V1 {
            usage,
            stat,
            limit,
            memsw_usage,
            memsw_limit,
        } => {
            let usage = read_parsed(usage, buf, errors, &mut absent_new, cgroup::parse_u64)?;
            let stat = read_parsed(stat, buf, errors, &mut absent_new, |t| {
                cgroup::flat_keyed_values(t, &["total_inactive_file", "total_cache"])
            })?;
            let [inactive, cache] = stat.unwrap_or_default();
            if let Some(usage) = usage {
                staged.push(Id::MEMORY_USAGE, base, usage as f64);
                if let Some(inactive) = inactive {
                    staged.push(Id::MEMORY_WORKING_SET, base, usage.saturating_sub(inactive) as f64);
                }
                if let Some(cache) = cache {
                    staged.push(Id::MEMORY_PVE_USED, base, usage.saturating_sub(cache) as f64);
                }
            }
            // Swap is memory + swap less memory, as cAdvisor computes it for v1: both from the
            // page counters, exact where memory.stat's total_swap lags by up to a stats flush.
            // Without swap accounting there is no memsw file, and no swap series.
            let memsw = read_parsed(memsw_usage, buf, errors, &mut absent_new, cgroup::parse_u64)?;
            if let (Some(usage), Some(memsw)) = (usage, memsw) {
                staged.push(Id::MEMORY_SWAP, base, memsw.saturating_sub(usage) as f64);
            }
            if read_limits {
                let memory = read_parsed(limit, buf, errors, &mut absent_new, cgroup::parse_u64)?.and_then(v1_limit);
                if let Some(v) = memory {
                    limits.push((Id::MEMORY_LIMIT, v as f64));
                }
                // memsw limits memory + swap, and the kernel keeps it at or above the memory
                // limit: the swap limit is the difference. An unlimited memsw (or no swap
                // accounting, no file) is no swap limit.
                let memsw =
                    read_parsed(memsw_limit, buf, errors, &mut absent_new, cgroup::parse_u64)?.and_then(v1_limit);
                if let (Some(memory), Some(memsw)) = (memory, memsw) {
                    limits.push((Id::SWAP_LIMIT, memsw.saturating_sub(memory) as f64));
                }
            }
            // OOM kills: v1 counts them in the victim's memcg only, summed below.
        }
        MemoryFiles::None => {}
    }

    let io_read = match &mut guest.io {
        IoFiles::V2 { stat } => read_parsed(stat, buf, errors, &mut absent_new, |t| {
            cgroup::parse_io_stat_into(t, io_rows)
        })?
        .is_some(),
        // The same four counters from the v1 blkio files (the _recursive ones include the
        // subtree, as io.stat does); a device has whichever of the two files could be read.
        IoFiles::V1 { bytes, serviced } => {
            io_rows.clear();
            let bytes = read_parsed(bytes, buf, errors, &mut absent_new, |t| {
                cgroup::parse_blkio_rwstat_into(t, cgroup::BlkioCounters::Bytes, io_rows)
            })?;
            let operations = read_parsed(serviced, buf, errors, &mut absent_new, |t| {
                cgroup::parse_blkio_rwstat_into(t, cgroup::BlkioCounters::Operations, io_rows)
            })?;
            bytes.is_some() || operations.is_some()
        }
        IoFiles::None => false,
    };
    if io_read {
        for dev in io_rows.iter() {
            let device = labels.device(dev.major, dev.minor);
            for (value, id) in [
                (dev.rbytes, Id::FS_READ_BYTES),
                (dev.wbytes, Id::FS_WRITE_BYTES),
                (dev.rios, Id::FS_READS),
                (dev.wios, Id::FS_WRITES),
            ] {
                if let Some(v) = value {
                    staged.push(id, device, v as f64);
                }
            }
        }
    }
    let base = &labels.base;

    if let Some(file) = &mut guest.pids_current
        && let Some(v) = read_parsed(file, buf, errors, &mut absent_new, cgroup::parse_u64)?
    {
        staged.push(Id::THREADS, base, v as f64);
    }
    if read_limits
        && let Some(file) = &mut guest.pids_max
        && let Some(Limit::Value(v)) = read_parsed(file, buf, errors, &mut absent_new, cgroup::parse_limit)?
    {
        limits.push((Id::THREADS_MAX, v as f64));
    }
    if read_limits {
        guest.limits = limits;
    }
    for &(id, value) in &guest.limits {
        staged.push(id, base, value);
    }

    if let Some(n) = count_processes(guest, buf, pids, budget, errors)? {
        staged.push(Id::PROCESSES, base, n as f64);
    }
    // After the walk: a cgroup2 subtree whose shape changed lists the summed subtree again.
    if let Some(sum) = &mut guest.events_sum
        && let Some([oom_kill, events @ ..]) = sum.read(guest.walked_shape, buf, budget, errors, &mut absent_new)?
    {
        if let Some(v) = oom_kill {
            staged.push(Id::OOM_KILLS, base, v as f64);
        }
        for ((key, value), event_labels) in sum.keys[1..].iter().zip(events).zip(&labels.events) {
            if let Some(v) = value
                && !key.is_empty()
            {
                staged.push(Id::MEMORY_EVENTS, event_labels, v as f64);
            }
        }
    }

    // A file that was there before and is not now, or a first open that found nothing, may
    // mean the guest went away during this read: only then pay for a check of the directory.
    if absent_new && !guest.dir.is_dir() {
        return Err(CollectError::Vanished {
            path: guest.dir.to_path_buf(),
        });
    }
    Ok(())
}

/// Every cgroup directory at and below `dir`, or with `skip_inner` every one that can hold
/// processes. cgroup2's "no internal process" rule keeps processes out of a (non-root) cgroup
/// with a domain controller (memory, io, ...) enabled in `cgroup.subtree_control`
/// (cgroup-v2.rst; [`cgroup::enables_domain_controller`]): skipping such cgroups (`lxc/<vmid>`,
/// `ns`, `ns/system.slice`) saves a read per collection for each, but only where a change of
/// their controllers is seen before the next count ([`walk_shape`]). Only cgroups with
/// children are asked (a leaf is kept either way: with controllers enabled it holds no
/// process, and reading its empty `cgroup.procs` is cheaper than an open of
/// `cgroup.subtree_control` on every walk).
fn walk(dir: &Path, skip_inner: bool, out: &mut Vec<PathBuf>) -> Result<(), CollectError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CollectError::io(dir, e))?;
    let mut children = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => return Err(CollectError::io(dir, e)),
        };
        // Entries of cgroupfs are real directories and files; file_type does not follow
        // links, which is right here (there are none to follow).
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            children.push(entry.path());
        }
    }
    let inner = skip_inner
        && !children.is_empty()
        && std::fs::read_to_string(dir.join("cgroup.subtree_control"))
            .is_ok_and(|c| cgroup::enables_domain_controller(&c));
    if !inner {
        out.push(dir.to_path_buf());
    }
    for child in children {
        match walk(&child, skip_inner, out) {
            Ok(()) => {}
            // A child removed during the walk is simply not there.
            Err(e) if e.is_vanished() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether cgroups that cannot hold processes may be left out of a walk of a subtree of this
/// shape: only when a change of their controllers changes the shape, i.e. when `cgroup.stat`
/// counts controller states (6.11+), or when there is no `cgroup.stat` and the subtree is
/// walked on every collection anyway. Before 6.11 `cgroup.stat` shows only `nr_descendants`:
/// an inner cgroup whose controllers are disabled can take processes without any count
/// changing, so every cgroup's `cgroup.procs` is read, the inner ones' empty. That costs a
/// pread per inner cgroup and collection, and replaces a periodic walk (which left such
/// processes uncounted until it came, and cost a directory listing per cgroup).
fn walk_shape(shape: Option<cgroup::SubtreeShape>) -> bool {
    shape.is_none_or(|s| s.counts_controllers)
}

/// Lists the guest's subtree again and keeps a `cgroup.procs` per cgroup that can hold
/// processes ([`walk_shape`]). Descriptors of cgroups found again are kept (reopening them
/// costs more than the walk); only open ones are, so a cgroup replaced under the same name is
/// reopened.
fn rewalk(guest: &mut Guest, shape: Option<cgroup::SubtreeShape>, budget: &FdBudget) -> Result<(), CollectError> {
    let mut dirs = Vec::new();
    walk(&guest.dir, walk_shape(shape), &mut dirs)?;
    let mut previous = std::mem::take(&mut guest.procs);
    guest.procs = dirs
        .into_iter()
        .map(|d| match previous.iter().position(|f| f.is_open() && f.dir() == d) {
            Some(i) => previous.swap_remove(i),
            None => KeptFile::new(&Arc::from(d), "cgroup.procs", budget),
        })
        .collect();
    guest.walked_shape = shape;
    Ok(())
}

/// Distinct PIDs in `cgroup.procs` of the guest's subtree. Walks the subtree again when the
/// shape `cgroup.stat` describes changed (descendants, and on 6.11+ controller states), when a
/// kept cgroup vanished, and when there is no cgroup.stat to tell.
fn count_processes(
    guest: &mut Guest,
    buf: &mut Vec<u8>,
    pids: &mut Vec<u32>,
    budget: &FdBudget,
    errors: &mut Vec<CollectError>,
) -> Result<Option<u64>, CollectError> {
    let mut absent = false;
    let shape = read_parsed(
        &mut guest.cgroup_stat,
        buf,
        errors,
        &mut absent,
        cgroup::parse_subtree_shape,
    )?;
    let mut must_walk = shape.is_none() || shape != guest.walked_shape;
    for attempt in 0..2 {
        if must_walk {
            rewalk(guest, shape, budget)?;
        }
        pids.clear();
        let mut changed = false;
        for file in &mut guest.procs {
            match file.read(buf) {
                Ok(true) => {}
                // A cgroup of the subtree went away (or was replaced): walk again.
                Ok(false) => changed = true,
                Err(e) if e.is_vanished() => changed = true,
                Err(e) => {
                    errors.push(e);
                    return Ok(None);
                }
            }
            if changed {
                break;
            }
            match std::str::from_utf8(buf)
                .map_err(|e| ParseError::new(e.to_string()))
                .and_then(|t| cgroup::parse_pids_into(t, pids))
            {
                Ok(()) => {}
                Err(e) => {
                    errors.push(CollectError::parse(&file.path(), e));
                    return Ok(None);
                }
            }
        }
        if !changed {
            // A process moving between two cgroups of the guest while they are read can be
            // seen twice: count distinct PIDs.
            pids.sort_unstable();
            pids.dedup();
            return Ok(Some(pids.len() as u64));
        }
        if attempt == 0 {
            must_walk = true;
        }
    }
    // The subtree kept changing under us: report no count rather than a wrong one.
    Ok(None)
}

/// Host-side devices of guests, parsed from the host's `/proc/net/dev` names.
fn guest_device(name: &str) -> Option<(Key, u32)> {
    let (kind, rest) = if let Some(rest) = name.strip_prefix("veth") {
        (GuestType::Lxc, rest)
    } else if let Some(rest) = name.strip_prefix("tap") {
        (GuestType::Qemu, rest)
    } else {
        return None;
    };
    let (vmid, index) = rest.split_once('i')?;
    let index = if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) {
        index.parse().ok()?
    } else {
        return None;
    };
    Some(((kind, parse_vmid(vmid)?), index))
}

impl Collector for GuestsCollector {
    fn name(&self) -> &'static str {
        "guests"
    }

    fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
        let mut errors = Vec::new();
        let node = self.node_name(&mut errors);
        // Held to the end of the collection: the names, limits and states below come from it.
        let local_configs = self.local_configs.clone();
        let configs = local_configs.current(&self.pve_path, &mut self.configs_used, &mut errors);
        let running = self.discover(&mut errors);

        // Stopped guests: their state (descriptors included) goes now.
        self.guests.retain(|k, _| running.contains(k));
        // When the descriptor budget cannot hold every file of every guest (a low hard
        // RLIMIT_NOFILE), the limit files, read every LIMITS_EVERY collections, leave theirs
        // to the files read on every collection.
        self.budget.balance();
        self.labels
            .retain(|k, _| running.contains(k) || configs.configs.contains_key(k));

        // Network: one read of the host's interface table for every guest, kept as rows
        // sorted by guest (no allocation per interface).
        self.net_rows.clear();
        self.net_names.clear();
        let (rows, names) = (&mut self.net_rows, &mut self.net_names);
        let parsed = read_parsed(&mut self.netdev, &mut self.buf, &mut errors, &mut false, |text| {
            netdev::for_each(text, |name, c| {
                if let Some((key, index)) = guest_device(name) {
                    let start = names.len();
                    names.push_str(name);
                    // The host side of a veth/tap counts the guest's transmit as receive.
                    rows.push(NetRow {
                        key,
                        index,
                        name: (start, names.len()),
                        counters: [
                            c.tx_bytes,
                            c.rx_bytes,
                            c.tx_packets,
                            c.rx_packets,
                            c.tx_errs,
                            c.rx_errs,
                            c.tx_drop,
                            c.rx_drop,
                        ],
                    });
                }
            })
        });
        match parsed {
            Ok(Some(())) => {}
            // Malformed or unreadable (recorded): no interface series rather than some.
            Ok(None) => rows.clear(),
            Err(e) => {
                rows.clear();
                errors.push(e);
            }
        }
        // Stable: a guest's interfaces keep the file's order.
        rows.sort_by_key(|r| r.key);

        // Guests seen for the first time get their state, and their files are opened ahead.
        if let Some(root) = &self.cgroup_path {
            let mut new = BTreeSet::new();
            for &key in &running {
                if let std::collections::btree_map::Entry::Vacant(entry) = self.guests.entry(key) {
                    let relative = match key.0 {
                        GuestType::Lxc => PathBuf::from(format!("lxc/{}", key.1)),
                        GuestType::Qemu => PathBuf::from(format!("qemu.slice/{}.scope", key.1)),
                    };
                    entry.insert(Box::new(Guest::new(
                        root.join(&relative),
                        &relative,
                        &self.layout,
                        &self.budget,
                    )));
                    new.insert(key);
                }
            }
            let new_guests: Vec<&mut Guest> = self
                .guests
                .iter_mut()
                .filter(|(k, _)| new.contains(k))
                .map(|(_, g)| &mut **g)
                .collect();
            open_ahead(new_guests, &self.budget);
        }

        self.families.reserve();
        let mut alive = BTreeSet::new();
        for &key in &running {
            self.update_labels(key, configs.name(&key));
            let Some(guest) = self.guests.get_mut(&key) else {
                continue;
            };
            let labels = self.labels.get_mut(&key).expect("updated above");
            let mut result = Err(CollectError::Other(String::new()));
            for _attempt in 0..2 {
                self.staged.samples.clear();
                let mut guest_errors = Vec::new();
                let stamp = configs.get(&key).map(|c| c.stamp);
                let read_limits = guest.limits_due.is_none_or(|due| due == 0) || guest.config_stamp != stamp;
                guest.config_stamp = stamp;
                guest.limits_due = Some(match guest.limits_due {
                    // After the first read, guests found together (all of them at start) read
                    // their limits in different collections, spread by vmid, instead of all in
                    // every eighth.
                    None => key.1 % LIMITS_EVERY,
                    Some(_) if read_limits => LIMITS_EVERY - 1,
                    Some(due) => due - 1,
                });
                let scratch = Scratch {
                    buf: &mut self.buf,
                    pids: &mut self.pids,
                    io_rows: &mut self.io_rows,
                    budget: &self.budget,
                    staged: &mut self.staged,
                    errors: &mut guest_errors,
                };
                result = read_guest(guest, labels, scratch, read_limits);
                match &result {
                    // The cgroup was removed; if it was recreated (a restart), the reopened
                    // descriptors read the new one.
                    Err(e) if e.is_vanished() => guest.reset(),
                    _ => {
                        errors.extend(guest_errors);
                        break;
                    }
                }
            }
            if result.is_err() {
                self.staged.samples.clear();
                self.guests.remove(&key);
                continue;
            }
            alive.insert(key);
            if let Some(start) = self.starts.declare(&mut guest.start, &guest.dir, &labels.base, out) {
                self.staged
                    .push(Id::GUEST_START, &labels.base, crate::starts::unix_seconds(start));
            }
            let first = self.net_rows.partition_point(|r| r.key < key);
            let entry = configs.get(&key);
            for row in self.net_rows[first..].iter().take_while(|r| r.key == key) {
                let host = &self.net_names[row.name.0..row.name.1];
                // One scheme for containers and VMs: `interface` is Proxmox's net<N> key, from
                // the host device's name, so it holds without a config line; the in-guest name,
                // bridge and MAC address go on the info series.
                let net = entry.and_then(|e| e.config.nets.iter().find(|n| n.index == row.index));
                let (interface, info) = labels.interface(host, row.index, entry.map(|c| c.stamp), net);
                self.staged.push(Id::GUEST_NETWORK_INFO, info, 1.0);
                for (id, value) in [
                    Id::NET_RX_BYTES,
                    Id::NET_TX_BYTES,
                    Id::NET_RX_PACKETS,
                    Id::NET_TX_PACKETS,
                    Id::NET_RX_ERRORS,
                    Id::NET_TX_ERRORS,
                    Id::NET_RX_DROPPED,
                    Id::NET_TX_DROPPED,
                ]
                .into_iter()
                .zip(row.counters)
                {
                    self.staged.push(id, interface, value as f64);
                }
            }
            self.staged.commit(&mut self.families);
        }

        // Info for every configured guest of this node, and for running guests without a
        // config (still guests, with default names).
        let node = LabelValue::from(node.unwrap_or_default());
        self.ha.refresh(&self.pve_path, &mut errors);
        let keys: BTreeSet<Key> = configs.configs.keys().copied().chain(running.iter().copied()).collect();
        for key in keys {
            self.update_labels(key, configs.name(&key));
            let labels = self.labels.get_mut(&key).expect("updated above");
            let entry = configs.get(&key);
            // A running guest that vanished during this collection is stopped now if it is
            // configured; without a config there is nothing left to say about it.
            let status = match (alive.contains(&key), entry.is_some()) {
                (true, _) => "running",
                (false, true) => "stopped",
                (false, false) => continue,
            };
            let stamp = entry.map(|c| c.stamp);
            let fresh = labels
                .info
                .as_ref()
                .is_some_and(|(n, s, st, _)| *n == node && *s == stamp && *st == status);
            if !fresh {
                let tags = entry.map(|c| c.config.tags.join(";")).unwrap_or_default();
                // No config, or a template value that is no boolean: unknown, not 0.
                let template = match entry.and_then(|c| c.config.template) {
                    Some(true) => "1",
                    Some(false) => "0",
                    None => "",
                };
                let [a, b, c] = labels.values.clone();
                let info: Arc<[LabelValue]> = Arc::new([
                    a,
                    b,
                    c,
                    node.clone(),
                    LabelValue::from(tags),
                    LabelValue::from(status),
                    LabelValue::from(template),
                ]);
                labels.info = Some((node.clone(), stamp, status, info));
            }
            let info = &labels.info.as_ref().expect("set above").3;
            self.families.samples[Id::GUEST_INFO as usize].push(Sample {
                labels: Arc::clone(info),
                value: Value::Number(1.0),
            });
            // Only local guests: manager_status lists every HA resource of the cluster.
            match self.ha.current().and_then(|states| states.get(&key)) {
                Some(state) => {
                    let state_labels = GuestLabels::cached_with(&labels.values, &mut labels.ha_state, state);
                    self.families.samples[Id::GUEST_HA_STATE as usize].push(Sample {
                        labels: Arc::clone(state_labels),
                        value: Value::Number(1.0),
                    });
                }
                None => labels.ha_state = None,
            }
            let Some(config) = entry.map(|c| &c.config) else {
                labels.lock = None;
                continue;
            };
            match &config.lock {
                Some(lock) => {
                    let lock_labels = GuestLabels::cached_with(&labels.values, &mut labels.lock, lock);
                    self.families.samples[Id::GUEST_LOCK as usize].push(Sample {
                        labels: Arc::clone(lock_labels),
                        value: Value::Number(1.0),
                    });
                }
                None => labels.lock = None,
            }
            let base = &labels.base;
            let mut push = |id: Id, value: f64| {
                self.families.samples[id as usize].push(Sample {
                    labels: Arc::clone(base),
                    value: Value::Number(value),
                });
            };
            if let Some(onboot) = config.onboot {
                push(Id::GUEST_ONBOOT, if onboot { 1.0 } else { 0.0 });
            }
            push(Id::GUEST_SNAPSHOTS, config.snapshots.len() as f64);
            if let Some(oldest) = config.oldest_snapshot_time() {
                push(Id::GUEST_SNAPSHOT_OLDEST, oldest as f64);
            }
            let cpus = match key.0 {
                GuestType::Lxc => config.cores,
                GuestType::Qemu => config.vcpus.or_else(|| {
                    // qemu-server's defaults: 1 socket, 1 core.
                    (config.cores.is_some() || config.sockets.is_some())
                        .then(|| config.cores.unwrap_or(1) * config.sockets.unwrap_or(1))
                }),
            };
            if let Some(cpus) = cpus {
                self.families.samples[Id::GUEST_CONFIG_CPUS as usize].push(Sample {
                    labels: Arc::clone(&labels.base),
                    value: Value::Number(cpus as f64),
                });
            }
            if let Some(mib) = config.memory_mib {
                self.families.samples[Id::GUEST_CONFIG_MEMORY as usize].push(Sample {
                    labels: Arc::clone(&labels.base),
                    value: Value::Number(mib as f64 * 1024.0 * 1024.0),
                });
            }
        }

        self.families.flush(out);
        // Cgroup counters and the guest's veth/tap devices count from zero since it started;
        // the eBPF series below count from the guest's slot and are not declared.
        out.set_counts_since(GUEST_METRICS, crate::model::CountsSince::GuestStart);
        if let Some(ebpf) = &mut self.ebpf {
            ebpf.sync(&alive, &self.guests);
            // One pass over the mmap-ed counters for every guest: no syscall per guest.
            let mut readings = std::mem::take(&mut ebpf.readings);
            ebpf.runtime.read_into(&mut readings);
            for reading in &readings {
                if let Some(key) = ebpf.keys.get(&reading.slot)
                    && let Some(labels) = self.labels.get(key)
                {
                    crate::ebpf::metrics::push_guest(out, &labels.values, reading);
                }
            }
            ebpf.readings = readings;
            crate::ebpf::metrics::push_self(out, &ebpf.runtime.self_stats());
        }
        summarize(errors)
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = vec![format!("cgroup layout: {}", self.layout.describe())];
        match &self.cgroup_path {
            Some(p) => notes.push(format!("guests discovered under {}", p.display())),
            None => notes.push("no cgroup2 hierarchy: guests have info series only".to_owned()),
        }
        notes.push(format!(
            "{} descriptors kept open for {} running guests",
            self.budget.in_use(),
            self.guests.len()
        ));
        match &self.ebpf {
            Some(e) => notes.push(format!(
                "eBPF: {} guests hold a slot, {} refused; run-queue latency, task and socket counters from kernel maps",
                e.slots.len(),
                e.refused.len()
            )),
            None => notes.push("eBPF: not used by this collector (see exporter.components.ebpf)".to_owned()),
        }
        if !matches!(self.layout.memory, Source::Unified) {
            notes.push(
                "memory from cgroup v1: no soft limit (memory.high) and no memory event series; OOM kills summed over each guest's v1 subtree"
                    .to_owned(),
            );
        }
        notes
    }
}

/// One error for the collection: the first in full, and how many more.
pub(crate) fn summarize(mut errors: Vec<CollectError>) -> Result<(), CollectError> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        n => Err(CollectError::Other(format!(
            "{} (and {} more problems)",
            errors[0],
            n - 1
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_device_names() {
        assert_eq!(guest_device("veth101i0"), Some(((GuestType::Lxc, 101), 0)));
        assert_eq!(guest_device("tap200i12"), Some(((GuestType::Qemu, 200), 12)));
        assert_eq!(guest_device("fwln101i0"), None);
        assert_eq!(guest_device("fwpr101p0"), None);
        assert_eq!(guest_device("vmbr0"), None);
        assert_eq!(guest_device("veth0"), None);
        assert_eq!(guest_device("vethabc"), None);
        assert_eq!(guest_device("veth101i"), None);
        assert_eq!(guest_device("tap101ix"), None);
    }

    #[test]
    fn vmids() {
        assert_eq!(parse_vmid("101"), Some(101));
        assert_eq!(parse_vmid("0101"), None);
        assert_eq!(parse_vmid("ns"), None);
        assert_eq!(parse_vmid(""), None);
        assert_eq!(parse_vmid("99999999999"), None);
    }
}
