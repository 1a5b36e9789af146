//! Collector `guests`: every local Proxmox guest's CPU, memory, pressure, I/O, processes and
//! network, with names, tags and status.
//!
//! Reads, on every collection:
//! - `$CGROUP_PATH/lxc/<vmid>` (running containers) and `$CGROUP_PATH/qemu.slice/<vmid>.scope`
//!   (running VMs): directory listings for discovery, then per guest `cpu.stat`, `cpu.max`,
//!   `{cpu,memory,io}.pressure`, `memory.{current,stat,max,high,swap.current,swap.max,events}`,
//!   `io.stat`, `pids.{current,max}`, `cgroup.stat` and `cgroup.procs` of the guest cgroup and
//!   every cgroup below it. On a hybrid layout memory and pids come from the v1 hierarchies
//!   (`memory.usage_in_bytes`, `memory.stat` `total_*`, `memory.limit_in_bytes`,
//!   `memory.oom_control`, `pids.current`, `pids.max`), see [`super::layout`];
//! - `$PROC_PATH/net/dev` once: the host side of every guest interface (`veth<vmid>i<N>`,
//!   `tap<vmid>i<N>`) in one read;
//! - `$PVE_PATH/lxc/*.conf`, `$PVE_PATH/qemu-server/*.conf` (this node's guests; re-read only
//!   when inode, size or mtime changed) and `$PVE_PATH/.members` (the node name; fallback: the
//!   host name).
//!
//! Produces the per-guest families of [`super::metrics`] (`container_*`, `pve_guest_*`), each
//! labelled `container_id`, `host_name`, `type`.
//!
//! Cost: descriptors are kept open per guest and read with `pread` at offset 0 (see
//! [`super::files`]); the subtree of a guest is walked again only when `cgroup.stat`
//! `nr_descendants` changes or one of its cgroups disappears.
//!
//! Missing is not zero: a stopped guest has its info series only; a file the layout or kernel
//! lacks makes its metric absent; `max` limits are absent; a guest whose cgroup disappears while
//! it is read is left out of this collection entirely.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::files::{FdBudget, KeptFile};
use super::layout::{Layout, Source};
use super::metrics::{GUEST_METRICS, Id};
use crate::collectors::{Collector, Environment};
use crate::error::{CollectError, ParseError};
use crate::model::{LabelValue, Sample, SnapshotBuilder, Value};
use crate::parse::cgroup::{self, Limit};
use crate::parse::netdev::{self, NetDevStats};
use crate::parse::pve::{self, GuestConfig, GuestType};

type Key = (GuestType, u32);

/// Memory files of one guest, by layout.
#[derive(Debug)]
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
        oom_control: KeptFile,
    },
    None,
}

/// One running guest and the descriptors kept for it.
#[derive(Debug)]
struct Guest {
    dir: PathBuf,
    cpu_stat: KeptFile,
    cpu_max: KeptFile,
    cpu_pressure: KeptFile,
    memory_pressure: KeptFile,
    io_pressure: KeptFile,
    io_stat: KeptFile,
    memory: MemoryFiles,
    pids_current: Option<KeptFile>,
    pids_max: Option<KeptFile>,
    cgroup_stat: KeptFile,
    /// `cgroup.procs` of the guest cgroup and every descendant, from the last walk.
    procs: Vec<KeptFile>,
    /// `nr_descendants` at the last walk; `None` when cgroup.stat is not there (walk always).
    walked_descendants: Option<u64>,
    /// Collections until the subtree is walked again even if nothing says it changed.
    walk_due: u32,
    /// Limit series of the last limit read, repeated until the next one.
    limits: Vec<(Id, f64)>,
    /// Collections until the limit files are read again.
    limits_due: u32,
    /// The guest config's stamp at the last limit read: Proxmox changes limits (`pct set`,
    /// `qm set`) by writing the config, so a new stamp means new limits.
    config_stamp: Option<Stamp>,
}

/// Limits (cpu.max, memory.max, memory.high, memory.swap.max, pids.max, v1
/// memory.limit_in_bytes) change only when someone reconfigures the guest: they are read when
/// the guest's config changes and otherwise every this many collections (for limits written to
/// cgroupfs directly). Each skipped read saves five preads per guest.
const LIMITS_EVERY: u32 = 8;

/// The subtree of a guest is walked again at least every this many collections, as a safety
/// net for changes `nr_descendants` and vanished cgroups do not reveal (a cgroup whose
/// controllers were disabled and that can hold processes now).
const WALK_EVERY: u32 = 16;

impl Guest {
    fn new(dir: PathBuf, relative: &Path, layout: &Layout, budget: &FdBudget) -> Self {
        let f = |name: &str| KeptFile::new(dir.join(name), budget);
        let memory = match &layout.memory {
            Source::Unified => MemoryFiles::V2 {
                current: f("memory.current"),
                stat: f("memory.stat"),
                max: f("memory.max"),
                high: f("memory.high"),
                swap_current: f("memory.swap.current"),
                swap_max: f("memory.swap.max"),
                events: f("memory.events"),
            },
            Source::V1(root) => {
                let d = root.join(relative);
                let g = |name: &str| KeptFile::new(d.join(name), budget);
                MemoryFiles::V1 {
                    usage: g("memory.usage_in_bytes"),
                    stat: g("memory.stat"),
                    limit: g("memory.limit_in_bytes"),
                    oom_control: g("memory.oom_control"),
                }
            }
            Source::None => MemoryFiles::None,
        };
        let pids_dir = match &layout.pids {
            Source::Unified => Some(dir.clone()),
            Source::V1(root) => Some(root.join(relative)),
            Source::None => None,
        };
        Guest {
            cpu_stat: f("cpu.stat"),
            cpu_max: f("cpu.max"),
            cpu_pressure: f("cpu.pressure"),
            memory_pressure: f("memory.pressure"),
            io_pressure: f("io.pressure"),
            io_stat: f("io.stat"),
            memory,
            pids_current: pids_dir.as_ref().map(|d| KeptFile::new(d.join("pids.current"), budget)),
            pids_max: pids_dir.as_ref().map(|d| KeptFile::new(d.join("pids.max"), budget)),
            cgroup_stat: f("cgroup.stat"),
            procs: Vec::new(),
            walked_descendants: None,
            walk_due: 0,
            limits: Vec::new(),
            limits_due: 0,
            config_stamp: None,
            dir,
        }
    }

    /// Closes every descriptor so the next read reopens the paths (the cgroup was replaced).
    fn reset(&mut self) {
        for file in [
            &mut self.cpu_stat,
            &mut self.cpu_max,
            &mut self.cpu_pressure,
            &mut self.memory_pressure,
            &mut self.io_pressure,
            &mut self.io_stat,
            &mut self.cgroup_stat,
        ] {
            file.reset();
        }
        match &mut self.memory {
            MemoryFiles::V2 {
                current,
                stat,
                max,
                high,
                swap_current,
                swap_max,
                events,
            } => {
                for file in [current, stat, max, high, swap_current, swap_max, events] {
                    file.reset();
                }
            }
            MemoryFiles::V1 {
                usage,
                stat,
                limit,
                oom_control,
            } => {
                for file in [usage, stat, limit, oom_control] {
                    file.reset();
                }
            }
            MemoryFiles::None => {}
        }
        for file in self.pids_current.iter_mut().chain(self.pids_max.iter_mut()) {
            file.reset();
        }
        self.procs.clear();
        self.walked_descendants = None;
        self.walk_due = 0;
        self.limits.clear();
        self.limits_due = 0;
    }
}

/// A parsed guest config and what identified the file version it came from.
#[derive(Debug)]
struct ConfigEntry {
    stamp: Stamp,
    config: GuestConfig,
}

/// Identifies a file version without reading it: pmxcfs and ordinary filesystems both change
/// one of these on every write (a rename gives a new inode, a rewrite a new mtime or size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

/// Per-collection sample buffers, one per family, so that a sample costs no family lookup.
#[derive(Debug)]
struct Families {
    samples: Vec<Vec<Sample>>,
}

impl Families {
    fn new() -> Self {
        Families {
            samples: GUEST_METRICS.iter().map(|_| Vec::new()).collect(),
        }
    }

    fn flush(&mut self, out: &mut SnapshotBuilder) {
        for (desc, samples) in GUEST_METRICS.iter().zip(self.samples.iter_mut()) {
            if !samples.is_empty() {
                out.family(desc).samples.append(samples);
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
    fn push(&mut self, id: Id, labels: &[LabelValue; 3], value: f64) {
        self.samples.push((
            id,
            Sample {
                labels: Box::new(labels.clone()),
                value: Value::Number(value),
            },
        ));
    }

    fn push_extra(&mut self, id: Id, labels: &[LabelValue; 3], extra: LabelValue, value: f64) {
        let [a, b, c] = labels.clone();
        self.samples.push((
            id,
            Sample {
                labels: Box::new([a, b, c, extra]),
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
    guests: BTreeMap<Key, Guest>,
    configs: BTreeMap<Key, ConfigEntry>,
    members: Option<(Stamp, Option<String>)>,
    /// Guest identity labels, rebuilt only when a name changes.
    labels: HashMap<Key, [LabelValue; 3]>,
    families: Families,
    staged: Staged,
    buf: Vec<u8>,
    pids: Vec<u32>,
    /// The eBPF programs, when they run: a slot per running guest, read once per collection.
    ebpf: Option<GuestEbpf>,
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
    fn sync(&mut self, alive: &BTreeSet<Key>, dirs: &BTreeMap<Key, Guest>) {
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
            None => Layout {
                memory: Source::None,
                pids: Source::None,
            },
        };
        let budget = FdBudget::from_rlimit();
        GuestsCollector {
            cgroup_path: env.cgroup_path.clone(),
            pve_path: env.pve_path.clone(),
            proc_path: env.proc_path.clone(),
            root_path: env.root_path.clone(),
            netdev: KeptFile::new(env.proc_path.join("net/dev"), &budget),
            layout,
            budget,
            guests: BTreeMap::new(),
            configs: BTreeMap::new(),
            members: None,
            labels: HashMap::new(),
            families: Families::new(),
            staged: Staged::default(),
            buf: Vec::with_capacity(16 * 1024),
            pids: Vec::new(),
            ebpf: None,
        }
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
        let path = self.pve_path.join(".members");
        match std::fs::metadata(&path) {
            Ok(meta) => {
                let stamp = Stamp::of(&meta);
                if self.members.as_ref().is_none_or(|(s, _)| *s != stamp) {
                    let name = match crate::error::read_parsed(&path, pve::parse_members) {
                        Ok(members) => Some(members.nodename),
                        Err(e) => {
                            errors.push(e);
                            None
                        }
                    };
                    self.members = Some((stamp, name));
                }
            }
            Err(_) => self.members = None,
        }
        if let Some((_, Some(name))) = &self.members {
            return Some(name.clone());
        }
        let candidates = [
            self.proc_path.join("sys/kernel/hostname"),
            self.root_path.join("etc/hostname"),
        ];
        candidates
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|s| s.trim().to_owned())
            .find(|s| !s.is_empty())
    }

    /// Brings the parsed configs up to date with `$PVE_PATH/{lxc,qemu-server}/*.conf`.
    fn refresh_configs(&mut self, errors: &mut Vec<CollectError>) {
        let mut seen = BTreeSet::new();
        for (kind, sub) in [(GuestType::Lxc, "lxc"), (GuestType::Qemu, "qemu-server")] {
            let dir = self.pve_path.join(sub);
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    errors.push(CollectError::io(&dir, e));
                    // Keep what we had: an unreadable directory does not make guests vanish.
                    seen.extend(self.configs.keys().filter(|(k, _)| *k == kind).copied());
                    continue;
                }
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(vmid) = name.to_str().and_then(|n| n.strip_suffix(".conf")).and_then(parse_vmid) else {
                    continue;
                };
                let path = entry.path();
                let meta = match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_file() => meta,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        errors.push(CollectError::io(&path, e));
                        continue;
                    }
                };
                let key = (kind, vmid);
                let stamp = Stamp::of(&meta);
                if self.configs.get(&key).is_some_and(|c| c.stamp == stamp) {
                    seen.insert(key);
                    continue;
                }
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        let config = pve::parse_guest_config(&String::from_utf8_lossy(&bytes), kind);
                        if !config.ignored_lines.is_empty() {
                            errors.push(CollectError::parse(
                                &path,
                                format!(
                                    "skipped {} malformed line(s), first: {:?}",
                                    config.ignored_lines.len(),
                                    config.ignored_lines[0]
                                ),
                            ));
                        }
                        self.configs.insert(key, ConfigEntry { stamp, config });
                        seen.insert(key);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        errors.push(CollectError::io(&path, e));
                        if self.configs.contains_key(&key) {
                            seen.insert(key);
                        }
                    }
                }
            }
        }
        self.configs.retain(|k, _| seen.contains(k));
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

    fn guest_labels(&mut self, key: Key) -> [LabelValue; 3] {
        let name = match self.configs.get(&key).and_then(|c| c.config.name.as_deref()) {
            Some(name) => name.to_owned(),
            None => pve::default_name(key.0, key.1),
        };
        let entry = self.labels.entry(key).or_insert_with(|| {
            [
                LabelValue::from(key.1.to_string()),
                LabelValue::from(name.as_str()),
                type_label(key.0),
            ]
        });
        if &*entry[1] != name.as_str() {
            entry[1] = LabelValue::from(name.as_str());
        }
        entry.clone()
    }
}

/// A vmid: a decimal number without sign or leading zero, as Proxmox allocates them (100 up).
fn parse_vmid(text: &str) -> Option<u32> {
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
            errors.push(CollectError::parse(file.path(), e));
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

/// Reads one guest into `staged`. `Err` only when the guest's cgroup vanished. Limit files
/// are read only when `read_limits`; otherwise the last values read are repeated.
#[allow(clippy::too_many_arguments)]
fn read_guest(
    guest: &mut Guest,
    labels: &[LabelValue; 3],
    buf: &mut Vec<u8>,
    pids: &mut Vec<u32>,
    budget: &FdBudget,
    staged: &mut Staged,
    errors: &mut Vec<CollectError>,
    read_limits: bool,
) -> Result<(), CollectError> {
    let mut absent_new = false;
    let mut limits: Vec<(Id, f64)> = Vec::new();
    // cpu.stat exists in every cgroup2 directory: its absence means the guest is gone.
    guest.cpu_stat.read_required(buf)?;
    match std::str::from_utf8(buf)
        .map_err(|e| ParseError::new(e.to_string()))
        .and_then(cgroup::parse_cpu_stat)
    {
        Ok(cpu) => {
            staged.push(Id::CPU_USAGE, labels, seconds(cpu.usage_usec));
            staged.push(Id::CPU_USER, labels, seconds(cpu.user_usec));
            staged.push(Id::CPU_SYSTEM, labels, seconds(cpu.system_usec));
            if let Some(v) = cpu.nr_periods {
                staged.push(Id::CPU_PERIODS, labels, v as f64);
            }
            if let Some(v) = cpu.nr_throttled {
                staged.push(Id::CPU_THROTTLED_PERIODS, labels, v as f64);
            }
            if let Some(v) = cpu.throttled_usec {
                staged.push(Id::CPU_THROTTLED, labels, seconds(v));
            }
        }
        Err(e) => errors.push(CollectError::parse(guest.cpu_stat.path(), e)),
    }
    if read_limits
        && let Some(max) = read_parsed(&mut guest.cpu_max, buf, errors, &mut absent_new, cgroup::parse_cpu_max)?
        && let Some(cores) = max.cpus()
    {
        limits.push((Id::CPU_LIMIT, cores));
    }
    for (file, some, full) in [
        (&mut guest.cpu_pressure, Id::CPU_WAITING, Id::CPU_STALLED),
        (&mut guest.memory_pressure, Id::MEMORY_WAITING, Id::MEMORY_STALLED),
        (&mut guest.io_pressure, Id::IO_WAITING, Id::IO_STALLED),
    ] {
        if let Some(p) = read_parsed(file, buf, errors, &mut absent_new, cgroup::parse_pressure)? {
            staged.push(some, labels, seconds(p.some.total_usec));
            if let Some(full_line) = p.full {
                staged.push(full, labels, seconds(full_line.total_usec));
            }
        }
    }

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
            let stat = read_parsed(stat, buf, errors, &mut absent_new, cgroup::parse_flat_keyed)?;
            if let Some(usage) = usage {
                staged.push(Id::MEMORY_USAGE, labels, usage as f64);
                if let Some(inactive) = stat.as_ref().and_then(|s| s.get("inactive_file")) {
                    staged.push(Id::MEMORY_WORKING_SET, labels, usage.saturating_sub(inactive) as f64);
                }
                if let Some(file) = stat.as_ref().and_then(|s| s.get("file")) {
                    staged.push(Id::MEMORY_PVE_USED, labels, usage.saturating_sub(file) as f64);
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
                staged.push(Id::MEMORY_SWAP, labels, v as f64);
            }
            if let Some(ev) = read_parsed(events, buf, errors, &mut absent_new, cgroup::parse_flat_keyed)? {
                if let Some(v) = ev.get("oom_kill") {
                    staged.push(Id::OOM_KILLS, labels, v as f64);
                }
                for event in ["high", "max", "oom"] {
                    if let Some(v) = ev.get(event) {
                        staged.push_extra(Id::MEMORY_EVENTS, labels, LabelValue::from(event), v as f64);
                    }
                }
            }
        }
        MemoryFiles::V1 {
            usage,
            stat,
            limit,
            oom_control,
        } => {
            let usage = read_parsed(usage, buf, errors, &mut absent_new, cgroup::parse_u64)?;
            let stat = read_parsed(stat, buf, errors, &mut absent_new, cgroup::parse_flat_keyed)?;
            if let Some(usage) = usage {
                staged.push(Id::MEMORY_USAGE, labels, usage as f64);
                if let Some(inactive) = stat.as_ref().and_then(|s| s.get("total_inactive_file")) {
                    staged.push(Id::MEMORY_WORKING_SET, labels, usage.saturating_sub(inactive) as f64);
                }
                if let Some(cache) = stat.as_ref().and_then(|s| s.get("total_cache")) {
                    staged.push(Id::MEMORY_PVE_USED, labels, usage.saturating_sub(cache) as f64);
                }
            }
            // total_swap is printed only with swap accounting: absent otherwise.
            if let Some(swap) = stat.as_ref().and_then(|s| s.get("total_swap")) {
                staged.push(Id::MEMORY_SWAP, labels, swap as f64);
            }
            if read_limits
                && let Some(v) = read_parsed(limit, buf, errors, &mut absent_new, cgroup::parse_u64)?.and_then(v1_limit)
            {
                limits.push((Id::MEMORY_LIMIT, v as f64));
            }
            // memory.oom_control: `oom_kill_disable 0`, `under_oom 0`, `oom_kill N` (4.13+).
            if let Some(oom) = read_parsed(oom_control, buf, errors, &mut absent_new, cgroup::parse_flat_keyed)?
                && let Some(v) = oom.get("oom_kill")
            {
                staged.push(Id::OOM_KILLS, labels, v as f64);
            }
        }
        MemoryFiles::None => {}
    }

    if let Some(devices) = read_parsed(&mut guest.io_stat, buf, errors, &mut absent_new, cgroup::parse_io_stat)? {
        for dev in devices {
            let device = LabelValue::from(dev.device());
            for (value, id) in [
                (dev.rbytes(), Id::FS_READ_BYTES),
                (dev.wbytes(), Id::FS_WRITE_BYTES),
                (dev.rios(), Id::FS_READS),
                (dev.wios(), Id::FS_WRITES),
            ] {
                if let Some(v) = value {
                    staged.push_extra(id, labels, device.clone(), v as f64);
                }
            }
        }
    }

    if let Some(file) = &mut guest.pids_current
        && let Some(v) = read_parsed(file, buf, errors, &mut absent_new, cgroup::parse_u64)?
    {
        staged.push(Id::THREADS, labels, v as f64);
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
        staged.push(id, labels, value);
    }

    if let Some(n) = count_processes(guest, buf, pids, budget, errors)? {
        staged.push(Id::PROCESSES, labels, n as f64);
    }

    // A file that was there before and is not now, or a first open that found nothing, may
    // mean the guest went away during this read: only then pay for a check of the directory.
    if absent_new && !guest.dir.is_dir() {
        return Err(CollectError::Vanished {
            path: guest.dir.clone(),
        });
    }
    Ok(())
}

/// Every cgroup directory at and below `dir` that can hold processes. cgroup2's "no internal
/// process" rule keeps processes out of a (non-root) cgroup with controllers enabled in
/// `cgroup.subtree_control` (cgroup-v2.rst): such cgroups (`lxc/<vmid>`, `ns`,
/// `ns/system.slice`) are left out, which saves a read per collection for each.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CollectError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CollectError::io(dir, e))?;
    let inner = std::fs::read_to_string(dir.join("cgroup.subtree_control")).is_ok_and(|c| !c.trim().is_empty());
    if !inner {
        out.push(dir.to_path_buf());
    }
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => return Err(CollectError::io(dir, e)),
        };
        // Entries of cgroupfs are real directories and files; file_type does not follow
        // links, which is right here (there are none to follow).
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            match walk(&entry.path(), out) {
                Ok(()) => {}
                // A child removed during the walk is simply not there.
                Err(e) if e.is_vanished() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Distinct PIDs in `cgroup.procs` of the guest's subtree. Walks the subtree again when
/// `cgroup.stat` `nr_descendants` changed, when a kept cgroup vanished, or when there is no
/// cgroup.stat to tell.
fn count_processes(
    guest: &mut Guest,
    buf: &mut Vec<u8>,
    pids: &mut Vec<u32>,
    budget: &FdBudget,
    errors: &mut Vec<CollectError>,
) -> Result<Option<u64>, CollectError> {
    let mut absent = false;
    let descendants = read_parsed(
        &mut guest.cgroup_stat,
        buf,
        errors,
        &mut absent,
        cgroup::parse_flat_keyed,
    )?
    .and_then(|s| s.get("nr_descendants"));
    let mut must_walk = guest.walk_due == 0 || descendants.is_none() || descendants != guest.walked_descendants;
    guest.walk_due = guest.walk_due.saturating_sub(1);
    for attempt in 0..2 {
        if must_walk {
            let mut dirs = Vec::new();
            walk(&guest.dir, &mut dirs)?;
            guest.procs = dirs
                .into_iter()
                .map(|d| KeptFile::new(d.join("cgroup.procs"), budget))
                .collect();
            guest.walked_descendants = descendants;
            guest.walk_due = WALK_EVERY;
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
                .and_then(cgroup::parse_pids)
            {
                Ok(list) => pids.extend(list),
                Err(e) => {
                    errors.push(CollectError::parse(file.path(), e));
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
        self.refresh_configs(&mut errors);
        let running = self.discover(&mut errors);

        // Stopped guests: their state (descriptors included) goes now.
        self.guests.retain(|k, _| running.contains(k));
        self.labels
            .retain(|k, _| running.contains(k) || self.configs.contains_key(k));

        // Network: one read of the host's interface table for every guest.
        let mut nets: HashMap<Key, Vec<(u32, NetDevStats)>> = HashMap::new();
        match read_parsed(&mut self.netdev, &mut self.buf, &mut errors, &mut false, netdev::parse) {
            Ok(Some(devices)) => {
                for dev in devices {
                    if let Some((key, index)) = guest_device(&dev.name) {
                        nets.entry(key).or_default().push((index, dev));
                    }
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }

        let mut alive = BTreeSet::new();
        for &key in &running {
            let labels = self.guest_labels(key);
            if !self.guests.contains_key(&key) {
                let Some(root) = &self.cgroup_path else {
                    continue;
                };
                let relative = match key.0 {
                    GuestType::Lxc => PathBuf::from(format!("lxc/{}", key.1)),
                    GuestType::Qemu => PathBuf::from(format!("qemu.slice/{}.scope", key.1)),
                };
                let guest = Guest::new(root.join(&relative), &relative, &self.layout, &self.budget);
                self.guests.insert(key, guest);
            }
            let guest = self.guests.get_mut(&key).expect("inserted above");
            let mut result = Err(CollectError::Other(String::new()));
            for _attempt in 0..2 {
                self.staged.samples.clear();
                let mut guest_errors = Vec::new();
                let stamp = self.configs.get(&key).map(|c| c.stamp);
                let read_limits = guest.limits_due == 0 || guest.config_stamp != stamp;
                guest.config_stamp = stamp;
                guest.limits_due = if read_limits {
                    LIMITS_EVERY - 1
                } else {
                    guest.limits_due - 1
                };
                result = read_guest(
                    guest,
                    &labels,
                    &mut self.buf,
                    &mut self.pids,
                    &self.budget,
                    &mut self.staged,
                    &mut guest_errors,
                    read_limits,
                );
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
            if let Some(devices) = nets.get(&key) {
                let config = self.configs.get(&key).map(|c| &c.config);
                for (index, dev) in devices {
                    let interface = match (key.0, config) {
                        (GuestType::Lxc, Some(config)) => config
                            .nets
                            .iter()
                            .find(|n| n.index == *index)
                            .and_then(|n| n.name.clone())
                            .unwrap_or_else(|| dev.name.clone()),
                        _ => dev.name.clone(),
                    };
                    let interface = LabelValue::from(interface);
                    // The host side of a veth/tap counts the guest's transmit as receive.
                    for (id, value) in [
                        (Id::NET_RX_BYTES, dev.tx_bytes),
                        (Id::NET_TX_BYTES, dev.rx_bytes),
                        (Id::NET_RX_PACKETS, dev.tx_packets),
                        (Id::NET_TX_PACKETS, dev.rx_packets),
                        (Id::NET_RX_ERRORS, dev.tx_errs),
                        (Id::NET_TX_ERRORS, dev.rx_errs),
                        (Id::NET_RX_DROPPED, dev.tx_drop),
                        (Id::NET_TX_DROPPED, dev.rx_drop),
                    ] {
                        self.staged.push_extra(id, &labels, interface.clone(), value as f64);
                    }
                }
            }
            self.staged.commit(&mut self.families);
        }

        // Info for every configured guest of this node, and for running guests without a
        // config (still guests, with default names).
        let node = LabelValue::from(node.unwrap_or_default());
        let keys: BTreeSet<Key> = self.configs.keys().copied().chain(running.iter().copied()).collect();
        for key in keys {
            let labels = self.guest_labels(key);
            let config = self.configs.get(&key).map(|c| &c.config);
            let tags = config.map(|c| c.tags.join(";")).unwrap_or_default();
            // A running guest that vanished during this collection is stopped now if it is
            // configured; without a config there is nothing left to say about it.
            let status = match (alive.contains(&key), config.is_some()) {
                (true, _) => "running",
                (false, true) => "stopped",
                (false, false) => continue,
            };
            let [a, b, c] = labels.clone();
            self.families.samples[Id::GUEST_INFO as usize].push(Sample {
                labels: Box::new([a, b, c, node.clone(), LabelValue::from(tags), LabelValue::from(status)]),
                value: Value::Number(1.0),
            });
            let Some(config) = config else { continue };
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
                    labels: Box::new(labels.clone()),
                    value: Value::Number(cpus as f64),
                });
            }
            if let Some(mib) = config.memory_mib {
                self.families.samples[Id::GUEST_CONFIG_MEMORY as usize].push(Sample {
                    labels: Box::new(labels.clone()),
                    value: Value::Number(mib as f64 * 1024.0 * 1024.0),
                });
            }
        }

        self.families.flush(out);
        if let Some(ebpf) = &mut self.ebpf {
            ebpf.sync(&alive, &self.guests);
            // One pass over the mmap-ed counters for every guest: no syscall per guest.
            let mut readings = std::mem::take(&mut ebpf.readings);
            ebpf.runtime.read_into(&mut readings);
            for reading in &readings {
                if let Some(key) = ebpf.keys.get(&reading.slot) {
                    let labels = self.labels.get(key).cloned();
                    if let Some(labels) = labels {
                        crate::ebpf::metrics::push_guest(out, &labels, reading);
                    }
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
            notes.push("memory from cgroup v1: no soft limit (memory.high) and no swap limit series".to_owned());
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
