//! lxcfs for the rig's containers: one the rig starts itself (no systemd here:
//! `lxcfs -f -p <pid file> <mount dir>` in the rig dir), stopped and unmounted by the rig. Never
//! one that is already mounted: that may be another rig's (tests run rigs in parallel), which
//! stops it when it is done and leaves this rig's containers with "Transport endpoint is not
//! connected". Several lxcfs instances at different mount points coexist.
//! Produces the mount dir and an LXC mount hook that binds its `proc/*` files into a container
//! (lxcfs's own hook hard-codes /var/lib/lxcfs).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::ledger::{Ledger, Undo, process_start_time};

/// Starts an lxcfs of the rig's own under `rig_dir`; returns its mount dir.
pub fn ensure(rig_dir: &Path, ledger: &mut Ledger) -> anyhow::Result<PathBuf> {
    let dir = rig_dir.join("lxcfs");
    std::fs::create_dir_all(&dir)?;
    let pid_file = rig_dir.join("lxcfs.pid");
    let log = std::fs::File::create(rig_dir.join("lxcfs.log"))?;
    let child = Command::new("lxcfs")
        .arg("-f")
        .arg("-p")
        .arg(&pid_file)
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting lxcfs")?;
    let pid = child.id() as i32;
    // The child is reaped by whoever owns it last; lxcfs runs until the rig stops it.
    std::mem::forget(child);
    let start_time = process_start_time(pid).context("lxcfs exited at once")?;
    ledger.record(Undo::Kill { pid, start_time })?;
    ledger.record(Undo::Unmount(dir.clone()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.join("proc/meminfo").exists() {
        if Instant::now() > deadline {
            bail!("lxcfs did not mount {} within 10 s", dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(dir)
}

/// An LXC mount hook that binds lxcfs's `proc/*` files over the container's.
pub fn mount_hook(lxcfs_dir: &Path) -> String {
    format!(
        "#!/bin/sh -e\n\
         # lxcfs files over the container's /proc (lxcfs's own hook assumes /var/lib/lxcfs).\n\
         ROOT=$(readlink -f \"$LXC_ROOTFS_MOUNT\")\n\
         for entry in '{dir}'/proc/*; do\n\
         \tname=$(basename \"$entry\")\n\
         \t[ -e \"$ROOT/proc/$name\" ] || continue\n\
         \tmount -n --bind \"$entry\" \"$ROOT/proc/$name\"\n\
         done\n",
        dir = lxcfs_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_hook_binds_from_the_rigs_lxcfs() {
        assert!(mount_hook(Path::new("/r/lxcfs")).contains("for entry in '/r/lxcfs'/proc/*"));
    }
}
