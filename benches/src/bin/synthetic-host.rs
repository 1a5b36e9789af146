//! `synthetic-host [--cgroup-stat-format 6.8|6.11] <dir> <guests>`: writes a synthetic Proxmox VE
//! host tree with `<guests>` running guests into `<dir>` (which should be empty or absent), for
//! `cargo xtask compare --scenario proxmox` and for profiling. `cgroup.stat` is printed as
//! Linux 6.8 (Proxmox VE 8: `nr_descendants`, `nr_dying_descendants`) or 6.11+ (Proxmox VE 9,
//! with `nr_subsys_*`; the default). Prints the environment variables that point the exporter
//! into the tree, one `NAME=value` per line.

use std::path::PathBuf;
use std::process::ExitCode;

use exporter::collectors::proxmox::synthetic::{self, CgroupStatFormat};

const USAGE: &str = "usage: synthetic-host [--cgroup-stat-format 6.8|6.11] <dir> <guests>";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut format = CgroupStatFormat::Linux6_11;
    if args.first().map(String::as_str) == Some("--cgroup-stat-format") {
        match args.get(1).and_then(|f| CgroupStatFormat::parse(f)) {
            Some(f) => format = f,
            None => {
                eprintln!("synthetic-host: --cgroup-stat-format takes 6.8 or 6.11; {USAGE}");
                return ExitCode::from(2);
            }
        }
        args.drain(..2);
    }
    let (dir, guests) = match args.as_slice() {
        [dir, guests] => match guests.parse::<usize>() {
            Ok(n) => (PathBuf::from(dir), n),
            Err(_) => {
                eprintln!("synthetic-host: <guests> must be a number, found {guests:?}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("synthetic-host: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let mut spec = synthetic::Spec::new(guests);
    spec.cgroup_stat = format;
    let host = match synthetic::generate(&dir, &spec) {
        Ok(host) => host,
        Err(e) => {
            eprintln!("synthetic-host: writing the tree under {} failed: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let env = host.environment();
    println!("PROC_PATH={}", env.proc_path.display());
    println!("SYS_PATH={}", env.sys_path.display());
    if let Some(cgroup) = &env.cgroup_path {
        println!("CGROUP_PATH={}", cgroup.display());
    }
    println!("PVE_PATH={}", env.pve_path.display());
    ExitCode::SUCCESS
}
