//! A synthetic Proxmox VE host with N guests, written as a file tree (pure cgroup2 layout),
//! for tests and benchmarks of host mode at scale.
//!
//! Writes: `proc/self/mountinfo`, `proc/net/dev`, `proc/sys/kernel/hostname`,
//! `sys/fs/cgroup/{lxc/<vmid>,qemu.slice/<vmid>.scope,lxc.monitor/<vmid>}/...`, `sys/class/net/<dev>`
//! symlinks into `sys/devices/virtual/net/<dev>/statistics`, and `etc/pve`
//! (`nodes/<node>/{lxc,qemu-server}` with the relative `lxc`, `qemu-server`, `local` symlinks
//! pmxcfs makes, `.members`, `.vmlist`, `.version`, `ha/manager_status`).
//!
//! The guests look like real ones. Every tenth guest is a VM: a leaf scope holding one `qemu`
//! process and its threads. The others are containers of a Debian template with systemd as
//! init: under `lxc/<vmid>/ns` the cgroups systemd makes (`init.scope`, `system.slice` with
//! journald, logind, networkd, resolved, dbus, cron, ssh, postfix in `system-postfix.slice`,
//! `console-getty` and `container-getty@{1,2}` in `system-container\x2dgetty.slice`; every second
//! container also a root login in `user.slice/user-0.slice/{session-1.scope,user@0.service/
//! init.scope}`), each with the interface files a 6.8 kernel gives a cgroup with its controllers
//! (core `cgroup.*`, `cpu.stat`, pressure; `memory.*` and `pids.*` where systemd enables them,
//! `cpu.*`, `cpuset.*` and `io.*` on the guest cgroup and `ns`, which LXC gives every
//! controller). `cgroup.stat` is printed as [`Spec::cgroup_stat`] says: as Linux 6.8 (Proxmox
//! VE 8) or as 6.11+ (Proxmox VE 9, with `nr_subsys_*` counts consistent with the tree).
//! Values are derived from the guest index and returned in [`SyntheticGuest`] so that tests can
//! check what was collected.
//!
//! The layout follows the real one (fixtures/proxmox-host); the numbers are invented.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use crate::collectors::Environment;
use crate::parse::pve::GuestType;

/// How the kernel prints `cgroup.stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupStatFormat {
    /// Before Linux 6.11 (Proxmox VE 8 runs 6.8): `nr_descendants` and `nr_dying_descendants`.
    Linux6_8,
    /// Linux 6.11 and later (Proxmox VE 9): also `nr_subsys_<controller>` and
    /// `nr_dying_subsys_<controller>` for every controller bound to cgroup2.
    Linux6_11,
}

impl CgroupStatFormat {
    /// `6.8` or `6.11`, as command lines spell it.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "6.8" => Some(CgroupStatFormat::Linux6_8),
            "6.11" => Some(CgroupStatFormat::Linux6_11),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CgroupStatFormat::Linux6_8 => "6.8",
            CgroupStatFormat::Linux6_11 => "6.11",
        }
    }
}

/// What a synthetic host contains.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Running guests.
    pub guests: usize,
    /// Additional configured but stopped containers (config, no cgroup).
    pub stopped: usize,
    /// The format of every `cgroup.stat`.
    pub cgroup_stat: CgroupStatFormat,
    /// The node name.
    pub node: String,
}

impl Spec {
    /// `guests` running guests, no stopped ones, `cgroup.stat` as Linux 6.11+ prints it.
    pub fn new(guests: usize) -> Self {
        Spec {
            guests,
            stopped: 0,
            cgroup_stat: CgroupStatFormat::Linux6_11,
            node: "pve1".to_owned(),
        }
    }
}

/// The values written for one running guest.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticGuest {
    pub vmid: u32,
    pub kind: GuestType,
    pub name: String,
    pub usage_usec: u64,
    pub memory_current: u64,
    pub inactive_file: u64,
    pub file: u64,
    /// `None`: `memory.max` says `max`.
    pub memory_max: Option<u64>,
    /// Distinct PIDs in the `cgroup.procs` files of the guest's subtree.
    pub processes: usize,
    /// Tasks (threads) of the guest, its `pids.current`.
    pub pids_current: u64,
    /// Cgroups of the guest: its own and every one below it.
    pub cgroups: usize,
    /// Host-side `rx_bytes` of `veth<vmid>i0` / `tap<vmid>i0` (the guest's transmit).
    pub host_rx_bytes: u64,
    pub host_tx_bytes: u64,
}

/// A written tree.
#[derive(Debug, Clone)]
pub struct SyntheticHost {
    pub root: PathBuf,
    pub guests: Vec<SyntheticGuest>,
    /// vmids of the stopped containers.
    pub stopped: Vec<u32>,
}

impl SyntheticHost {
    /// The environment that points every path into the tree.
    pub fn environment(&self) -> Environment {
        environment_for_tree(&self.root)
    }

    /// The cgroup directory of a running guest.
    pub fn cgroup_dir(&self, kind: GuestType, vmid: u32) -> PathBuf {
        let cg = self.root.join("sys/fs/cgroup");
        match kind {
            GuestType::Lxc => cg.join(format!("lxc/{vmid}")),
            GuestType::Qemu => cg.join(format!("qemu.slice/{vmid}.scope")),
        }
    }
}

/// An [`Environment`] for a Proxmox host tree at `root` (a fixture or a synthetic host):
/// platform Proxmox, `proc`, `sys`, `sys/fs/cgroup` and `etc/pve` inside the tree, mounts from
/// the tree's `proc/self/mountinfo` (empty when it has none).
pub fn environment_for_tree(root: &Path) -> Environment {
    let mounts = std::fs::read_to_string(root.join("proc/self/mountinfo"))
        .ok()
        .and_then(|t| crate::parse::mountinfo::parse(&t).ok())
        .unwrap_or_default();
    Environment {
        platform: crate::platform::Platform::Proxmox,
        proc_path: root.join("proc"),
        sys_path: root.join("sys"),
        root_path: root.to_path_buf(),
        cgroup_path: Some(root.join("sys/fs/cgroup")),
        pve_path: root.join("etc/pve"),
        mounts,
        local_configs: Default::default(),
    }
}

fn write(path: &Path, content: impl AsRef<[u8]>) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, content)
}

fn pressure(some: u64, full: u64) -> String {
    format!(
        "some avg10=0.10 avg60=0.20 avg300=0.30 total={some}\nfull avg10=0.05 avg60=0.10 avg300=0.15 total={full}\n"
    )
}

/// `memory.stat` with `kernel` bytes of kernel memory (stacks, page tables, slab).
fn memory_stat(anon: u64, file: u64, inactive_file: u64, kernel: u64) -> String {
    // The key set and order of a 6.8 kernel's memory.stat (mm/memcontrol.c memory_stats[]).
    let mut s = String::new();
    let active_file = file - inactive_file - file / 16;
    for (k, v) in [
        ("anon", anon),
        ("file", file),
        ("kernel", kernel),
        ("kernel_stack", kernel / 8),
        ("pagetables", kernel / 4),
        ("sec_pagetables", 0),
        ("percpu", 65536),
        ("sock", 0),
        ("vmalloc", 0),
        ("shmem", file / 16),
        ("zswap", 0),
        ("zswapped", 0),
        ("file_mapped", file / 4),
        ("file_dirty", 4096),
        ("file_writeback", 0),
        ("swapcached", 0),
        ("anon_thp", 0),
        ("file_thp", 0),
        ("shmem_thp", 0),
        ("inactive_anon", anon / 2),
        ("active_anon", anon / 2),
        ("inactive_file", inactive_file),
        ("active_file", active_file),
        ("unevictable", 0),
        ("slab_reclaimable", kernel / 2),
        ("slab_unreclaimable", kernel / 4),
        ("slab", kernel / 2 + kernel / 4),
        ("workingset_refault_anon", 0),
        ("workingset_refault_file", 12),
        ("workingset_activate_anon", 0),
        ("workingset_activate_file", 3),
        ("workingset_restore_anon", 0),
        ("workingset_restore_file", 1),
        ("workingset_nodereclaim", 0),
        ("pgscan", 100),
        ("pgsteal", 90),
        ("pgscan_kswapd", 100),
        ("pgscan_direct", 0),
        ("pgscan_khugepaged", 0),
        ("pgsteal_kswapd", 90),
        ("pgsteal_direct", 0),
        ("pgsteal_khugepaged", 0),
        ("pgfault", 123456),
        ("pgmajfault", 12),
        ("pgrefill", 10),
        ("pgactivate", 20),
        ("pgdeactivate", 5),
        ("pglazyfree", 0),
        ("pglazyfreed", 0),
        ("zswpin", 0),
        ("zswpout", 0),
        ("zswpwb", 0),
        ("thp_fault_alloc", 0),
        ("thp_collapse_alloc", 0),
        ("thp_swpout", 0),
        ("thp_swpout_fallback", 0),
    ] {
        let _ = writeln!(s, "{k} {v}");
    }
    s
}

fn netdev_line(name: &str, rx_bytes: u64, rx_packets: u64, tx_bytes: u64, tx_packets: u64) -> String {
    format!(
        "{name:>6}: {rx_bytes} {rx_packets}    0    0    0     0          0         0 {tx_bytes} {tx_packets}    0    0    0     0       0          0\n"
    )
}

fn sys_net(root: &Path, name: &str, rx_bytes: u64, rx_packets: u64, tx_bytes: u64, tx_packets: u64) -> io::Result<()> {
    let dev = root.join("sys/devices/virtual/net").join(name);
    for (file, value) in [
        ("rx_bytes", rx_bytes),
        ("rx_packets", rx_packets),
        ("tx_bytes", tx_bytes),
        ("tx_packets", tx_packets),
        ("rx_errors", 0),
        ("tx_errors", 0),
        ("rx_dropped", 0),
        ("tx_dropped", 0),
    ] {
        write(&dev.join("statistics").join(file), format!("{value}\n"))?;
    }
    let link = root.join("sys/class/net").join(name);
    std::fs::create_dir_all(link.parent().expect("has a parent"))?;
    if link.symlink_metadata().is_err() {
        std::os::unix::fs::symlink(format!("../../devices/virtual/net/{name}"), &link)?;
    }
    Ok(())
}

/// Controllers bound to cgroup2, in the kernel's order (`include/linux/cgroup_subsys.h`, those
/// with interface files on cgroup2): the `nr_subsys_*` lines of a 6.11+ `cgroup.stat`.
const CGROUP2_CONTROLLERS: [&str; 9] = [
    "cpuset",
    "cpu",
    "io",
    "memory",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// What LXC enables below `lxc/` and for a container's `ns` on a Proxmox host (the controllers
/// systemd enables at the host's root).
const LXC_CONTROLLERS: &[&str] = &["cpuset", "cpu", "io", "memory", "pids"];
/// Virtual CPUs of every synthetic VM.
const VM_CORES: u32 = 2;
/// What Proxmox's `qemu.slice` gives its scopes.
const QEMU_CONTROLLERS: &[&str] = &["cpuset", "cpu", "memory", "pids"];
/// What systemd (252, Debian 12) enables below its slices with its default accounting
/// (memory and tasks; CPU accounting needs no controller on cgroup2, IO accounting is off).
const SYSTEMD_CONTROLLERS: &[&str] = &["memory", "pids"];

/// One cgroup of a guest.
#[derive(Debug)]
struct Cgroup {
    /// Relative to the guest cgroup; empty for the guest cgroup itself.
    path: String,
    /// Controllers enabled for it (its parent's `cgroup.subtree_control`); perf_event is
    /// implicitly enabled everywhere and not listed.
    controllers: &'static [&'static str],
    /// Its `cgroup.subtree_control`.
    subtree_control: &'static [&'static str],
    /// PIDs of its processes (single-threaded: also their TIDs).
    procs: Vec<u32>,
    /// TIDs of threads besides the processes' main threads.
    threads: Vec<u32>,
}

impl Cgroup {
    fn has(&self, controller: &str) -> bool {
        controller == "perf_event" || self.controllers.contains(&controller)
    }

    fn is_below(&self, other: &Cgroup) -> bool {
        other.path.is_empty() && !self.path.is_empty()
            || self
                .path
                .strip_prefix(other.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// The cgroups a Debian container with systemd as init has, with its processes numbered from
/// `pid`: systemd in `init.scope`, the services of a Proxmox Debian 12 template in
/// `system.slice` (postfix's master, qmgr and pickup in its instance), and, when `logged_in`,
/// a root session (sshd's session process and a shell) and root's user manager (`systemd
/// --user` and `(sd-pam)`).
fn container_cgroups(mut pid: u32, logged_in: bool) -> Vec<Cgroup> {
    let mut next = |n: usize| -> Vec<u32> {
        let procs = (pid..pid + n as u32).collect();
        pid += n as u32;
        procs
    };
    let inner = |path: &str, controllers| Cgroup {
        path: path.to_owned(),
        controllers,
        subtree_control: SYSTEMD_CONTROLLERS,
        procs: Vec::new(),
        threads: Vec::new(),
    };
    let mut cgroups = vec![
        Cgroup {
            path: String::new(),
            controllers: LXC_CONTROLLERS,
            subtree_control: LXC_CONTROLLERS,
            procs: Vec::new(),
            threads: Vec::new(),
        },
        inner("ns", LXC_CONTROLLERS),
        inner("ns/system.slice", SYSTEMD_CONTROLLERS),
        inner("ns/system.slice/system-postfix.slice", SYSTEMD_CONTROLLERS),
        inner("ns/system.slice/system-container\\x2dgetty.slice", SYSTEMD_CONTROLLERS),
    ];
    let mut leaf = |path: &str, processes: usize| Cgroup {
        path: path.to_owned(),
        controllers: SYSTEMD_CONTROLLERS,
        subtree_control: &[],
        procs: next(processes),
        threads: Vec::new(),
    };
    let mut leaves = vec![leaf("ns/init.scope", 1)];
    for (unit, processes) in [
        ("systemd-journald.service", 1),
        ("systemd-logind.service", 1),
        ("systemd-networkd.service", 1),
        ("systemd-resolved.service", 1),
        ("dbus.service", 1),
        ("cron.service", 1),
        ("ssh.service", 1),
        ("system-postfix.slice/postfix@-.service", 3),
        ("console-getty.service", 1),
        ("system-container\\x2dgetty.slice/container-getty@1.service", 1),
        ("system-container\\x2dgetty.slice/container-getty@2.service", 1),
    ] {
        leaves.push(leaf(&format!("ns/system.slice/{unit}"), processes));
    }
    if logged_in {
        leaves.push(leaf("ns/user.slice/user-0.slice/session-1.scope", 2));
        leaves.push(leaf("ns/user.slice/user-0.slice/user@0.service/init.scope", 2));
        cgroups.push(inner("ns/user.slice", SYSTEMD_CONTROLLERS));
        cgroups.push(inner("ns/user.slice/user-0.slice", SYSTEMD_CONTROLLERS));
        cgroups.push(inner("ns/user.slice/user-0.slice/user@0.service", SYSTEMD_CONTROLLERS));
    }
    cgroups.extend(leaves);
    cgroups
}

/// A VM's scope: the `qemu` process, its main loop, RCU and I/O threads and one thread per
/// virtual CPU, numbered from `pid`.
fn vm_cgroups(pid: u32, vcpus: u32) -> Vec<Cgroup> {
    vec![Cgroup {
        path: String::new(),
        controllers: QEMU_CONTROLLERS,
        subtree_control: &[],
        procs: vec![pid],
        threads: (pid + 1..pid + 3 + vcpus).collect(),
    }]
}

/// The values one cgroup's files show.
#[derive(Debug, Clone)]
struct Values {
    usage_usec: u64,
    /// `nr_periods`, `nr_throttled`, `throttled_usec` (with the cpu controller).
    throttling: (u64, u64, u64),
    cpu_max: &'static str,
    /// `some` and `full` totals of cpu, memory and io pressure.
    pressure: [(u64, u64); 3],
    memory_current: u64,
    file: u64,
    inactive_file: u64,
    /// Kernel memory (stacks, page tables, slab) in `memory.stat`.
    kernel: u64,
    memory_max: Option<u64>,
    memory_high: Option<u64>,
    swap_current: u64,
    swap_max: Option<u64>,
    /// memory.events `high` and `oom_kill`.
    events: (u64, u64),
    tasks: u64,
    io_stat: String,
}

fn limit(value: Option<u64>) -> String {
    value.map_or("max\n".to_owned(), |v| format!("{v}\n"))
}

/// `cgroup.stat` of `cgroup` among `all` (the guest's cgroups), in `format`.
fn cgroup_stat(cgroup: &Cgroup, all: &[Cgroup], format: CgroupStatFormat) -> String {
    let below: Vec<&Cgroup> = all.iter().filter(|c| c.is_below(cgroup)).collect();
    let mut s = format!("nr_descendants {}\n", below.len());
    if format == CgroupStatFormat::Linux6_11 {
        // A controller's count is its live states at and below the cgroup, 0 when the cgroup
        // has none (kernel/cgroup/cgroup.c, cgroup_stat_show).
        for controller in CGROUP2_CONTROLLERS {
            let states = if cgroup.has(controller) {
                1 + below.iter().filter(|c| c.has(controller)).count()
            } else {
                0
            };
            let _ = writeln!(s, "nr_subsys_{controller} {states}");
        }
    }
    s.push_str("nr_dying_descendants 0\n");
    if format == CgroupStatFormat::Linux6_11 {
        for controller in CGROUP2_CONTROLLERS {
            let _ = writeln!(s, "nr_dying_subsys_{controller} 0");
        }
    }
    s
}

/// Writes every interface file of `cgroup` (one of the guest's `all`) under `guest_dir`: the
/// core files, and those of its controllers.
fn cgroup_files(
    guest_dir: &Path,
    cgroup: &Cgroup,
    all: &[Cgroup],
    v: &Values,
    format: CgroupStatFormat,
) -> io::Result<()> {
    let dir = guest_dir.join(&cgroup.path);
    // One directory for some fifty files: created once, not checked for each file (a tree of
    // a thousand guests has some 780,000 files).
    std::fs::create_dir_all(&dir)?;
    let pids: Vec<u32> = all
        .iter()
        .filter(|c| std::ptr::eq(*c, cgroup) || c.is_below(cgroup))
        .flat_map(|c| c.procs.iter())
        .copied()
        .collect();
    let list = |ids: &mut dyn Iterator<Item = &u32>| ids.map(|p| format!("{p}\n")).collect::<String>();
    std::fs::write(
        dir.join("cgroup.controllers"),
        format!("{}\n", cgroup.controllers.join(" ")),
    )?;
    std::fs::write(
        dir.join("cgroup.subtree_control"),
        if cgroup.subtree_control.is_empty() {
            String::new()
        } else {
            format!("{}\n", cgroup.subtree_control.join(" "))
        },
    )?;
    std::fs::write(
        dir.join("cgroup.events"),
        format!("populated {}\nfrozen 0\n", u8::from(!pids.is_empty())),
    )?;
    std::fs::write(dir.join("cgroup.freeze"), "0\n")?;
    // Write-only: reading it fails on a real cgroup.
    std::fs::write(dir.join("cgroup.kill"), "")?;
    std::fs::write(dir.join("cgroup.max.depth"), "max\n")?;
    std::fs::write(dir.join("cgroup.max.descendants"), "max\n")?;
    std::fs::write(dir.join("cgroup.pressure"), "1\n")?;
    std::fs::write(dir.join("cgroup.type"), "domain\n")?;
    std::fs::write(dir.join("cgroup.procs"), list(&mut cgroup.procs.iter()))?;
    std::fs::write(
        dir.join("cgroup.threads"),
        list(&mut cgroup.procs.iter().chain(&cgroup.threads)),
    )?;
    std::fs::write(dir.join("cgroup.stat"), cgroup_stat(cgroup, all, format))?;

    let user = v.usage_usec * 2 / 3;
    let mut cpu_stat = format!(
        "usage_usec {}\nuser_usec {user}\nsystem_usec {}\ncore_sched.force_idle_usec 0\n",
        v.usage_usec,
        v.usage_usec - user
    );
    if cgroup.has("cpu") {
        let (periods, throttled, throttled_usec) = v.throttling;
        let _ = write!(
            cpu_stat,
            "nr_periods {periods}\nnr_throttled {throttled}\nthrottled_usec {throttled_usec}\nnr_bursts 0\nburst_usec 0\n"
        );
    }
    std::fs::write(dir.join("cpu.stat"), cpu_stat)?;
    std::fs::write(dir.join("cpu.stat.local"), "throttled_usec 0\n")?;
    for (name, (some, full)) in ["cpu.pressure", "memory.pressure", "io.pressure"]
        .into_iter()
        .zip(v.pressure)
    {
        std::fs::write(dir.join(name), pressure(some, full))?;
    }
    if cgroup.has("cpu") {
        for (name, content) in [
            ("cpu.idle", "0\n"),
            ("cpu.max", v.cpu_max),
            ("cpu.max.burst", "0\n"),
            ("cpu.uclamp.max", "max\n"),
            ("cpu.uclamp.min", "0.00\n"),
            ("cpu.weight", "100\n"),
            ("cpu.weight.nice", "0\n"),
        ] {
            std::fs::write(dir.join(name), content)?;
        }
    }
    if cgroup.has("cpuset") {
        for (name, content) in [
            ("cpuset.cpus", "\n"),
            ("cpuset.cpus.effective", "0-15\n"),
            ("cpuset.cpus.exclusive", "\n"),
            ("cpuset.cpus.exclusive.effective", "\n"),
            ("cpuset.cpus.partition", "member\n"),
            ("cpuset.mems", "\n"),
            ("cpuset.mems.effective", "0\n"),
        ] {
            std::fs::write(dir.join(name), content)?;
        }
    }
    if cgroup.has("io") {
        std::fs::write(dir.join("io.max"), "")?;
        std::fs::write(dir.join("io.prio.class"), "no-change\n")?;
        std::fs::write(dir.join("io.stat"), &v.io_stat)?;
        std::fs::write(dir.join("io.weight"), "default 100\n")?;
    }
    if cgroup.has("memory") {
        let events = format!(
            "low 0\nhigh {}\nmax 0\noom 0\noom_kill {}\noom_group_kill 0\n",
            v.events.0, v.events.1
        );
        let anon = v.memory_current.saturating_sub(v.file + 2 * v.kernel);
        for (name, content) in [
            ("memory.current", format!("{}\n", v.memory_current)),
            ("memory.stat", memory_stat(anon, v.file, v.inactive_file, v.kernel)),
            ("memory.numa_stat", format!("anon N0={anon}\nfile N0={}\n", v.file)),
            ("memory.max", limit(v.memory_max)),
            ("memory.high", limit(v.memory_high)),
            ("memory.low", "0\n".to_owned()),
            ("memory.min", "0\n".to_owned()),
            ("memory.peak", format!("{}\n", v.memory_current + v.memory_current / 4)),
            ("memory.events", events.clone()),
            ("memory.events.local", events),
            ("memory.oom.group", "0\n".to_owned()),
            ("memory.reclaim", String::new()),
            ("memory.swap.current", format!("{}\n", v.swap_current)),
            ("memory.swap.max", limit(v.swap_max)),
            ("memory.swap.high", "max\n".to_owned()),
            ("memory.swap.peak", format!("{}\n", v.swap_current)),
            ("memory.swap.events", "high 0\nmax 0\nfail 0\n".to_owned()),
            ("memory.zswap.current", "0\n".to_owned()),
            ("memory.zswap.max", "max\n".to_owned()),
            ("memory.zswap.writeback", "1\n".to_owned()),
        ] {
            std::fs::write(dir.join(name), content)?;
        }
    }
    if cgroup.has("pids") {
        std::fs::write(dir.join("pids.current"), format!("{}\n", v.tasks))?;
        std::fs::write(dir.join("pids.events"), "max 0\n")?;
        std::fs::write(dir.join("pids.max"), "max\n")?;
        std::fs::write(dir.join("pids.peak"), format!("{}\n", v.tasks + 3))?;
    }
    Ok(())
}

/// Writes the cgroups of one guest under `dir`: the guest cgroup shows `g`'s values, every
/// cgroup below it a share of them.
fn guest_cgroups(
    dir: &Path,
    g: &SyntheticGuest,
    i: u64,
    cgroups: &[Cgroup],
    format: CgroupStatFormat,
) -> io::Result<()> {
    let io_stat = format!(
        "253:{} rbytes={} wbytes={} rios={} wios={} dbytes=0 dios=0\n8:0 rbytes={} wbytes={} rios={} wios={} dbytes=0 dios=0\n",
        i % 200,
        i << 20,
        i << 19,
        i * 10,
        i * 5,
        i << 21,
        i << 20,
        i * 20,
        i * 10
    );
    let guest = Values {
        usage_usec: g.usage_usec,
        throttling: (i * 100, i % 7, (i % 7) * 1000),
        cpu_max: if i.is_multiple_of(2) {
            "200000 100000\n"
        } else {
            "max 100000\n"
        },
        pressure: [(1000 + i, 500 + i), (2000 + i, 900 + i), (3000 + i, 1500 + i)],
        memory_current: g.memory_current,
        file: g.file,
        inactive_file: g.inactive_file,
        kernel: 8 << 20,
        memory_max: g.memory_max,
        memory_high: g.memory_max.map(|v| v / 1024 * 1016),
        swap_current: (i % 5) << 20,
        swap_max: Some(512 << 20),
        events: (i % 3, i % 2),
        tasks: g.pids_current,
        io_stat,
    };
    let leaves = cgroups.iter().filter(|c| !c.procs.is_empty()).count().max(1) as u64;
    for cgroup in cgroups {
        let values = if cgroup.path.is_empty() {
            guest.clone()
        } else {
            // Hierarchical counters: the leaves below (or the cgroup itself) times a leaf's
            // share of the guest's.
            let share = cgroups
                .iter()
                .filter(|c| !c.procs.is_empty() && (std::ptr::eq(*c, cgroup) || c.is_below(cgroup)))
                .count() as u64;
            let part = |v: u64| v / leaves * share;
            Values {
                usage_usec: part(guest.usage_usec),
                cpu_max: "max 100000\n",
                pressure: guest.pressure.map(|(s, f)| (part(s), part(f))),
                memory_current: part(guest.memory_current - (16 << 20)),
                file: part(guest.file),
                inactive_file: part(guest.inactive_file),
                kernel: part(4 << 20),
                memory_max: None,
                memory_high: None,
                swap_current: part(guest.swap_current),
                swap_max: None,
                events: (0, 0),
                tasks: cgroups
                    .iter()
                    .filter(|c| std::ptr::eq(*c, cgroup) || c.is_below(cgroup))
                    .map(|c| (c.procs.len() + c.threads.len()) as u64)
                    .sum(),
                ..guest.clone()
            }
        };
        cgroup_files(dir, cgroup, cgroups, &values, format)?;
    }
    Ok(())
}

/// What a synthetic guest's config and the HA status say of its state, as real hosts have it
/// in some guests: every twentieth guest is locked by a running backup, every fifteenth
/// container has a second snapshot and a pending change, every VM a pending change, every
/// guest a dated snapshot (containers the `[snap]` section the config already has), and every
/// fourth guest is HA-managed (an entry of `ha/manager_status`, every eighth of them in
/// `error`).
struct GuestState {
    /// Lines of the main section (sorted in as `lock` sorts among the keys).
    main: String,
    /// Text after the config's last line.
    sections: String,
    /// The guest's `service_status` entry.
    ha: Option<String>,
}

fn guest_state(index: usize, vmid: u32, kind: GuestType, node: &str) -> GuestState {
    let main = if index % 20 == 7 {
        "lock: backup\n".to_owned()
    } else {
        String::new()
    };
    let snaptime = 1_727_788_800 + u64::from(vmid) * 60;
    let sections = match kind {
        // The text continues the existing `[snap]` section.
        GuestType::Lxc if index % 15 == 4 => {
            format!(
                "snaptime: {snaptime}\n\n[pve:pending]\ncores: 4\n\n[snap2]\nsnaptime: {}\n",
                snaptime + 86_400
            )
        }
        GuestType::Lxc => format!("snaptime: {snaptime}\n"),
        GuestType::Qemu => format!("\n[PENDING]\nmemory: 8192\n\n[before-upgrade]\nsnaptime: {snaptime}\n"),
    };
    let ha = index.is_multiple_of(4).then(|| {
        let prefix = match kind {
            GuestType::Lxc => "ct",
            GuestType::Qemu => "vm",
        };
        let state = if index.is_multiple_of(32) { "error" } else { "started" };
        format!("\"{prefix}:{vmid}\":{{\"node\":\"{node}\",\"state\":\"{state}\",\"uid\":\"u{vmid}\"}}")
    });
    GuestState { main, sections, ha }
}

/// Writes a host with `spec.guests` running guests under `root` (which should be empty).
pub fn generate(root: &Path, spec: &Spec) -> io::Result<SyntheticHost> {
    let cg = root.join("sys/fs/cgroup");
    let pve = root.join("etc/pve");
    let node_dir = pve.join("nodes").join(&spec.node);
    std::fs::create_dir_all(node_dir.join("lxc"))?;
    std::fs::create_dir_all(node_dir.join("qemu-server"))?;
    for (link, target) in [
        ("local", format!("nodes/{}", spec.node)),
        ("lxc", format!("nodes/{}/lxc", spec.node)),
        ("qemu-server", format!("nodes/{}/qemu-server", spec.node)),
    ] {
        let path = pve.join(link);
        if path.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(target, &path)?;
        }
    }
    write(
        &root.join("proc/self/mountinfo"),
        "22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/mapper/pve-root rw,errors=remount-ro\n\
         30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n\
         45 22 0:40 / /etc/pve rw,nosuid,nodev,relatime shared:25 - fuse /dev/fuse rw,user_id=0,group_id=0,default_permissions,allow_other\n",
    )?;
    write(&root.join("proc/sys/kernel/hostname"), format!("{}\n", spec.node))?;
    write(
        &cg.join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    )?;
    write(&cg.join("lxc/cgroup.controllers"), "cpuset cpu io memory pids\n")?;
    write(
        &cg.join("lxc/cgroup.subtree_control"),
        format!("{}\n", LXC_CONTROLLERS.join(" ")),
    )?;
    write(&cg.join("qemu.slice/cgroup.controllers"), "cpuset cpu io memory pids\n")?;
    write(
        &cg.join("qemu.slice/cgroup.subtree_control"),
        format!("{}\n", QEMU_CONTROLLERS.join(" ")),
    )?;

    let mut netdev = String::from(
        "Inter-|   Receive                                                |  Transmit\n \
         face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n",
    );
    netdev.push_str(&netdev_line("lo", 1000, 10, 1000, 10));
    netdev.push_str(&netdev_line("eno1", 10_000_000, 10_000, 5_000_000, 8_000));
    netdev.push_str(&netdev_line("vmbr0", 9_000_000, 9_000, 4_000_000, 7_000));
    sys_net(root, "lo", 1000, 10, 1000, 10)?;

    let mut guests = Vec::with_capacity(spec.guests);
    let mut ha = Vec::new();
    let mut vmlist = String::from("{\n\"version\": 1,\n\"ids\": {\n");
    let mut entries = Vec::new();
    for index in 0..spec.guests {
        let i = index as u64 + 1;
        let vmid = 100 + index as u32;
        let kind = if index % 10 == 9 {
            GuestType::Qemu
        } else {
            GuestType::Lxc
        };
        let name = match kind {
            GuestType::Lxc => format!("ct-{vmid}"),
            GuestType::Qemu => format!("vm-{vmid}"),
        };
        let memory_current = (256 << 20) + (i << 20);
        let file = (64 << 20) + (i << 16);
        let pid_base = 10_000 + index as u32 * 100;
        let cgroups = match kind {
            GuestType::Lxc => container_cgroups(pid_base, index.is_multiple_of(2)),
            GuestType::Qemu => vm_cgroups(pid_base, VM_CORES),
        };
        let g = SyntheticGuest {
            vmid,
            kind,
            name: name.clone(),
            usage_usec: 1_000_000 * i + 12345,
            memory_current,
            inactive_file: file / 2,
            file,
            memory_max: (kind == GuestType::Lxc && !index.is_multiple_of(3)).then_some(2 << 30),
            processes: cgroups.iter().map(|c| c.procs.len()).sum(),
            pids_current: cgroups.iter().map(|c| (c.procs.len() + c.threads.len()) as u64).sum(),
            cgroups: cgroups.len(),
            host_rx_bytes: 1_000_000 + i * 1000,
            host_tx_bytes: 2_000_000 + i * 1000,
        };
        match kind {
            GuestType::Lxc => {
                guest_cgroups(&cg.join(format!("lxc/{vmid}")), &g, i, &cgroups, spec.cgroup_stat)?;
                // The monitor is not the guest: it must never be read as one.
                let monitor = cg.join(format!("lxc.monitor/{vmid}"));
                write(&monitor.join("cgroup.procs"), format!("{}\n", pid_base + 99))?;
                write(&monitor.join("cpu.stat"), "usage_usec 5\nuser_usec 3\nsystem_usec 2\n")?;
                let monitor_cgroup = Cgroup {
                    path: String::new(),
                    controllers: LXC_CONTROLLERS,
                    subtree_control: &[],
                    procs: vec![pid_base + 99],
                    threads: Vec::new(),
                };
                write(
                    &monitor.join("cgroup.stat"),
                    cgroup_stat(&monitor_cgroup, &[], spec.cgroup_stat),
                )?;
                let state = guest_state(index, vmid, kind, &spec.node);
                write(
                    &node_dir.join(format!("lxc/{vmid}.conf")),
                    format!(
                        "#synthetic container {vmid}\narch: amd64\ncores: 2\nhostname: {name}\n{}memory: 2048\nnet0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:{:02X}:{:02X},ip=dhcp,type=veth\nostype: debian\nrootfs: local-lvm:vm-{vmid}-disk-0,size=8G\nswap: 512\ntags: synthetic;lxc\nunprivileged: 1\n\n[snap]\nhostname: old-{name}\n{}",
                        state.main,
                        (vmid >> 8) & 0xff,
                        vmid & 0xff,
                        state.sections
                    ),
                )?;
                ha.extend(state.ha);
                let dev = format!("veth{vmid}i0");
                netdev.push_str(&netdev_line(&dev, g.host_rx_bytes, i * 10, g.host_tx_bytes, i * 20));
                sys_net(root, &dev, g.host_rx_bytes, i * 10, g.host_tx_bytes, i * 20)?;
            }
            GuestType::Qemu => {
                let dir = cg.join(format!("qemu.slice/{vmid}.scope"));
                guest_cgroups(&dir, &g, i, &cgroups, spec.cgroup_stat)?;
                let state = guest_state(index, vmid, kind, &spec.node);
                write(
                    &node_dir.join(format!("qemu-server/{vmid}.conf")),
                    format!(
                        "cores: {VM_CORES}\n{}memory: 4096\nname: {name}\nnet0: virtio=BC:24:11:01:{:02X}:{:02X},bridge=vmbr0\nsockets: 1\ntags: synthetic;vm\n{}",
                        state.main,
                        (vmid >> 8) & 0xff,
                        vmid & 0xff,
                        state.sections
                    ),
                )?;
                ha.extend(state.ha);
                let dev = format!("tap{vmid}i0");
                netdev.push_str(&netdev_line(&dev, g.host_rx_bytes, i * 10, g.host_tx_bytes, i * 20));
                sys_net(root, &dev, g.host_rx_bytes, i * 10, g.host_tx_bytes, i * 20)?;
            }
        }
        entries.push(format!(
            "\"{vmid}\": {{ \"node\": \"{}\", \"type\": \"{}\", \"version\": {i} }}",
            spec.node,
            kind.as_str()
        ));
        guests.push(g);
    }
    let mut stopped = Vec::new();
    for s in 0..spec.stopped {
        let vmid = 100_000 + s as u32;
        write(
            &node_dir.join(format!("lxc/{vmid}.conf")),
            format!("cores: 1\nhostname: stopped-{vmid}\nmemory: 512\n"),
        )?;
        entries.push(format!(
            "\"{vmid}\": {{ \"node\": \"{}\", \"type\": \"lxc\", \"version\": 1 }}",
            spec.node
        ));
        stopped.push(vmid);
    }
    vmlist.push_str(&entries.join(",\n"));
    vmlist.push_str("}\n\n}\n");
    write(&pve.join(".vmlist"), vmlist)?;
    let vmids: Vec<u32> = guests.iter().map(|g| g.vmid).chain(stopped.iter().copied()).collect();
    backup_tasks(root, &spec.node, &vmids)?;
    write(
        &pve.join(".members"),
        format!("{{\n\"nodename\": \"{}\",\n\"version\": 1\n}}\n", spec.node),
    )?;
    write(
        &pve.join(".version"),
        "{\n\"starttime\": 1732185352,\n\"clinfo\": 1,\n\"vmlist\": 1\n}\n",
    )?;
    write(&root.join("proc/net/dev"), netdev)?;
    write(
        &pve.join("ha/manager_status"),
        format!(
            "{{\"master_node\":\"{}\",\"service_status\":{{{}}},\"timestamp\":1733395190}}",
            spec.node,
            ha.join(",")
        ),
    )?;
    Ok(SyntheticHost {
        root: root.to_path_buf(),
        guests,
        stopped,
    })
}

/// Writes what the `backup` collector reads, as a node with a nightly backup job leaves it:
/// `var/log/pve/tasks/index` just under the 50,000 bytes at which Proxmox rotates it, holding
/// one vzdump task per 100 guests (one guest in 50 failing) and single-guest vzdump and
/// `qmstart` tasks after them, the log of every vzdump task in its `<X>/<UPID>` file, and
/// `jobs.cfg` and `user.cfg` with a job over all guests but every tenth and a pool job.
fn backup_tasks(root: &Path, node: &str, vmids: &[u32]) -> io::Result<()> {
    let tasks = root.join("var/log/pve/tasks");
    let mut index = String::new();
    let (mut start, mut pid) = (0x6740_0000u64, 0x10000u32);
    let mut task = |kind: &str, id: &str, log: Option<String>, took: u64, status: &str| -> io::Result<String> {
        let upid = format!("UPID:{node}:{pid:08X}:00A00000:{start:08X}:{kind}:{id}:root@pam:");
        if let Some(log) = log {
            write(&tasks.join(format!("{start:X}").split_off(7)).join(&upid), log)?;
        }
        let line = format!("{upid} {:08X} {status}\n", start + took);
        (start, pid) = (start + took + 60, pid + 1);
        Ok(line)
    };
    for chunk in vmids.chunks(100) {
        let mut log = String::from("INFO: starting new backup job: vzdump --all 1 --mode snapshot --storage local\n");
        for (i, vmid) in chunk.iter().enumerate() {
            let _ = writeln!(
                log,
                "INFO: Starting Backup of VM {vmid} (lxc)\nINFO: creating vzdump archive"
            );
            let _ = match i % 50 {
                49 => writeln!(log, "ERROR: Backup of VM {vmid} failed - interrupted by signal"),
                _ => writeln!(log, "INFO: Finished Backup of VM {vmid} (00:01:{:02})", i % 60),
            };
        }
        log.push_str("TASK ERROR: job errors\n");
        index.push_str(&task("vzdump", "", Some(log), 6000, "job errors")?);
    }
    for vmid in vmids.iter().cycle() {
        let line = if vmid % 2 == 0 {
            let log = format!(
                "INFO: Starting Backup of VM {vmid} (lxc)\nINFO: Finished Backup of VM {vmid} (00:00:30)\nTASK OK\n"
            );
            task("vzdump", &vmid.to_string(), Some(log), 31, "OK")?
        } else {
            task("qmstart", &vmid.to_string(), None, 2, "OK")?
        };
        if index.len() + line.len() > 50_000 {
            break;
        }
        index.push_str(&line);
    }
    write(&tasks.join("index"), index)?;
    let exclude: Vec<String> = vmids.iter().step_by(10).map(u32::to_string).collect();
    let pool: Vec<String> = vmids.iter().step_by(20).map(u32::to_string).collect();
    write(
        &root.join("etc/pve/jobs.cfg"),
        format!(
            "vzdump: backup-nightly\n\tschedule 01:00\n\tall 1\n\texclude {}\n\tstorage local\n\nvzdump: backup-pool\n\tschedule sat 03:00\n\tpool important\n\tstorage local\n",
            exclude.join(",")
        ),
    )?;
    write(
        &root.join("etc/pve/user.cfg"),
        format!("user:root@pam:1:0:::::\npool:important::{}::\n", pool.join(",")),
    )
}
