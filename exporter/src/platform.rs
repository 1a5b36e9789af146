//! Platform detection: Proxmox VE host, LXC container or plain Linux host.
//!
//! Reads `$PROC_PATH/1/environ`, `$PROC_PATH/self/mountinfo`, `<root>/run/systemd/container`
//! (where `<root>` is the parent of `$PROC_PATH`, `/` on a real system), `$PVE_PATH/.version`
//! and `$PVE_PATH/.members`. Produces a [`Detection`]: the platform and every piece of
//! evidence looked at, kept for /status and `--check-config`. Also derives the exporter's
//! [`Identity`] (host name, container id, instance) and the cgroup2 mount.
//!
//! Inside a container the vmid comes from the root mount, in the three ways Proxmox storages
//! show it ([`container_id_from_root`]): a volume name as the mount source (LVM, LVM-thin, ZFS,
//! Ceph), a `subvol` directory as the mount's root (directory storage), or a raw image behind
//! a loop device (`$SYS_PATH/block/loopN/loop/backing_file`, directory storage with a size).

use std::path::{Path, PathBuf};

use crate::config::{Config, PlatformChoice};
use crate::model::Identity;
use crate::parse::mountinfo::{self, Mount};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Platform {
    #[serde(rename = "proxmox-host")]
    Proxmox,
    #[serde(rename = "lxc-container")]
    Lxc,
    #[serde(rename = "host")]
    Host,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Proxmox => "proxmox-host",
            Platform::Lxc => "lxc-container",
            Platform::Host => "host",
        }
    }
}

/// One thing looked at, what was found, and which platform it points to (if any).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Evidence {
    pub source: String,
    pub finding: String,
    pub indicates: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Detection {
    pub platform: Platform,
    /// True when PLATFORM forced the result rather than the evidence.
    pub forced: bool,
    pub evidence: Vec<Evidence>,
}

/// The filesystem root that `proc_path` belongs to (`/proc` -> `/`, `<tree>/proc` -> `<tree>`).
pub fn root_of(proc_path: &Path) -> PathBuf {
    proc_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Reads the exporter's own mount table; an unreadable table is an empty one (and evidence).
pub fn read_mounts(proc_path: &Path) -> Result<Vec<Mount>, crate::error::CollectError> {
    crate::error::read_parsed(&proc_path.join("self/mountinfo"), mountinfo::parse)
}

/// The inputs of detection, read from files; [`decide`] is pure over them.
#[derive(Debug, Clone)]
pub struct Observations {
    pub init_environ: Option<Result<String, String>>,
    pub systemd_container: Option<String>,
    pub mounts: Result<Vec<Mount>, String>,
    pub pve_version_exists: bool,
    pub pve_members_exists: bool,
    pub pve_path: String,
}

impl Default for Observations {
    fn default() -> Self {
        Observations {
            init_environ: None,
            systemd_container: None,
            mounts: Ok(Vec::new()),
            pve_version_exists: false,
            pve_members_exists: false,
            pve_path: "/etc/pve".into(),
        }
    }
}

impl Default for Detection {
    fn default() -> Self {
        Detection {
            platform: Platform::Host,
            forced: false,
            evidence: Vec::new(),
        }
    }
}

pub fn observe(config: &Config) -> Observations {
    let environ_path = config.proc_path.join("1/environ");
    let init_environ = match std::fs::read(&environ_path) {
        Ok(bytes) => Some(Ok(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(e.to_string())),
    };
    let root = root_of(&config.proc_path);
    let systemd_container = std::fs::read_to_string(root.join("run/systemd/container"))
        .ok()
        .map(|s| s.trim().to_owned());
    Observations {
        init_environ,
        systemd_container,
        mounts: read_mounts(&config.proc_path).map_err(|e| e.to_string()),
        pve_version_exists: config.pve_path.join(".version").exists(),
        pve_members_exists: config.pve_path.join(".members").exists(),
        pve_path: config.pve_path.display().to_string(),
    }
}

/// Weighs the observations. LXC evidence wins over Proxmox evidence (a container may see a
/// bind-mounted /etc/pve; a Proxmox host never runs with `container=lxc` for init).
pub fn decide(obs: &Observations, choice: PlatformChoice) -> Detection {
    let mut evidence = Vec::new();
    let mut lxc = false;
    let mut proxmox = false;

    match &obs.init_environ {
        Some(Ok(environ)) => {
            let value = environ.split('\0').find_map(|kv| kv.strip_prefix("container="));
            match value {
                Some(v) => {
                    let is_lxc = v == "lxc" || v == "lxc-libvirt";
                    lxc |= is_lxc;
                    evidence.push(Evidence {
                        source: "proc/1/environ".into(),
                        finding: format!("container={v}"),
                        indicates: is_lxc.then_some(Platform::Lxc),
                    });
                }
                None => evidence.push(Evidence {
                    source: "proc/1/environ".into(),
                    finding: "no container= variable".into(),
                    indicates: None,
                }),
            }
        }
        Some(Err(e)) => evidence.push(Evidence {
            source: "proc/1/environ".into(),
            finding: format!("unreadable: {e}"),
            indicates: None,
        }),
        None => {}
    }

    if let Some(c) = &obs.systemd_container {
        let is_lxc = c.starts_with("lxc");
        lxc |= is_lxc;
        evidence.push(Evidence {
            source: "run/systemd/container".into(),
            finding: c.clone(),
            indicates: is_lxc.then_some(Platform::Lxc),
        });
    }

    match &obs.mounts {
        Ok(mounts) => {
            let lxcfs: Vec<&str> = mounts
                .iter()
                .filter(|m| m.fs_type == "fuse.lxcfs" && m.mount_point.starts_with("/proc/"))
                .map(|m| m.mount_point.as_str())
                .collect();
            if !lxcfs.is_empty() {
                lxc = true;
                evidence.push(Evidence {
                    source: "proc/self/mountinfo".into(),
                    finding: format!("lxcfs mounted over {}", lxcfs.join(", ")),
                    indicates: Some(Platform::Lxc),
                });
            }
            let pmxcfs = mounts.iter().find(|m| {
                (m.mount_point == obs.pve_path || m.mount_point == "/etc/pve")
                    && m.fs_type == "fuse"
                    && m.source == "/dev/fuse"
            });
            if let Some(m) = pmxcfs {
                proxmox = true;
                evidence.push(Evidence {
                    source: "proc/self/mountinfo".into(),
                    finding: format!("pmxcfs (fuse from /dev/fuse) mounted at {}", m.mount_point),
                    indicates: Some(Platform::Proxmox),
                });
            }
            if let Some(m) = mounts.iter().find(|m| m.fs_type == "cgroup2") {
                evidence.push(Evidence {
                    source: "proc/self/mountinfo".into(),
                    finding: format!("cgroup2 mounted at {}", m.mount_point),
                    indicates: None,
                });
            }
        }
        Err(e) => evidence.push(Evidence {
            source: "proc/self/mountinfo".into(),
            finding: format!("unreadable: {e}"),
            indicates: None,
        }),
    }

    if obs.pve_version_exists || obs.pve_members_exists {
        proxmox = true;
        let files: Vec<&str> = [
            (obs.pve_version_exists, ".version"),
            (obs.pve_members_exists, ".members"),
        ]
        .into_iter()
        .filter_map(|(exists, name)| exists.then_some(name))
        .collect();
        evidence.push(Evidence {
            source: obs.pve_path.clone(),
            finding: format!("{} present", files.join(" and ")),
            indicates: Some(Platform::Proxmox),
        });
    }

    let detected = if lxc {
        Platform::Lxc
    } else if proxmox {
        Platform::Proxmox
    } else {
        Platform::Host
    };
    let forced = match choice {
        PlatformChoice::Auto => None,
        PlatformChoice::Proxmox => Some(Platform::Proxmox),
        PlatformChoice::Lxc => Some(Platform::Lxc),
        PlatformChoice::Host => Some(Platform::Host),
    };
    if let Some(platform) = forced {
        evidence.push(Evidence {
            source: "PLATFORM".into(),
            finding: format!(
                "forced to {} (the evidence alone says {})",
                platform.as_str(),
                detected.as_str()
            ),
            indicates: Some(platform),
        });
    }
    Detection {
        platform: forced.unwrap_or(detected),
        forced: forced.is_some(),
        evidence,
    }
}

/// The cgroup2 mount point from the mount table, resolved under the tree `proc_path` belongs to
/// (so a fixture tree's `/sys/fs/cgroup` becomes `<tree>/sys/fs/cgroup`).
pub fn cgroup2_mount(mounts: &[Mount], proc_path: &Path) -> Option<PathBuf> {
    let mount = mounts.iter().rev().find(|m| m.fs_type == "cgroup2")?;
    let root = root_of(proc_path);
    Some(root.join(mount.mount_point.trim_start_matches('/')))
}

/// The vmid in a Proxmox volume name (`vm-101-disk-0`, `subvol-101-disk-1`,
/// `basevol-101-disk-0`), taken from a mount source such as
/// `/dev/mapper/pve-vm--101--disk--0` or `rpool/data/subvol-101-disk-0`.
pub fn vmid_from_volume(source: &str) -> Option<String> {
    let last = source.rsplit('/').next()?;
    let volume = if source.starts_with("/dev/mapper/") {
        // device-mapper joins VG and LV with '-' and doubles every '-' inside a name.
        let split = find_single_dash(last)?;
        last[split + 1..].replace("--", "-")
    } else {
        last.to_owned()
    };
    let mut parts = volume.split('-');
    let kind = parts.next()?;
    let vmid = parts.next()?;
    let disk = parts.next()?;
    let index = parts.next()?;
    let ok = matches!(kind, "vm" | "subvol" | "basevol")
        && disk == "disk"
        && parts.next().is_none()
        && !vmid.is_empty()
        && vmid.bytes().all(|b| b.is_ascii_digit())
        && !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| vmid.to_owned())
}

fn find_single_dash(name: &str) -> Option<usize> {
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'-' {
            if bytes.get(i + 1) == Some(&b'-') {
                i += 2;
                continue;
            }
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The vmid of a directory-storage subvolume, from the root field of the container's root
/// mount: `<storage>/images/<vmid>/subvol-<vmid>-disk-<n>.subvol` (pve-storage's `Plugin.pm`
/// names it so). The directory above must be the same vmid, or nothing is derived.
pub fn vmid_from_subvol_dir(root: &str) -> Option<String> {
    let name = root.rsplit('/').next()?.strip_suffix(".subvol")?;
    if !name.starts_with("subvol-") {
        return None;
    }
    vmid_in_images_dir(root, name)
}

/// The vmid of a raw image file `<storage>/images/<vmid>/vm-<vmid>-disk-<n>.raw`, the backing
/// file of the loop device a container's root is mounted from.
pub fn vmid_from_image_file(path: &str) -> Option<String> {
    let name = path.trim_end().rsplit('/').next()?.strip_suffix(".raw")?;
    if !name.starts_with("vm-") {
        return None;
    }
    vmid_in_images_dir(path.trim_end(), name)
}

/// The vmid of `name` when `path` ends in `images/<vmid>/<name>.<ext>` with the same vmid.
fn vmid_in_images_dir(path: &str, name: &str) -> Option<String> {
    let vmid = vmid_from_volume(name)?;
    let mut parents = path.rsplit('/').skip(1);
    (parents.next() == Some(vmid.as_str()) && parents.next() == Some("images")).then_some(vmid)
}

/// The loop device name of a mount source (`/dev/loop3` -> `loop3`).
fn loop_device(source: &str) -> Option<&str> {
    let name = source.strip_prefix("/dev/")?;
    let number = name.strip_prefix("loop")?;
    (!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())).then_some(name)
}

/// Reads the file behind a loop device (`$SYS_PATH/block/<loopN>/loop/backing_file`).
pub fn read_loop_backing_file(sys_path: &Path, device: &str) -> Result<String, String> {
    let path = sys_path.join("block").join(device).join("loop/backing_file");
    std::fs::read_to_string(&path)
        .map(|text| text.trim_end().to_owned())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The vmid of the container whose root mount this is, with the evidence, or why not.
pub fn container_id_from_root(root: &Mount, sys_path: &Path) -> Result<(String, String), String> {
    if let Some(id) = vmid_from_volume(&root.source) {
        return Ok((id, format!("rootfs volume {}", root.source)));
    }
    if let Some(id) = vmid_from_subvol_dir(&root.root) {
        return Ok((id, format!("rootfs subvol directory {}", root.root)));
    }
    if let Some(device) = loop_device(&root.source) {
        let file = read_loop_backing_file(sys_path, device)?;
        return match vmid_from_image_file(&file) {
            Some(id) => Ok((id, format!("rootfs image {file} on {}", root.source))),
            None => Err(format!(
                "the root filesystem's loop device {} is backed by {file}, not a Proxmox image",
                root.source
            )),
        };
    }
    Err(format!(
        "the root filesystem ({} at {}) is not a Proxmox-named volume, subvol directory or image",
        root.source, root.root
    ))
}

/// How the identity was derived, for /status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IdentitySources {
    pub host_name: String,
    pub container_id: String,
}

/// Derives host name, container id and instance. Never guesses: an underivable container id
/// stays `None` and the reason is returned for /status.
pub fn identity(config: &Config, platform: Platform, mounts: &[Mount]) -> (Identity, IdentitySources) {
    let hostname_path = config.proc_path.join("sys/kernel/hostname");
    let (host_name, host_source) = match std::fs::read_to_string(&hostname_path) {
        Ok(name) if !name.trim().is_empty() => (name.trim().to_owned(), hostname_path.display().to_string()),
        _ => {
            let etc = root_of(&config.proc_path).join("etc/hostname");
            match std::fs::read_to_string(&etc) {
                Ok(name) if !name.trim().is_empty() => (name.trim().to_owned(), etc.display().to_string()),
                _ => (String::new(), "not derivable: no hostname file readable".to_owned()),
            }
        }
    };
    let (container_id, id_source) = if let Some(id) = &config.container_id {
        (Some(id.clone()), "CONTAINER_ID".to_owned())
    } else if platform == Platform::Lxc {
        let root = mounts.iter().rev().find(|m| m.mount_point == "/");
        match root.map(|m| container_id_from_root(m, &config.sys_path)) {
            Some(Ok((id, evidence))) => (Some(id), evidence),
            Some(Err(why)) => (None, format!("not derivable: {why}; set CONTAINER_ID")),
            None => (
                None,
                "not derivable: no root mount in the mount table; set CONTAINER_ID".to_owned(),
            ),
        }
    } else {
        (None, format!("not applicable on a {}", platform.as_str()))
    };
    let instance = match (&config.instance_id, &container_id) {
        (Some(instance), _) => instance.clone(),
        (None, Some(id)) => format!("{host_name}:{id}"),
        (None, None) => host_name.clone(),
    };
    (
        Identity {
            host_name,
            container_id,
            instance,
        },
        IdentitySources {
            host_name: host_source,
            container_id: id_source,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmid_from_proxmox_volume_names() {
        assert_eq!(
            vmid_from_volume("/dev/mapper/pve-vm--101--disk--0").as_deref(),
            Some("101")
        );
        assert_eq!(
            vmid_from_volume("/dev/mapper/my--vg-vm--7--disk--12").as_deref(),
            Some("7")
        );
        assert_eq!(vmid_from_volume("rpool/data/subvol-104-disk-0").as_deref(), Some("104"));
        assert_eq!(vmid_from_volume("/dev/loop0"), None);
        assert_eq!(vmid_from_volume("/dev/mapper/pve-root"), None);
        assert_eq!(vmid_from_volume("/dev/mapper/pve-vm--abc--disk--0"), None);
    }

    #[test]
    fn vmid_from_directory_storage_and_raw_images() {
        assert_eq!(
            vmid_from_subvol_dir("/var/lib/vz/images/101/subvol-101-disk-0.subvol").as_deref(),
            Some("101")
        );
        // /var/lib/vz as its own filesystem: the root field starts at its root.
        assert_eq!(
            vmid_from_subvol_dir("/images/7/subvol-7-disk-12.subvol").as_deref(),
            Some("7")
        );
        assert_eq!(
            vmid_from_subvol_dir("/var/lib/vz/images/102/subvol-101-disk-0.subvol"),
            None
        );
        assert_eq!(vmid_from_subvol_dir("/srv/101/subvol-101-disk-0.subvol"), None);
        assert_eq!(
            vmid_from_subvol_dir("/var/lib/vz/images/101/vm-101-disk-0.subvol"),
            None
        );
        assert_eq!(vmid_from_subvol_dir("/var/lib/lxc/101/rootfs"), None);
        assert_eq!(vmid_from_subvol_dir("/"), None);
        assert_eq!(
            vmid_from_image_file("/var/lib/vz/images/9101/vm-9101-disk-0.raw\n").as_deref(),
            Some("9101")
        );
        assert_eq!(
            vmid_from_image_file("/mnt/pve/nfs/images/300/vm-300-disk-1.raw").as_deref(),
            Some("300")
        );
        assert_eq!(vmid_from_image_file("/var/lib/vz/images/101/vm-101-disk-0.qcow2"), None);
        assert_eq!(vmid_from_image_file("/var/lib/vz/images/101/vm-102-disk-0.raw"), None);
        assert_eq!(vmid_from_image_file("/root/disk.raw"), None);
        assert_eq!(loop_device("/dev/loop3"), Some("loop3"));
        assert_eq!(loop_device("/dev/loop"), None);
        assert_eq!(loop_device("/dev/loop-control"), None);
        assert_eq!(loop_device("/dev/vda"), None);
    }

    fn fixture_obs(tree: &str) -> Observations {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(tree);
        let raw = crate::config::RawConfig {
            proc_path: Some(base.join("proc").display().to_string()),
            pve_path: Some(base.join("etc/pve").display().to_string()),
            ..Default::default()
        };
        let config = crate::config::validate(&raw, &[]).unwrap();
        observe(&config)
    }

    #[test]
    fn detects_the_container_fixture_as_lxc() {
        let d = decide(&fixture_obs("lxc-container"), PlatformChoice::Auto);
        assert_eq!(d.platform, Platform::Lxc);
        assert!(!d.forced);
        let findings: Vec<_> = d.evidence.iter().map(|e| e.finding.as_str()).collect();
        assert!(findings.contains(&"container=lxc"), "{findings:?}");
        assert!(findings.contains(&"lxc"), "{findings:?}");
        assert!(
            findings.iter().any(|f| f.starts_with("lxcfs mounted over /proc/")),
            "{findings:?}"
        );
    }

    #[test]
    fn detects_the_host_fixture_as_proxmox() {
        let d = decide(&fixture_obs("proxmox-host"), PlatformChoice::Auto);
        assert_eq!(d.platform, Platform::Proxmox);
        assert!(
            d.evidence.iter().any(|e| e.finding.starts_with("pmxcfs")),
            "{:?}",
            d.evidence
        );
    }

    #[test]
    fn platform_variable_forces_and_says_so() {
        let d = decide(&fixture_obs("proxmox-host"), PlatformChoice::Host);
        assert_eq!(d.platform, Platform::Host);
        assert!(d.forced);
        let last = d.evidence.last().unwrap();
        assert_eq!(last.source, "PLATFORM");
        assert!(last.finding.contains("evidence alone says proxmox-host"));
    }

    #[test]
    fn nothing_found_is_a_plain_host() {
        let obs = Observations::default();
        assert_eq!(decide(&obs, PlatformChoice::Auto).platform, Platform::Host);
    }
}
