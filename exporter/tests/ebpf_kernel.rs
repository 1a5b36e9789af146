//! Root tests of the eBPF programs against the kernel's own accounting (ground truth).
//!
//! Every test creates its guests as cgroups below its own directory under the cgroup2 mount
//! (found in /proc/self/mountinfo), its own network namespaces and veth pair, and its own
//! processes; Drop guards remove all of it, also when an assertion fails. Nothing it did not
//! create is touched.
//!
//! They need root (CAP_SYS_ADMIN for bpf stats and cgroups, CAP_NET_ADMIN for namespaces).
//! Without root they say so on stderr and return, except under `CI=true`, where a missing
//! privilege fails the test.
//!
//! `privileged_child` re-executes this test binary (under `unshare -U -r` or `setpriv`) and
//! reports what loading did; it is `#[ignore]`d so that it runs only when asked for.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{in_netns, run_ok};
use metrics_exporter::ebpf::{EbpfRuntime, GuestReading, LoadOptions, Slot, UnavailableKind};

/// One test at a time: each loads its own programs, and the CPU-time and run-queue tests
/// should not compete with another test's burners.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// True when the test may run. Without root, or in a build without eBPF (AYA_BUILD_SKIP=1):
/// fails under CI, otherwise says why loudly.
fn privileged(test: &str) -> bool {
    common::require(
        &format!("{test}: a build with eBPF programs (not AYA_BUILD_SKIP=1)"),
        !metrics_exporter::ebpf::NOT_BUILT,
    ) && common::require(&format!("{test}: root"), common::is_root())
}

/// A cgroup subtree this test created; on drop kills the processes inside it (all started by
/// the test) and removes every directory, deepest first.
struct TestCgroup {
    root: PathBuf,
}

impl TestCgroup {
    fn new(name: &str) -> TestCgroup {
        let root = common::cgroup2_mount().join(format!("mex-test-{}-{name}", std::process::id()));
        std::fs::create_dir(&root).unwrap();
        TestCgroup { root }
    }

    /// A guest cgroup `<root>/<name>` with a nested `ns/inner` below it, like `lxc/<vmid>/ns/..`.
    fn guest(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        std::fs::create_dir_all(dir.join("ns/inner")).unwrap();
        dir
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        common::remove_cgroup_tree(&self.root);
    }
}

/// A child process killed and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn wait(mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "child did not finish within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Runs `script` with `sh` after moving the shell into `cgroup` (the cgroup is joined before
/// anything of the workload starts), optionally inside a network namespace.
fn spawn_in(cgroup: &Path, netns: Option<&str>, script: &str) -> Proc {
    let join = format!(
        "echo $$ > {}/cgroup.procs && exec sh -c '{}'",
        cgroup.display(),
        script.replace('\'', "'\\''")
    );
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).args(["sh", "-c", &join]);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.args(["-c", &join]);
            c
        }
    };
    Proc(cmd.stdin(Stdio::null()).spawn().unwrap())
}

fn cpu_usage_usec(cgroup: &Path) -> u64 {
    let text = std::fs::read_to_string(cgroup.join("cpu.stat")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn load(mount: &Path) -> EbpfRuntime {
    let mut options = LoadOptions::new(mount);
    options.cgroup_mount_root = PathBuf::from("/");
    EbpfRuntime::load(&options).unwrap_or_else(|e| panic!("loading the eBPF programs as root: {e}"))
}

fn read(rt: &EbpfRuntime, slot: Slot) -> GuestReading {
    rt.read(slot).expect("assigned slot")
}

/// A map of the runtime this process loaded, by name: found through this process's own
/// descriptors (/proc/self/fdinfo gives each bpf map's id), so never another loader's map.
fn own_map(name: &str) -> aya::maps::MapData {
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if std::fs::read_link(entry.path()).ok().as_deref() != Some(Path::new("anon_inode:bpf-map")) {
            continue;
        }
        let fd = entry.file_name();
        let Ok(info) = std::fs::read_to_string(Path::new("/proc/self/fdinfo").join(&fd)) else {
            continue;
        };
        let Some(id) = info
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        else {
            continue;
        };
        if aya::maps::MapInfo::from_id(id).is_ok_and(|m| m.name_as_str() == Some(name)) {
            return aya::maps::MapData::from_id(id).unwrap();
        }
    }
    panic!("no map {name} among this process's descriptors");
}

/// CPU burners (pinned to one CPU) and a pipe ping-pong free to migrate: eBPF's CPU seconds
/// within 2% of cpu.stat for the same guest. The migrating case is the accuracy trap of
/// docs/TOOLCHAIN.md (a design read ~58% there).
#[test]
fn cpu_time_matches_cpu_stat_pinned_and_migrating() {
    if !privileged("cpu_time_matches_cpu_stat_pinned_and_migrating") {
        return;
    }
    let _serial = serial();
    let cg = TestCgroup::new("cpu");
    let mut rt = load(&common::cgroup2_mount());
    let cases = [
        ("pinned burner", "taskset -c 0 timeout 2 sh -c 'while :; do :; done'"),
        (
            "pinned ping-pong",
            // Two shells passing lines through two fifos, both pinned to CPU 0.
            "d=$(mktemp -d); mkfifo $d/a $d/b; \
             taskset -c 0 timeout 2 sh -c \"exec 3<>$d/a 4<>$d/b; echo x >&3; while read l <&4; do echo x >&3; done\" & \
             taskset -c 0 timeout 2 sh -c \"exec 3<>$d/a 4<>$d/b; while read l <&3; do echo x >&4; done\"; wait; rm -r $d",
        ),
        (
            "migrating ping-pong",
            "d=$(mktemp -d); mkfifo $d/a $d/b; \
             timeout 2 sh -c \"exec 3<>$d/a 4<>$d/b; echo x >&3; while read l <&4; do echo x >&3; done\" & \
             timeout 2 sh -c \"exec 3<>$d/a 4<>$d/b; while read l <&3; do echo x >&4; done\"; wait; rm -r $d",
        ),
        (
            "migrating burners",
            "timeout 2 sh -c 'while :; do :; done' & timeout 2 sh -c 'while :; do :; done' & timeout 2 sh -c 'while :; do :; done'; wait",
        ),
    ];
    for (i, (name, script)) in cases.iter().enumerate() {
        let guest = cg.guest(&format!("g{i}"));
        let slot = rt.assign(&format!("g{i}"), &guest).unwrap();
        let before_stat = cpu_usage_usec(&guest);
        let before = read(&rt, slot).counters.cpu_ns;
        let status = spawn_in(&guest.join("ns/inner"), None, script).wait(Duration::from_secs(20));
        assert!(status.success() || status.code() == Some(124), "{name}: {status}");
        // Every task has exited: both sources have accounted all of it.
        std::thread::sleep(Duration::from_millis(50));
        let stat_s = (cpu_usage_usec(&guest) - before_stat) as f64 / 1e6;
        let ebpf_s = (read(&rt, slot).counters.cpu_ns - before) as f64 / 1e9;
        let ratio = ebpf_s / stat_s;
        // Slices whose switch-in the program did not see are charged from the kernel's own
        // start of the slice: say how many there were.
        let unseen = rt.self_stats().unseen_switch_in;
        eprintln!(
            "{name}: cpu.stat {stat_s:.4} s, eBPF {ebpf_s:.4} s, ratio {ratio:.4}, unseen switch-ins so far {unseen:?}"
        );
        assert!(stat_s > 0.5, "{name}: workload too small to judge ({stat_s} s)");
        assert!(
            (ratio - 1.0).abs() <= 0.02,
            "{name}: eBPF {ebpf_s} s vs cpu.stat {stat_s} s (unseen switch-ins so far {unseen:?})"
        );
        rt.release(slot);
    }
}

/// Pins the calling thread to one CPU.
fn pin_this_thread(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; the calls only read and write it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set), 0);
    }
}

/// A guest slice whose switch-in this CPU did not see is still charged, in full.
///
/// On the development machine the kernel runs no tracing program for the switch-outs of its
/// supervisor's threads (PID 1's: their switch-ins are seen, their switch-outs never), so a
/// guest task that such a thread hands the CPU to starts an unrecorded slice; the pinned
/// burner of `cpu_time_matches_cpu_stat_pinned_and_migrating` lost up to 230 ms that way when
/// the supervisor was busy. This test makes the same situation on purpose and often: a thread
/// on CPU 1 keeps overwriting every CPU's switch-in record with one that matches no task
/// (task 1; counters at u64::MAX, so that even a record torn by the kernel's own write at the
/// same moment cannot match) while a guest burner shares CPU 0 with a hog outside the guest.
#[test]
fn unseen_switch_ins_are_charged() {
    if !privileged("unseen_switch_ins_are_charged") {
        return;
    }
    let _serial = serial();
    if std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) < 2 {
        // The injecting thread must run beside the burner's CPU.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "unseen_switch_ins_are_charged needs two CPUs"
        );
        eprintln!("unseen_switch_ins_are_charged: one CPU only: NOT CHECKED");
        return;
    }
    let cg = TestCgroup::new("unseen");
    let mut rt = load(&common::cgroup2_mount());
    let nr_cpus = rt.nr_cpus();
    let mut cpu_state = aya::maps::PerCpuArray::<_, exporter_common::CpuState>::try_from(aya::maps::Map::PerCpuArray(
        own_map(exporter_common::CPU_STATE_MAP),
    ))
    .unwrap();
    let hog_dir = cg.root.join("hog");
    std::fs::create_dir(&hog_dir).unwrap();
    let _hog = spawn_in(&hog_dir, None, "taskset -c 0 sh -c 'while :; do :; done'");
    let guest = cg.guest("g");
    let slot = rt.assign("g", &guest).unwrap();
    let unseen_switch_ins = |rt: &EbpfRuntime| rt.self_stats().unseen_switch_in.expect("event stats readable");
    let unseen_before = unseen_switch_ins(&rt);
    let before_stat = cpu_usage_usec(&guest);
    let before = read(&rt, slot).counters.cpu_ns;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let injector = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            pin_this_thread(1);
            let stale = exporter_common::CpuState {
                task: 1,
                sum_exec_runtime: u64::MAX,
                run_delay: u64::MAX,
                _pad: 0,
            };
            let mut writes = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let values = aya::maps::PerCpuValues::try_from(vec![stale; nr_cpus]).unwrap();
                cpu_state.set(0, values, 0).unwrap();
                writes += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            writes
        })
    };
    let script = "taskset -c 0 timeout 2 sh -c 'while :; do :; done'";
    let status = spawn_in(&guest.join("ns/inner"), None, script).wait(Duration::from_secs(20));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = injector.join().unwrap();
    assert!(status.success() || status.code() == Some(124), "{status}");
    std::thread::sleep(Duration::from_millis(50));
    let stat_s = (cpu_usage_usec(&guest) - before_stat) as f64 / 1e6;
    let ebpf_s = (read(&rt, slot).counters.cpu_ns - before) as f64 / 1e9;
    let unseen = unseen_switch_ins(&rt) - unseen_before;
    let ratio = ebpf_s / stat_s;
    eprintln!(
        "burner beside a hog, {writes} stale records written: cpu.stat {stat_s:.4} s, eBPF {ebpf_s:.4} s, ratio {ratio:.4}, \
         unseen switch-ins {unseen}"
    );
    assert!(stat_s > 0.5, "workload too small to judge ({stat_s} s)");
    assert!(unseen >= 20, "the stale records hid only {unseen} switch-ins");
    assert!(
        (ratio - 1.0).abs() <= 0.01,
        "eBPF {ebpf_s} s vs cpu.stat {stat_s} s with {unseen} unseen switch-ins"
    );
}

/// A script that forks a known number of times: fork, exec and exit counts are exact.
#[test]
fn task_lifecycle_counts_are_exact() {
    if !privileged("task_lifecycle_counts_are_exact") {
        return;
    }
    let _serial = serial();
    let cg = TestCgroup::new("tasks");
    let mut rt = load(&common::cgroup2_mount());
    let guest = cg.guest("g");
    let slot = rt.assign("g", &guest).unwrap();
    let n = 37;
    // The joining shell execs `sh -c <loop>` (1 exec); the loop forks n children that each
    // exec /bin/true (n forks, n execs, n exits); the loop shell exits (1 exit). The fork that
    // started the joining shell happened in the test's cgroup, before joining.
    let script = format!("i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done");
    let status = spawn_in(&guest.join("ns"), None, &script).wait(Duration::from_secs(20));
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(50));
    let c = read(&rt, slot).counters;
    assert_eq!((c.forks, c.execs, c.exits), (n, n + 1, n + 1), "forks, execs, exits");
}

/// Network namespaces and a veth pair named like Proxmox's, removed on drop.
struct Netns {
    host: String,
    guest: String,
}

impl Netns {
    fn new(tag: u32) -> Netns {
        let n = Netns {
            host: format!("mex-h-{tag}"),
            guest: format!("mex-g-{tag}"),
        };
        for ns in [&n.host, &n.guest] {
            run_ok("ip", &["netns", "add", ns]);
        }
        n
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespaces destroys the veth pair with them.
        for ns in [&self.host, &self.guest] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// (rx_bytes, rx_packets, tx_bytes, tx_packets) of an interface from /proc/net/dev as seen
/// inside namespace `ns`.
fn dev_counters(ns: &str, dev: &str) -> (u64, u64, u64, u64) {
    common::interface_counters(&in_netns(ns, &["cat", "/proc/net/dev"]), dev)
}

/// UDP echo over a `veth<vmid>i0` pair: the guest's socket packets counted by cgroup_skb are
/// exactly the interface's packets, and its bytes are the interface's minus 14 per packet
/// (cgroup_skb sees L3 lengths). IPv6 is off and neighbours are static, so the link carries
/// nothing but the test's datagrams (no ARP, no router solicitation).
#[test]
fn socket_traffic_matches_the_veth_counters() {
    if !privileged("socket_traffic_matches_the_veth_counters") {
        return;
    }
    let _serial = serial();
    let cg = TestCgroup::new("net");
    let tag = std::process::id() % 900 + 9000;
    let ns = Netns::new(tag);
    let veth = format!("veth{tag}i0");
    let host_mac = "02:00:00:00:00:01";
    let guest_mac = "02:00:00:00:00:02";
    run_ok(
        "ip",
        &[
            "link", "add", &veth, "netns", &ns.host, "type", "veth", "peer", "name", "eth0", "netns", &ns.guest,
        ],
    );
    for (n, dev, mac, addr, peer, peer_mac) in [
        (
            &ns.host,
            veth.as_str(),
            host_mac,
            "10.213.0.1/30",
            "10.213.0.2",
            guest_mac,
        ),
        (&ns.guest, "eth0", guest_mac, "10.213.0.2/30", "10.213.0.1", host_mac),
    ] {
        in_netns(
            n,
            &[
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        );
        in_netns(n, &["ip", "link", "set", dev, "address", mac]);
        in_netns(n, &["ip", "addr", "add", addr, "dev", dev]);
        in_netns(
            n,
            &[
                "ip",
                "neigh",
                "add",
                peer,
                "lladdr",
                peer_mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ],
        );
        in_netns(n, &["ip", "link", "set", dev, "up"]);
        in_netns(n, &["ip", "link", "set", "lo", "up"]);
    }
    let mut rt = load(&common::cgroup2_mount());
    let guest = cg.guest("g");
    let slot = rt.assign("g", &guest).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let count = 200;
    let size = 1000;
    // Echo server in the host-side namespace, outside the guest: answers exactly `count`
    // datagrams and exits; bounded by a timeout.
    let server = Proc(
        Command::new("nsenter")
            .args([&format!("--net=/run/netns/{}", ns.host), "timeout", "20", "python3", "-c"])
            .arg(format!(
                "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('10.213.0.1',5353))\nprint('ready',flush=True)\nfor _ in range({count}):\n    d,a=s.recvfrom(65536)\n    s.sendto(d,a)\n"
            ))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut server = server;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.0.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");

    let before_dev = dev_counters(&ns.host, &veth);
    let before = read(&rt, slot).counters;
    let client = format!(
        "timeout 20 python3 -c \"\nimport socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(5)\nfor _ in range({count}):\n    s.sendto(b'x'*{size},('10.213.0.1',5353))\n    s.recvfrom(65536)\n\""
    );
    let status = spawn_in(&guest.join("ns"), Some(&ns.guest), &client).wait(Duration::from_secs(30));
    assert!(status.success(), "client: {status}");
    assert!(server.wait(Duration::from_secs(10)).success());
    std::thread::sleep(Duration::from_millis(100));
    let after_dev = dev_counters(&ns.host, &veth);
    let after = read(&rt, slot).counters;

    // Host side: rx is what the guest sent, tx what it received.
    let (rx_b, rx_p, tx_b, tx_p) = (
        after_dev.0 - before_dev.0,
        after_dev.1 - before_dev.1,
        after_dev.2 - before_dev.2,
        after_dev.3 - before_dev.3,
    );
    let sent_p = after.tx_packets - before.tx_packets;
    let sent_b = after.tx_bytes - before.tx_bytes;
    let recv_p = after.rx_packets - before.rx_packets;
    let recv_b = after.rx_bytes - before.rx_bytes;
    eprintln!(
        "veth rx {rx_p} pkts {rx_b} B, tx {tx_p} pkts {tx_b} B; eBPF sent {sent_p}/{sent_b}, received {recv_p}/{recv_b}"
    );
    assert_eq!(rx_p, count);
    assert_eq!(sent_p, rx_p, "packets sent by the guest");
    assert_eq!(recv_p, tx_p, "packets received by the guest");
    assert_eq!(sent_b + 14 * sent_p, rx_b, "bytes sent, plus the Ethernet header");
    assert_eq!(recv_b + 14 * recv_p, tx_b, "bytes received, plus the Ethernet header");
    assert_eq!(sent_b, count * (size + 28), "IPv4 + UDP headers on each datagram");
}

/// Sum of `run_delay` (the second field of /proc/<pid>/schedstat: nanoseconds spent waiting
/// on a run queue) of every task in `cgroup`.
fn run_delay_ns(cgroup: &Path) -> u64 {
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    procs
        .lines()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok())
        .map(|s| s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Two CPU hogs per core in one guest: its run-queue latency histogram shows far more waiting
/// than an idle guest's (which only wakes from sleep now and then, under the same contention),
/// and its total wait agrees with the kernel's own `run_delay` of the same tasks.
#[test]
fn runqueue_latency_shows_contention() {
    if !privileged("runqueue_latency_shows_contention") {
        return;
    }
    let _serial = serial();
    let cg = TestCgroup::new("runq");
    let mut rt = load(&common::cgroup2_mount());
    let busy = cg.guest("busy");
    let idle = cg.guest("idle");
    let busy_slot = rt.assign("busy", &busy).unwrap();
    let idle_slot = rt.assign("idle", &idle).unwrap();
    let hogs = 2 * std::thread::available_parallelism().unwrap().get();
    // The hogs are started by one shell and left running; they are measured while alive
    // (schedstat disappears with the task) and killed by the cgroup guard.
    let hog_script = (0..hogs).map(|_| "sh -c 'while :; do :; done' & ").collect::<String>() + "wait";
    let _hog = spawn_in(&busy.join("ns/inner"), None, &hog_script);
    let sleeper = spawn_in(
        &idle.join("ns"),
        None,
        "i=0; while [ $i -lt 40 ]; do sleep 0.05; i=$((i+1)); done",
    );
    std::thread::sleep(Duration::from_millis(300));
    let delay_before = run_delay_ns(&busy.join("ns/inner"));
    let wait_before = read(&rt, busy_slot).counters.runq_wait_ns;
    std::thread::sleep(Duration::from_secs(2));
    let delay = run_delay_ns(&busy.join("ns/inner")) - delay_before;
    let b = read(&rt, busy_slot).counters;
    let busy_wait = b.runq_wait_ns - wait_before;
    assert!(sleeper.wait(Duration::from_secs(20)).success());
    let i = read(&rt, idle_slot).counters;
    let waits = |c: &exporter_common::GuestCounters| c.runq_buckets.iter().sum::<u64>();
    // Waits of a millisecond or more: bucket k holds [2^(9+k), 2^(10+k)) ns, 2^20 ns ~ 1 ms.
    let long = |c: &exporter_common::GuestCounters| c.runq_buckets[11..].iter().sum::<u64>();
    let mean = |c: &exporter_common::GuestCounters| c.runq_wait_ns as f64 / waits(c).max(1) as f64 / 1e6;
    eprintln!(
        "busy: {} waits, {} >= 1 ms, mean {:.3} ms; over 2 s: eBPF {:.3} s waiting, schedstat run_delay {:.3} s; \
         idle: {} waits, {} >= 1 ms, mean {:.3} ms",
        waits(&b),
        long(&b),
        mean(&b),
        busy_wait as f64 / 1e9,
        delay as f64 / 1e9,
        waits(&i),
        long(&i),
        mean(&i)
    );
    assert!(waits(&b) > 0 && waits(&i) > 0, "both guests were scheduled");
    // The eBPF total follows the kernel's per-task accounting (a wait is charged at the
    // task's switch-out, so the waits around the two reads may differ by a few time slices).
    let ratio = busy_wait as f64 / delay as f64;
    assert!(
        (ratio - 1.0).abs() < 0.10,
        "eBPF wait {busy_wait} ns vs run_delay {delay} ns"
    );
    // 2 hogs per core: about half their time is spent waiting.
    assert!(
        busy_wait as f64 > 0.5 * hogs as f64 * 2e9 * 0.5,
        "busy guest waited {busy_wait} ns"
    );
    // The contended guest spends far more time waiting than the quiet one. Not the mean wait:
    // quiet, the busy guest's mean is 4-5 times the idle one's, but beside another test (CI runs
    // two at once) its hogs are preempted thousands of times for short waits (12,630 waits of
    // 0.42 ms mean against the idle guest's 0.56 ms, seen in CI), while its total is unchanged.
    let total = |c: &exporter_common::GuestCounters| c.runq_wait_ns as f64;
    assert!(
        total(&b) > 5.0 * total(&i),
        "time waiting: busy {} ms vs idle {} ms",
        total(&b) / 1e6,
        total(&i) / 1e6
    );
    assert!(
        long(&b) > 2 * long(&i),
        "waits >= 1 ms: busy {} vs idle {}",
        long(&b),
        long(&i)
    );
}

/// A released slot is reused without carrying the previous guest's counts.
#[test]
fn released_slots_start_from_zero() {
    if !privileged("released_slots_start_from_zero") {
        return;
    }
    let _serial = serial();
    let cg = TestCgroup::new("churn");
    let mut rt = load(&common::cgroup2_mount());
    let first = cg.guest("first");
    let slot = rt.assign("first", &first).unwrap();
    assert!(
        spawn_in(&first.join("ns"), None, "/bin/true; /bin/true")
            .wait(Duration::from_secs(10))
            .success()
    );
    assert!(read(&rt, slot).counters.forks >= 2);
    rt.release(slot);
    assert!(rt.read(slot).is_none());
    let second = cg.guest("second");
    let again = rt.assign("second", &second).unwrap();
    assert_eq!(again, slot, "the lowest free slot is reused");
    assert_eq!(read(&rt, again).counters, exporter_common::GuestCounters::ZERO);
    // The released guest's cgroup is no longer counted.
    assert!(
        spawn_in(&first.join("ns"), None, "/bin/true")
            .wait(Duration::from_secs(10))
            .success()
    );
    assert_eq!(read(&rt, again).counters.forks, 0);
}

/// The child half of the privilege tests: loads (and, given a guest cgroup, assigns it so the
/// cgroup_skb programs attach) and prints one line describing the outcome.
#[test]
#[ignore = "run by unprivileged_load_fails_with_eperm and minimal_capabilities_suffice"]
fn privileged_child() {
    let Ok(mount) = std::env::var("MEX_CHILD_CGROUP_MOUNT") else {
        return;
    };
    let mut out = std::io::stdout();
    match EbpfRuntime::load(&LoadOptions::new(&mount)) {
        Ok(mut rt) => {
            let mut maps = rt.map_names();
            maps.sort();
            writeln!(out, "CHILD loaded maps={}", maps.join(",")).unwrap();
            if let Ok(guest) = std::env::var("MEX_CHILD_GUEST") {
                match rt.assign("child", Path::new(&guest)) {
                    Ok(slot) => writeln!(out, "CHILD assigned slot={}", slot.index()).unwrap(),
                    Err(e) => writeln!(out, "CHILD assign-failed {e}").unwrap(),
                }
            }
            let stats = rt.self_stats();
            writeln!(
                out,
                "CHILD bpf_stats={} {:?}",
                stats.bpf_stats_enabled, stats.bpf_stats_error
            )
            .unwrap();
        }
        Err(e) => writeln!(
            out,
            "CHILD unavailable kind={:?} errno={:?} message={e}",
            e.kind, e.errno
        )
        .unwrap(),
    }
}

fn child(wrapper: &[&str], guest: Option<&Path>) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(wrapper[0]);
    cmd.args(&wrapper[1..])
        .arg(&exe)
        .args([
            "--exact",
            "privileged_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("MEX_CHILD_CGROUP_MOUNT", common::cgroup2_mount());
    if let Some(g) = guest {
        cmd.env("MEX_CHILD_GUEST", g);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "{wrapper:?}: {}",
        text.lines()
            .filter(|l| l.contains("CHILD"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    text
}

/// Inside a user namespace (the unprivileged-LXC case) loading fails with EPERM and the
/// runtime reports it as a permission problem, by kind and errno.
#[test]
fn unprivileged_load_fails_with_eperm() {
    if !privileged("unprivileged_load_fails_with_eperm") {
        return;
    }
    let _serial = serial();
    let text = child(&["unshare", "-U", "-r"], None);
    let expected = format!(
        "CHILD unavailable kind={:?} errno=Some({})",
        UnavailableKind::PermissionDenied,
        libc::EPERM
    );
    assert!(text.contains(&expected), "{text}");
}

/// The capability set of systemd/metrics-exporter-ebpf.service: as an unprivileged user with
/// exactly CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, the programs load and attach (the cgroup_skb
/// ones at the cgroup2 root) and a guest gets its slot. bpf stats (CAP_SYS_ADMIN) are then
/// reported as off.
#[test]
fn minimal_capabilities_suffice() {
    if !privileged("minimal_capabilities_suffice") {
        return;
    }
    let _serial = serial();
    let cg = TestCgroup::new("caps");
    let guest = cg.guest("g");
    let caps = "-all,+bpf,+perfmon,+net_admin";
    let text = child(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps={caps}"),
            &format!("--ambient-caps={caps}"),
            &format!("--bounding-set={caps}"),
        ],
        Some(&guest),
    );
    assert!(text.contains("CHILD loaded maps="), "{text}");
    assert!(text.contains("GUEST_COUNTERS") && text.contains("SLOT_TABLE"), "{text}");
    assert!(text.contains("CHILD assigned slot=0"), "{text}");
    // One capability less: refused.
    let fewer = "-all,+bpf,+perfmon";
    let text = child(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps={fewer}"),
            &format!("--ambient-caps={fewer}"),
            &format!("--bounding-set={fewer}"),
        ],
        Some(&guest),
    );
    assert!(
        !text.contains("CHILD loaded") && !text.contains("CHILD assigned"),
        "cgroup_skb loaded and attached without CAP_NET_ADMIN: {text}"
    );
}
