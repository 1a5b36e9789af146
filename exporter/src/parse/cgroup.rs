//! Parsers of cgroup v2 interface files (Documentation/admin-guide/cgroup-v2.rst, "Interface
//! Files" and "Format"), and of the cgroup v1 files a hybrid host keeps its cpu, cpuacct,
//! memory and blkio controllers in (Documentation/admin-guide/cgroup-v1/, scheduler/
//! sched-bwc.rst). Every function takes the file's text; the reader adds the path.
//!
//! | file | function |
//! |---|---|
//! | `cpu.stat` | [`parse_cpu_stat`] (by key: `core_sched.force_idle_usec` exists on some kernels) |
//! | `memory.stat`, `memory.events`, `cgroup.stat`, `pids.events`, any flat-keyed file | [`parse_flat_keyed`] |
//! | `memory.current`, `memory.swap.current`, `pids.current`, `memory.peak` | [`parse_u64`] |
//! | `memory.max`, `memory.high`, `memory.swap.max`, `pids.max` (`max` = no limit) | [`parse_limit`] |
//! | `cpu.max` (`$MAX $PERIOD`) | [`parse_cpu_max`] |
//! | `io.stat` (nested keyed, one line per device) | [`parse_io_stat`] |
//! | `cpu.pressure`, `memory.pressure`, `io.pressure` | [`parse_pressure`] (re-exported) |
//! | `cgroup.procs` (one PID per line) | [`parse_pids`] |
//! | `cgroup.stat`, as a description of the subtree's shape | [`parse_subtree_shape`] |
//! | v1 `cpu.stat` (`nr_periods`, `nr_throttled`, `throttled_time` in ns) | [`parse_v1_cpu_stat`] |
//! | v1 `cpu.cfs_quota_us` (`-1` = no quota), `cpu.cfs_period_us` | [`parse_cfs_quota`], [`parse_u64`] |
//! | v1 `cpuacct.stat` (`user`, `system` in USER_HZ ticks), `cpuacct.usage` (ns) | [`parse_cpuacct_stat`], [`parse_u64`] |
//! | v1 `memory.oom_control`, `memory.memsw.*` | [`flat_keyed_values`], [`parse_u64`] |
//! | v1 `blkio.throttle.io_service_bytes_recursive`, `io_serviced_recursive` | [`parse_blkio_rwstat_into`] |
//!
//! Missing is not zero: keys the kernel may or may not print are `Option`.

use std::collections::HashMap;

use crate::error::ParseError;

pub use crate::parse::pressure::{Pressure, PressureLine, parse as parse_pressure};

/// A flat-keyed file (`key value` per line), e.g. `memory.stat`, `memory.events`, `cpu.stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlatKeyed(pub HashMap<String, u64>);

impl FlatKeyed {
    /// The value of `key`, `None` when this kernel does not print it.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.0.get(key).copied()
    }

    /// The value of `key`, or a parse error naming it.
    pub fn require(&self, key: &str) -> Result<u64, ParseError> {
        self.get(key)
            .ok_or_else(|| ParseError::new(format!("missing key {key:?}")))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parses a flat-keyed file: every non-empty line is `key value` with an unsigned integer
/// value. A line of any other shape fails the parse (a truncated line must not pass).
pub fn parse_flat_keyed(text: &str) -> Result<FlatKeyed, ParseError> {
    let mut map = HashMap::new();
    for pair in flat_keyed_pairs(text) {
        let (key, value) = pair?;
        map.insert(key.to_owned(), value);
    }
    Ok(FlatKeyed(map))
}

/// The `(key, value)` pairs of a flat-keyed file in file order, blank lines skipped; a line
/// of another shape, or a value that is not an unsigned integer, is an error.
fn flat_keyed_pairs(text: &str) -> impl Iterator<Item = Result<(&str, u64), ParseError>> {
    super::lines(text).filter(|l| !l.trim_ascii().is_empty()).map(|line| {
        let mut fields = line.split_ascii_whitespace();
        let (Some(key), Some(value), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(ParseError::new(format!("malformed flat-keyed line: {line:?}")));
        };
        let value = unsigned(value)
            .ok_or_else(|| ParseError::new(format!("value of {key:?} is not an unsigned integer: {value:?}")))?;
        Ok((key, value))
    })
}

/// A kernel counter: digits only. `u64::from_str` also takes a leading `+`, which the kernel
/// never prints; accepting it in one flat-keyed parser and not the other made them disagree
/// (found by the cgroup_flat_keyed fuzz target).
fn unsigned(value: &str) -> Option<u64> {
    if value.bytes().all(|b| b.is_ascii_digit()) {
        value.parse().ok()
    } else {
        None
    }
}

/// The values of `keys` in a flat-keyed file, `None` for a key the file does not print;
/// every line is checked as strictly as by [`parse_flat_keyed`] (`key value`, the value an
/// unsigned integer), but only the wanted values are converted and nothing is allocated.
///
/// Why: a collector that needs two keys of `memory.stat` (about fifty lines) spent most of its
/// parse time building a map of all of them, once per guest and collection.
pub fn flat_keyed_values<const K: usize>(text: &str, keys: &[&str; K]) -> Result<[Option<u64>; K], ParseError> {
    let mut out = [None; K];
    for line in super::lines(text) {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else {
            continue;
        };
        let (Some(value), None) = (fields.next(), fields.next()) else {
            return Err(ParseError::new(format!("malformed flat-keyed line: {line:?}")));
        };
        let not_a_number = || ParseError::new(format!("value of {key:?} is not an unsigned integer: {value:?}"));
        match keys.iter().position(|k| *k == key) {
            Some(i) => out[i] = Some(unsigned(value).ok_or_else(not_a_number)?),
            // A value nobody reads is only checked for its shape (digits that fit a u64, as
            // `parse_flat_keyed` demands), which is what tells a truncated or foreign file;
            // converting it would be wasted work.
            None if fits_u64(value) => {}
            None => return Err(not_a_number()),
        }
    }
    Ok(out)
}

/// True when `digits` is an unsigned decimal that fits a u64 (what `str::parse::<u64>`
/// accepts, leading zeros included), without converting it: at most 20 significant digits,
/// and 20 compared with u64::MAX as text (equal lengths compare like numbers).
fn fits_u64(digits: &str) -> bool {
    const MAX: &str = "18446744073709551615";
    let significant = digits.trim_start_matches('0');
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (significant.len() < MAX.len() || (significant.len() == MAX.len() && significant <= MAX))
}

/// What `cgroup.stat` says about the shape of the subtree below a cgroup: enough to tell,
/// without listing a directory, whether the set of cgroups that can hold processes changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubtreeShape {
    /// `nr_descendants`: live cgroups below this one.
    pub descendants: u64,
    /// A hash of the `nr_subsys_<controller>` lines (6.11+: live controller states at and
    /// below this cgroup); 0 when the kernel prints none.
    pub controllers: u64,
    /// Whether the kernel prints `nr_subsys_*` lines. With them, enabling or disabling a
    /// controller anywhere in the subtree changes [`SubtreeShape::controllers`]; without them
    /// only a change of `nr_descendants` is visible.
    pub counts_controllers: bool,
}

/// Parses `cgroup.stat` into a [`SubtreeShape`]. `nr_dying_*` lines are left out: they change
/// while removed cgroups are freed, after the change that matters was already seen in
/// `nr_descendants`. Lines are checked as by [`parse_flat_keyed`].
pub fn parse_subtree_shape(text: &str) -> Result<SubtreeShape, ParseError> {
    let mut descendants = None;
    let mut controllers = std::hash::DefaultHasher::new();
    let mut counts_controllers = false;
    for pair in flat_keyed_pairs(text) {
        let (key, value) = pair?;
        if key == "nr_descendants" {
            descendants = Some(value);
        } else if let Some(controller) = key.strip_prefix("nr_subsys_") {
            counts_controllers = true;
            std::hash::Hash::hash(&(controller, value), &mut controllers);
        }
    }
    let descendants = descendants.ok_or_else(|| ParseError::new("missing key \"nr_descendants\""))?;
    Ok(SubtreeShape {
        descendants,
        controllers: if counts_controllers {
            std::hash::Hasher::finish(&controllers)
        } else {
            0
        },
        counts_controllers,
    })
}

/// Whether a `cgroup.subtree_control` enables a domain controller, i.e. one that is not
/// threaded (memory, io, hugetlb, rdma, misc). A non-root cgroup that does cannot hold
/// processes: the kernel refuses to migrate one into it and to enable such a controller while
/// it has some (kernel/cgroup/cgroup.c `cgroup_migrate_vet_dst`,
/// `cgroup_vet_subtree_control_enable`). Threaded controllers alone (cpu, cpuset, pids,
/// perf_event) do not keep processes out: such a cgroup may be a thread root and hold
/// processes besides its children.
pub fn enables_domain_controller(subtree_control: &str) -> bool {
    const THREADED: [&str; 4] = ["cpu", "cpuset", "perf_event", "pids"];
    subtree_control
        .split_ascii_whitespace()
        .any(|controller| !THREADED.contains(&controller))
}

/// `cpu.stat`. The first three keys are always printed (the core `cpu.stat`); the others only
/// when the cpu controller is enabled for the cgroup, hence `Option`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuStat {
    pub usage_usec: u64,
    pub user_usec: u64,
    pub system_usec: u64,
    pub nr_periods: Option<u64>,
    pub nr_throttled: Option<u64>,
    pub throttled_usec: Option<u64>,
    pub nr_bursts: Option<u64>,
    pub burst_usec: Option<u64>,
    /// Present on kernels built with core scheduling (CONFIG_SCHED_CORE), e.g. Proxmox's.
    pub core_sched_force_idle_usec: Option<u64>,
}

/// Parses `cpu.stat` by key, never by line position.
pub fn parse_cpu_stat(text: &str) -> Result<CpuStat, ParseError> {
    const KEYS: [&str; 9] = [
        "usage_usec",
        "user_usec",
        "system_usec",
        "nr_periods",
        "nr_throttled",
        "throttled_usec",
        "nr_bursts",
        "burst_usec",
        "core_sched.force_idle_usec",
    ];
    let [
        usage_usec,
        user_usec,
        system_usec,
        nr_periods,
        nr_throttled,
        throttled_usec,
        nr_bursts,
        burst_usec,
        core_sched_force_idle_usec,
    ] = flat_keyed_values(text, &KEYS)?;
    let required =
        |value: Option<u64>, key: &str| value.ok_or_else(|| ParseError::new(format!("cpu.stat: missing key {key:?}")));
    Ok(CpuStat {
        usage_usec: required(usage_usec, "usage_usec")?,
        user_usec: required(user_usec, "user_usec")?,
        system_usec: required(system_usec, "system_usec")?,
        nr_periods,
        nr_throttled,
        throttled_usec,
        nr_bursts,
        burst_usec,
        core_sched_force_idle_usec,
    })
}

/// Parses a single-value file holding one unsigned integer (`memory.current`, `pids.current`).
pub fn parse_u64(text: &str) -> Result<u64, ParseError> {
    let value = text.trim();
    value
        .parse()
        .map_err(|_| ParseError::new(format!("expected one unsigned integer, found {value:?}")))
}

/// A limit file's value: `max` means no limit, which is not a number (never report it as 0 or
/// as `u64::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    Value(u64),
}

impl Limit {
    /// The limit, `None` when there is none.
    pub fn value(self) -> Option<u64> {
        match self {
            Limit::Unlimited => None,
            Limit::Value(v) => Some(v),
        }
    }
}

/// Parses `memory.max`, `memory.high`, `memory.swap.max`, `pids.max`: `max` or a number.
pub fn parse_limit(text: &str) -> Result<Limit, ParseError> {
    match text.trim() {
        "max" => Ok(Limit::Unlimited),
        other => parse_u64(other).map(Limit::Value),
    }
}

/// `cpu.max`: quota and period in microseconds; a quota of `max` means no quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuMax {
    pub quota_usec: Limit,
    pub period_usec: u64,
}

impl CpuMax {
    /// The quota in CPUs (quota / period), `None` when unlimited.
    pub fn cpus(&self) -> Option<f64> {
        match self.quota_usec {
            Limit::Value(q) if self.period_usec > 0 => Some(q as f64 / self.period_usec as f64),
            _ => None,
        }
    }
}

/// Parses `cpu.max` (`max 100000`, `200000 100000`).
pub fn parse_cpu_max(text: &str) -> Result<CpuMax, ParseError> {
    let mut fields = text.split_ascii_whitespace();
    let (Some(quota), Some(period), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(ParseError::new(format!(
            "cpu.max: expected \"$MAX $PERIOD\", found {:?}",
            text.trim()
        )));
    };
    Ok(CpuMax {
        quota_usec: parse_limit(quota)?,
        period_usec: parse_u64(period)?,
    })
}

/// The CFS bandwidth counters of a cgroup v1 `cpu.stat` (kernel/sched/core.c
/// `cpu_cfs_stat_show`): `nr_periods`, `nr_throttled`, `throttled_time` in nanoseconds; newer
/// kernels add `nr_bursts`, `burst_time` and, with schedstats, `wait_sum`. `None` where the
/// kernel does not print the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V1CpuStat {
    pub nr_periods: Option<u64>,
    pub nr_throttled: Option<u64>,
    pub throttled_time_ns: Option<u64>,
}

/// Parses a cgroup v1 `cpu.stat` by key.
pub fn parse_v1_cpu_stat(text: &str) -> Result<V1CpuStat, ParseError> {
    let [nr_periods, nr_throttled, throttled_time_ns] =
        flat_keyed_values(text, &["nr_periods", "nr_throttled", "throttled_time"])?;
    Ok(V1CpuStat {
        nr_periods,
        nr_throttled,
        throttled_time_ns,
    })
}

/// Parses v1 `cpu.cfs_quota_us`: microseconds per period, `-1` for no quota (sched-bwc.rst).
pub fn parse_cfs_quota(text: &str) -> Result<Limit, ParseError> {
    match text.trim() {
        "-1" => Ok(Limit::Unlimited),
        other => parse_u64(other).map(Limit::Value),
    }
}

/// v1 `cpuacct.stat`: user and system time in USER_HZ ticks (`nsec_to_clock_t` of the
/// cputime-adjusted split of the cgroup's CPU time, as cgroup2's `user_usec`/`system_usec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuacctStat {
    pub user_ticks: u64,
    pub system_ticks: u64,
}

/// Parses v1 `cpuacct.stat` (`user N`, `system N`); both keys are required.
pub fn parse_cpuacct_stat(text: &str) -> Result<CpuacctStat, ParseError> {
    let [user, system] = flat_keyed_values(text, &["user", "system"])?;
    let required =
        |v: Option<u64>, key: &str| v.ok_or_else(|| ParseError::new(format!("cpuacct.stat: missing key {key:?}")));
    Ok(CpuacctStat {
        user_ticks: required(user, "user")?,
        system_ticks: required(system, "system")?,
    })
}

/// Which pair of [`IoCounters`] a v1 blkio file fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkioCounters {
    /// `blkio.throttle.io_service_bytes_recursive`: `rbytes`, `wbytes`.
    Bytes,
    /// `blkio.throttle.io_serviced_recursive`: `rios`, `wios`.
    Operations,
}

/// Merges a v1 blkio "rwstat" file into `out`, one row per device (a row the other file
/// created is completed, a new device is appended). The format (block/blk-cgroup-rwstat.c
/// `__blkg_prfill_rwstat`): per device `MAJ:MIN Read N`, `Write`, `Sync`, `Async`, `Discard`,
/// `Total`, and a last line `Total N` over every device. Only `Read` and `Write` are taken (Sync
/// and Async split the same IO another way; Total adds discards). The `_recursive` files count
/// the cgroup's whole subtree, as cgroup2's `io.stat` does. A line of any other shape fails the
/// parse, and `out` then holds none of this file's counters (the other file's stay).
pub fn parse_blkio_rwstat_into(text: &str, which: BlkioCounters, out: &mut Vec<IoCounters>) -> Result<(), ParseError> {
    let rows_before = out.len();
    let result = (|| {
        for line in super::lines(text).filter(|l| !l.trim_ascii().is_empty()) {
            let bad = |why: &str| ParseError::new(format!("malformed blkio line ({why}): {line:?}"));
            let mut fields = line.split_ascii_whitespace();
            let (Some(first), Some(second)) = (fields.next(), fields.next()) else {
                return Err(bad("too few fields"));
            };
            let third = fields.next();
            if fields.next().is_some() {
                return Err(bad("too many fields"));
            }
            let Some(value) = third else {
                // The summary line over every device.
                if first != "Total" || second.parse::<u64>().is_err() {
                    return Err(bad("expected Total N"));
                }
                continue;
            };
            let (major, minor) = first.split_once(':').ok_or_else(|| bad("device is not MAJ:MIN"))?;
            let major: u32 = major.parse().map_err(|_| bad("bad major"))?;
            let minor: u32 = minor.parse().map_err(|_| bad("bad minor"))?;
            let value: u64 = value.parse().map_err(|_| bad("value is not an unsigned integer"))?;
            let index = match out.iter().position(|r| (r.major, r.minor) == (major, minor)) {
                Some(i) => i,
                None => {
                    out.push(IoCounters {
                        major,
                        minor,
                        ..Default::default()
                    });
                    out.len() - 1
                }
            };
            let row = &mut out[index];
            let slot = match (which, second) {
                (BlkioCounters::Bytes, "Read") => &mut row.rbytes,
                (BlkioCounters::Bytes, "Write") => &mut row.wbytes,
                (BlkioCounters::Operations, "Read") => &mut row.rios,
                (BlkioCounters::Operations, "Write") => &mut row.wios,
                (_, "Sync" | "Async" | "Discard" | "Total") => continue,
                _ => return Err(bad("unknown operation")),
            };
            *slot = Some(value);
        }
        Ok(())
    })();
    if result.is_err() {
        out.truncate(rows_before);
        for row in out.iter_mut() {
            match which {
                BlkioCounters::Bytes => (row.rbytes, row.wbytes) = (None, None),
                BlkioCounters::Operations => (row.rios, row.wios) = (None, None),
            }
        }
    }
    result
}

/// One device line of `io.stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoStatDevice {
    pub major: u32,
    pub minor: u32,
    /// Integer `key=value` pairs in file order (`rbytes`, `wbytes`, `rios`, `wios`, `dbytes`,
    /// `dios`, ...). Empty for a device line that carries no values.
    pub counters: Vec<(String, u64)>,
    /// Pairs whose value is not an unsigned integer, kept verbatim (iocost's
    /// `cost.vrate=100.00`, iolatency's `depth=max`).
    pub other: Vec<(String, String)>,
}

impl IoStatDevice {
    /// The counter `key`, `None` when the line does not carry it.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.counters.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
    pub fn rbytes(&self) -> Option<u64> {
        self.get("rbytes")
    }
    pub fn wbytes(&self) -> Option<u64> {
        self.get("wbytes")
    }
    pub fn rios(&self) -> Option<u64> {
        self.get("rios")
    }
    pub fn wios(&self) -> Option<u64> {
        self.get("wios")
    }
    /// `major:minor`, as a label value.
    pub fn device(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }
}

/// Walks `io.stat` line by line, checking each as [`parse_io_stat`] does, and calls `each`
/// with the device and its `key=value` pairs (the value unparsed).
fn io_stat_lines<'t>(
    text: &'t str,
    mut each: impl FnMut(
        u32,
        u32,
        &mut dyn Iterator<Item = Result<(&'t str, &'t str), ParseError>>,
    ) -> Result<(), ParseError>,
) -> Result<(), ParseError> {
    for line in super::lines(text).filter(|l| !l.trim_ascii().is_empty()) {
        let bad = move |why: &str| ParseError::new(format!("malformed io.stat line ({why}): {line:?}"));
        let mut fields = line.split_ascii_whitespace();
        let device = fields.next().ok_or_else(|| bad("empty"))?;
        let (major, minor) = device.split_once(':').ok_or_else(|| bad("device is not MAJ:MIN"))?;
        let major = major.parse().map_err(|_| bad("bad major"))?;
        let minor = minor.parse().map_err(|_| bad("bad minor"))?;
        let mut pairs = fields.map(|field| {
            let (key, value) = field.split_once('=').ok_or_else(|| bad("field without ="))?;
            if key.is_empty() || value.is_empty() {
                return Err(bad("empty key or value"));
            }
            Ok((key, value))
        });
        each(major, minor, &mut pairs)?;
    }
    Ok(())
}

/// Parses `io.stat`: one line per device, `MAJ:MIN key=value ...`. Devices are listed as the
/// kernel sees them (stacked dm devices and their disks each get a line): never sum them.
pub fn parse_io_stat(text: &str) -> Result<Vec<IoStatDevice>, ParseError> {
    let mut devices = Vec::new();
    io_stat_lines(text, |major, minor, pairs| {
        let mut entry = IoStatDevice {
            major,
            minor,
            ..Default::default()
        };
        for pair in pairs {
            let (key, value) = pair?;
            match value.parse::<u64>() {
                Ok(v) => entry.counters.push((key.to_owned(), v)),
                Err(_) => entry.other.push((key.to_owned(), value.to_owned())),
            }
        }
        devices.push(entry);
        Ok(())
    })?;
    Ok(devices)
}

/// The four byte and operation counters of one `io.stat` device line, `None` where the line
/// does not carry the key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounters {
    pub major: u32,
    pub minor: u32,
    pub rbytes: Option<u64>,
    pub wbytes: Option<u64>,
    pub rios: Option<u64>,
    pub wios: Option<u64>,
}

/// Like [`parse_io_stat`], but only `rbytes`, `wbytes`, `rios`, `wios`, into `out` (cleared
/// first) without allocating per line: what a collector reading every guest's io.stat on
/// every collection needs. Checks every line as strictly.
pub fn parse_io_stat_into(text: &str, out: &mut Vec<IoCounters>) -> Result<(), ParseError> {
    out.clear();
    let result = io_stat_lines(text, |major, minor, pairs| {
        let mut entry = IoCounters {
            major,
            minor,
            ..Default::default()
        };
        for pair in pairs {
            let (key, value) = pair?;
            let slot = match key {
                "rbytes" => &mut entry.rbytes,
                "wbytes" => &mut entry.wbytes,
                "rios" => &mut entry.rios,
                "wios" => &mut entry.wios,
                // Other keys (dbytes, dios, iocost's cost.vrate=100.00, ...) are not read.
                _ => continue,
            };
            // A non-integer value of these keys is kept verbatim by parse_io_stat and so not
            // a counter: absent here.
            // A key printed twice: the first integer value, as IoStatDevice::get takes it
            // (the two parsers disagreed; found by the cgroup_io_stat fuzz target).
            if slot.is_none() {
                *slot = value.parse().ok();
            }
        }
        out.push(entry);
        Ok(())
    });
    if result.is_err() {
        out.clear();
    }
    result
}

/// Parses `cgroup.procs` or `cgroup.threads`: one PID per line.
pub fn parse_pids(text: &str) -> Result<Vec<u32>, ParseError> {
    let mut pids = Vec::new();
    parse_pids_into(text, &mut pids)?;
    Ok(pids)
}

/// Like [`parse_pids`], appending to `out` (so one buffer serves a whole subtree). On error,
/// `out` may hold some of the file's PIDs.
pub fn parse_pids_into(text: &str, out: &mut Vec<u32>) -> Result<(), ParseError> {
    for line in super::lines(text) {
        let pid = line.trim();
        if pid.is_empty() {
            continue;
        }
        out.push(
            pid.parse()
                .map_err(|_| ParseError::new(format!("not a PID: {line:?}")))?,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz reproducer (cgroup_flat_keyed): `+4455` was a value for parse_flat_keyed but not
    /// for flat_keyed_values.
    #[test]
    fn flat_keyed_parsers_both_refuse_a_plus_sign() {
        let text = "anon 1282281472\nworkingset_activate_anon +4455\n";
        assert!(parse_flat_keyed(text).is_err());
        assert!(flat_keyed_values(text, &["anon"]).is_err());
        assert!(flat_keyed_values(text, &["workingset_activate_anon"]).is_err());
    }

    /// Fuzz reproducer (cgroup_io_stat, minimized): a key twice on one line; both io.stat
    /// parsers take the first value.
    #[test]
    fn io_stat_parsers_agree_on_a_repeated_key() {
        let text = b"8:0 rbytes=32099868672 rios=613785 wios=189911s=14713421824 rios=211667 dbytes=0\n";
        let text = std::str::from_utf8(text).unwrap();
        let full = parse_io_stat(text).unwrap();
        let mut into = Vec::new();
        parse_io_stat_into(text, &mut into).unwrap();
        assert_eq!(full[0].rios(), Some(613785));
        assert_eq!(into[0].rios, Some(613785));
    }

    const HOST_CPU_STAT: &str = include_str!("../../../fixtures/proxmox-host/sys/fs/cgroup/cpu.stat");

    #[test]
    fn subtree_shape_sees_descendants_and_controller_changes() {
        let before =
            "nr_descendants 6\nnr_subsys_cpu 7\nnr_subsys_memory 7\nnr_dying_descendants 0\nnr_dying_subsys_cpu 0\n";
        let shape = parse_subtree_shape(before).unwrap();
        assert_eq!(shape.descendants, 6);
        assert!(shape.counts_controllers);
        // memory disabled below one inner cgroup: its children lose their memory state.
        let disabled = before.replace("nr_subsys_memory 7", "nr_subsys_memory 4");
        assert_ne!(parse_subtree_shape(&disabled).unwrap(), shape);
        // cpu down and memory up by the same amount is still a change.
        let swapped = before
            .replace("nr_subsys_cpu 7", "nr_subsys_cpu 6")
            .replace("nr_subsys_memory 7", "nr_subsys_memory 8");
        assert_ne!(parse_subtree_shape(&swapped).unwrap(), shape);
        // A cgroup being freed after its removal changes nothing that matters.
        let dying = before.replace("nr_dying_descendants 0", "nr_dying_descendants 2");
        assert_eq!(parse_subtree_shape(&dying).unwrap(), shape);
        // Kernels before 6.11 print no nr_subsys_* lines.
        let old = parse_subtree_shape("nr_descendants 3\nnr_dying_descendants 1\n").unwrap();
        assert_eq!(
            (old.descendants, old.controllers, old.counts_controllers),
            (3, 0, false)
        );
        assert!(parse_subtree_shape("nr_dying_descendants 1\n").is_err());
        assert!(parse_subtree_shape("nr_descendants 3\nnr_subsys_cpu\n").is_err());
    }

    #[test]
    fn domain_controllers_in_subtree_control() {
        // systemd's slices, LXC's guest cgroup.
        assert!(enables_domain_controller("memory pids\n"));
        assert!(enables_domain_controller("cpuset cpu io memory pids\n"));
        assert!(enables_domain_controller("hugetlb\n"));
        // Threaded controllers only, or none: processes may be there.
        assert!(!enables_domain_controller("cpu pids\n"));
        assert!(!enables_domain_controller("cpuset cpu pids\n"));
        assert!(!enables_domain_controller(""));
        assert!(!enables_domain_controller("\n"));
    }

    #[test]
    fn cpu_stat_by_key_with_core_sched_line() {
        let s = parse_cpu_stat(HOST_CPU_STAT).unwrap();
        assert_eq!(s.usage_usec, 378565209507);
        assert_eq!(s.user_usec, 252410106824);
        assert_eq!(s.system_usec, 126155102683);
        assert_eq!(s.core_sched_force_idle_usec, Some(0));
        assert_eq!(s.nr_periods, Some(0));
        assert_eq!(s.throttled_usec, Some(0));
    }

    #[test]
    fn cpu_stat_order_does_not_matter_and_optional_keys_are_absent() {
        let s = parse_cpu_stat("system_usec 3\nuser_usec 2\nusage_usec 5\n").unwrap();
        assert_eq!((s.usage_usec, s.user_usec, s.system_usec), (5, 2, 3));
        assert_eq!(s.nr_throttled, None);
        assert_eq!(s.core_sched_force_idle_usec, None);
    }

    #[test]
    fn container_cpu_stat() {
        let s = parse_cpu_stat(include_str!("../../../fixtures/lxc-container/sys/fs/cgroup/cpu.stat")).unwrap();
        assert_eq!(
            (s.usage_usec, s.user_usec, s.system_usec),
            (46090435253, 31278598398, 14811836854)
        );
    }

    #[test]
    fn cpu_stat_missing_keys_or_truncated_fails() {
        let e = parse_cpu_stat("usage_usec 5\nuser_usec 2\n").unwrap_err();
        assert!(e.0.contains("system_usec"), "{e}");
        assert!(parse_cpu_stat("usage_usec 5\nuser_usec 2\nsystem_usec").is_err());
        assert!(parse_cpu_stat("usage_usec 5\nuser_usec -2\nsystem_usec 1").is_err());
        assert!(parse_cpu_stat("").is_err());
    }

    #[test]
    fn memory_stat_fixture() {
        let m = parse_flat_keyed(include_str!(
            "../../../fixtures/lxc-container/sys/fs/cgroup/memory.stat"
        ))
        .unwrap();
        assert_eq!(m.get("anon"), Some(284864512));
        assert_eq!(m.get("file"), Some(920457216));
        assert_eq!(m.get("inactive_file"), Some(491442176));
        assert_eq!(m.get("active_file"), Some(331685888));
        assert_eq!(m.get("no_such_key"), None);
        assert!(m.require("no_such_key").is_err());
        assert!(m.len() > 40);
    }

    #[test]
    fn memory_events_fixture() {
        let text = include_str!("../../../fixtures/proxmox-host/sys/fs/cgroup/lxc/102/ns/memory.events");
        let m = parse_flat_keyed(text).unwrap();
        assert_eq!(m.get("oom_kill"), Some(2));
        assert_eq!(m.get("oom"), Some(0));
    }

    #[test]
    fn flat_keyed_values_agree_with_the_map() {
        let text = include_str!("../../../fixtures/lxc-container/sys/fs/cgroup/memory.stat");
        let map = parse_flat_keyed(text).unwrap();
        let [inactive, file, none] = flat_keyed_values(text, &["inactive_file", "file", "no_such_key"]).unwrap();
        assert_eq!(inactive, map.get("inactive_file"));
        assert_eq!(file, map.get("file"));
        assert_eq!(none, None);
        for bad in [
            "anon 1 2\n",
            "anon\n",
            "anon x\n",
            "file 1\nanon -1\n",
            "file 99999999999999999999999\n",
            // Found by the cgroup_flat_keyed fuzz target: an unread value too large for a u64
            // passed here while parse_flat_keyed refused the file.
            "file 1\nanon 18446744073709551616\n",
        ] {
            assert!(flat_keyed_values(bad, &["file"]).is_err(), "{bad:?}");
            assert!(parse_flat_keyed(bad).is_err(), "{bad:?}");
        }
        // Also found by it: a line of a vertical tab was blank to the map parser (Unicode
        // trim) and a key without a value here (ASCII split); both now refuse it.
        assert!(flat_keyed_values("file 1\n\x0b\n", &["file"]).is_err());
        assert!(parse_flat_keyed("file 1\n\x0b\n").is_err());
        for good in [
            "file 1\nanon 18446744073709551615\n",
            "file 1\nanon 000000000000000000000007\n",
        ] {
            assert_eq!(flat_keyed_values(good, &["file"]).unwrap(), [Some(1)], "{good:?}");
            assert!(parse_flat_keyed(good).is_ok(), "{good:?}");
        }
        assert_eq!(flat_keyed_values("\n\n", &["file"]).unwrap(), [None]);
    }

    #[test]
    fn flat_keyed_rejects_malformed() {
        assert!(parse_flat_keyed("anon 1 2\n").is_err());
        assert!(parse_flat_keyed("anon\n").is_err());
        assert!(parse_flat_keyed("anon x\n").is_err());
        assert!(parse_flat_keyed("").unwrap().is_empty());
    }

    #[test]
    fn single_values_and_limits() {
        assert_eq!(
            parse_u64(include_str!(
                "../../../fixtures/lxc-container/sys/fs/cgroup/memory.current"
            ))
            .unwrap(),
            1236930560
        );
        assert_eq!(
            parse_u64(include_str!(
                "../../../fixtures/lxc-container/sys/fs/cgroup/pids.current"
            ))
            .unwrap(),
            24
        );
        assert_eq!(
            parse_limit(include_str!("../../../fixtures/lxc-container/sys/fs/cgroup/memory.max")).unwrap(),
            Limit::Unlimited
        );
        assert_eq!(parse_limit("2147483648\n").unwrap(), Limit::Value(2147483648));
        assert_eq!(parse_limit("2147483648\n").unwrap().value(), Some(2147483648));
        assert_eq!(Limit::Unlimited.value(), None);
        assert!(parse_limit("").is_err());
        assert!(parse_limit("maximum").is_err());
        assert!(parse_u64("12 13").is_err());
        assert!(parse_u64("-1").is_err());
    }

    #[test]
    fn cpu_max() {
        let c = parse_cpu_max(include_str!("../../../fixtures/lxc-container/sys/fs/cgroup/cpu.max")).unwrap();
        assert_eq!(
            c,
            CpuMax {
                quota_usec: Limit::Unlimited,
                period_usec: 100000
            }
        );
        assert_eq!(c.cpus(), None);
        assert_eq!(parse_cpu_max("200000 100000\n").unwrap().cpus(), Some(2.0));
        assert!(parse_cpu_max("max").is_err());
        assert!(parse_cpu_max("max 100000 7").is_err());
    }

    #[test]
    fn io_stat_fixture_and_empty_device_line() {
        let devs = parse_io_stat(include_str!(
            "../../../fixtures/proxmox-host/sys/fs/cgroup/lxc/101/io.stat"
        ))
        .unwrap();
        assert_eq!(devs.len(), 4);
        assert_eq!(devs[0].device(), "253:7");
        assert_eq!((devs[1].major, devs[1].minor), (8, 0));
        assert_eq!(devs[1].rbytes(), Some(32099868672));
        assert_eq!(devs[3].device(), "253:6");
        assert_eq!(devs[3].wbytes(), Some(14713421824));
        assert_eq!(devs[3].wios(), Some(1804552));
        assert_eq!(devs[3].get("dios"), Some(0));

        let devs = parse_io_stat("8:16 \n253:0 rbytes=1 wbytes=2 rios=3 wios=4 cost.vrate=100.00 depth=max\n").unwrap();
        assert_eq!(devs.len(), 2);
        assert!(devs[0].counters.is_empty());
        assert_eq!(devs[0].rbytes(), None);
        assert_eq!(devs[1].rios(), Some(3));
        assert_eq!(
            devs[1].other,
            vec![
                ("cost.vrate".to_owned(), "100.00".to_owned()),
                ("depth".to_owned(), "max".to_owned())
            ]
        );
    }

    #[test]
    fn io_stat_into_agrees_with_the_full_parse() {
        let text = "8:16 \n253:0 rbytes=1 wbytes=2 rios=3 wios=4 cost.vrate=100.00 depth=max\n8:0 rbytes=5 dios=0\n";
        let full = parse_io_stat(text).unwrap();
        let mut rows = vec![IoCounters::default()];
        parse_io_stat_into(text, &mut rows).unwrap();
        assert_eq!(rows.len(), full.len());
        for (row, dev) in rows.iter().zip(&full) {
            assert_eq!((row.major, row.minor), (dev.major, dev.minor));
            assert_eq!(
                [row.rbytes, row.wbytes, row.rios, row.wios],
                [dev.rbytes(), dev.wbytes(), dev.rios(), dev.wios()]
            );
        }
        for bad in [
            "8 rbytes=1",
            "8:x rbytes=1",
            "8:0 rbytes",
            "8:0 rbytes=",
            "8:0 rbytes=1\n8:1 =2",
        ] {
            assert!(parse_io_stat_into(bad, &mut rows).is_err(), "{bad:?}");
            assert!(rows.is_empty());
        }
    }

    #[test]
    fn io_stat_rejects_malformed() {
        assert!(parse_io_stat("8 rbytes=1").is_err());
        assert!(parse_io_stat("8:x rbytes=1").is_err());
        assert!(parse_io_stat("8:0 rbytes").is_err());
        assert!(parse_io_stat("8:0 rbytes=").is_err());
        assert!(parse_io_stat("").unwrap().is_empty());
    }

    #[test]
    fn pids() {
        assert_eq!(parse_pids("1\n52\n\n").unwrap(), vec![1, 52]);
        assert!(parse_pids("1\nx\n").is_err());
    }

    /// v1 `cpu.stat` of a throttled cgroup on this project's 6.18 machine (nr_bursts and
    /// burst_time are printed by 5.14+ kernels).
    #[test]
    fn v1_cpu_stat_by_key() {
        let s = parse_v1_cpu_stat(
            "nr_periods 312\nnr_throttled 40\nthrottled_time 2871334521\nnr_bursts 0\nburst_time 0\n",
        )
        .unwrap();
        assert_eq!(
            s,
            V1CpuStat {
                nr_periods: Some(312),
                nr_throttled: Some(40),
                throttled_time_ns: Some(2871334521)
            }
        );
        // Older kernels: three lines; with schedstats a wait_sum line; order does not matter.
        let s = parse_v1_cpu_stat("wait_sum 5\nthrottled_time 7\nnr_throttled 1\nnr_periods 2\n").unwrap();
        assert_eq!(
            (s.nr_periods, s.nr_throttled, s.throttled_time_ns),
            (Some(2), Some(1), Some(7))
        );
        // Missing is not zero.
        assert_eq!(parse_v1_cpu_stat("nr_periods 2\n").unwrap().nr_throttled, None);
        assert!(parse_v1_cpu_stat("nr_periods 2\nnr_throttled").is_err());
        // cgroup2's keys are not v1's: throttled_usec is not throttled_time.
        assert_eq!(parse_v1_cpu_stat("throttled_usec 9\n").unwrap().throttled_time_ns, None);
    }

    #[test]
    fn cfs_quota_minus_one_is_no_quota() {
        assert_eq!(parse_cfs_quota("-1\n").unwrap(), Limit::Unlimited);
        assert_eq!(parse_cfs_quota("50000\n").unwrap(), Limit::Value(50000));
        let max = CpuMax {
            quota_usec: parse_cfs_quota("50000\n").unwrap(),
            period_usec: parse_u64("100000\n").unwrap(),
        };
        assert_eq!(max.cpus(), Some(0.5));
        assert!(parse_cfs_quota("-2\n").is_err());
        assert!(parse_cfs_quota("max\n").is_err());
        assert!(parse_cfs_quota("").is_err());
    }

    #[test]
    fn cpuacct_stat() {
        assert_eq!(
            parse_cpuacct_stat("user 52435\nsystem 13901\n").unwrap(),
            CpuacctStat {
                user_ticks: 52435,
                system_ticks: 13901
            }
        );
        assert!(parse_cpuacct_stat("user 52435\n").is_err());
        assert!(parse_cpuacct_stat("user 52435\nsystem\n").is_err());
    }

    /// `oom_kill` of v1 `memory.oom_control` (4.13+), read by key.
    #[test]
    fn v1_oom_control() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(flat_keyed_values(text, &["oom_kill"]).unwrap(), [Some(3)]);
        assert_eq!(
            flat_keyed_values("oom_kill_disable 0\nunder_oom 0\n", &["oom_kill"]).unwrap(),
            [None]
        );
    }

    /// What this machine's 6.18 kernel prints for a cgroup that wrote to a loop device and read
    /// from a disk, and for one without IO (the root of a fresh hierarchy).
    const BLKIO_BYTES: &str = "7:3 Read 0\n7:3 Write 4194304\n7:3 Sync 4194304\n7:3 Async 0\n7:3 Discard 0\n7:3 Total 4194304\n8:0 Read 65536\n8:0 Write 0\n8:0 Sync 65536\n8:0 Async 0\n8:0 Discard 0\n8:0 Total 65536\nTotal 4259840\n";
    const BLKIO_IOS: &str = "7:3 Read 0\n7:3 Write 64\n7:3 Sync 64\n7:3 Async 0\n7:3 Discard 0\n7:3 Total 64\n8:0 Read 2\n8:0 Write 0\n8:0 Sync 2\n8:0 Async 0\n8:0 Discard 0\n8:0 Total 2\nTotal 66\n";

    #[test]
    fn blkio_rwstat_files_merge_into_io_rows() {
        let mut rows = vec![IoCounters::default()];
        rows.clear();
        parse_blkio_rwstat_into(BLKIO_BYTES, BlkioCounters::Bytes, &mut rows).unwrap();
        parse_blkio_rwstat_into(BLKIO_IOS, BlkioCounters::Operations, &mut rows).unwrap();
        assert_eq!(
            rows,
            [
                IoCounters {
                    major: 7,
                    minor: 3,
                    rbytes: Some(0),
                    wbytes: Some(4194304),
                    rios: Some(0),
                    wios: Some(64)
                },
                IoCounters {
                    major: 8,
                    minor: 0,
                    rbytes: Some(65536),
                    wbytes: Some(0),
                    rios: Some(2),
                    wios: Some(0)
                }
            ]
        );
        // No IO at all: only the summary line, no device, no row.
        rows.clear();
        parse_blkio_rwstat_into("Total 0\n", BlkioCounters::Bytes, &mut rows).unwrap();
        assert!(rows.is_empty());
        // Only one of the two files: the other pair is absent, not zero.
        parse_blkio_rwstat_into(BLKIO_IOS, BlkioCounters::Operations, &mut rows).unwrap();
        assert_eq!((rows[0].rbytes, rows[0].wios), (None, Some(64)));
    }

    #[test]
    fn blkio_rejects_malformed_and_keeps_the_other_files_counters() {
        for bad in [
            "7:3 Read\n",
            "7:3 Read x\n",
            "7 Read 1\n",
            "7:x Read 1\n",
            "7:3 Peek 1\n",
            "7:3 Read 1 2\n",
            "Total\n",
            "Sum 3\n",
            "7:3 Write 5\nTotal 5 5\n",
        ] {
            let mut rows = Vec::new();
            parse_blkio_rwstat_into(BLKIO_BYTES, BlkioCounters::Bytes, &mut rows).unwrap();
            assert!(
                parse_blkio_rwstat_into(bad, BlkioCounters::Operations, &mut rows).is_err(),
                "{bad:?}"
            );
            assert_eq!(rows.len(), 2, "{bad:?}");
            assert!(rows.iter().all(|r| r.rios.is_none() && r.wios.is_none()), "{bad:?}");
            assert_eq!(rows[0].wbytes, Some(4194304));
        }
    }

    #[test]
    fn pressure_reexport() {
        let p = parse_pressure(include_str!(
            "../../../fixtures/lxc-container/sys/fs/cgroup/cpu.pressure"
        ))
        .unwrap();
        assert_eq!(p.some.total_usec, 1871004556);
        assert_eq!(p.full.map(|f| f.total_usec), Some(1288101224));
    }
}
