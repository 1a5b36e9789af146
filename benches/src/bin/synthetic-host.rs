//! `synthetic-host <dir> <guests>`: writes a synthetic Proxmox VE host tree with `<guests>`
//! running guests into `<dir>` (which should be empty or absent), for `cargo xtask compare
//! --scenario proxmox` and for profiling. Prints the environment variables that point the
//! exporter into the tree, one `NAME=value` per line.

use std::path::PathBuf;
use std::process::ExitCode;

use exporter::collectors::proxmox::synthetic;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, guests) = match args.as_slice() {
        [dir, guests] => match guests.parse::<usize>() {
            Ok(n) => (PathBuf::from(dir), n),
            Err(_) => {
                eprintln!("synthetic-host: <guests> must be a number, found {guests:?}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: synthetic-host <dir> <guests>");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("synthetic-host: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let host = match synthetic::generate(&dir, &synthetic::Spec::new(guests)) {
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
