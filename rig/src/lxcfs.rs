//! lxcfs for the rig's containers: the one already mounted (a `fuse.lxcfs` mount in
//! /proc/self/mountinfo) or, when none runs, one the rig starts itself (no systemd here:
//! `lxcfs -f -p <pid file> <mount dir>` in the rig dir), stopped and unmounted by the rig.
//! Produces the mount dir and an LXC mount hook that binds its `proc/*` files into a container
//! (lxcfs's own hook hard-codes /var/lib/lxcfs).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::ledger::{Ledger, Undo, process_start_time, unescape_mount_field};

/// The mount point of a running lxcfs, from mountinfo text.
pub fn mounted_lxcfs(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if after.split(' ').next()? != "fuse.lxcfs" {
            return None;
        }
        Some(PathBuf::from(unescape_mount_field(before.split(' ').nth(4)?)))
    })
}

/// Uses the running lxcfs or starts one under `rig_dir`; returns its mount dir.
pub fn ensure(rig_dir: &Path, ledger: &mut Ledger) -> anyhow::Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    if let Some(dir) = mounted_lxcfs(&mountinfo) {
        return Ok(dir);
    }
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
    fn finds_lxcfs_mount() {
        let text = "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n\
                    90 23 0:50 / /var/lib/rig\\040x/lxcfs rw,nosuid - fuse.lxcfs lxcfs rw,user_id=0\n";
        assert_eq!(mounted_lxcfs(text), Some(PathBuf::from("/var/lib/rig x/lxcfs")));
        assert_eq!(mounted_lxcfs("40 31 0:37 / /x rw - ext4 /dev/sda rw\n"), None);
        assert!(mount_hook(Path::new("/r/lxcfs")).contains("for entry in '/r/lxcfs'/proc/*"));
    }
}
