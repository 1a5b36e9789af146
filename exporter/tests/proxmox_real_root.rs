//! The `guests` collector on the real kernel, as root: the test builds its own guests (cgroups
//! under a subtree of its own passed as CGROUP_PATH, their v1 memory/pids counterparts on a
//! hybrid machine, a network namespace per guest with a `veth<vmid>i0` pair), runs a CPU burner,
//! a known number of processes and a bounded amount of traffic inside, and checks the collected
//! values against independent reads. Then it stops and restarts guests and checks churn.
//!
//! Needs root, `ip` and `nsenter`: outside CI it skips loudly; in CI (CI=true) it fails.
//! Everything created is removed by a Drop guard, also on failure. It never touches cgroups,
//! processes, links or namespaces it did not create.

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use metrics_exporter::collectors::proxmox;
use metrics_exporter::collectors::{Collector, Environment};
use metrics_exporter::model::{Snapshot, SnapshotBuilder, Value};
use metrics_exporter::platform::{self, Platform};

/// Everything the test created, removed on drop in reverse order.
struct Lab {
    /// The cgroup2 subtree (CGROUP_PATH) and its v1 counterparts.
    roots: Vec<PathBuf>,
    children: Vec<Child>,
    netns: Vec<String>,
    links: Vec<String>,
    pve: tempfile::TempDir,
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every directory at and below `dir`, deepest first.
fn dirs_deepest_first(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
        }
        out.push(d.to_path_buf());
    }
    walk(dir, &mut out);
    out
}

/// Kills every process in the cgroups below `dir` (all of them started by this test) and
/// removes the directories.
fn remove_cgroup_tree(dir: &Path) {
    for _ in 0..50 {
        let mut any = false;
        for d in dirs_deepest_first(dir) {
            if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    any = true;
                    // SAFETY: kill has no memory effects; these PIDs are in cgroups this test
                    // created and filled with its own children.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        if !any {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for d in dirs_deepest_first(dir) {
        for _ in 0..50 {
            match std::fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for root in &self.roots {
            remove_cgroup_tree(root);
        }
        for link in &self.links {
            let _ = Command::new("ip")
                .args(["link", "del", link])
                .stderr(Stdio::null())
                .status();
        }
        for ns in &self.netns {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Where a guest's cgroups are: the cgroup2 directory and, on a hybrid machine, the v1 ones.
struct GuestCgroups {
    v2: PathBuf,
    v1: Vec<PathBuf>,
}

impl GuestCgroups {
    /// The cgroup directories for a sub-path (`ns/init.scope`), created.
    fn sub(&self, rel: &str) -> Vec<PathBuf> {
        let mut all = vec![self.v2.join(rel)];
        all.extend(self.v1.iter().map(|d| d.join(rel)));
        for d in &all {
            std::fs::create_dir_all(d).unwrap();
        }
        all
    }
}

/// Starts `command` (a shell snippet) with its process in the given cgroups.
fn spawn_in(cgroups: &[PathBuf], command: &str) -> Child {
    let mut script = String::new();
    for d in cgroups {
        script.push_str(&format!("echo $$ > '{}/cgroup.procs' || exit 1; ", d.display()));
    }
    script.push_str(command);
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn procs_below(dir: &Path) -> usize {
    dirs_deepest_first(dir)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .sum()
}

fn wait_for_procs(dir: &Path, n: usize) {
    let start = Instant::now();
    while procs_below(dir) != n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}: {} processes, want {n}",
            dir.display(),
            procs_below(dir)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn collect(c: &mut dyn Collector) -> Snapshot {
    let mut out = SnapshotBuilder::new();
    c.collect(&mut out).unwrap_or_else(|e| panic!("guests failed: {e}"));
    out.finish(Arc::default(), SystemTime::now(), 1)
}

fn values(snap: &Snapshot, metric: &str, want: &[(&str, &str)]) -> Vec<f64> {
    let Some(family) = snap.family(metric) else {
        return Vec::new();
    };
    family
        .samples
        .iter()
        .filter(|s| {
            want.iter().all(|(k, v)| {
                let i = family.desc.labels.iter().position(|l| l == k).unwrap();
                &*s.labels[i] == *v
            })
        })
        .map(|s| match s.value {
            Value::Number(n) => n,
            _ => panic!("not a number"),
        })
        .collect()
}

fn one(snap: &Snapshot, metric: &str, want: &[(&str, &str)]) -> f64 {
    let v = values(snap, metric, want);
    assert_eq!(v.len(), 1, "{metric} {want:?}: {v:?}");
    v[0]
}

fn usage_usec(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("cpu.stat")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Runs `f` on a thread that has entered the network namespace `ns` (only that thread moves).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on a valid namespace descriptor changes only this thread's namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// (rx_bytes, rx_packets, tx_bytes, tx_packets) of `dev` in the calling thread's namespace.
fn thread_netdev(dev: &str) -> (u64, u64, u64, u64) {
    common::interface_counters(&std::fs::read_to_string("/proc/thread-self/net/dev").unwrap(), dev)
}

#[test]
fn guests_on_the_real_kernel_root() {
    if !common::require("root", common::is_root())
        || !common::require_command("ip")
        || !common::require_command("nsenter")
    {
        return;
    }
    let proc_path = PathBuf::from("/proc");
    let mounts = platform::read_mounts(&proc_path).unwrap();
    let Some(cgroup2) = platform::cgroup2_mount(&mounts, &proc_path) else {
        assert!(!common::in_ci(), "no cgroup2 mount, which CI must provide");
        eprintln!("SKIPPED: no cgroup2 mount");
        return;
    };
    let pid = std::process::id();
    let name = format!("metrics-exporter-test-{pid}");
    let base = cgroup2.join(&name);

    // Which controllers this machine has in cgroup2, and the v1 hierarchies for the rest.
    let v1: Vec<PathBuf> = common::v1_counterparts(&cgroup2, &name);

    let lxc_vmid = 7_000_000 + pid % 1_000_000;
    let vm_vmid = lxc_vmid + 1;
    let mut lab = Lab {
        roots: std::iter::once(base.clone()).chain(v1.iter().cloned()).collect(),
        children: Vec::new(),
        netns: Vec::new(),
        links: Vec::new(),
        pve: tempfile::tempdir().unwrap(),
    };
    for root in &lab.roots {
        std::fs::create_dir_all(root).unwrap();
    }
    // Pure cgroup2: enable the controllers down the test's own subtree.
    let enable = |dir: &Path| {
        let wanted: Vec<String> = ["cpu", "memory", "pids", "io"]
            .iter()
            .filter(|c| {
                std::fs::read_to_string(dir.join("cgroup.controllers"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .any(|x| x == **c)
            })
            .map(|c| format!("+{c}"))
            .collect();
        if !wanted.is_empty() {
            std::fs::write(dir.join("cgroup.subtree_control"), wanted.join(" ")).unwrap();
        }
    };
    let guest_cgroups = |rel: &str| {
        let g = GuestCgroups {
            v2: base.join(rel),
            v1: v1.iter().map(|d| d.join(rel)).collect(),
        };
        g.sub("");
        g
    };
    std::fs::create_dir_all(base.join("lxc")).unwrap();
    std::fs::create_dir_all(base.join("qemu.slice")).unwrap();
    enable(&base);
    enable(&base.join("lxc"));
    enable(&base.join("qemu.slice"));
    let ct = guest_cgroups(&format!("lxc/{lxc_vmid}"));
    enable(&ct.v2);
    ct.sub("ns");
    enable(&ct.v2.join("ns"));
    ct.sub("ns/system.slice");
    enable(&ct.v2.join("ns/system.slice"));
    let vm = guest_cgroups(&format!("qemu.slice/{vm_vmid}.scope"));
    // A monitor cgroup with a process of its own: never a guest.
    let monitor = GuestCgroups {
        v2: base.join(format!("lxc.monitor/{lxc_vmid}")),
        v1: vec![],
    };
    let monitor_dirs = monitor.sub("");

    // Known processes: a CPU burner and three sleepers in the container, one in the VM.
    lab.children
        .push(spawn_in(&ct.sub("ns/init.scope"), "while :; do :; done"));
    lab.children
        .push(spawn_in(&ct.sub("ns/system.slice/a.service"), "exec sleep 600"));
    lab.children
        .push(spawn_in(&ct.sub("ns/system.slice/a.service"), "exec sleep 600"));
    lab.children
        .push(spawn_in(&ct.sub("ns/system.slice/b.service"), "exec sleep 600"));
    lab.children.push(spawn_in(&vm.sub(""), "exec sleep 600"));
    lab.children.push(spawn_in(&monitor_dirs, "exec sleep 600"));
    wait_for_procs(&ct.v2, 4);
    wait_for_procs(&vm.v2, 1);

    // A memory limit on the VM (v2 memory.max or v1 memory.limit_in_bytes).
    let limit: u64 = 512 << 20;
    if vm.v2.join("memory.max").exists() {
        std::fs::write(vm.v2.join("memory.max"), limit.to_string()).unwrap();
    }
    for d in &vm.v1 {
        if d.join("memory.limit_in_bytes").exists() {
            std::fs::write(d.join("memory.limit_in_bytes"), limit.to_string()).unwrap();
        }
    }

    // Network: a namespace per guest with two interfaces, host sides `<veth|tap><vmid>i0`
    // and `i1` in the root namespace without an address. The configs below have a `net0`
    // line only: `i1` is `net1` all the same.
    let mut guest_ns = Vec::new();
    for (vmid, prefix, octet) in [(lxc_vmid, "veth", 1), (vm_vmid, "tap", 2)] {
        let ns = format!("mxt-{pid}-{vmid}");
        run("ip", &["netns", "add", &ns]);
        lab.netns.push(ns.clone());
        for (index, subnet) in [(0, 213), (1, 214)] {
            let host_dev = format!("{prefix}{vmid}i{index}");
            let guest_dev = format!("eth{index}");
            run(
                "ip",
                &[
                    "link", "add", &host_dev, "type", "veth", "peer", "name", &guest_dev, "netns", &ns,
                ],
            );
            lab.links.push(host_dev.clone());
            // No IPv6 on either side: no autoconfiguration packets to race with the counters.
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{host_dev}/disable_ipv6"), "1");
            run("ip", &["link", "set", &host_dev, "up"]);
            let setup = format!(
                "echo 1 > /proc/sys/net/ipv6/conf/{guest_dev}/disable_ipv6 2>/dev/null; \
                 ip addr add 10.{subnet}.{octet}.2/24 dev {guest_dev} && ip link set {guest_dev} up && \
                 ip neigh replace 10.{subnet}.{octet}.1 lladdr 02:00:00:00:00:01 dev {guest_dev} nud permanent"
            );
            run("nsenter", &[&format!("--net=/run/netns/{ns}"), "sh", "-c", &setup]);
        }
        guest_ns.push((ns, octet));
    }
    // Bounded traffic: 20 datagrams of 100 bytes on eth0 and 7 on eth1 from each guest to the
    // host side.
    for (ns, octet) in &guest_ns {
        let octet = *octet;
        in_netns(ns, move || {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            for (subnet, count) in [(213, 20), (214, 7)] {
                for _ in 0..count {
                    socket
                        .send_to(&[0x5a; 100], format!("10.{subnet}.{octet}.1:9"))
                        .unwrap();
                }
            }
        });
    }

    // Names from config, like /etc/pve.
    let pve = lab.pve.path().to_path_buf();
    std::fs::create_dir_all(pve.join("lxc")).unwrap();
    std::fs::create_dir_all(pve.join("qemu-server")).unwrap();
    std::fs::write(
        pve.join(format!("lxc/{lxc_vmid}.conf")),
        "hostname: burner\nnet0: name=eth0,bridge=vmbr0,hwaddr=02:00:00:00:00:02,ip=dhcp,type=veth\ntags: test\n",
    )
    .unwrap();
    std::fs::write(
        pve.join(format!("qemu-server/{vm_vmid}.conf")),
        "name: sleeper\nnet0: virtio=02:00:00:00:00:03,bridge=vmbr0\n",
    )
    .unwrap();
    std::fs::File::create(pve.join(".members"))
        .unwrap()
        .write_all(b"{\"nodename\": \"testnode\", \"version\": 1}\n")
        .unwrap();

    let env = Environment {
        platform: Platform::Proxmox,
        proc_path: proc_path.clone(),
        sys_path: "/sys".into(),
        root_path: "/".into(),
        cgroup_path: Some(base.clone()),
        pve_path: pve.clone(),
        mounts: mounts.clone(),
        local_configs: Default::default(),
    };
    let mut guests = proxmox::create("guests", &env).unwrap();
    eprintln!("guests collector: {:?}", guests.notes());
    std::thread::sleep(Duration::from_millis(500)); // let the burner burn

    let ct_id = lxc_vmid.to_string();
    let vm_id = vm_vmid.to_string();
    let ct_base = [
        ("container_id", ct_id.as_str()),
        ("host_name", "burner"),
        ("type", "lxc"),
    ];
    let vm_base = [
        ("container_id", vm_id.as_str()),
        ("host_name", "sleeper"),
        ("type", "qemu"),
    ];

    let before = usage_usec(&ct.v2);
    let snap = collect(guests.as_mut());
    let after = usage_usec(&ct.v2);
    // Guest-side counters, read right after the collection (nothing else sends).
    let guest_ct = in_netns(&guest_ns[0].0, || (thread_netdev("eth0"), thread_netdev("eth1")));
    let guest_vm = in_netns(&guest_ns[1].0, || (thread_netdev("eth0"), thread_netdev("eth1")));

    // CPU within 2% of an independent read of cpu.stat (it advances while we read).
    let cpu = one(&snap, "container_cpu_usage_seconds_total", &ct_base) * 1e6;
    assert!(before > 100_000, "the burner ran: {before} usec");
    assert!(
        cpu >= before as f64 - 1.0 && cpu <= after as f64 + 1.0,
        "cpu {cpu} not in [{before}, {after}]"
    );
    assert!(
        (cpu - before as f64).abs() / before as f64 <= 0.02,
        "cpu {cpu} vs cpu.stat {before}"
    );

    // Processes exact; the monitor's sleeper is not the guest's.
    assert_eq!(one(&snap, "container_processes", &ct_base), 4.0);
    assert_eq!(one(&snap, "container_processes", &vm_base), 1.0);
    if !values(&snap, "container_threads", &ct_base).is_empty() {
        assert_eq!(one(&snap, "container_threads", &ct_base), 4.0);
    }

    // Memory present from whichever hierarchy holds it; the VM's limit is what we set.
    assert!(one(&snap, "container_memory_usage_bytes", &vm_base) > 0.0);
    assert_eq!(one(&snap, "container_spec_memory_limit_bytes", &vm_base), limit as f64);
    assert!(
        values(&snap, "container_spec_memory_limit_bytes", &ct_base).is_empty(),
        "unlimited: no series"
    );

    // Network: `interface` is Proxmox's net<N> for both guest types, with or without a config
    // line; guest view equals the guest-side interface counters, packets exact.
    fn with<'a>(base: &[(&'a str, &'a str)], interface: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut labels = base.to_vec();
        labels.push(("interface", interface));
        labels
    }
    for (want, guest, sent) in [
        (with(&ct_base, "net0"), guest_ct.0, 20),
        (with(&ct_base, "net1"), guest_ct.1, 7),
        (with(&vm_base, "net0"), guest_vm.0, 20),
        (with(&vm_base, "net1"), guest_vm.1, 7),
    ] {
        let want = &want;
        let (rx_bytes, rx_packets, tx_bytes, tx_packets) = guest;
        assert_eq!(tx_packets, sent, "guest side sent exactly the test's datagrams");
        assert_eq!(
            one(&snap, "container_network_transmit_packets_total", want),
            tx_packets as f64
        );
        assert_eq!(
            one(&snap, "container_network_transmit_bytes_total", want),
            tx_bytes as f64
        );
        assert_eq!(
            one(&snap, "container_network_receive_packets_total", want),
            rx_packets as f64
        );
        assert_eq!(
            one(&snap, "container_network_receive_bytes_total", want),
            rx_bytes as f64
        );
    }
    // The info series keeps the host device and what the config line gives; nothing for
    // net1, which has no config line, but its device.
    let veth0 = format!("veth{lxc_vmid}i0");
    let veth1 = format!("veth{lxc_vmid}i1");
    let tap0 = format!("tap{vm_vmid}i0");
    let tap1 = format!("tap{vm_vmid}i1");
    for (base, interface, device, name, bridge, hwaddr) in [
        (&ct_base, "net0", veth0.as_str(), "eth0", "vmbr0", "02:00:00:00:00:02"),
        (&ct_base, "net1", veth1.as_str(), "", "", ""),
        (&vm_base, "net0", tap0.as_str(), "", "vmbr0", "02:00:00:00:00:03"),
        (&vm_base, "net1", tap1.as_str(), "", "", ""),
    ] {
        let mut want = base.to_vec();
        want.extend([
            ("interface", interface),
            ("device", device),
            ("name", name),
            ("bridge", bridge),
            ("hwaddr", hwaddr),
        ]);
        assert_eq!(one(&snap, "pve_guest_network_info", &want), 1.0, "{want:?}");
    }
    assert_eq!(values(&snap, "pve_guest_network_info", &[]).len(), 4);
    // Only the two guests: not the monitor, not the subtree's parents.
    let ids: std::collections::BTreeSet<String> = snap
        .family("container_cpu_usage_seconds_total")
        .unwrap()
        .samples
        .iter()
        .map(|s| s.labels[0].to_string())
        .collect();
    assert_eq!(ids, [ct_id.clone(), vm_id.clone()].into_iter().collect());

    // Steady state reads the same guests again with descriptors kept open.
    let snap = collect(guests.as_mut());
    assert_eq!(one(&snap, "container_processes", &ct_base), 4.0);

    // Restart of the VM under the same name: descriptors of the removed cgroup answer ENODEV,
    // the collector reopens and reads the new cgroup (a counter reset, never a negative rate).
    let old_vm_usage = one(&snap, "container_cpu_usage_seconds_total", &vm_base);
    let vm_child = lab.children.remove(4);
    drop_child(vm_child);
    remove_cgroup_tree(&vm.v2);
    for d in &vm.v1 {
        remove_cgroup_tree(d);
    }
    let vm = guest_cgroups(&format!("qemu.slice/{vm_vmid}.scope"));
    lab.children.push(spawn_in(&vm.sub(""), "exec sleep 600"));
    wait_for_procs(&vm.v2, 1);
    let snap = collect(guests.as_mut());
    assert_eq!(one(&snap, "container_processes", &vm_base), 1.0);
    let new_vm_usage = one(&snap, "container_cpu_usage_seconds_total", &vm_base);
    assert!(
        new_vm_usage <= old_vm_usage + 0.5,
        "fresh cgroup read: {new_vm_usage} vs {old_vm_usage}"
    );
    // The collector's conversion (µs to seconds), so the comparison is exact.
    assert_eq!(new_vm_usage, usage_usec(&vm.v2) as f64 / 1e6);

    // Stop the container: kill its processes, remove its cgroups; its series go at the next
    // collection (its config stays: info says stopped).
    for child in lab.children.drain(..4) {
        drop_child(child);
    }
    remove_cgroup_tree(&ct.v2);
    for d in &ct.v1 {
        remove_cgroup_tree(d);
    }
    let snap = collect(guests.as_mut());
    for f in &snap.families {
        let has = f.samples.iter().any(|s| &*s.labels[0] == ct_id.as_str());
        assert!(
            !has || ["pve_guest_info", "pve_guest_onboot", "pve_guest_snapshots"].contains(&f.desc.name),
            "{} still has {ct_id}",
            f.desc.name
        );
    }
    assert_eq!(
        one(
            &snap,
            "pve_guest_info",
            &[("container_id", ct_id.as_str()), ("status", "stopped")]
        ),
        1.0
    );
    assert_eq!(one(&snap, "container_processes", &vm_base), 1.0);
    drop(guests);
    drop(lab);
    assert!(!base.exists(), "cleanup removed {}", base.display());
}

fn drop_child(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// What the v1-controller test created besides cgroups: a loop-mounted scratch ext4 image.
struct Scratch {
    dir: tempfile::TempDir,
    loop_device: Option<String>,
    mounted: bool,
}

impl Scratch {
    /// A 64 MiB ext4 image in a temporary directory, on a loop device, mounted.
    fn new() -> Scratch {
        let mut scratch = Scratch {
            dir: tempfile::tempdir().unwrap(),
            loop_device: None,
            mounted: false,
        };
        let image = scratch.dir.path().join("image");
        let mnt = scratch.mount_point();
        std::fs::create_dir(&mnt).unwrap();
        std::fs::File::create(&image).unwrap().set_len(64 << 20).unwrap();
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        let out = Command::new("losetup")
            .args(["-f", "--show", image.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let device = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        scratch.loop_device = Some(device.clone());
        run("mount", &[&device, mnt.to_str().unwrap()]);
        scratch.mounted = true;
        scratch
    }

    fn mount_point(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// `major:minor` of the loop device, as blkio and io.stat name it.
    fn device_number(&self) -> String {
        let name = self.loop_device.as_deref().unwrap().trim_start_matches("/dev/");
        std::fs::read_to_string(format!("/sys/block/{name}/dev"))
            .unwrap()
            .trim()
            .to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.mount_point()).status();
        }
        if let Some(device) = &self.loop_device {
            let _ = Command::new("losetup").args(["-d", device]).status();
        }
    }
}

/// The v1 hierarchies (mounted whole) that hold a controller the guests collector reads
/// from v1 on a hybrid machine and that cgroup2 does not have, each with `name` appended.
fn v1_roots(cgroup2: &Path, name: &str) -> Vec<(Vec<String>, PathBuf)> {
    use metrics_exporter::collectors::proxmox::layout;
    let v2 = std::fs::read_to_string(cgroup2.join("cgroup.controllers")).unwrap_or_default();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    layout::v1_mounts(&mountinfo)
        .into_iter()
        .filter(|m| m.root == "/")
        .filter(|m| {
            m.controllers.iter().any(|c| {
                ["memory", "pids", "cpu", "cpuacct", "blkio"].contains(&c.as_str())
                    && !v2.split_whitespace().any(|x| x == c)
            })
        })
        .map(|m| (m.controllers.clone(), PathBuf::from(&m.mount_point).join(name)))
        .collect()
}

/// Reads a flat-keyed file's `key`.
fn flat(path: &Path, key: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{}: no {key}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// `Read` and `Write` of `device` in a v1 blkio rwstat file (0 when the device has no line).
fn blkio(path: &Path, device: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap();
    let get = |op: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{device} {op} ")))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    (get("Read"), get("Write"))
}

/// Hybrid cgroups (cpu, cpuacct, memory, blkio in v1): a guest with a v1 CFS quota that
/// really throttles, v1 memory and memsw limits, a memory hog OOM-killed in `<guest>/ns`, and
/// direct block IO to a loop-mounted scratch filesystem. Each value the exporter reports is
/// checked against independent reads of the v1 files before and after the collection. Before
/// the collector read the v1 files, the throttling, CPU limit, swap limit and IO series were
/// absent and the OOM kill read 0 (it is counted in `ns`, not in the guest's cgroup).
#[test]
fn v1_controllers_of_a_hybrid_guest_on_the_real_kernel_root() {
    if !common::require("root", common::is_root())
        || !common::require_command("mkfs.ext4")
        || !common::require_command("losetup")
        || !common::require_command("dd")
    {
        return;
    }
    let proc_path = PathBuf::from("/proc");
    let mounts = platform::read_mounts(&proc_path).unwrap();
    let Some(cgroup2) = platform::cgroup2_mount(&mounts, &proc_path) else {
        assert!(!common::in_ci(), "no cgroup2 mount, which CI must provide");
        eprintln!("SKIPPED: no cgroup2 mount");
        return;
    };
    let pid = std::process::id();
    let name = format!("metrics-exporter-v1-test-{pid}");
    let v1 = v1_roots(&cgroup2, &name);
    let has = |c: &str| v1.iter().any(|(cs, _)| cs.iter().any(|x| x == c));
    if !common::require(
        "hybrid cgroups (v1 cpu, cpuacct, memory and blkio hierarchies)",
        ["cpu", "cpuacct", "memory", "blkio"].iter().all(|c| has(c)),
    ) {
        return;
    }
    let v1_dir = |controller: &str| {
        v1.iter()
            .find(|(cs, _)| cs.iter().any(|x| x == controller))
            .map(|(_, d)| d.clone())
            .unwrap()
    };
    let base = cgroup2.join(&name);
    let vmid = 7_100_000 + pid % 1_000_000;
    let rel = format!("lxc/{vmid}");
    let mut lab = Lab {
        roots: std::iter::once(base.clone())
            .chain(v1.iter().map(|(_, d)| d.clone()))
            .collect(),
        children: Vec::new(),
        netns: Vec::new(),
        links: Vec::new(),
        pve: tempfile::tempdir().unwrap(),
    };
    let guest = GuestCgroups {
        v2: base.join(&rel),
        v1: v1.iter().map(|(_, d)| d.join(&rel)).collect(),
    };
    guest.sub("");
    let cpu = v1_dir("cpu").join(&rel);
    let memory = v1_dir("memory").join(&rel);
    let blkio_dir = v1_dir("blkio").join(&rel);

    // Limits on the guest's cgroup, as `pct set` writes them on a hybrid host: 0.2 CPUs,
    // 64 MiB memory and, with swap accounting, 96 MiB memory + swap.
    std::fs::write(cpu.join("cpu.cfs_period_us"), "100000").unwrap();
    std::fs::write(cpu.join("cpu.cfs_quota_us"), "20000").unwrap();
    let memory_limit: u64 = 64 << 20;
    let memsw_limit: u64 = 96 << 20;
    std::fs::write(memory.join("memory.limit_in_bytes"), memory_limit.to_string()).unwrap();
    let swap_accounting = memory.join("memory.memsw.limit_in_bytes").exists();
    if swap_accounting {
        std::fs::write(memory.join("memory.memsw.limit_in_bytes"), memsw_limit.to_string()).unwrap();
    }

    // A CPU burner under the quota, and a sleeper.
    lab.children
        .push(spawn_in(&guest.sub("ns/init.scope"), "while :; do :; done"));
    lab.children
        .push(spawn_in(&guest.sub("ns/system.slice/a.service"), "exec sleep 600"));

    // Real block IO from inside the guest: 4 MiB written and read back with O_DIRECT.
    let scratch = Scratch::new();
    let file = scratch.mount_point().join("data");
    let io = spawn_in(
        &guest.sub("ns/system.slice/io.service"),
        &format!(
            "dd if=/dev/zero of='{f}' bs=64k count=64 oflag=direct status=none && \
             exec dd if='{f}' of=/dev/null bs=64k iflag=direct status=none",
            f = file.display()
        ),
    );
    let status = io.wait_with_output().unwrap().status;
    assert!(status.success(), "dd: {status:?}");

    // A memory hog in `ns` (tail keeps a line without end in memory), killed by the guest's
    // memory limit.
    let hog = spawn_in(&guest.sub("ns"), "exec tail /dev/zero");
    let status = hog.wait_with_output().unwrap().status;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the hog was OOM-killed: {status:?}"
    );
    // Independent: the kill is counted in `ns`, and only there.
    let oom_in = |d: &Path| flat(&d.join("memory.oom_control"), "oom_kill");
    assert_eq!(
        oom_in(&memory),
        0,
        "v1 does not count the kill in the guest's own memcg"
    );
    let subtree_kills: u64 = dirs_deepest_first(&memory).iter().map(|d| oom_in(d)).sum();
    assert_eq!(subtree_kills, 1);

    // Let the quota throttle the burner for a few periods.
    let start = Instant::now();
    while flat(&cpu.join("cpu.stat"), "nr_throttled") < 3 {
        assert!(start.elapsed() < Duration::from_secs(10), "the burner is not throttled");
        std::thread::sleep(Duration::from_millis(50));
    }

    let pve = lab.pve.path().to_path_buf();
    std::fs::create_dir_all(pve.join("lxc")).unwrap();
    std::fs::write(
        pve.join(format!("lxc/{vmid}.conf")),
        "hostname: hybrid\nmemory: 64\nswap: 32\n",
    )
    .unwrap();
    let env = Environment {
        platform: Platform::Proxmox,
        proc_path: proc_path.clone(),
        sys_path: "/sys".into(),
        root_path: "/".into(),
        cgroup_path: Some(base.clone()),
        pve_path: pve.clone(),
        mounts: mounts.clone(),
        local_configs: Default::default(),
    };
    let mut guests = proxmox::create("guests", &env).unwrap();
    eprintln!("guests collector: {:?}", guests.notes());

    let id = vmid.to_string();
    let labels = [("container_id", id.as_str()), ("host_name", "hybrid"), ("type", "lxc")];
    let device = scratch.device_number();
    let bytes_file = blkio_dir.join("blkio.throttle.io_service_bytes_recursive");
    let ops_file = blkio_dir.join("blkio.throttle.io_serviced_recursive");
    let cpu_stat = cpu.join("cpu.stat");
    let throttling = || {
        (
            flat(&cpu_stat, "nr_periods"),
            flat(&cpu_stat, "nr_throttled"),
            flat(&cpu_stat, "throttled_time"),
        )
    };
    for round in 0..2 {
        let (periods0, throttled0, time0) = throttling();
        let (bytes0, ops0) = (blkio(&bytes_file, &device), blkio(&ops_file, &device));
        let snap = collect(guests.as_mut());
        let (periods1, throttled1, time1) = throttling();
        let (bytes1, ops1) = (blkio(&bytes_file, &device), blkio(&ops_file, &device));

        // CPU bandwidth from the v1 cpu hierarchy, between the reads before and after.
        assert_eq!(one(&snap, "container_spec_cpu_limit_cores", &labels), 0.2);
        let between = |metric: &str, low: f64, high: f64| {
            let v = one(&snap, metric, &labels);
            assert!(
                low <= v && v <= high,
                "round {round}: {metric} {v} not in [{low}, {high}]"
            );
            v
        };
        assert!(throttled0 >= 3);
        between("container_cpu_cfs_periods_total", periods0 as f64, periods1 as f64);
        between(
            "container_cpu_cfs_throttled_periods_total",
            throttled0 as f64,
            throttled1 as f64,
        );
        between(
            "container_cpu_cfs_throttled_seconds_total",
            time0 as f64 / 1e9,
            time1 as f64 / 1e9,
        );
        // CPU time itself from cgroup2 (present on this hybrid machine).
        assert!(one(&snap, "container_cpu_usage_seconds_total", &labels) > 0.0);

        // Memory limits, swap limit = memsw - memory.
        assert_eq!(
            one(&snap, "container_spec_memory_limit_bytes", &labels),
            memory_limit as f64
        );
        let swap_limit = values(&snap, "container_spec_memory_swap_limit_bytes", &labels);
        if swap_accounting {
            assert_eq!(swap_limit, [(memsw_limit - memory_limit) as f64]);
        } else {
            assert!(swap_limit.is_empty(), "no memsw files: no swap limit series");
        }

        // Swap (memsw − memory, as cAdvisor) exactly where swap accounting gives memsw files.
        assert_eq!(
            values(&snap, "container_memory_swap", &labels).len(),
            usize::from(swap_accounting)
        );

        // The OOM kill, counted in `ns`.
        assert_eq!(one(&snap, "container_oom_kills_total", &labels), 1.0);

        // Block IO of the loop device, between the reads before and after; at least what dd
        // moved.
        let mut dev = labels.to_vec();
        dev.push(("device", device.as_str()));
        let io = |metric: &str, low: u64, high: u64| {
            let v = one(&snap, metric, &dev);
            assert!(
                low as f64 <= v && v <= high as f64,
                "round {round}: {metric} {v} not in [{low}, {high}]"
            );
            v
        };
        assert!(io("container_fs_writes_bytes_total", bytes0.1, bytes1.1) >= (4 << 20) as f64);
        assert!(io("container_fs_reads_bytes_total", bytes0.0, bytes1.0) >= (4 << 20) as f64);
        assert!(io("container_fs_writes_total", ops0.1, ops1.1) >= 1.0);
        assert!(io("container_fs_reads_total", ops0.0, ops1.0) >= 1.0);
    }
    drop(guests);
    drop(scratch);
    drop(lab);
    assert!(!base.exists(), "cleanup removed {}", base.display());
}
