//! This node's guest configs, `$PVE_PATH/lxc/*.conf` and `$PVE_PATH/qemu-server/*.conf`,
//! scanned once per collection for every collector that lists local guests (`guests`,
//! `backup`).
//!
//! Reads the two directory listings and a `stat` of every config on each scan; a config is
//! read and parsed again only when its inode, size or mtime changed. Produces a map from guest
//! to parsed config (`ConfigEntry`) and the problems met on the way.
//!
//! Why shared: with 1000 guests the scan is about 3 ms of the 70 ms a collection costs, and
//! a second collector repeating it in the same collection doubled that. Collectors run one
//! after another, so "the same collection" needs no clock: each consumer uses every scan at
//! most once. A consumer that already used the latest scan scans again (it is in a new
//! collection); one that has not takes the scan another made before it in this collection.
//! A consumer running alone therefore scans every time, and nobody ever sees a scan older
//! than its own previous collection.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use super::guests::{Key, Stamp, parse_vmid};
use crate::error::CollectError;
use crate::parse::pve::{self, GuestConfig, GuestType};

/// A parsed guest config and what identified the file version it came from.
#[derive(Debug)]
pub(crate) struct ConfigEntry {
    pub(crate) stamp: Stamp,
    pub(crate) config: GuestConfig,
}

/// The scan every collector made from one [`crate::collectors::Environment`] shares (its
/// clones share it too). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LocalConfigs {
    shared: Arc<Mutex<Scan>>,
}

/// The latest scan.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Counts scans; a consumer remembers the number it last used.
    number: u64,
    pub(crate) configs: BTreeMap<Key, ConfigEntry>,
    /// What the latest scan could not read or parse, handed to every consumer of it.
    errors: Vec<CollectError>,
}

impl LocalConfigs {
    /// This collection's configs for a consumer that last used scan `*used` (0 before its
    /// first collection): scanned now when it used the latest scan already, else the scan
    /// another collector made in this collection. The scan's problems are added to `errors`.
    /// The lock is held for as long as the guard lives: a consumer stuck in a read of a hung
    /// pmxcfs would block the other too, which the scan itself would have done.
    pub(crate) fn current(
        &self,
        pve_path: &Path,
        used: &mut u64,
        errors: &mut Vec<CollectError>,
    ) -> MutexGuard<'_, Scan> {
        let (mut scan, poisoned) = match self.shared.lock() {
            Ok(scan) => (scan, false),
            Err(poisoned) => {
                // A consumer panicked while scanning: the map may be half updated, so the
                // next scan starts from nothing.
                self.shared.clear_poison();
                let mut scan = poisoned.into_inner();
                scan.configs.clear();
                (scan, true)
            }
        };
        if poisoned || *used == scan.number {
            scan.errors.clear();
            let Scan {
                configs, errors: found, ..
            } = &mut *scan;
            refresh(pve_path, configs, found);
            scan.number += 1;
        }
        *used = scan.number;
        errors.extend(scan.errors.iter().cloned());
        scan
    }
}

impl Scan {
    pub(crate) fn get(&self, key: &Key) -> Option<&ConfigEntry> {
        self.configs.get(key)
    }

    /// The configured guest's name, `None` when it has no config or no `hostname`/`name`.
    pub(crate) fn name(&self, key: &Key) -> Option<&str> {
        self.configs.get(key).and_then(|c| c.config.name.as_deref())
    }
}

/// Brings `configs` up to date with `$PVE_PATH/{lxc,qemu-server}/*.conf`.
fn refresh(pve_path: &Path, configs: &mut BTreeMap<Key, ConfigEntry>, errors: &mut Vec<CollectError>) {
    let mut seen = BTreeSet::new();
    for (kind, sub) in [(GuestType::Lxc, "lxc"), (GuestType::Qemu, "qemu-server")] {
        let dir = pve_path.join(sub);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                errors.push(CollectError::io(&dir, e));
                // Keep what we had: an unreadable directory does not make guests vanish.
                seen.extend(configs.keys().filter(|(k, _)| *k == kind).copied());
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(vmid) = name.to_str().and_then(|n| n.strip_suffix(".conf")).and_then(parse_vmid) else {
                continue;
            };
            // Relative to the open directory (fstatat): a stat of the full path walks every
            // component again, once per guest and collection. A link (not what pmxcfs makes)
            // is followed as before.
            let meta = match entry.file_type() {
                Ok(t) if t.is_symlink() => std::fs::metadata(entry.path()),
                _ => entry.metadata(),
            };
            let meta = match meta {
                Ok(meta) if meta.is_file() => meta,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    errors.push(CollectError::io(&entry.path(), e));
                    continue;
                }
            };
            let key = (kind, vmid);
            let stamp = Stamp::of(&meta);
            if configs.get(&key).is_some_and(|c| c.stamp == stamp) {
                seen.insert(key);
                continue;
            }
            let path = entry.path();
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let config = pve::parse_guest_config(&String::from_utf8_lossy(&bytes), kind);
                    if !config.ignored_lines.is_empty() {
                        errors.push(CollectError::parse(
                            &path,
                            format!(
                                "skipped {} malformed line(s), first: {:?}",
                                config.ignored_lines.len(),
                                config.ignored_lines[0]
                            ),
                        ));
                    }
                    configs.insert(key, ConfigEntry { stamp, config });
                    seen.insert(key);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    errors.push(CollectError::io(&path, e));
                    if configs.contains_key(&key) {
                        seen.insert(key);
                    }
                }
            }
        }
    }
    configs.retain(|k, _| seen.contains(k));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(pve: &Path, sub: &str, vmid: u32, text: &str) {
        std::fs::create_dir_all(pve.join(sub)).unwrap();
        std::fs::write(pve.join(sub).join(format!("{vmid}.conf")), text).unwrap();
    }

    /// A `$PVE_PATH` with one config and a fresh shared scan over it.
    fn one_config(sub: &str, vmid: u32, text: &str) -> (tempfile::TempDir, LocalConfigs) {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), sub, vmid, text);
        (dir, LocalConfigs::default())
    }

    fn names(scan: &Scan) -> Vec<(Key, Option<String>)> {
        scan.configs.iter().map(|(k, c)| (*k, c.config.name.clone())).collect()
    }

    #[test]
    fn two_consumers_share_one_scan_per_collection_and_see_every_change() {
        let (dir, shared) = one_config("lxc", 101, "hostname: web\n");
        let pve = dir.path();
        let (mut guests, mut backup) = (0, 0);
        let mut errors = Vec::new();

        // Collection 1: the first consumer scans, the second takes that scan.
        let first = shared.current(pve, &mut guests, &mut errors).number;
        write_config(pve, "lxc", 102, "hostname: db\n");
        let scan = shared.current(pve, &mut backup, &mut errors);
        assert_eq!(
            scan.number, first,
            "the second consumer reuses the scan of this collection"
        );
        assert_eq!(names(&scan), vec![((GuestType::Lxc, 101), Some("web".into()))]);
        drop(scan);

        // Collection 2: the first consumer has used the latest scan, so it scans again and
        // finds the config written meanwhile; the second sees the same.
        let scan = shared.current(pve, &mut guests, &mut errors);
        assert_eq!(scan.number, first + 1);
        assert_eq!(scan.name(&(GuestType::Lxc, 102)), Some("db"));
        drop(scan);
        assert_eq!(shared.current(pve, &mut backup, &mut errors).number, first + 1);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn a_consumer_alone_scans_on_every_collection() {
        let (dir, shared) = one_config("qemu-server", 200, "name: vm\n");
        let pve = dir.path();
        let mut used = 0;
        let mut errors = Vec::new();
        assert_eq!(
            shared
                .current(pve, &mut used, &mut errors)
                .name(&(GuestType::Qemu, 200)),
            Some("vm")
        );
        std::fs::remove_file(pve.join("qemu-server/200.conf")).unwrap();
        assert!(shared.current(pve, &mut used, &mut errors).configs.is_empty());
    }

    #[test]
    fn each_consumer_of_a_scan_gets_its_problems() {
        let (dir, shared) = one_config("lxc", 101, "hostname: web\nthis line has no colon\n");
        let pve = dir.path();
        let (mut guests, mut backup) = (0, 0);
        let (mut guest_errors, mut backup_errors) = (Vec::new(), Vec::new());
        drop(shared.current(pve, &mut guests, &mut guest_errors));
        drop(shared.current(pve, &mut backup, &mut backup_errors));
        for errors in [&guest_errors, &backup_errors] {
            assert_eq!(errors.len(), 1, "{errors:?}");
            let text = errors[0].to_string();
            assert!(
                text.contains("lxc/101.conf") && text.contains("skipped 1 malformed line"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_panic_while_the_scan_is_held_makes_the_next_consumer_scan_from_nothing() {
        let (dir, shared) = one_config("lxc", 101, "hostname: web\n");
        let pve = dir.path();
        let (mut guests, mut backup) = (0, 0);
        let mut errors = Vec::new();
        let clone = shared.clone();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _scan = clone.current(pve, &mut guests, &mut Vec::new());
            panic!("a collector bug");
        }));
        assert!(panicked.is_err());
        write_config(pve, "lxc", 101, "hostname: renamed\n");
        // `backup` has not used this scan, but it cannot be trusted: scanned again.
        let scan = shared.current(pve, &mut backup, &mut errors);
        assert_eq!(scan.name(&(GuestType::Lxc, 101)), Some("renamed"));
    }
}
