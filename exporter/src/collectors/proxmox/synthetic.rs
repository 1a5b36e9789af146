//! A synthetic Proxmox VE host with N guests, written as a file tree (pure cgroup2 layout),
//! for tests and benchmarks of host mode at scale.
//!
//! Writes: `proc/self/mountinfo`, `proc/net/dev`, `proc/sys/kernel/hostname`,
//! `sys/fs/cgroup/{lxc/<vmid>,qemu.slice/<vmid>.scope,lxc.monitor/<vmid>}/...` with the cgroup2
//! interface files the `guests` collector reads, `sys/class/net/<dev>` symlinks into
//! `sys/devices/virtual/net/<dev>/statistics`, and `etc/pve` (`nodes/<node>/{lxc,qemu-server}`
//! with the relative `lxc`, `qemu-server`, `local` symlinks pmxcfs makes, `.members`,
//! `.vmlist`, `.version`). Every tenth guest is a VM, the others containers with a cgroup
//! namespace subtree (`ns/init.scope`, `ns/system.slice/<unit>`). Values are derived from the
//! guest index and returned in [`SyntheticGuest`] so that tests can check what was collected.
//!
//! The layout follows the real one (fixtures/proxmox-host); the numbers are invented.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use crate::collectors::Environment;
use crate::parse::pve::GuestType;

/// What a synthetic host contains.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Running guests.
    pub guests: usize,
    /// Additional configured but stopped containers (config, no cgroup).
    pub stopped: usize,
    /// Unit cgroups below `ns/system.slice` of each container (each holds processes).
    pub units_per_container: usize,
    /// The node name.
    pub node: String,
}

impl Spec {
    pub fn new(guests: usize) -> Self {
        Spec {
            guests,
            stopped: 0,
            units_per_container: 3,
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
    pub processes: usize,
    pub pids_current: u64,
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

fn memory_stat(anon: u64, file: u64, inactive_file: u64) -> String {
    // The key set and order of a 6.8 kernel's memory.stat (mm/memcontrol.c memory_stats[]).
    let mut s = String::new();
    let active_file = file - inactive_file - file / 16;
    for (k, v) in [
        ("anon", anon),
        ("file", file),
        ("kernel", 8 << 20),
        ("kernel_stack", 1 << 20),
        ("pagetables", 2 << 20),
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
        ("slab_reclaimable", 4 << 20),
        ("slab_unreclaimable", 2 << 20),
        ("slab", 6 << 20),
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

/// Writes the cgroup files of one guest cgroup directory.
fn cgroup_files(dir: &Path, g: &SyntheticGuest, i: u64, descendants: usize) -> io::Result<()> {
    let user = g.usage_usec * 2 / 3;
    write(
        &dir.join("cpu.stat"),
        format!(
            "usage_usec {}\nuser_usec {}\nsystem_usec {}\ncore_sched.force_idle_usec 0\nnr_periods {}\nnr_throttled {}\nthrottled_usec {}\nnr_bursts 0\nburst_usec 0\n",
            g.usage_usec,
            user,
            g.usage_usec - user,
            i * 100,
            i % 7,
            (i % 7) * 1000
        ),
    )?;
    write(
        &dir.join("cpu.max"),
        if i.is_multiple_of(2) {
            "200000 100000\n".to_owned()
        } else {
            "max 100000\n".to_owned()
        },
    )?;
    write(&dir.join("cpu.pressure"), pressure(1000 + i, 500 + i))?;
    write(&dir.join("memory.pressure"), pressure(2000 + i, 900 + i))?;
    write(&dir.join("io.pressure"), pressure(3000 + i, 1500 + i))?;
    write(&dir.join("memory.current"), format!("{}\n", g.memory_current))?;
    write(
        &dir.join("memory.stat"),
        memory_stat(g.memory_current - g.file - (16 << 20), g.file, g.inactive_file),
    )?;
    write(
        &dir.join("memory.max"),
        g.memory_max.map_or("max\n".to_owned(), |v| format!("{v}\n")),
    )?;
    write(
        &dir.join("memory.high"),
        g.memory_max
            .map_or("max\n".to_owned(), |v| format!("{}\n", v / 1024 * 1016)),
    )?;
    write(&dir.join("memory.swap.current"), format!("{}\n", (i % 5) << 20))?;
    write(&dir.join("memory.swap.max"), "536870912\n")?;
    write(
        &dir.join("memory.events"),
        format!(
            "low 0\nhigh {}\nmax 0\noom 0\noom_kill {}\noom_group_kill 0\n",
            i % 3,
            i % 2
        ),
    )?;
    write(&dir.join("pids.current"), format!("{}\n", g.pids_current))?;
    write(&dir.join("pids.max"), "max\n")?;
    write(
        &dir.join("cgroup.stat"),
        // As a 6.11+ kernel prints it: every cgroup of the guest has the four controllers.
        {
            let states = descendants + 1;
            format!(
                "nr_descendants {descendants}\nnr_subsys_cpu {states}\nnr_subsys_io {states}\nnr_subsys_memory {states}\nnr_subsys_pids {states}\nnr_dying_descendants 0\n"
            )
        },
    )?;
    if g.kind == GuestType::Lxc {
        write(
            &dir.join("io.stat"),
            format!(
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
            ),
        )?;
    }
    Ok(())
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
    write(&cg.join("qemu.slice/cgroup.controllers"), "cpuset cpu memory pids\n")?;

    let mut netdev = String::from(
        "Inter-|   Receive                                                |  Transmit\n \
         face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n",
    );
    netdev.push_str(&netdev_line("lo", 1000, 10, 1000, 10));
    netdev.push_str(&netdev_line("eno1", 10_000_000, 10_000, 5_000_000, 8_000));
    netdev.push_str(&netdev_line("vmbr0", 9_000_000, 9_000, 4_000_000, 7_000));
    sys_net(root, "lo", 1000, 10, 1000, 10)?;

    let mut guests = Vec::with_capacity(spec.guests);
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
        let g = SyntheticGuest {
            vmid,
            kind,
            name: name.clone(),
            usage_usec: 1_000_000 * i + 12345,
            memory_current,
            inactive_file: file / 2,
            file,
            memory_max: (kind == GuestType::Lxc && !index.is_multiple_of(3)).then_some(2 << 30),
            processes: match kind {
                GuestType::Lxc => 1 + spec.units_per_container * 2,
                GuestType::Qemu => 1,
            },
            pids_current: 10 + i % 20,
            host_rx_bytes: 1_000_000 + i * 1000,
            host_tx_bytes: 2_000_000 + i * 1000,
        };
        let pid_base = 10_000 + index as u32 * 100;
        match kind {
            GuestType::Lxc => {
                let dir = cg.join(format!("lxc/{vmid}"));
                let units = spec.units_per_container;
                // ns, ns/init.scope, ns/system.slice and one cgroup per unit.
                cgroup_files(&dir, &g, i, 3 + units)?;
                // Controllers enabled below the guest, its ns and system.slice, as on a real
                // host: these inner cgroups cannot hold processes.
                for inner in ["", "ns", "ns/system.slice"] {
                    write(&dir.join(inner).join("cgroup.subtree_control"), "cpu io memory pids\n")?;
                }
                write(&dir.join("cgroup.procs"), "")?;
                write(&dir.join("ns/cgroup.procs"), "")?;
                write(&dir.join("ns/init.scope/cgroup.procs"), format!("{pid_base}\n"))?;
                write(&dir.join("ns/system.slice/cgroup.procs"), "")?;
                for u in 0..units {
                    let a = pid_base + 1 + 2 * u as u32;
                    write(
                        &dir.join(format!("ns/system.slice/unit{u}.service/cgroup.procs")),
                        format!("{a}\n{}\n", a + 1),
                    )?;
                }
                // The monitor is not the guest: it must never be read as one.
                write(
                    &cg.join(format!("lxc.monitor/{vmid}/cgroup.procs")),
                    format!("{}\n", pid_base + 99),
                )?;
                write(
                    &cg.join(format!("lxc.monitor/{vmid}/cpu.stat")),
                    "usage_usec 5\nuser_usec 3\nsystem_usec 2\n",
                )?;
                write(
                    &node_dir.join(format!("lxc/{vmid}.conf")),
                    format!(
                        "#synthetic container {vmid}\narch: amd64\ncores: 2\nhostname: {name}\nmemory: 2048\nnet0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:{:02X}:{:02X},ip=dhcp,type=veth\nostype: debian\nrootfs: local-lvm:vm-{vmid}-disk-0,size=8G\nswap: 512\ntags: synthetic;lxc\nunprivileged: 1\n\n[snap]\nhostname: old-{name}\n",
                        (vmid >> 8) & 0xff,
                        vmid & 0xff
                    ),
                )?;
                let dev = format!("veth{vmid}i0");
                netdev.push_str(&netdev_line(&dev, g.host_rx_bytes, i * 10, g.host_tx_bytes, i * 20));
                sys_net(root, &dev, g.host_rx_bytes, i * 10, g.host_tx_bytes, i * 20)?;
            }
            GuestType::Qemu => {
                let dir = cg.join(format!("qemu.slice/{vmid}.scope"));
                cgroup_files(&dir, &g, i, 0)?;
                write(&dir.join("cgroup.procs"), format!("{pid_base}\n"))?;
                write(
                    &node_dir.join(format!("qemu-server/{vmid}.conf")),
                    format!(
                        "cores: 2\nmemory: 4096\nname: {name}\nnet0: virtio=BC:24:11:01:{:02X}:{:02X},bridge=vmbr0\nsockets: 1\ntags: synthetic;vm\n",
                        (vmid >> 8) & 0xff,
                        vmid & 0xff
                    ),
                )?;
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
    write(
        &pve.join(".members"),
        format!("{{\n\"nodename\": \"{}\",\n\"version\": 1\n}}\n", spec.node),
    )?;
    write(
        &pve.join(".version"),
        "{\n\"starttime\": 1732185352,\n\"clinfo\": 1,\n\"vmlist\": 1\n}\n",
    )?;
    write(&root.join("proc/net/dev"), netdev)?;
    Ok(SyntheticHost {
        root: root.to_path_buf(),
        guests,
        stopped,
    })
}
