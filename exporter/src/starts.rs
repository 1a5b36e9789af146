//! Since when counters have been counting: the node's boot, a container's start, a guest's
//! start, the exporter's start. Produces the instants that the engine and the `guests` collector
//! declare in the snapshot ([`CountsSince`], [`GuestStart`](crate::model::GuestStart)) and that
//! the OTLP conversion sends as start times.
//!
//! Reads:
//! - `$PROC_PATH/stat` `btime`: the boot time, whole seconds since the epoch. The kernel's own
//!   counters (`/proc/stat` CPU time, `/proc/net/dev`, `/proc/pressure`) count from boot. Inside
//!   an LXC container lxcfs copies this line from the host's file unchanged (only `cpu` lines
//!   are rewritten), so it is the host's boot there too.
//! - `$PROC_PATH/<pid>/stat` field 22 `starttime`: when a process started, in clock ticks since
//!   boot; `btime + starttime / CLK_TCK` is its wall-clock start (the same sum `ps` makes, and
//!   lxcfs's container uptime is the time since the container's init started).
//! - `cgroup.procs` of a guest's cgroup, level by level from the top: the oldest process of the
//!   first level that holds any is the guest's init (an LXC container: `ns`, or `ns/init.scope`
//!   when systemd is its init) or its QEMU process (a VM's `<vmid>.scope`). Every process of a
//!   guest descends from that one or joined later, and the guest's cgroup counters and its
//!   veth/tap devices were all zero before it ran, so its start is where they count from. One
//!   approximation: a QEMU started with `-daemonize` is the child it forked during start-up, so
//!   the CPU its parent used before the fork was counted a moment before that start.
//!
//! A guest's start is read when the guest is first seen and again only after it restarted
//! ([`StartSlot`] holds it meanwhile): never per collection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{CollectError, ParseError, read_parsed, read_text};
use crate::model::{CountsSince, LabelValue, SnapshotBuilder};
use crate::parse;

/// `starttime` (field 22 of `/proc/<pid>/stat`): clock ticks after boot at which the process
/// started. Fields are counted after the last `)`, since the command name may hold spaces and
/// parentheses.
pub fn parse_start_ticks(stat: &str) -> Result<u64, ParseError> {
    // After ")" comes field 3 (state); starttime is field 22, the 20th from there.
    let field = crate::parse::pid_stat_fields(stat)
        .ok_or_else(|| ParseError::new("no ')' after the command name"))?
        .nth(19)
        .ok_or_else(|| ParseError::new("fewer than 22 fields"))?;
    field
        .parse()
        .map_err(|_| ParseError::new(format!("starttime is not an unsigned integer: {field:?}")))
}

/// The wall-clock instant `ticks` clock ticks after a boot at `boot_seconds` (exact: no float).
pub fn instant(boot_seconds: u64, ticks: u64, ticks_per_second: u64) -> SystemTime {
    let hz = ticks_per_second.max(1);
    let after_boot = Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz);
    UNIX_EPOCH + Duration::from_secs(boot_seconds) + after_boot
}

/// Seconds since the Unix epoch, the unit of `*_start_time_seconds` gauges.
pub fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// USER_HZ, the unit of `starttime`.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // 100 is USER_HZ on every Linux architecture; sysconf failing is theoretical.
    u64::try_from(hz).ok().filter(|&hz| hz > 0).unwrap_or(100)
}

/// `btime` of `$PROC_PATH/stat`.
pub fn read_boot_seconds(proc_path: &Path) -> Result<u64, CollectError> {
    read_parsed(&proc_path.join("stat"), parse::stat::parse_btime)
}

/// The start of process `pid` in clock ticks after boot (`pid` may be `self`).
pub fn read_start_ticks(proc_path: &Path, pid: &str) -> Result<u64, CollectError> {
    read_parsed(&proc_path.join(pid).join("stat"), parse_start_ticks)
}

/// Since when the node's own counters have been counting, given `btime`: the boot on a host;
/// inside a container, the start of its init (PID 1 of the exporter's PID namespace), because
/// there the node collectors read the container's cgroup and interfaces, created with it.
pub fn read_node_start(proc_path: &Path, boot_seconds: u64, in_container: bool) -> Result<SystemTime, CollectError> {
    if !in_container {
        return Ok(instant(boot_seconds, 0, 1));
    }
    let ticks = read_start_ticks(proc_path, "1")?;
    Ok(instant(boot_seconds, ticks, ticks_per_second()))
}

/// Levels of a guest's cgroup tree searched for its first process: init sits at most two below
/// the guest cgroup (`lxc/<vmid>/ns/init.scope`); the bound only stops a pathological tree.
const MAX_LEVELS: usize = 6;

/// The start (ticks after boot) of the oldest process of the first level of `cgroup`'s tree
/// that holds processes; `None` when no level holds one (a guest still starting) or when every
/// process of that level exited before its start was read (a younger one deeper down is not
/// the guest's first).
pub fn read_first_process_ticks(proc_path: &Path, cgroup: &Path) -> Result<Option<u64>, CollectError> {
    let mut level = vec![cgroup.to_path_buf()];
    let mut pids = Vec::new();
    for _ in 0..MAX_LEVELS {
        pids.clear();
        for dir in &level {
            let path = dir.join("cgroup.procs");
            let text = read_text(&path)?;
            parse::cgroup::parse_pids_into(&text, &mut pids).map_err(|e| CollectError::parse(&path, e))?;
        }
        let mut oldest = None;
        for pid in &pids {
            match read_start_ticks(proc_path, &pid.to_string()) {
                Ok(ticks) => oldest = Some(oldest.map_or(ticks, |o: u64| o.min(ticks))),
                // Exited between the two reads: the others still answer.
                Err(e) if e.is_vanished() => {}
                Err(e) => return Err(e),
            }
        }
        if !pids.is_empty() {
            return Ok(oldest);
        }
        level = children(&level)?;
        if level.is_empty() {
            break;
        }
    }
    Ok(None)
}

/// The child cgroups (directories) of every directory of `level`.
fn children(level: &[PathBuf]) -> Result<Vec<PathBuf>, CollectError> {
    let mut next = Vec::new();
    for dir in level {
        let entries = std::fs::read_dir(dir).map_err(|e| CollectError::io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| CollectError::io(dir, e))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                next.push(entry.path());
            }
        }
    }
    Ok(next)
}

/// The boot time and clock rate every guest start is computed with, and the place guests
/// collectors declare starts through.
#[derive(Debug)]
pub struct GuestStarts {
    proc_path: PathBuf,
    ticks_per_second: u64,
    /// `btime`, read once: every guest's start is an offset from it.
    boot: Option<u64>,
}

/// Attempts at reading one guest's start before giving up until the guest restarts: a guest
/// seen while it is still starting has no process for a moment.
const ATTEMPTS: u8 = 3;

/// One guest's start, kept with the guest: read when it is first needed and again only after
/// [`forget`](StartSlot::forget) (the guest restarted).
#[derive(Debug, Default, Clone)]
pub struct StartSlot {
    start: Option<SystemTime>,
    attempts: u8,
}

impl StartSlot {
    /// The guest restarted (its cgroup was replaced): its start is read again.
    pub fn forget(&mut self) {
        *self = StartSlot::default();
    }
}

impl GuestStarts {
    pub fn new(proc_path: &Path) -> Self {
        GuestStarts {
            proc_path: proc_path.to_path_buf(),
            ticks_per_second: ticks_per_second(),
            boot: None,
        }
    }

    /// The start of the guest whose cgroup is `cgroup`, read on the first calls after the
    /// slot was created or forgotten and kept from then on.
    pub fn start(&mut self, slot: &mut StartSlot, cgroup: &Path) -> Option<SystemTime> {
        if slot.start.is_none() && slot.attempts < ATTEMPTS {
            slot.attempts += 1;
            match self.read(cgroup) {
                Ok(start) => slot.start = start,
                Err(e) => {
                    tracing::debug!(error = %e, "guest start not known: its counters start at their first observation")
                }
            }
        }
        slot.start
    }

    /// Declares in `out` the start of the guest whose identity labels are `identity`, if
    /// known, and returns it.
    pub fn declare(
        &mut self,
        slot: &mut StartSlot,
        cgroup: &Path,
        identity: &Arc<[LabelValue]>,
        out: &mut SnapshotBuilder,
    ) -> Option<SystemTime> {
        let start = self.start(slot, cgroup)?;
        out.guest_start(identity, start);
        Some(start)
    }

    fn read(&mut self, cgroup: &Path) -> Result<Option<SystemTime>, CollectError> {
        let boot = match self.boot {
            Some(boot) => boot,
            None => *self.boot.insert(read_boot_seconds(&self.proc_path)?),
        };
        let ticks = read_first_process_ticks(&self.proc_path, cgroup)?;
        Ok(ticks.map(|ticks| instant(boot, ticks, self.ticks_per_second)))
    }
}

/// Declares the start of every node-scope cumulative family of `out` not declared yet: the
/// exporter's own counters (`metrics_exporter_*`, `process_*`) count from zero since this
/// process started; every other node counter is the kernel's, counting since the node started
/// (see [`read_node_start`]). An interface created after boot counted nothing before it
/// existed, so the boot is still where its count began. An unknown start is left unknown.
pub fn declare_node_starts(out: &mut SnapshotBuilder, node: Option<SystemTime>, exporter: Option<SystemTime>) {
    use crate::model::{Kind, Scope};
    for family in out.families_mut() {
        let desc = family.desc;
        let cumulative = matches!(desc.kind, Kind::Counter | Kind::Histogram);
        if desc.scope != Scope::Node || !cumulative || family.since != CountsSince::Unknown {
            continue;
        }
        let own = desc.name.starts_with("metrics_exporter_") || desc.name.starts_with("process_");
        if let Some(start) = if own { exporter } else { node } {
            family.since = CountsSince::Instant(start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `/proc/<pid>/stat` line (bash), with a command name that has spaces and a `)`.
    const STAT: &str = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1234 0 0 0 12 34 0 0 20 0 1 0 987654 9999 123 18446744073709551615 1 1 0 0 0 0 65536 4 65536 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn start_ticks() {
        assert_eq!(parse_start_ticks(STAT), Ok(987654));
        assert!(parse_start_ticks("4242 (cut) S 1 2 3").is_err());
        assert!(parse_start_ticks("no parenthesis").is_err());
        let bad = STAT.replace(" 987654 ", " x ");
        assert!(parse_start_ticks(&bad).is_err());
    }

    #[test]
    fn instants_are_exact() {
        let boot = 1_732_185_325;
        assert_eq!(instant(boot, 0, 100), UNIX_EPOCH + Duration::from_secs(boot));
        assert_eq!(
            instant(boot, 987_654, 100),
            UNIX_EPOCH + Duration::from_secs(boot + 9876) + Duration::from_millis(540)
        );
        assert_eq!(
            instant(boot, 1, 300),
            UNIX_EPOCH + Duration::from_secs(boot) + Duration::from_nanos(3_333_333)
        );
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn stat_of(pid: u32, ticks: u64) -> String {
        format!("{pid} (init) S 0 1 1 0 -1 4194560 1 0 0 0 1 1 0 0 20 0 1 0 {ticks} 1 1 1 1\n")
    }

    /// A host tree: btime, three processes, and a systemd container whose init sits in
    /// `ns/init.scope` beside a younger `lxc-attach` process in `ns/.lxc`, with older
    /// processes elsewhere that are not the guest's.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("proc/stat"), "cpu  1 2 3 4 5 6 7 8 9 10\nbtime 1700000000\n");
        write(&root.join("proc/1/stat"), &stat_of(1, 5));
        write(&root.join("proc/300/stat"), &stat_of(300, 250_050));
        write(&root.join("proc/301/stat"), &stat_of(301, 250_000));
        write(&root.join("proc/302/stat"), &stat_of(302, 900_000));
        write(&root.join("proc/303/stat"), &stat_of(303, 240_000));
        let guest = root.join("cg/lxc/101");
        write(&guest.join("cgroup.procs"), "");
        write(&guest.join("ns/cgroup.procs"), "");
        write(&guest.join("ns/init.scope/cgroup.procs"), "301\n");
        write(&guest.join("ns/.lxc/cgroup.procs"), "302\n");
        write(&guest.join("ns/system.slice/cgroup.procs"), "");
        // A deeper process older than init (moved in from outside): not the first level.
        write(&guest.join("ns/system.slice/odd.service/cgroup.procs"), "303\n");
        // A VM scope: the QEMU process and a younger helper, one of them already gone.
        write(&root.join("cg/qemu.slice/200.scope/cgroup.procs"), "300\n302\n999\n");
        write(&root.join("cg/lxc/102/cgroup.procs"), "");
        // Every process of the first populated level exited: a deeper one is not its start.
        write(&root.join("cg/lxc/104/cgroup.procs"), "");
        write(&root.join("cg/lxc/104/ns/cgroup.procs"), "998\n");
        write(&root.join("cg/lxc/104/ns/deeper/cgroup.procs"), "300\n");
        dir
    }

    #[test]
    fn first_process_of_a_guest() {
        let dir = tree();
        let proc = dir.path().join("proc");
        let cg = dir.path().join("cg");
        assert_eq!(
            read_first_process_ticks(&proc, &cg.join("lxc/101")).unwrap(),
            Some(250_000)
        );
        assert_eq!(
            read_first_process_ticks(&proc, &cg.join("qemu.slice/200.scope")).unwrap(),
            Some(250_050)
        );
        assert_eq!(read_first_process_ticks(&proc, &cg.join("lxc/102")).unwrap(), None);
        assert_eq!(read_first_process_ticks(&proc, &cg.join("lxc/104")).unwrap(), None);
        assert!(
            read_first_process_ticks(&proc, &cg.join("lxc/103"))
                .unwrap_err()
                .is_vanished()
        );
    }

    #[test]
    fn node_start_is_boot_on_a_host_and_init_in_a_container() {
        let dir = tree();
        let proc = dir.path().join("proc");
        let boot = read_boot_seconds(&proc).unwrap();
        assert_eq!(boot, 1_700_000_000);
        assert_eq!(
            read_node_start(&proc, boot, false).unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        let hz = ticks_per_second();
        assert_eq!(
            read_node_start(&proc, boot, true).unwrap(),
            instant(1_700_000_000, 5, hz)
        );
        assert!(read_node_start(&dir.path().join("nothing"), boot, true).is_err());
        assert!(read_boot_seconds(&dir.path().join("nothing")).is_err());
    }

    #[test]
    fn guest_start_is_read_once_and_again_after_a_restart() {
        let dir = tree();
        let proc = dir.path().join("proc");
        let guest = dir.path().join("cg/lxc/101");
        let hz = ticks_per_second();
        let mut starts = GuestStarts::new(&proc);
        let mut slot = StartSlot::default();
        let first = instant(1_700_000_000, 250_000, hz);
        assert_eq!(starts.start(&mut slot, &guest), Some(first));
        // Kept: a changed tree is not read again...
        write(&guest.join("ns/init.scope/cgroup.procs"), "302\n");
        assert_eq!(starts.start(&mut slot, &guest), Some(first));
        // ...until the guest restarted.
        slot.forget();
        assert_eq!(
            starts.start(&mut slot, &guest),
            Some(instant(1_700_000_000, 900_000, hz))
        );

        // A guest without processes is tried a bounded number of times, then left unknown.
        let empty = dir.path().join("cg/lxc/102");
        let mut slot = StartSlot::default();
        for _ in 0..ATTEMPTS {
            assert_eq!(starts.start(&mut slot, &empty), None);
        }
        write(&empty.join("cgroup.procs"), "300\n");
        assert_eq!(starts.start(&mut slot, &empty), None, "gave up until a restart");
        slot.forget();
        assert_eq!(
            starts.start(&mut slot, &empty),
            Some(instant(1_700_000_000, 250_050, hz))
        );
    }
}
