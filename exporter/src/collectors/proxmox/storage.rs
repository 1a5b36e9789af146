//! Collector `storage`: size, used and available bytes of every Proxmox storage this node can
//! use, without API token or HTTP.
//!
//! Reads `$PVE_PATH/.members` (this node's name), `$PVE_PATH/storage.cfg` (section config,
//! re-parsed only when its mtime or size changed), `$PROC_PATH/self/mountinfo` (whether a network
//! storage is mounted) and `$PVE_PATH/.rrd` (pmxcfs's dump of what pvestatd measured).
//!
//! Produces `pve_storage_info{storage,type,content,shared}` (1) for every storage enabled on
//! this node, and `pve_storage_size_bytes`, `pve_storage_used_bytes`,
//! `pve_storage_avail_bytes{storage,type}`:
//! - path-based types (`dir`, `btrfs`, `nfs`, `cifs`, `cephfs`, `glusterfs`): statvfs(3) of the
//!   path under the file-tree root, with the filesystem collector's hung-mount deadline (2 s;
//!   a call that got no answer is not repeated until it returns). used = blocks - bfree, as
//!   Proxmox's `PVE::Tools::df`. Like Proxmox (`status` of the Dir/NFS/CIFS/CephFS plugins), a
//!   network storage not mounted at its path from its own source (`server:export` for nfs,
//!   `//server/share<subdir>` for cifs, `…:<subdir>` or `ceph-fuse` for cephfs, as the plugins'
//!   `*_is_mounted` check), or a `dir` with `is_mountpoint` whose mount point is not mounted, is
//!   inactive: no size series, because a statvfs there would measure the
//!   filesystem below it. A statvfs that fails or hangs leaves the storage's size series out and
//!   is reported naming the path; the `.rrd` is *not* used instead, because pvestatd's own value
//!   for that storage would come from the same hanging statvfs (Proxmox shows it as inactive).
//! - every other type (`zfspool`, `lvmthin`, `lvm`, `rbd`, `pbs`, `iscsi`, `zfs`, ...): total and
//!   used from this node's line in `.rrd` (pvestatd sends them every 10 s, pmxcfs drops lines
//!   older than 5 minutes); `U` leaves that series out. The `.rrd` has no available bytes, and
//!   total - used is not what every type calls available (PBS, Ceph), so
//!   `pve_storage_avail_bytes` is left out for these types rather than derived.
//!
//! Which storages: those of `storage.cfg` without `disable`, whose `nodes` list (comma,
//! semicolon or space separated) is absent or names this node; `local` is never restricted by
//! `nodes` (Proxmox removes the key). `shared` is `1` when the storage says `shared 1` or its
//! type is shared by nature (pve-storage `@SHARED_STORAGE`). `content` is as written, or where
//! the line is absent the plugin's default list that Proxmox applies (`plugindata` `content`,
//! e.g. `images,rootdir` for `dir` and `zfspool`, `images` for `nfs`, `backup` for `pbs`).
//! As pve-storage's `parse_config` does, a `local` storage that is absent, not a `dir`, or a
//! `dir` with a path other than `/var/lib/vz` is replaced by `dir: local` at `/var/lib/vz` with
//! content `backup,images,iso,rootdir,snippets,vztmpl`, and a `dir: local` without a path gets
//! `/var/lib/vz`: every Proxmox node has it, whatever storage.cfg says.
//! The default path `/mnt/pve/<id>` of `nfs`, `cifs`, `cephfs` (and `glusterfs` before PVE 9)
//! applies when their `path` line is absent, as in the plugins' `check_config`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::collectors::node::filesystem::{FilesystemCollector, STATVFS_TIMEOUT, StatFn, statvfs};
use crate::collectors::{Collector, Environment};
use crate::error::{CollectError, read_optional};
use crate::model::{Kind, MetricDesc, SnapshotBuilder, Unit};
use crate::parse::mountinfo;
use crate::parse::pve;
use crate::parse::pve_section::{Section, SectionConfig, parse_section_config};
use crate::parse::pve_state::parse_rrd;

const fn storage_metric(
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
) -> MetricDesc {
    let unit = if matches!(kind, Kind::Info) {
        Unit::Count("1")
    } else {
        Unit::Bytes
    };
    super::metrics::node(name, help, kind, unit, labels)
}

const L_STORAGE: &[&str] = &["storage", "type"];

pub static STORAGE_SIZE: MetricDesc = storage_metric(
    "pve_storage_size_bytes",
    "Size of a Proxmox storage usable on this node (path types: statvfs; others: pvestatd's total in /etc/pve/.rrd).",
    Kind::Gauge,
    L_STORAGE,
);
pub static STORAGE_USED: MetricDesc = storage_metric(
    "pve_storage_used_bytes",
    "Used bytes of a Proxmox storage (path types: statvfs blocks - bfree; others: pvestatd's used in /etc/pve/.rrd).",
    Kind::Gauge,
    L_STORAGE,
);
pub static STORAGE_AVAIL: MetricDesc = storage_metric(
    "pve_storage_avail_bytes",
    "Bytes available to unprivileged writers on a path-based Proxmox storage (statvfs bavail); absent for types measured through .rrd.",
    Kind::Gauge,
    L_STORAGE,
);
pub static STORAGE_INFO: MetricDesc = storage_metric(
    "pve_storage_info",
    "A storage of /etc/pve/storage.cfg enabled on this node, with its content types (as written, or the type's default) and whether it is shared.",
    Kind::Info,
    &["storage", "type", "content", "shared"],
);

/// Every metric of the `storage` collector.
pub static STORAGE_METRICS: &[&MetricDesc] = &[&STORAGE_SIZE, &STORAGE_USED, &STORAGE_AVAIL, &STORAGE_INFO];

/// pve-storage `@SHARED_STORAGE`: types whose storages are shared whatever `shared` says.
const SHARED_TYPES: &[&str] = &[
    "iscsi",
    "nfs",
    "cifs",
    "rbd",
    "cephfs",
    "iscsidirect",
    "zfs",
    "drbd",
    "pbs",
];

/// Where every node's `local` storage is (pve-storage `parse_config`).
const LOCAL_PATH: &str = "/var/lib/vz";
/// The content of the `local` storage pve-storage puts in place of a missing or unusable one.
const LOCAL_CONTENT: &str = "backup,images,iso,rootdir,snippets,vztmpl";

/// The content list pve-storage gives a storage without a `content` line: the second element
/// of its plugin's `plugindata` `content` (sorted here; Perl joins a hash in no set order).
/// `None` for a type without one (a third-party plugin): the label stays empty.
fn default_content(storage_type: &str) -> Option<&'static str> {
    Some(match storage_type {
        "dir" | "btrfs" | "lvmthin" | "zfspool" => "images,rootdir",
        "nfs" | "cifs" | "glusterfs" | "iscsi" | "iscsidirect" | "lvm" | "rbd" | "zfs" => "images",
        "cephfs" | "pbs" => "backup",
        "esxi" => "import",
        _ => return None,
    })
}

/// Types measured by statvfs of their path; the value is the filesystem types that must be
/// mounted at the path (empty: a plain directory, mounted only if `is_mountpoint` says so).
const PATH_TYPES: &[(&str, &[&str])] = &[
    ("dir", &[]),
    ("btrfs", &[]),
    ("nfs", &["nfs", "nfs4"]),
    ("cifs", &["cifs", "smb3"]),
    ("cephfs", &["ceph", "fuse.ceph-fuse"]),
    ("glusterfs", &["fuse.glusterfs"]),
];

/// A file parsed again only when its modification time or size changed.
#[derive(Debug)]
pub(crate) struct CachedFile<T> {
    path: PathBuf,
    stamp: Option<(SystemTime, u64)>,
    value: Option<Arc<T>>,
}

impl<T> CachedFile<T> {
    pub(crate) fn new(path: PathBuf) -> Self {
        CachedFile {
            path,
            stamp: None,
            value: None,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed file; `Ok(None)` when it does not exist. A parse error is not cached: the next
    /// collection tries again.
    pub(crate) fn get<E: std::fmt::Display>(
        &mut self,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<Arc<T>>, CollectError> {
        let metadata = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (self.stamp, self.value) = (None, None);
                return Ok(None);
            }
            Err(e) => return Err(CollectError::io(&self.path, e)),
        };
        let stamp = (metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH), metadata.len());
        if let (Some(value), Some(old)) = (&self.value, self.stamp)
            && old == stamp
        {
            return Ok(Some(value.clone()));
        }
        (self.stamp, self.value) = (None, None);
        let Some(text) = read_optional(&self.path)? else {
            return Ok(None);
        };
        let value = Arc::new(parse(&text).map_err(|e| CollectError::parse(&self.path, e))?);
        (self.stamp, self.value) = (Some(stamp), Some(value.clone()));
        Ok(Some(value))
    }
}

/// This node's name from `.members` (what pmxcfs calls the local node).
pub(crate) fn local_node(pve_path: &Path) -> Result<String, CollectError> {
    let path = pve_path.join(".members");
    crate::error::read_parsed(&path, pve::parse_members).map(|m| m.nodename)
}

/// JSONSchema `parse_boolean`: `1|on|yes|true` and `0|off|no|false`, any case.
fn parse_boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// What the collector decided about one storage of `storage.cfg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedStorage {
    pub id: String,
    pub storage_type: String,
    pub content: String,
    pub shared: bool,
    pub source: Source,
}

/// What must be mounted for a path-based storage to be active, as its pve-storage plugin checks
/// it (`nfs_is_mounted`, `cifs_is_mounted`, `cephfs_is_mounted`; DirPlugin's `is_mountpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountCheck {
    pub mount_point: String,
    /// The filesystem types accepted there (any type when empty).
    pub fs_types: &'static [&'static str],
    /// What the mount's source must be; `None`: any source.
    pub source: Option<MountSource>,
}

/// The mount source a network storage must be mounted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// Exactly this, or this with one trailing `/` (`server:export`, `//server/share`).
    Exactly(String),
    /// CephFS: a kernel mount whose source ends with `:<subdir>`, or `ceph-fuse`.
    Ceph { subdir: String },
}

impl MountSource {
    fn matches(&self, source: &str) -> bool {
        match self {
            MountSource::Exactly(want) => source == want || source.strip_suffix('/') == Some(want.as_str()),
            MountSource::Ceph { subdir } => {
                source == "ceph-fuse" || source.strip_suffix(subdir.as_str()).is_some_and(|s| s.ends_with(':'))
            }
        }
    }
}

/// Where a storage's size comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// statvfs of this path (as in the config; the collector joins it to the file-tree root),
    /// provided `mounted` is `None` or its check holds.
    Path { path: String, mounted: Option<MountCheck> },
    /// This node's `.rrd` line.
    Rrd,
    /// A path-based storage without a path: nothing to measure (reported).
    NoPath,
}

/// The storages of `config` enabled on `node`, and the problems found on the way (a line of a
/// storage that is not understood costs that key, as in Proxmox, never the other storages).
pub fn select_storages(config: &SectionConfig, node: &str) -> (Vec<SelectedStorage>, Vec<String>) {
    let mut problems: Vec<String> = config.errors.iter().map(|e| e.to_string()).collect();
    let mut selected = Vec::new();
    let keeps_local = config
        .sections
        .iter()
        .find(|s| s.id == "local")
        .is_some_and(|s| s.section_type == "dir" && s.get("path").is_none_or(|p| p == LOCAL_PATH));
    if !keeps_local {
        // First, as Proxmox's `priority => 0` puts it.
        selected.push(SelectedStorage {
            id: "local".into(),
            storage_type: "dir".into(),
            content: LOCAL_CONTENT.into(),
            shared: false,
            source: Source::Path {
                path: LOCAL_PATH.into(),
                mounted: None,
            },
        });
    }
    for section in &config.sections {
        let is_local = section.id == "local";
        if is_local && !keeps_local {
            continue;
        }
        match section.boolean("disable") {
            Ok(Some(true)) => continue,
            Ok(_) => {}
            Err(e) => problems.push(e.to_string()),
        }
        if !is_local && !usable_on(section, node) {
            continue;
        }
        let shared = match section.boolean("shared") {
            Ok(flag) => flag.unwrap_or(false),
            Err(e) => {
                problems.push(e.to_string());
                false
            }
        } || SHARED_TYPES.contains(&section.section_type.as_str());
        let source = match PATH_TYPES.iter().find(|(t, _)| *t == section.section_type) {
            None => Source::Rrd,
            Some((kind, fs_types)) => {
                let default_path = if is_local {
                    Some(LOCAL_PATH.to_string())
                } else {
                    (!fs_types.is_empty()).then(|| format!("/mnt/pve/{}", section.id))
                };
                match section.get("path").map(str::to_string).or(default_path) {
                    None => {
                        problems.push(format!(
                            "line {}: {} storage '{}' has no path",
                            section.line, kind, section.id
                        ));
                        Source::NoPath
                    }
                    Some(path) => {
                        let check = |mount_point: &str| MountCheck {
                            mount_point: mount_point.to_string(),
                            fs_types,
                            source: None,
                        };
                        let mounted = if fs_types.is_empty() {
                            // DirPlugin `parse_is_mountpoint`: a boolean, or the mount point.
                            section.get("is_mountpoint").and_then(|v| match parse_boolean(v) {
                                Some(true) => Some(check(&path)),
                                Some(false) => None,
                                None => Some(check(v)),
                            })
                        } else {
                            let source = mount_source(section);
                            if source.is_none() && matches!(*kind, "nfs" | "cifs") {
                                problems.push(format!(
                                    "line {}: {} storage '{}' lacks {}: its mount is checked by mount point and type only",
                                    section.line,
                                    kind,
                                    section.id,
                                    if *kind == "nfs" { "server or export" } else { "server or share" }
                                ));
                            }
                            Some(MountCheck { source, ..check(&path) })
                        };
                        Source::Path { path, mounted }
                    }
                }
            }
        };
        selected.push(SelectedStorage {
            id: section.id.clone(),
            storage_type: section.section_type.clone(),
            content: section
                .get("content")
                .or_else(|| default_content(&section.section_type))
                .unwrap_or_default()
                .to_string(),
            shared,
            source,
        });
    }
    (selected, problems)
}

/// `nodes` absent, or listing `node` (pve-node-list: split on `,`, `;` and spaces).
fn usable_on(section: &Section, node: &str) -> bool {
    match section.get("nodes") {
        None => true,
        Some(list) => list
            .split(|c: char| c == ',' || c == ';' || c.is_ascii_whitespace())
            .any(|n| n == node),
    }
}

/// The source a network storage's mount must have, as its plugin builds it (an IPv6 server in
/// brackets); `None` for other types, or when a key it needs is missing.
fn mount_source(section: &Section) -> Option<MountSource> {
    let server = || {
        section
            .get("server")
            .map(|server| match server.parse::<std::net::Ipv6Addr>() {
                Ok(_) => format!("[{server}]"),
                Err(_) => server.to_string(),
            })
    };
    match section.section_type.as_str() {
        "nfs" => Some(MountSource::Exactly(format!(
            "{}:{}",
            server()?,
            section.get("export")?
        ))),
        "cifs" => Some(MountSource::Exactly(format!(
            "//{}/{}{}",
            server()?,
            section.get("share")?,
            section.get("subdir").unwrap_or_default()
        ))),
        "cephfs" => Some(MountSource::Ceph {
            subdir: section.get("subdir").unwrap_or("/").to_string(),
        }),
        _ => None,
    }
}

/// Whether the check's mount point is mounted with one of its filesystem types and its source.
fn is_mounted(mounts: &[mountinfo::Mount], check: &MountCheck) -> bool {
    let wanted = check.mount_point.trim_end_matches('/');
    let wanted = if wanted.is_empty() { "/" } else { wanted };
    mounts.iter().any(|m| {
        m.mount_point == wanted
            && (check.fs_types.is_empty() || check.fs_types.contains(&m.fs_type.as_str()))
            && check.source.as_ref().is_none_or(|source| source.matches(&m.source))
    })
}

/// The `storage` collector.
pub struct StorageCollector {
    pve_path: PathBuf,
    mountinfo: PathBuf,
    root: PathBuf,
    config: CachedFile<SectionConfig>,
    /// Used only for its statvfs with a deadline and its memory of hung calls.
    statvfs: FilesystemCollector,
}

impl std::fmt::Debug for StorageCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageCollector")
            .field("pve_path", &self.pve_path)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl StorageCollector {
    pub fn new(env: &Environment) -> Self {
        Self::with_statvfs(env, Arc::new(statvfs), STATVFS_TIMEOUT)
    }

    /// A collector with another statvfs function and deadline (tests: a hung mount).
    pub fn with_statvfs(env: &Environment, stat: StatFn, timeout: Duration) -> Self {
        StorageCollector {
            pve_path: env.pve_path.clone(),
            mountinfo: env.proc_path.join("self/mountinfo"),
            root: env.root_path.clone(),
            config: CachedFile::new(env.pve_path.join("storage.cfg")),
            statvfs: FilesystemCollector::with_statvfs(env, stat, timeout),
        }
    }
}

impl Collector for StorageCollector {
    fn name(&self) -> &'static str {
        "storage"
    }

    fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
        let node = local_node(&self.pve_path)?;
        let Some(config) = self.config.get(|text| Ok::<_, String>(parse_section_config(text)))? else {
            return Ok(());
        };
        let mut errors: Vec<CollectError> = Vec::new();
        let (storages, problems) = select_storages(&config, &node);
        for problem in problems {
            errors.push(CollectError::parse(self.config.path(), problem));
        }

        let mut mounts: Option<Vec<mountinfo::Mount>> = None;
        let mut paths: Vec<(usize, PathBuf)> = Vec::new();
        let mut rrd_wanted = false;
        for (index, storage) in storages.iter().enumerate() {
            let labels = [
                storage.id.as_str(),
                storage.storage_type.as_str(),
                storage.content.as_str(),
                if storage.shared { "1" } else { "0" },
            ];
            out.push(&STORAGE_INFO, labels, 1.0);
            match &storage.source {
                Source::Rrd => rrd_wanted = true,
                Source::NoPath => {}
                Source::Path { path, mounted } => {
                    if let Some(check) = mounted {
                        if mounts.is_none() {
                            match crate::error::read_parsed(&self.mountinfo, mountinfo::parse) {
                                Ok(list) => mounts = Some(list),
                                Err(e) => {
                                    errors.push(e);
                                    mounts = Some(Vec::new());
                                }
                            }
                        }
                        if !is_mounted(mounts.as_deref().unwrap_or_default(), check) {
                            tracing::debug!(storage = %storage.id, mount_point = %check.mount_point, "storage not mounted: inactive, no size");
                            continue;
                        }
                    }
                    paths.push((index, self.root.join(path.trim_start_matches('/'))));
                }
            }
        }

        let stat_paths: Vec<PathBuf> = paths.iter().map(|(_, p)| p.clone()).collect();
        let results = self.statvfs.stat_all(&stat_paths);
        for ((index, path), result) in paths.iter().zip(results) {
            let storage = &storages[*index];
            let labels = [storage.id.as_str(), storage.storage_type.as_str()];
            match result {
                // Proxmox's `status` treats a total of 0 as an inactive storage.
                Some(Ok(s)) if s.blocks > 0 => {
                    out.push(&STORAGE_SIZE, labels, s.size_bytes());
                    out.push(&STORAGE_USED, labels, s.usage_bytes());
                    out.push(&STORAGE_AVAIL, labels, s.avail_bytes());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => errors.push(CollectError::io(path, e)),
                None => errors.push(CollectError::Other(format!(
                    "{}: statvfs got no answer within the deadline (hung mount?); storage '{}' skipped until it returns",
                    path.display(),
                    storage.id
                ))),
            }
        }

        if rrd_wanted {
            let rrd_path = self.pve_path.join(".rrd");
            match read_optional(&rrd_path) {
                Ok(Some(text)) => {
                    let dump = parse_rrd(&text);
                    for error in &dump.errors {
                        errors.push(CollectError::parse(&rrd_path, error));
                    }
                    for storage in storages.iter().filter(|s| s.source == Source::Rrd) {
                        let Some(line) = dump.storage(&node, &storage.id) else {
                            continue;
                        };
                        let labels = [storage.id.as_str(), storage.storage_type.as_str()];
                        if let Some(total) = line.total_bytes {
                            out.push(&STORAGE_SIZE, labels, total);
                        }
                        if let Some(used) = line.used_bytes {
                            out.push(&STORAGE_USED, labels, used);
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        super::guests::summarize(errors)
    }

    fn notes(&self) -> Vec<String> {
        vec![format!(
            "storages from {}; path types by statvfs under {}, others from {}",
            self.config.path().display(),
            self.root.display(),
            self.pve_path.join(".rrd").display()
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(text: &str, node: &str) -> (Vec<SelectedStorage>, Vec<String>) {
        select_storages(&parse_section_config(text), node)
    }

    #[test]
    fn nodes_disable_and_local() {
        let text = "dir: local\n\tpath /var/lib/vz\n\tnodes pve9\n\n\
                    zfspool: a\n\tpool rpool\n\tnodes pve2, pve1\n\n\
                    zfspool: b\n\tpool rpool\n\tnodes pve2;pve3\n\n\
                    lvmthin: c\n\tthinpool data\n\tdisable\n\n\
                    lvmthin: d\n\tthinpool data\n\tdisable 0\n";
        let (selected, problems) = select(text, "pve1");
        assert_eq!(problems, Vec::<String>::new());
        let ids: Vec<&str> = selected.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, vec!["local", "a", "d"]);
    }

    #[test]
    fn sources_shared_and_default_paths() {
        let text = "dir: local\n\tpath /var/lib/vz\n\tcontent iso\n\n\
                    nfs: nas\n\tserver 10.0.0.1\n\texport /x\n\n\
                    cifs: smb\n\tpath /srv/smb\n\tserver fd00::5\n\tshare pve\n\tsubdir /ct\n\n\
                    cifs: smb-broken\n\tpath /srv/smb2\n\n\
                    cephfs: cfs\n\n\
                    dir: usb\n\tpath /mnt/usb\n\tis_mountpoint yes\n\tshared 1\n\n\
                    dir: other\n\tpath /data\n\tis_mountpoint /data/mnt\n\n\
                    btrfs: broken\n\n\
                    rbd: ceph\n\tpool x\n";
        let (selected, problems) = select(text, "n");
        let by_id = |id: &str| selected.iter().find(|s| s.id == id).unwrap().clone();
        assert_eq!(
            by_id("local").source,
            Source::Path {
                path: "/var/lib/vz".into(),
                mounted: None
            }
        );
        assert_eq!(by_id("local").content, "iso");
        assert!(!by_id("local").shared);
        assert_eq!(
            by_id("nas").source,
            Source::Path {
                path: "/mnt/pve/nas".into(),
                mounted: Some(MountCheck {
                    mount_point: "/mnt/pve/nas".into(),
                    fs_types: &["nfs", "nfs4"],
                    source: Some(MountSource::Exactly("10.0.0.1:/x".into())),
                })
            }
        );
        assert!(by_id("nas").shared, "nfs is shared by nature");
        assert_eq!(
            by_id("nas").content,
            "images",
            "no content line: the nfs plugin's default"
        );
        assert_eq!(by_id("ceph").content, "images", "rbd's default");
        assert_eq!(by_id("usb").content, "images,rootdir", "dir's default");
        assert_eq!(
            by_id("smb").source,
            Source::Path {
                path: "/srv/smb".into(),
                mounted: Some(MountCheck {
                    mount_point: "/srv/smb".into(),
                    fs_types: &["cifs", "smb3"],
                    source: Some(MountSource::Exactly("//[fd00::5]/pve/ct".into())),
                })
            }
        );
        assert_eq!(
            by_id("usb").source,
            Source::Path {
                path: "/mnt/usb".into(),
                mounted: Some(MountCheck {
                    mount_point: "/mnt/usb".into(),
                    fs_types: &[],
                    source: None,
                })
            }
        );
        assert!(by_id("usb").shared);
        assert_eq!(
            by_id("other").source,
            Source::Path {
                path: "/data".into(),
                mounted: Some(MountCheck {
                    mount_point: "/data/mnt".into(),
                    fs_types: &[],
                    source: None,
                })
            }
        );
        assert_eq!(by_id("broken").source, Source::NoPath);
        assert_eq!(by_id("ceph").source, Source::Rrd);
        assert!(by_id("ceph").shared);
        assert_eq!(
            by_id("cfs").source,
            Source::Path {
                path: "/mnt/pve/cfs".into(),
                mounted: Some(MountCheck {
                    mount_point: "/mnt/pve/cfs".into(),
                    fs_types: &["ceph", "fuse.ceph-fuse"],
                    source: Some(MountSource::Ceph { subdir: "/".into() }),
                })
            }
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("'smb-broken' lacks server or share"),
            "{problems:?}"
        );
        assert!(problems[1].contains("'broken' has no path"), "{problems:?}");
    }

    /// pve-storage `parse_config`: `local` is always `dir` at /var/lib/vz, first, on every node.
    #[test]
    fn local_is_put_in_place_as_proxmox_does() {
        let replaced = |text: &str| {
            let (selected, problems) = select(text, "pve1");
            assert_eq!(problems, Vec::<String>::new(), "{text}");
            let local: Vec<&SelectedStorage> = selected.iter().filter(|s| s.id == "local").collect();
            assert_eq!(local.len(), 1, "{text}");
            assert_eq!(selected[0].id, "local", "first: {text}");
            local[0].clone()
        };
        let synthesized = SelectedStorage {
            id: "local".into(),
            storage_type: "dir".into(),
            content: "backup,images,iso,rootdir,snippets,vztmpl".into(),
            shared: false,
            source: Source::Path {
                path: "/var/lib/vz".into(),
                mounted: None,
            },
        };
        // Absent, another type (even disabled: the replacement has no `disable`), another path.
        for text in [
            "zfspool: tank\n\tpool tank\n",
            "zfspool: local\n\tpool rpool\n\tdisable\n",
            "dir: local\n\tpath /srv/vz\n\tcontent iso\n",
        ] {
            assert_eq!(replaced(text), synthesized, "{text}");
        }
        // Kept: its own content (or dir's default), /var/lib/vz when it has no path, no node
        // restriction; a disabled one stays disabled.
        let kept = replaced("dir: local\n\tnodes pve9\n\tshared 1\n");
        assert_eq!(kept.content, "images,rootdir");
        assert!(kept.shared);
        assert_eq!(
            kept.source,
            Source::Path {
                path: "/var/lib/vz".into(),
                mounted: None
            }
        );
        let (selected, _) = select("dir: local\n\tpath /var/lib/vz\n\tdisable 1\n", "pve1");
        assert!(selected.is_empty(), "{selected:?}");
    }

    #[test]
    fn a_bad_boolean_is_reported_and_the_storage_kept() {
        let (selected, problems) = select("dir: a\n\tpath /a\n\tdisable maybe\n", "n");
        assert_eq!(selected.len(), 2, "a, and the local every node has");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("line 3:"), "{problems:?}");
    }

    #[test]
    fn a_cached_file_is_parsed_again_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storage.cfg");
        let mut cached = CachedFile::<String>::new(path.clone());
        let parses = std::cell::Cell::new(0);
        let parse = |text: &str| {
            parses.set(parses.get() + 1);
            Ok::<_, String>(text.to_string())
        };
        assert_eq!(cached.get(parse).unwrap(), None, "absent");
        std::fs::write(&path, "dir: a\n").unwrap();
        assert_eq!(
            cached.get(parse).unwrap().as_deref().map(String::as_str),
            Some("dir: a\n")
        );
        assert_eq!(
            cached.get(parse).unwrap().as_deref().map(String::as_str),
            Some("dir: a\n")
        );
        assert_eq!(parses.get(), 1, "unchanged: not parsed again");
        std::fs::write(&path, "dir: bb\n").unwrap();
        assert_eq!(
            cached.get(parse).unwrap().as_deref().map(String::as_str),
            Some("dir: bb\n")
        );
        assert_eq!(parses.get(), 2, "size changed");
        let same_size = "dir: cc\n";
        std::fs::write(&path, same_size).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
            .unwrap();
        assert_eq!(
            cached.get(parse).unwrap().as_deref().map(String::as_str),
            Some(same_size)
        );
        assert_eq!(parses.get(), 3, "same size, other mtime");
        let failing = |_: &str| Err::<String, _>("bad");
        std::fs::write(&path, "dir: ddd\n").unwrap();
        let error = cached.get(failing).unwrap_err().to_string();
        assert!(
            error.contains(&path.display().to_string()) && error.contains("bad"),
            "{error}"
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(cached.get(parse).unwrap(), None, "removed");
    }

    #[test]
    fn mount_checks() {
        let mount = |mp: &str, fs: &str, source: &str| mountinfo::Mount {
            mount_id: 1,
            parent_id: 0,
            device_number: "0:1".into(),
            root: "/".into(),
            mount_point: mp.into(),
            fs_type: fs.into(),
            source: source.into(),
            super_options: "rw".into(),
        };
        let check = |mp: &str, fs_types: &'static [&'static str], source: Option<MountSource>| MountCheck {
            mount_point: mp.into(),
            fs_types,
            source,
        };
        let nfs = |source: &str| Some(MountSource::Exactly(source.into()));
        let mounts = [
            mount("/", "ext4", "/dev/sda1"),
            mount("/mnt/pve/nas", "nfs4", "10.0.0.1:/export/pve/"),
            mount("/mnt/pve/cfs", "ceph", "10.0.0.7,10.0.0.8:/"),
            mount("/mnt/pve/fuse", "fuse.ceph-fuse", "ceph-fuse"),
        ];
        let nas = &["nfs", "nfs4"];
        assert!(is_mounted(
            &mounts,
            &check("/mnt/pve/nas", nas, nfs("10.0.0.1:/export/pve"))
        ));
        assert!(is_mounted(&mounts, &check("/mnt/pve/nas/", nas, None)));
        // Another server or export at the path is not this storage (Proxmox: inactive).
        assert!(!is_mounted(
            &mounts,
            &check("/mnt/pve/nas", nas, nfs("10.0.0.2:/export/pve"))
        ));
        assert!(!is_mounted(
            &mounts,
            &check("/mnt/pve/nas", nas, nfs("10.0.0.1:/export"))
        ));
        assert!(!is_mounted(&mounts, &check("/mnt/pve/nas", &["cifs"], None)));
        assert!(!is_mounted(&mounts, &check("/mnt/pve/other", &[], None)));
        assert!(is_mounted(&mounts, &check("/", &[], None)));
        let ceph = |subdir: &str| Some(MountSource::Ceph { subdir: subdir.into() });
        let ceph_types = &["ceph", "fuse.ceph-fuse"];
        assert!(is_mounted(&mounts, &check("/mnt/pve/cfs", ceph_types, ceph("/"))));
        assert!(!is_mounted(&mounts, &check("/mnt/pve/cfs", ceph_types, ceph("/vm"))));
        assert!(is_mounted(&mounts, &check("/mnt/pve/fuse", ceph_types, ceph("/vm"))));
    }
}
