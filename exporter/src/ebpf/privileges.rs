//! Drops every capability of the process once the eBPF programs are loaded and attached.
//!
//! Reads `/proc/self/status` (`CapInh`, `CapPrm`, `CapEff`, `CapBnd`, `CapAmb`, `NoNewPrivs`,
//! `Threads`); produces a [`CapabilityDrop`] (the log line,
//! `/status` under `exporter.components.ebpf.state.capabilities` and
//! `metrics_exporter_capabilities_dropped`).
//!
//! Why nothing is needed afterwards: the programs stay attached through the descriptors the
//! process holds (bpf_links, closed only at exit), the counters, the slot table and the event
//! counts are read and written through shared mappings made at load, the log ring buffer is
//! mapped too, and a new guest is placed by a memory write into the slot table (the socket
//! programs are attached once at the cgroup2 root, not per guest). So the process makes no
//! bpf() call after start-up, which matters before Linux 6.5: there every bpf() command, even a
//! lookup on a held descriptor, needs CAP_BPF while `kernel.unprivileged_bpf_disabled` is set.
//! Everything else it reads (`/proc/<pid>/{stat,cgroup,net/dev}` of any user's process, cgroupfs,
//! sysfs, /etc/pve through the www-data group) is readable without a capability.
//!
//! The order matters: the bounding set can only be shrunk while CAP_SETPCAP is effective (a
//! root start; the systemd unit's bounding set holds just the three eBPF capabilities and no
//! CAP_SETPCAP, and with nothing permitted and `no_new_privs` set they cannot come back), then
//! the ambient set is cleared and `no_new_privs` set (neither needs a capability), and capset
//! empties the effective, permitted and inheritable sets last. Capabilities belong to a thread,
//! not to a process: the drop is refused unless the process has a single thread, so that every
//! thread created afterwards (the tokio workers, the eBPF log reader) starts with none.
//! Kernel references: <https://man7.org/linux/man-pages/man7/capabilities.7.html>,
//! <https://elixir.bootlin.com/linux/v6.18/source/kernel/capability.c> (`capset`),
//! <https://elixir.bootlin.com/linux/v6.18/source/security/commoncap.c> (`cap_task_prctl`).

use std::sync::OnceLock;

/// `CAP_SETPCAP` (<https://elixir.bootlin.com/linux/v6.18/source/include/uapi/linux/capability.h>).
const CAP_SETPCAP: u32 = 8;
/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The capability state of the calling process, as `/proc/self/status` shows it (the masks
/// are those of the thread group leader).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CapabilitySets {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
    pub no_new_privs: bool,
    pub threads: u32,
}

impl CapabilitySets {
    /// True when the process can use no capability and cannot get one back by exec: nothing
    /// effective, permitted, inheritable or ambient.
    pub fn holds_none(&self) -> bool {
        self.effective == 0 && self.permitted == 0 && self.inheritable == 0 && self.ambient == 0
    }
}

/// A `/proc/<pid>/status` text that lacks a field or has one that is not a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: field {field} missing or not a number")]
pub struct StatusError {
    pub path: &'static str,
    pub field: &'static str,
}

/// Parses the capability masks, `NoNewPrivs` and `Threads` of a `/proc/<pid>/status` text.
pub fn parse_status(path: &'static str, text: &str) -> Result<CapabilitySets, StatusError> {
    let field = |name: &'static str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':'));
    let mask = |name: &'static str| {
        field(name)
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .ok_or(StatusError { path, field: name })
    };
    let decimal = |name: &'static str| {
        field(name)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .ok_or(StatusError { path, field: name })
    };
    Ok(CapabilitySets {
        inheritable: mask("CapInh")?,
        permitted: mask("CapPrm")?,
        effective: mask("CapEff")?,
        bounding: mask("CapBnd")?,
        ambient: mask("CapAmb")?,
        no_new_privs: decimal("NoNewPrivs")? != 0,
        threads: decimal("Threads")?,
    })
}

/// Reads this process's capability state (always the real /proc: it is a property of this
/// process, not of PROC_PATH's system).
pub fn read_own() -> Result<CapabilitySets, String> {
    const PATH: &str = "/proc/self/status";
    let text = std::fs::read_to_string(PATH).map_err(|e| format!("{PATH}: {e}"))?;
    parse_status(PATH, &text).map_err(|e| e.to_string())
}

/// What the drop did, for the log, /status and the metric.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CapabilityDrop {
    /// Read back after the drop: no capability effective, permitted, inheritable or ambient.
    pub dropped: bool,
    /// The bounding set was emptied too (possible only with CAP_SETPCAP, i.e. a root start).
    pub bounding_set_cleared: bool,
    pub before: Option<CapabilitySets>,
    pub after: Option<CapabilitySets>,
    /// Why the drop failed or was incomplete.
    pub error: Option<String>,
}

static OUTCOME: OnceLock<CapabilityDrop> = OnceLock::new();

/// The outcome of [`drop_after_start`], once it ran.
pub fn outcome() -> Option<&'static CapabilityDrop> {
    OUTCOME.get()
}

/// Drops every capability (see the module documentation), records the outcome for
/// [`outcome`] and logs one line. Called once, by the service's start path, while the process
/// has one thread.
pub fn drop_after_start() -> &'static CapabilityDrop {
    let result = drop_all();
    if result.dropped {
        tracing::info!(
            before_effective = format!("{:#x}", result.before.map_or(0, |b| b.effective)),
            bounding_set_cleared = result.bounding_set_cleared,
            no_new_privs = result.after.is_some_and(|a| a.no_new_privs),
            "capabilities dropped: the process holds none from now on (the eBPF programs stay attached through the descriptors it holds)"
        );
    } else {
        tracing::warn!(
            error = result.error.as_deref().unwrap_or(""),
            "capabilities could not all be dropped: the process keeps them"
        );
    }
    OUTCOME.get_or_init(|| result)
}

/// The drop itself, without recording it.
fn drop_all() -> CapabilityDrop {
    let mut report = CapabilityDrop {
        dropped: false,
        bounding_set_cleared: false,
        before: None,
        after: None,
        error: None,
    };
    let before = match read_own() {
        Ok(sets) => sets,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    report.before = Some(before);
    if before.threads != 1 {
        report.error = Some(format!(
            "the process has {} threads and capabilities are per thread: not dropped",
            before.threads
        ));
        return report;
    }
    let mut errors = Vec::new();
    if before.effective & (1 << CAP_SETPCAP) != 0 {
        match clear_bounding_set(before.bounding) {
            Ok(()) => report.bounding_set_cleared = true,
            Err(e) => errors.push(e),
        }
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) } != 0 {
        errors.push(format!("PR_CAP_AMBIENT_CLEAR_ALL: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        errors.push(format!("PR_SET_NO_NEW_PRIVS: {}", std::io::Error::last_os_error()));
    }
    if let Err(e) = clear_capability_sets() {
        errors.push(e);
    }
    match read_own() {
        Ok(after) => {
            report.after = Some(after);
            report.dropped = after.holds_none();
            if !report.dropped && errors.is_empty() {
                errors.push(format!(
                    "capabilities still held after the drop: effective {:#x}, permitted {:#x}",
                    after.effective, after.permitted
                ));
            }
        }
        Err(e) => errors.push(e),
    }
    if !errors.is_empty() {
        report.error = Some(errors.join("; "));
    }
    report
}

/// Removes every capability in `bounding` from this thread's bounding set.
fn clear_bounding_set(bounding: u64) -> Result<(), String> {
    for cap in 0..64u32 {
        if bounding & (1 << cap) == 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) } != 0 {
            return Err(format!("PR_CAPBSET_DROP {cap}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`; version 3 takes two (capabilities 0-31 and 32-63).
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Empties this thread's effective, permitted and inheritable sets with one capset.
fn clear_capability_sets() -> Result<(), String> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads one header and two data structs of the layout above (version 3);
    // pid 0 is the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "Name:\tmetrics-exporter\nUmask:\t0022\nState:\tS (sleeping)\nThreads:\t1\n\
        SigQ:\t0/63450\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
        CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n\
        NoNewPrivs:\t0\nSeccomp:\t0\n";

    #[test]
    fn status_masks_parse() {
        let s = parse_status("status", ROOT).unwrap();
        assert_eq!(s.permitted, 0x1ff_ffff_ffff);
        assert_eq!(s.effective, 0x1ff_ffff_ffff);
        assert_eq!((s.inheritable, s.ambient), (0, 0));
        assert_eq!(s.threads, 1);
        assert!(!s.no_new_privs);
        assert!(!s.holds_none());
        // The systemd unit's start: three ambient capabilities, as a non-root user.
        let unit = ROOT
            .replace("CapPrm:\t000001ffffffffff", "CapPrm:\t000000c000001000")
            .replace("CapEff:\t000001ffffffffff", "CapEff:\t000000c000001000")
            .replace("CapInh:\t0000000000000000", "CapInh:\t000000c000001000")
            .replace("CapAmb:\t0000000000000000", "CapAmb:\t000000c000001000");
        let s = parse_status("status", &unit).unwrap();
        assert_eq!(s.ambient, (1 << 39) | (1 << 38) | (1 << 12));
        assert!(!s.holds_none());
        let dropped = unit
            .replace("000000c000001000", "0000000000000000")
            .replace("NoNewPrivs:\t0", "NoNewPrivs:\t1");
        let s = parse_status("status", &dropped).unwrap();
        assert!(s.holds_none() && s.no_new_privs);
    }

    #[test]
    fn a_missing_or_bad_field_names_itself() {
        let e = parse_status("/proc/self/status", &ROOT.replace("CapAmb:\t0000000000000000\n", "")).unwrap_err();
        assert_eq!(e.field, "CapAmb");
        assert!(e.to_string().contains("/proc/self/status"), "{e}");
        let e = parse_status("status", &ROOT.replace("Threads:\t1", "Threads:\tx")).unwrap_err();
        assert_eq!(e.field, "Threads");
        // A prefix of another field's name is not that field.
        let e = parse_status("status", &ROOT.replace("CapEff:", "CapEffective:")).unwrap_err();
        assert_eq!(e.field, "CapEff");
    }
}
