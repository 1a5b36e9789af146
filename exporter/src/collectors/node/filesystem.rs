//! Filesystem size, used and available bytes.
//!
//! Reads `$PROC_PATH/self/mountinfo` every collection (mounts come and go; octal escapes such
//! as `\040` are decoded by `parse::mountinfo`) and calls statvfs(3) on
//! `env.root_path` + each mount point.
//!
//! Produces `node_filesystem_{usage,avail,size}_bytes{device,mountpoint,fstype}` with
//! usage = (f_blocks − f_bfree)·f_frsize, avail = f_bavail·f_frsize, size = f_blocks·f_frsize,
//! and the exporter's own `metrics_exporter_filesystem_statvfs_timeouts_total` and
//! `metrics_exporter_filesystem_statvfs_hung_mounts`.
//!
//! Which mounts: node_exporter's default exclusions (mount points under /dev, /proc, /sys,
//! /run/credentials/*, /var/lib/docker/*, /var/lib/containers/storage/*; pseudo filesystem
//! types), plus `fuse.lxcfs` and the pmxcfs mount /etc/pve (cluster configuration, not
//! storage). A mount point mounted more than once is reported once, for the last (visible)
//! mount. A filesystem mounted at several points (bind mounts: one superblock, so one
//! `major:minor` in mountinfo, and the same statvfs answer at each) is reported once, at the
//! mount point nearest the root (fewest path components; on a tie, the first in mountinfo
//! order): a busybox container's /lib, /usr/lib, /lib64 and /usr/lib64 binds of the host's root
//! filesystem are one filesystem, reported at /lib.
//!
//! Hung mounts: a statvfs on a dead NFS server blocks in the kernel, uninterruptibly. Each
//! statvfs runs on its own thread; the collection waits for all of them until one shared
//! deadline (2 s) and then moves on. A thread still blocked is remembered, and while it is,
//! its mount is skipped: a second call would only queue behind the first and leak another
//! thread. Each collection in which a mount got no answer (timed out now, or still hung from
//! before) adds one to the timeouts counter; the gauge counts mounts hung right now.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::collectors::{Collector, Environment};
use crate::error::{CollectError, read_parsed};
use crate::model::{Kind, MetricDesc, OtelName, Scope, SnapshotBuilder, Unit};
use crate::parse::mountinfo::{self, Mount};

const FS_LABELS: &[&str] = &["device", "mountpoint", "fstype"];
const FS_OTEL_ATTRS: &[&str] = &[
    "system.device",
    "system.filesystem.mountpoint",
    "system.filesystem.type",
];

pub static USAGE: MetricDesc = MetricDesc {
    name: "node_filesystem_usage_bytes",
    help: "Bytes used: (blocks - free blocks) x fragment size.",
    kind: Kind::Gauge,
    unit: Unit::Bytes,
    labels: FS_LABELS,
    scope: Scope::Node,
    otel: Some(OtelName {
        name: "system.filesystem.usage",
        attributes: FS_OTEL_ATTRS,
        fixed: &[("system.filesystem.state", "used")],
    }),
};

pub static AVAIL: MetricDesc = MetricDesc {
    name: "node_filesystem_avail_bytes",
    help: "Bytes available to unprivileged users (f_bavail x fragment size).",
    kind: Kind::Gauge,
    unit: Unit::Bytes,
    labels: FS_LABELS,
    scope: Scope::Node,
    otel: Some(OtelName {
        name: "system.filesystem.usage",
        attributes: FS_OTEL_ATTRS,
        fixed: &[("system.filesystem.state", "free")],
    }),
};

pub static SIZE: MetricDesc = MetricDesc {
    name: "node_filesystem_size_bytes",
    help: "Filesystem size in bytes (blocks x fragment size).",
    kind: Kind::Gauge,
    unit: Unit::Bytes,
    labels: FS_LABELS,
    scope: Scope::Node,
    otel: Some(OtelName {
        name: "system.filesystem.limit",
        attributes: FS_OTEL_ATTRS,
        fixed: &[],
    }),
};

pub static STATVFS_TIMEOUTS: MetricDesc = MetricDesc {
    name: "metrics_exporter_filesystem_statvfs_timeouts_total",
    help: "Mount checks that got no statvfs answer within the deadline (timed out, or skipped while an earlier call is still hung).",
    kind: Kind::Counter,
    unit: Unit::Count("{timeout}"),
    labels: &[],
    scope: Scope::Node,
    otel: None,
};

pub static STATVFS_HUNG: MetricDesc = MetricDesc {
    name: "metrics_exporter_filesystem_statvfs_hung_mounts",
    help: "Mounts whose statvfs call is blocked right now; they are skipped until it returns.",
    kind: Kind::Gauge,
    unit: Unit::Count("{mount}"),
    labels: &[],
    scope: Scope::Node,
    otel: None,
};

/// How long a collection waits for statvfs answers.
pub const STATVFS_TIMEOUT: Duration = Duration::from_secs(2);

/// The statvfs fields used, in their raw units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub frsize: u64,
}

impl FsStats {
    fn bytes(count: u64, frsize: u64) -> f64 {
        // u128: blocks x frsize can exceed u64 on a corrupt or exotic filesystem.
        (u128::from(count) * u128::from(frsize)) as f64
    }
    pub fn size_bytes(&self) -> f64 {
        Self::bytes(self.blocks, self.frsize)
    }
    pub fn usage_bytes(&self) -> f64 {
        Self::bytes(self.blocks.saturating_sub(self.bfree), self.frsize)
    }
    pub fn avail_bytes(&self) -> f64 {
        Self::bytes(self.bavail, self.frsize)
    }
}

/// The statvfs function, injectable so tests can simulate a hung mount.
pub type StatFn = Arc<dyn Fn(&Path) -> std::io::Result<FsStats> + Send + Sync>;

/// statvfs(3) on `path`.
#[allow(clippy::unnecessary_cast)] // fsblkcnt_t and c_ulong are not u64 on every target
pub fn statvfs(path: &Path) -> std::io::Result<FsStats> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut buf = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c_path is a valid NUL-terminated string and buf points to writable memory of the
    // right size; statvfs only writes into buf.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the whole struct.
    let s = unsafe { buf.assume_init() };
    Ok(FsStats {
        blocks: s.f_blocks as u64,
        bfree: s.f_bfree as u64,
        bavail: s.f_bavail as u64,
        frsize: s.f_frsize as u64,
    })
}

const EXCLUDED_TYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "erofs",
    "sysfs",
    "tracefs",
    // Not in node_exporter's list: lxcfs's virtual /proc and /sys files in containers.
    "fuse.lxcfs",
];

/// `^/(dev|proc|sys)($|/)`
fn is_at_or_under(mount_point: &str, dir: &str) -> bool {
    mount_point
        .strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `^/(run/credentials|var/lib/docker|var/lib/containers/storage)/.+`
fn is_strictly_under(mount_point: &str, dir: &str) -> bool {
    mount_point
        .strip_prefix(dir)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| !rest.is_empty())
}

/// Whether a mount is left out (see the module documentation for the rules).
pub fn excluded(m: &Mount) -> bool {
    let mp = m.mount_point.as_str();
    ["/dev", "/proc", "/sys"].iter().any(|d| is_at_or_under(mp, d))
        || ["/run/credentials", "/var/lib/docker", "/var/lib/containers/storage"]
            .iter()
            .any(|d| is_strictly_under(mp, d))
        || EXCLUDED_TYPES.contains(&m.fs_type.as_str())
        // pmxcfs: the Proxmox cluster configuration filesystem, a fixed small view, not storage.
        || (mp == "/etc/pve" && m.fs_type == "fuse" && m.source == "/dev/fuse")
}

/// The mounts to report, in mount-table order: exclusions applied, of a mount point mounted
/// more than once only the last (the one visible at that path), and of a filesystem (one
/// `major:minor`) only its mount point nearest the root, the first such in the table on a tie.
pub fn select_mounts(mounts: &[Mount]) -> Vec<&Mount> {
    let visible: Vec<&Mount> = mounts
        .iter()
        .enumerate()
        .filter(|(i, m)| !mounts[i + 1..].iter().any(|later| later.mount_point == m.mount_point))
        .map(|(_, m)| m)
        .filter(|m| !excluded(m))
        .collect();
    let depth = |m: &Mount| m.mount_point.split('/').filter(|c| !c.is_empty()).count();
    // Per device, the index (into `visible`) of the mount that represents it.
    let mut chosen: HashMap<&str, usize> = HashMap::new();
    for (i, m) in visible.iter().enumerate() {
        chosen
            .entry(m.device_number.as_str())
            .and_modify(|best| {
                if depth(m) < depth(visible[*best]) {
                    *best = i;
                }
            })
            .or_insert(i);
    }
    visible
        .iter()
        .enumerate()
        .filter(|(i, m)| chosen.get(m.device_number.as_str()) == Some(i))
        .map(|(_, m)| *m)
        .collect()
}

pub struct FilesystemCollector {
    mountinfo: PathBuf,
    root: PathBuf,
    stat: StatFn,
    timeout: Duration,
    /// Paths whose statvfs thread has not returned; the flag turns true when it does.
    hung: HashMap<PathBuf, Arc<AtomicBool>>,
    timeouts_total: u64,
}

impl std::fmt::Debug for FilesystemCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesystemCollector")
            .field("mountinfo", &self.mountinfo)
            .field("root", &self.root)
            .field("timeout", &self.timeout)
            .field("hung", &self.hung.keys().collect::<Vec<_>>())
            .field("timeouts_total", &self.timeouts_total)
            .finish_non_exhaustive()
    }
}

impl FilesystemCollector {
    pub fn new(env: &Environment) -> Self {
        Self::with_statvfs(env, Arc::new(statvfs), STATVFS_TIMEOUT)
    }

    /// A collector with another statvfs function and deadline (tests).
    pub fn with_statvfs(env: &Environment, stat: StatFn, timeout: Duration) -> Self {
        FilesystemCollector {
            mountinfo: env.proc_path.join("self/mountinfo"),
            root: env.root_path.clone(),
            stat,
            timeout,
            hung: HashMap::new(),
            timeouts_total: 0,
        }
    }

    /// Mounts whose statvfs is blocked right now.
    pub fn hung_mounts(&self) -> usize {
        self.hung.values().filter(|done| !done.load(Ordering::Acquire)).count()
    }

    pub fn timeouts_total(&self) -> u64 {
        self.timeouts_total
    }

    /// statvfs of every path, each on its own thread, answers collected until one deadline.
    /// `None` for a path that got no answer (hung now or before).
    pub fn stat_all(&mut self, paths: &[PathBuf]) -> Vec<Option<std::io::Result<FsStats>>> {
        self.hung.retain(|_, done| !done.load(Ordering::Acquire));
        let mut results: Vec<Option<std::io::Result<FsStats>>> = paths.iter().map(|_| None).collect();
        let (tx, rx) = mpsc::channel();
        let mut pending: HashMap<usize, Arc<AtomicBool>> = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            if self.hung.contains_key(path) {
                self.timeouts_total += 1;
                tracing::debug!(path = %path.display(), "statvfs still hung from an earlier collection; skipped");
                continue;
            }
            let done = Arc::new(AtomicBool::new(false));
            let (stat, tx, path_owned, flag) = (self.stat.clone(), tx.clone(), path.clone(), done.clone());
            let spawned = std::thread::Builder::new().name("statvfs".into()).spawn(move || {
                let result = stat(&path_owned);
                flag.store(true, Ordering::Release);
                // The receiver is gone when the collection stopped waiting: nothing to do.
                let _ = tx.send((i, result));
            });
            match spawned {
                Ok(_) => {
                    pending.insert(i, done);
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        drop(tx);
        let deadline = Instant::now() + self.timeout;
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((i, result)) => {
                    pending.remove(&i);
                    results[i] = Some(result);
                }
                Err(_) => break,
            }
        }
        for (i, done) in pending {
            self.timeouts_total += 1;
            tracing::warn!(path = %paths[i].display(), timeout = ?self.timeout, "statvfs timed out; the mount is skipped until the call returns");
            self.hung.insert(paths[i].clone(), done);
        }
        results
    }
}

impl Collector for FilesystemCollector {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
        let mounts = read_parsed(&self.mountinfo, mountinfo::parse)?;
        let selected = select_mounts(&mounts);
        let paths: Vec<PathBuf> = selected
            .iter()
            .map(|m| self.root.join(m.mount_point.trim_start_matches('/')))
            .collect();
        let results = self.stat_all(&paths);
        for (m, result) in selected.iter().zip(results) {
            let labels = [m.source.as_str(), m.mount_point.as_str(), m.fs_type.as_str()];
            match result {
                Some(Ok(s)) => {
                    out.push(&USAGE, labels, s.usage_bytes());
                    out.push(&AVAIL, labels, s.avail_bytes());
                    out.push(&SIZE, labels, s.size_bytes());
                }
                Some(Err(e)) => {
                    tracing::debug!(mountpoint = %m.mount_point, error = %e, "statvfs failed; mount skipped");
                }
                None => {}
            }
        }
        let none: [&str; 0] = [];
        out.push(&STATVFS_TIMEOUTS, none, self.timeouts_total as f64);
        out.push(&STATVFS_HUNG, none, self.hung_mounts() as f64);
        Ok(())
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = vec![format!(
            "mounts from {}, statvfs under {} with a {:?} deadline",
            self.mountinfo.display(),
            self.root.display(),
            self.timeout
        )];
        for path in self
            .hung
            .iter()
            .filter(|(_, d)| !d.load(Ordering::Acquire))
            .map(|(p, _)| p)
        {
            notes.push(format!(
                "statvfs of {} is hung: skipped until it returns",
                path.display()
            ));
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mount of a filesystem of its own (a device number no other test mount has).
    fn mount(mp: &str, fs: &str, source: &str) -> Mount {
        on_device(mp, fs, source, &format!("{source} at {mp}"))
    }

    fn on_device(mp: &str, fs: &str, source: &str, device: &str) -> Mount {
        Mount {
            mount_id: 1,
            parent_id: 0,
            device_number: device.into(),
            root: "/".into(),
            mount_point: mp.into(),
            fs_type: fs.into(),
            source: source.into(),
            super_options: "rw".into(),
        }
    }

    #[test]
    fn exclusion_rules() {
        assert!(excluded(&mount("/dev", "tmpfs", "none")));
        assert!(excluded(&mount("/dev/shm", "tmpfs", "tmpfs")));
        assert!(!excluded(&mount("/devices", "ext4", "/dev/sda1")));
        assert!(excluded(&mount("/proc/sys", "proc", "proc")));
        assert!(excluded(&mount("/sys/fs/cgroup", "cgroup2", "cgroup2")));
        assert!(excluded(&mount("/run/credentials/x.service", "tmpfs", "none")));
        assert!(!excluded(&mount("/run/credentials", "tmpfs", "none")));
        assert!(excluded(&mount("/var/lib/docker/overlay2/abc", "ext4", "/dev/sda1")));
        assert!(!excluded(&mount("/var/lib/docker", "ext4", "/dev/sda1")));
        assert!(excluded(&mount("/var/lib/lxcfs", "fuse.lxcfs", "lxcfs")));
        assert!(excluded(&mount("/etc/pve", "fuse", "/dev/fuse")));
        assert!(!excluded(&mount("/mnt/fuse", "fuse", "/dev/fuse")));
        assert!(!excluded(&mount("/", "ext4", "/dev/mapper/pve-root")));
    }

    #[test]
    fn duplicate_mount_point_reports_the_last() {
        let mounts = vec![
            mount("/data", "ext4", "/dev/a"),
            mount("/", "ext4", "/dev/r"),
            mount("/data", "xfs", "/dev/b"),
        ];
        let s = select_mounts(&mounts);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].mount_point, "/");
        assert_eq!((s[1].fs_type.as_str(), s[1].source.as_str()), ("xfs", "/dev/b"));
    }

    #[test]
    fn a_filesystem_is_reported_once_at_its_mount_point_nearest_the_root() {
        // What a busybox container showed: the host's root bind-mounted four times.
        let mounts = vec![
            on_device("/", "ext4", "/dev/loop3", "7:3"),
            on_device("/usr/lib", "ext4", "/dev/vda", "254:0"),
            on_device("/lib", "ext4", "/dev/vda", "254:0"),
            on_device("/usr/lib64", "ext4", "/dev/vda", "254:0"),
            on_device("/lib64", "ext4", "/dev/vda", "254:0"),
            on_device("/srv/data", "xfs", "/dev/sdb1", "8:17"),
            on_device("/srv/data/www", "xfs", "/dev/sdb1", "8:17"),
            on_device("/dev/shm", "tmpfs", "shm", "0:44"),
        ];
        let s: Vec<&str> = select_mounts(&mounts).iter().map(|m| m.mount_point.as_str()).collect();
        // /lib and /lib64 tie at one component: /lib comes first in the table.
        assert_eq!(s, ["/", "/lib", "/srv/data"]);
        // The first on a tie, whatever the names.
        let swapped = vec![mounts[4].clone(), mounts[2].clone()];
        let s: Vec<&str> = select_mounts(&swapped).iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(s, ["/lib64"]);
        // An excluded mount does not stand in for a reported one of the same device.
        let with_excluded = vec![
            on_device("/dev", "tmpfs", "none", "0:41"),
            on_device("/run/lxc", "tmpfs", "none", "0:41"),
        ];
        let s: Vec<&str> = select_mounts(&with_excluded)
            .iter()
            .map(|m| m.mount_point.as_str())
            .collect();
        assert_eq!(s, ["/run/lxc"]);
    }

    #[test]
    fn byte_arithmetic() {
        let s = FsStats {
            blocks: 100,
            bfree: 30,
            bavail: 20,
            frsize: 4096,
        };
        assert_eq!(s.size_bytes(), 409600.0);
        assert_eq!(s.usage_bytes(), 70.0 * 4096.0);
        assert_eq!(s.avail_bytes(), 20.0 * 4096.0);
        let odd = FsStats {
            blocks: 10,
            bfree: 20,
            bavail: 5,
            frsize: 1,
        };
        assert_eq!(odd.usage_bytes(), 0.0);
    }

    #[test]
    fn statvfs_of_root_and_missing_path() {
        let s = statvfs(Path::new("/")).unwrap();
        assert!(s.blocks > 0 && s.frsize > 0);
        assert!(statvfs(Path::new("/no/such/path/at/all")).is_err());
    }
}
