//! Root filesystems of the rig's containers, in Proxmox VE's directory-storage layout:
//! - a raw image `images/<vmid>/vm-<vmid>-disk-0.raw` (ext4, made by the rig) attached to a loop
//!   device and mounted at the container's rootfs, as Proxmox mounts raw images before start;
//! - a subvol directory `images/<vmid>/subvol-<vmid>-disk-0.subvol`;
//! - a Debian minbase tree with systemd (bookworm, or trixie for the package's Debian 13 proof),
//!   debootstrap'd once per suite from the configured apt mirror and cached as a tarball under
//!   /var/cache/metrics-exporter-rig (later runs unpack it).
//!
//! Also shifts a tree's owners into an unprivileged container's id range (the busybox template
//! cannot do it here: newuidmap is missing).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::command::run;
use crate::ledger::{Ledger, Undo};

pub const CACHE_DIR: &str = "/var/cache/metrics-exporter-rig";
/// Where debootstrap fetches from (the machine's own apt source, /etc/apt/sources.list.d).
pub const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// The Debian release of a container's tree: Proxmox VE 8 is based on bookworm, 9 on trixie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Suite {
    Bookworm,
    Trixie,
}

impl Suite {
    /// The codename debootstrap and apt know it by.
    pub fn codename(self) -> &'static str {
        match self {
            Suite::Bookworm => "bookworm",
            Suite::Trixie => "trixie",
        }
    }

    /// The cached tree's file name; it says what is in it.
    pub fn tarball_name(self) -> String {
        format!("{}-minbase-systemd.tar", self.codename())
    }
}

pub fn raw_image_path(images: &Path, vmid: u32) -> PathBuf {
    images.join(format!("{vmid}/vm-{vmid}-disk-0.raw"))
}

pub fn subvol_path(images: &Path, vmid: u32) -> PathBuf {
    images.join(format!("{vmid}/subvol-{vmid}-disk-0.subvol"))
}

/// Makes a sparse ext4 image of `size_mib`, attaches it to a free loop device and mounts it at
/// `mount_point`. Returns the loop device.
pub fn raw_image(image: &Path, size_mib: u64, mount_point: &Path, ledger: &mut Ledger) -> anyhow::Result<String> {
    std::fs::create_dir_all(image.parent().context("image without a parent")?)?;
    let file = std::fs::File::create(image).with_context(|| format!("creating {}", image.display()))?;
    file.set_len(size_mib * 1024 * 1024)?;
    drop(file);
    let image_text = image.display().to_string();
    run("mkfs.ext4", &["-q", "-F", &image_text])?;
    let device = run("losetup", &["--find", "--show", &image_text])?.trim().to_owned();
    ledger.record(Undo::DetachLoop {
        device: device.clone(),
        backing: image.to_path_buf(),
    })?;
    std::fs::create_dir_all(mount_point)?;
    run("mount", &[&device, &mount_point.display().to_string()])?;
    ledger.record(Undo::Unmount(mount_point.to_path_buf()))?;
    Ok(device)
}

/// The cached Debian minbase tarball of `suite` (with systemd-sysv), made with debootstrap when
/// missing. Trimmed of what a guest never reads (downloaded .debs, docs, man pages) so that
/// unpacking costs seconds.
pub fn debian_tarball(suite: Suite) -> anyhow::Result<PathBuf> {
    let codename = suite.codename();
    let cache = Path::new(CACHE_DIR);
    let tarball = cache.join(suite.tarball_name());
    if tarball.exists() {
        return Ok(tarball);
    }
    std::fs::create_dir_all(cache)?;
    let tree = cache.join(format!("{codename}.partial"));
    if tree.exists() {
        std::fs::remove_dir_all(&tree)?;
    }
    let tree_text = tree.display().to_string();
    eprintln!("rig: debootstrap {codename} (minbase + systemd-sysv) into {tree_text}, once");
    run(
        "debootstrap",
        &[
            "--variant=minbase",
            "--include=systemd-sysv",
            codename,
            &tree_text,
            DEBIAN_MIRROR,
        ],
    )?;
    for dir in [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
    ] {
        let d = tree.join(dir);
        if d.exists() {
            for entry in std::fs::read_dir(&d)?.flatten() {
                let p = entry.path();
                if entry.file_type()?.is_dir() {
                    std::fs::remove_dir_all(&p)?;
                } else {
                    std::fs::remove_file(&p)?;
                }
            }
        }
    }
    let partial = cache.join(format!("{}.partial", suite.tarball_name()));
    run(
        "tar",
        &[
            "-C",
            &tree_text,
            "--numeric-owner",
            "-cf",
            &partial.display().to_string(),
            ".",
        ],
    )?;
    std::fs::rename(&partial, &tarball)?;
    std::fs::remove_dir_all(&tree)?;
    Ok(tarball)
}

/// Unpacks the cached Debian tree of `suite` into `dir`.
pub fn unpack_debian(dir: &Path, suite: Suite) -> anyhow::Result<()> {
    let tarball = debian_tarball(suite)?;
    std::fs::create_dir_all(dir)?;
    run(
        "tar",
        &[
            "-C",
            &dir.display().to_string(),
            "--numeric-owner",
            "-xf",
            &tarball.display().to_string(),
        ],
    )?;
    Ok(())
}

/// Adds `offset` to the owner and group of every file below `dir` (an unprivileged container's
/// root is host uid/gid `offset`). Symlinks are changed themselves, never followed.
pub fn shift_owners(dir: &Path, offset: u32) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    std::os::unix::fs::lchown(dir, Some(meta.uid() + offset), Some(meta.gid() + offset))
        .with_context(|| format!("chown {}", dir.display()))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            shift_owners(&entry?.path(), offset)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxmox_directory_storage_names() {
        let images = Path::new("/r/images");
        assert_eq!(
            raw_image_path(images, 9101),
            PathBuf::from("/r/images/9101/vm-9101-disk-0.raw")
        );
        assert_eq!(
            subvol_path(images, 9102),
            PathBuf::from("/r/images/9102/subvol-9102-disk-0.subvol")
        );
    }

    #[test]
    fn each_suite_has_its_own_cached_tarball() {
        assert_eq!(Suite::Bookworm.tarball_name(), "bookworm-minbase-systemd.tar");
        assert_eq!(Suite::Trixie.tarball_name(), "trixie-minbase-systemd.tar");
    }
}
