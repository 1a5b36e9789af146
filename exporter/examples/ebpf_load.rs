//! Loads the eBPF programs the way the exporter does and prints what was loaded: the map
//! names, the programs' bpf stats and, with a cgroup directory argument, that guest's counters
//! after one second. Used to prove which capabilities suffice (see
//! `systemd/metrics-exporter-ebpf.service` and `exporter/tests/ebpf_privileges.rs`):
//!
//! ```text
//! cargo run --example ebpf_load -- [CGROUP2_MOUNT [GUEST_CGROUP_DIR]]
//! ```
//! Exits 0 when loaded, 2 with the reason on stderr when not.

use metrics_exporter::ebpf::{EbpfRuntime, LoadOptions};

fn main() {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let mut args = std::env::args().skip(1);
    let mount = args.next().unwrap_or_else(|| "/sys/fs/cgroup".to_owned());
    let guest = args.next();
    let mut runtime = match EbpfRuntime::load(&LoadOptions::new(&mount)) {
        Ok(r) => r,
        Err(why) => {
            eprintln!("ebpf unavailable: kind={:?} errno={:?}: {why}", why.kind, why.errno);
            std::process::exit(2);
        }
    };
    let mut maps = runtime.map_names();
    maps.sort();
    println!("loaded maps: {}", maps.join(" "));
    if let Some(dir) = guest {
        match runtime.assign("example", std::path::Path::new(&dir)) {
            Ok(slot) => {
                std::thread::sleep(std::time::Duration::from_secs(1));
                println!("{dir}: slot {} {:?}", slot.index(), runtime.read(slot));
            }
            Err(e) => {
                eprintln!("assign: {e}");
                std::process::exit(3);
            }
        }
    }
    let stats = runtime.self_stats();
    println!("bpf stats: {} {:?}", stats.bpf_stats_enabled, stats.bpf_stats_error);
    for p in &stats.programs {
        println!("program {}: runs={} run_time_ns={}", p.name, p.run_count, p.run_time_ns);
    }
}
