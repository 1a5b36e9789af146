//! The record of everything the rig created, in creation order, written to `<rig dir>/state.json`
//! after every step so that `cargo xtask rig down` (another process, maybe after a crash) can
//! remove exactly that and nothing else. Unwinding runs the undo steps newest first, so children
//! go before parents (a cgroup before its parent, a mount before its loop device, a loop device
//! before its image). Reads `/proc/<pid>/stat` and `/sys/block/loopN/loop/backing_file` to make
//! sure a process or loop device is still the one the rig made before touching it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::command::run_quietly;

/// One thing the rig made, and how to remove it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Undo {
    /// A directory tree the rig created (its own dir, a container's rootfs). Mounts below it
    /// have their own `Unmount` entries, which unwind first.
    RemoveTree(PathBuf),
    /// A cgroup directory the rig created; removed when empty.
    RemoveCgroup(PathBuf),
    /// A cgroup LXC made for a container of the rig (`lxc/<vmid>`, `lxc.monitor/<vmid>`, whose
    /// vmid was free): LXC removes it at stop; whatever is left goes, deepest first.
    RemoveCgroupTree(PathBuf),
    /// A network device the rig created (bridge, tap); its veth peers go with the containers.
    DeleteLink(String),
    Unmount(PathBuf),
    /// A loop device the rig attached, with the image it must still be backed by.
    DetachLoop {
        device: String,
        backing: PathBuf,
    },
    /// A process the rig started (lxcfs, QEMU), identified by pid and start time (field 22
    /// of /proc/<pid>/stat), so that a recycled pid is never signalled.
    Kill {
        pid: i32,
        start_time: u64,
    },
    /// A container the rig started in its own lxcpath.
    StopContainer {
        lxcpath: PathBuf,
        name: String,
    },
}

/// The start time of a process (clock ticks after boot), the identity check for [`Undo::Kill`].
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// True when `pid` is still the process that started at `start_time` and has not exited
/// (a zombie has exited: only its parent's wait is missing).
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    state != Some("Z") && process_start_time(pid) == Some(start_time)
}

/// The persisted list of undo steps.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    entries: Vec<Undo>,
}

impl Ledger {
    /// A new ledger written to `path` (the rig's state file).
    pub fn create(path: &Path) -> anyhow::Result<Ledger> {
        let ledger = Ledger {
            path: path.to_path_buf(),
            entries: Vec::new(),
        };
        ledger.save()?;
        Ok(ledger)
    }

    /// The ledger a previous `up` left behind.
    pub fn load(path: &Path) -> anyhow::Result<Ledger> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let entries = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Ledger {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn entries(&self) -> &[Undo] {
        &self.entries
    }

    /// Records one more thing made, and persists the list before anything else can fail.
    pub fn record(&mut self, undo: Undo) -> anyhow::Result<()> {
        self.entries.push(undo);
        self.save()
    }

    fn save(&self) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(&self.entries)?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).with_context(|| format!("writing {}", self.path.display()))
    }

    /// Removes everything recorded, newest first. Each step is attempted even when an earlier
    /// one failed; the state file goes last (with the rig dir, itself a `RemoveTree` entry).
    pub fn unwind(&mut self) {
        while let Some(undo) = self.entries.pop() {
            let started = std::time::Instant::now();
            undo_one(&undo);
            if started.elapsed() > Duration::from_millis(500) {
                eprintln!("rig teardown: {undo:?} took {:.1} s", started.elapsed().as_secs_f64());
            }
            if self.path.parent().is_some_and(Path::exists) {
                let _ = self.save();
            }
        }
    }
}

fn undo_one(undo: &Undo) {
    match undo {
        Undo::StopContainer { lxcpath, name } => {
            let lxcpath = lxcpath.display().to_string();
            let state = crate::command::run("lxc-info", &["-P", &lxcpath, "-n", name, "-s"]).unwrap_or_default();
            if state.contains("RUNNING") || state.contains("STARTING") || state.contains("FROZEN") {
                run_quietly("lxc-stop", &["-P", &lxcpath, "-n", name, "-k"]);
            }
        }
        Undo::Kill { pid, start_time } => {
            if !process_alive(*pid, *start_time) {
                return;
            }
            for signal in [libc::SIGTERM, libc::SIGKILL] {
                // SAFETY: kill has no memory effects; the pid is the rig's own process, checked
                // by its start time just above.
                unsafe { libc::kill(*pid, signal) };
                for _ in 0..100 {
                    // Reaps it when it is this process's child (a test); ECHILD otherwise.
                    // SAFETY: waitpid with a null status pointer writes nothing.
                    unsafe { libc::waitpid(*pid, std::ptr::null_mut(), libc::WNOHANG) };
                    if !process_alive(*pid, *start_time) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Undo::RemoveCgroup(dir) => {
            // A cgroup is busy for a moment after its last process exited.
            for _ in 0..50 {
                match std::fs::remove_dir(dir) {
                    Ok(()) => return,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            eprintln!("rig teardown: cannot remove cgroup {} (not empty?)", dir.display());
        }
        Undo::RemoveCgroupTree(dir) => {
            for d in crate::truth::subtree(dir).iter().rev() {
                undo_one(&Undo::RemoveCgroup(d.clone()));
            }
        }
        Undo::DeleteLink(name) => {
            if Path::new("/sys/class/net").join(name).exists() {
                run_quietly("ip", &["link", "del", name]);
            }
        }
        Undo::Unmount(dir) => {
            if is_mount_point(dir) && !run_quietly("umount", &[&dir.display().to_string()]) {
                run_quietly("umount", &["-l", &dir.display().to_string()]);
            }
        }
        Undo::DetachLoop { device, backing } => {
            let name = device.trim_start_matches("/dev/");
            let file = format!("/sys/block/{name}/loop/backing_file");
            let current = std::fs::read_to_string(file).unwrap_or_default();
            if Path::new(current.trim()) == backing {
                run_quietly("losetup", &["-d", device]);
            }
        }
        Undo::RemoveTree(dir) => {
            if let Err(e) = std::fs::remove_dir_all(dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                eprintln!("rig teardown: cannot remove {}: {e}", dir.display());
            }
        }
    }
}

/// True when `dir` is a mount point in this mount namespace (/proc/self/mountinfo).
pub fn is_mount_point(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = dir.display().to_string();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape_mount_field(m) == wanted)
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
pub fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            out.push((bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mount_field(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape_mount_field(r"/plain"), "/plain");
        assert_eq!(unescape_mount_field(r"/x\134y"), r"/x\y");
    }

    #[test]
    fn own_start_time_is_found() {
        let me = std::process::id() as i32;
        assert!(process_start_time(me).is_some_and(|t| t > 0));
        assert_eq!(process_start_time(-5), None);
    }

    #[test]
    fn ledger_round_trip_and_unwind_order() {
        let dir = std::env::temp_dir().join(format!("rig-ledger-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        let state = dir.join("state.json");
        let mut ledger = Ledger::create(&state).unwrap();
        ledger.record(Undo::RemoveTree(dir.clone())).unwrap();
        ledger.record(Undo::RemoveCgroup(dir.join("a/b"))).unwrap();
        let loaded = Ledger::load(&state).unwrap();
        assert_eq!(loaded.entries(), ledger.entries());
        // Newest first: a/b is removed as an (empty) "cgroup" before the tree goes.
        ledger.unwind();
        assert!(!dir.exists());
        assert!(ledger.entries().is_empty());
    }
}
