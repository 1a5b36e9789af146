//! `cargo xtask rig up|down|status [DIR]`: the real-guest rig for a person who wants to look.
//! `up` builds the guests (crate `guest-rig`) in DIR (default /var/lib/metrics-exporter-rig/manual)
//! and leaves them running, printing what it made and the exporter command line to run against
//! them; `down` removes everything the state file in DIR lists; `status` prints the description
//! and whether each guest runs. Needs root.

use std::path::PathBuf;

use anyhow::bail;
use guest_rig::rig::{RIG_ROOT, Rig};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let dir = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(RIG_ROOT).join("manual"));
    match args.first().map(String::as_str) {
        Some("up") => {
            crate::setup::apt_install(crate::setup::RIG_PACKAGES)?;
            let rig = Rig::up(&dir)?;
            let setup = rig.setup;
            let description = rig.keep();
            println!("{}", description.summary());
            println!(
                "set up in {:.1} s; take it down with: cargo xtask rig down {}",
                setup.as_secs_f64(),
                dir.display()
            );
            Ok(())
        }
        Some("down") => {
            let description = Rig::describe_dir(&dir).ok();
            let took = Rig::down_dir(&dir)?;
            println!("rig in {} taken down in {:.1} s", dir.display(), took.as_secs_f64());
            if let Some(description) = description {
                let left = description.leftovers(&guest_rig::cgroups::Hierarchies::read()?);
                if !left.is_empty() {
                    bail!("left behind: {}", left.join(", "));
                }
            }
            Ok(())
        }
        Some("status") => {
            let description = Rig::describe_dir(&dir)?;
            println!("{}", description.summary());
            for c in &description.containers {
                let state = guest_rig::lxc::state(&description.lxcpath, &c.spec.name());
                println!(
                    "container {}: {}",
                    c.spec.vmid,
                    if state.is_empty() { "unknown" } else { &state }
                );
            }
            for v in &description.vms {
                let alive = std::path::Path::new(&format!("/proc/{}", v.pid)).exists();
                println!("vm {}: {}", v.spec.vmid, if alive { "running" } else { "not running" });
            }
            Ok(())
        }
        _ => bail!("usage: cargo xtask rig <up|down|status> [DIR]"),
    }
}
