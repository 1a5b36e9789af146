//! Parsers of Proxmox's task files under `/var/log/pve/tasks`: UPIDs, the lines of the task
//! archive (`index`, `index.1`) and of the task list (`active`), and the log of a `vzdump` task
//! (the per-guest result of a backup). Pure: each takes text and returns values or a
//! [`ParseError`]; the `backup` collector reads the files.
//!
//! Formats as Proxmox writes and reads them:
//! - UPID: pve-common `PVE::UPID::encode`/`decode` (formerly `PVE::Tools::upid_encode`/
//!   `upid_decode`): `UPID:$node:%08X pid:%08X pstart:%08X starttime:$type:$id:$user:`, pstart
//!   8 or 9 hex digits (it outgrows 32 bits after 497 days of uptime). The log of a task is
//!   `<tasks>/<the starttime field's last character>/<UPID>`: `substr($starttime_hex, 7, 8)`,
//!   an upper-case hex digit since encode prints `%08X` (pveupdate's cleanup walks the
//!   directories `0`-`9`, `A`-`F`).
//! - `index`: `PVE::RESTEnvironment::active_workers` appends `sprintf("%s %08X %s\n", upid,
//!   endtime, status)`; the API's task list reads it back with
//!   `m/^(\S+)(\s([0-9A-Za-z]{8})(\s(\S.*))?)?$/` (end time and status optional).
//! - `active`: `PVE::INotify::write_active_workers`: `UPID SAVED [ENDTIME [STATUS]]`, SAVED 1
//!   when the task is already in the archive; a line without an end time is a running task.
//! - status: `PVE::UPID::read_status` gives `OK`, `WARNINGS: N`, the error text of
//!   `TASK ERROR: <text>`, or `unexpected status` when the log's last line is none of these;
//!   everything but `OK` and `WARNINGS: N` is an error (`status_is_error`).
//! - vzdump task log: pve-manager `PVE::VZDump` prints through `debugmsg` `INFO: Starting
//!   Backup of VM <vmid> (<lxc|qemu>)`, `INFO: Finished Backup of VM <vmid> (HH:MM:SS)`
//!   (`format_time`: hours may exceed two digits) and `ERROR: Backup of VM <vmid> failed -
//!   <why>` (also without a Starting line, when the guest failed before it started); the worker
//!   ends the log with `TASK OK`, `TASK WARNINGS: N` or `TASK ERROR: <text>` (`job errors`
//!   when any guest failed).

use super::pve::GuestType;
use crate::error::ParseError;

/// A decoded UPID. Borrowed from the text it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upid<'a> {
    /// The whole UPID, as written (it is the task log's file name).
    pub text: &'a str,
    pub node: &'a str,
    pub pid: u32,
    pub pstart: u64,
    /// When the task started, Unix seconds.
    pub start_time: u64,
    /// The task type (`vzdump`, `qmstart`, `vzstart`, ...).
    pub task_type: &'a str,
    /// The task's object: for `vzdump` the vmid when exactly one local guest was backed up,
    /// else empty.
    pub id: &'a str,
    pub user: &'a str,
    /// The directory of the task's log below the tasks directory: the start time field's
    /// last character.
    pub log_dir: char,
}

impl Upid<'_> {
    /// The task log's path relative to the tasks directory: `<log_dir>/<UPID>`.
    pub fn log_path(&self) -> String {
        format!("{}/{}", self.log_dir, self.text)
    }
}

fn is_hex(field: &str, lengths: std::ops::RangeInclusive<usize>) -> bool {
    lengths.contains(&field.len()) && field.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `[^:\s/]`: what a UPID's type, id and user may hold (PVE::UPID::decode; the `/` keeps the
/// UPID a plain file name).
fn is_upid_word(field: &str) -> bool {
    field.chars().all(|c| c != ':' && c != '/' && !c.is_whitespace())
}

/// Decodes a UPID exactly as `PVE::UPID::decode` accepts it.
pub fn parse_upid(text: &str) -> Result<Upid<'_>, ParseError> {
    let bad = |why: &str| ParseError::new(format!("invalid UPID {text:?}: {why}"));
    let rest = text.strip_prefix("UPID:").ok_or_else(|| bad("no UPID: prefix"))?;
    let rest = rest.strip_suffix(':').ok_or_else(|| bad("no closing ':'"))?;
    let fields: Vec<&str> = rest.split(':').collect();
    let [node, pid, pstart, start, task_type, id, user] = fields[..] else {
        return Err(bad("not 7 fields"));
    };
    // [a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?
    let node_ok = !node.is_empty()
        && node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !node.starts_with('-')
        && !node.ends_with('-');
    if !node_ok {
        return Err(bad("node name"));
    }
    if !is_hex(pid, 8..=8) || !is_hex(pstart, 8..=9) || !is_hex(start, 8..=8) {
        return Err(bad("pid, pstart or start time is not 8 (pstart 8-9) hex digits"));
    }
    if task_type.is_empty() || user.is_empty() || !is_upid_word(task_type) || !is_upid_word(id) || !is_upid_word(user) {
        return Err(bad("type, id or user"));
    }
    let hex = |field: &str| u64::from_str_radix(field, 16).expect("checked hex digits");
    Ok(Upid {
        text,
        node,
        pid: hex(pid) as u32,
        pstart: hex(pstart),
        start_time: hex(start),
        task_type,
        id,
        user,
        log_dir: start.chars().last().expect("8 characters"),
    })
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus<'a> {
    Ok,
    /// `WARNINGS: N`: finished, with N warnings; not an error.
    Warnings(u64),
    /// Any other text: the error (`unexpected status` when the log ended without a TASK line).
    Error(&'a str),
}

impl<'a> TaskStatus<'a> {
    /// Classifies a status as `PVE::UPID::status_is_error` does.
    pub fn parse(text: &'a str) -> Self {
        if text == "OK" {
            return TaskStatus::Ok;
        }
        if let Some(n) = text.strip_prefix("WARNINGS: ")
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = n.parse()
        {
            return TaskStatus::Warnings(n);
        }
        TaskStatus::Error(text)
    }

    pub fn is_error(&self) -> bool {
        matches!(self, TaskStatus::Error(_))
    }
}

/// The end of a task: when, and its status (absent when the line has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskEnd<'a> {
    /// Unix seconds.
    pub time: u64,
    pub status: Option<TaskStatus<'a>>,
}

/// One line of the task archive (`index`, `index.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexLine<'a> {
    pub upid: Upid<'a>,
    /// `None`: the line has no end time, so it is no result (Proxmox never writes one).
    pub end: Option<TaskEnd<'a>>,
}

/// Splits `text` at its first ASCII whitespace character (Perl's `\s` for these files).
fn split_space(text: &str) -> (&str, Option<&str>) {
    match text.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&text[..i], Some(&text[i + 1..])),
        None => (text, None),
    }
}

/// `(\s([0-9A-Za-z]{8})(\s(\S.*))?)?$` after the UPID (or the SAVED flag): the end time (8
/// hex digits; Proxmox's pattern allows any letter, its `hex()` only hex digits) and status.
fn parse_end(rest: Option<&str>) -> Result<Option<TaskEnd<'_>>, ParseError> {
    let Some(rest) = rest else { return Ok(None) };
    let (time, status) = split_space(rest);
    if !is_hex(time, 8..=8) {
        return Err(ParseError::new(format!(
            "end time {time:?} is not 8 hex digits (a truncated line?)"
        )));
    }
    let status = match status {
        None => None,
        Some(s) if s.is_empty() || s.starts_with(|c: char| c.is_whitespace()) => {
            return Err(ParseError::new(format!("no status after the end time in {rest:?}")));
        }
        Some(s) => Some(TaskStatus::parse(s)),
    };
    Ok(Some(TaskEnd {
        time: u64::from_str_radix(time, 16).expect("checked hex digits"),
        status,
    }))
}

/// Parses one line of `index` / `index.1` (without its newline).
pub fn parse_index_line(line: &str) -> Result<IndexLine<'_>, ParseError> {
    let (upid, rest) = split_space(line);
    Ok(IndexLine {
        upid: parse_upid(upid)?,
        end: parse_end(rest)?,
    })
}

/// One line of `active`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveLine<'a> {
    pub upid: Upid<'a>,
    /// Already appended to the archive (`index`).
    pub saved: bool,
    /// `None`: the task is still running.
    pub end: Option<TaskEnd<'a>>,
}

/// Parses one line of `active` (`read_active_workers`: `^(\S+)\s(0|1)(\s...)?$`).
pub fn parse_active_line(line: &str) -> Result<ActiveLine<'_>, ParseError> {
    let (upid, rest) = split_space(line);
    let upid = parse_upid(upid)?;
    let (saved, rest) = split_space(rest.unwrap_or_default());
    let saved = match saved {
        "0" => false,
        "1" => true,
        other => return Err(ParseError::new(format!("saved flag {other:?} is not 0 or 1"))),
    };
    Ok(ActiveLine {
        upid,
        saved,
        end: parse_end(rest)?,
    })
}

/// What a vzdump task log says of one guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestOutcome {
    /// `Finished Backup of VM <vmid> (HH:MM:SS)`: the backup took `seconds`.
    Finished { seconds: u64 },
    /// `Backup of VM <vmid> failed - ...`.
    Failed,
    /// Started, and the log says nothing more of it: in a task that has ended, the backup was
    /// cut off (the job was aborted, or the node went down).
    Unfinished,
}

/// One guest of a vzdump task log, in the order the log first names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestBackup {
    pub vmid: u32,
    /// The guest's type as its Starting line names it; `None` when the log has no Starting
    /// line for it (it failed before it started) or names a type we do not know. A vmid freed
    /// by a destroyed guest is handed to the next new one, so the type is what tells a new VM
    /// from the container that had its number before.
    pub guest_type: Option<GuestType>,
    pub outcome: GuestOutcome,
}

/// What a vzdump task log says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VzdumpLog {
    pub guests: Vec<GuestBackup>,
    /// The log's last line when it is a TASK line; `None` when the log ends without one (the
    /// worker was killed, the node went down, or the task is still running).
    pub end: Option<OwnedStatus>,
}

/// A [`TaskStatus`] that owns its error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedStatus {
    Ok,
    Warnings(u64),
    Error(String),
}

impl From<TaskStatus<'_>> for OwnedStatus {
    fn from(status: TaskStatus<'_>) -> Self {
        match status {
            TaskStatus::Ok => OwnedStatus::Ok,
            TaskStatus::Warnings(n) => OwnedStatus::Warnings(n),
            TaskStatus::Error(e) => OwnedStatus::Error(e.to_owned()),
        }
    }
}

/// A vmid as `pve-vmid` accepts it (`^[1-9][0-9]{2,8}$`: 100 to 999999999).
pub fn parse_vmid(text: &str) -> Option<u32> {
    let ok = (3..=9).contains(&text.len()) && !text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit());
    if ok { text.parse().ok() } else { None }
}

/// `HH:MM:SS` of `format_time` (hours of any length) in seconds.
fn parse_duration(text: &str) -> Option<u64> {
    let mut parts = text.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || m.len() != 2 || s.len() != 2 || !digits(m) || !digits(s) {
        return None;
    }
    let (m, s): (u64, u64) = (m.parse().ok()?, s.parse().ok()?);
    if m > 59 || s > 59 {
        return None;
    }
    h.parse::<u64>().ok()?.checked_mul(3600)?.checked_add(m * 60 + s)
}

/// The TASK line's status, when `line` is one (`TASK OK`, `TASK WARNINGS: N`, `TASK ERROR:
/// <text>`, as `read_status` matches them).
fn task_line(line: &str) -> Option<TaskStatus<'_>> {
    if line == "TASK OK" {
        return Some(TaskStatus::Ok);
    }
    if let Some(error) = line.strip_prefix("TASK ERROR: ")
        && !error.is_empty()
    {
        return Some(TaskStatus::Error(error));
    }
    match line.strip_prefix("TASK ").map(TaskStatus::parse) {
        Some(w @ TaskStatus::Warnings(_)) => Some(w),
        _ => None,
    }
}

/// Parses a vzdump task log. Lines that are none of the three per-guest lines are other
/// output (progress, hook scripts, storage messages) and are skipped. Never fails: a log
/// without per-guest lines or without a TASK line is still a log; the caller decides what an
/// ended task without them means.
pub fn parse_vzdump_log(text: &str) -> VzdumpLog {
    let mut guests: Vec<GuestBackup> = Vec::new();
    let mut record = |vmid: u32, guest_type: Option<GuestType>, outcome: GuestOutcome| match guests
        .iter_mut()
        .find(|g| g.vmid == vmid)
    {
        Some(g) => {
            g.outcome = outcome;
            g.guest_type = guest_type.or(g.guest_type);
        }
        None => guests.push(GuestBackup {
            vmid,
            guest_type,
            outcome,
        }),
    };
    let mut last = "";
    for line in super::lines(text) {
        if !line.trim().is_empty() {
            last = line;
        }
        if let Some(rest) = line.strip_prefix("INFO: Starting Backup of VM ") {
            // `<vmid> (<type>)`
            if let Some((vmid, kind)) = rest.split_once(' ')
                && let Some(kind) = kind.strip_prefix('(').and_then(|k| k.strip_suffix(')'))
                && let Some(vmid) = parse_vmid(vmid)
            {
                let guest_type = match kind {
                    "lxc" => Some(GuestType::Lxc),
                    "qemu" => Some(GuestType::Qemu),
                    _ => None,
                };
                record(vmid, guest_type, GuestOutcome::Unfinished);
            }
        } else if let Some(rest) = line.strip_prefix("INFO: Finished Backup of VM ") {
            // `<vmid> (HH:MM:SS)`
            if let Some((vmid, time)) = rest.split_once(' ')
                && let Some(time) = time.strip_prefix('(').and_then(|t| t.strip_suffix(')'))
                && let (Some(vmid), Some(seconds)) = (parse_vmid(vmid), parse_duration(time))
            {
                record(vmid, None, GuestOutcome::Finished { seconds });
            }
        } else if let Some(rest) = line.strip_prefix("ERROR: Backup of VM ")
            && let Some((vmid, why)) = rest.split_once(' ')
            && why.starts_with("failed")
            && let Some(vmid) = parse_vmid(vmid)
        {
            record(vmid, None, GuestOutcome::Failed);
        }
    }
    VzdumpLog {
        guests,
        end: task_line(last).map(OwnedStatus::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTI: &str = "UPID:pve1:000A1B2C:0003D4F1:67500A20:vzdump::root@pam:";

    #[test]
    fn upids_decode_as_proxmox_decodes_them() {
        let u = parse_upid(MULTI).unwrap();
        assert_eq!(u.node, "pve1");
        assert_eq!(u.pid, 0xA1B2C);
        assert_eq!(u.pstart, 0x3D4F1);
        assert_eq!(u.start_time, 0x67500A20);
        assert_eq!(u.task_type, "vzdump");
        assert_eq!(u.id, "");
        assert_eq!(u.user, "root@pam");
        assert_eq!(u.log_path(), format!("0/{MULTI}"));
        // pve-common's own test vector.
        let u = parse_upid("UPID:example-node:0000C346:165A0CE4:68D7279C:aptupdate::root@pam:").unwrap();
        assert_eq!((u.pid, u.pstart, u.start_time), (49990, 375000292, 1758930844));
        assert_eq!(u.log_dir, 'C');
        // A 9-digit pstart (uptime beyond 497 days) and an API token user.
        let u = parse_upid("UPID:n-1:00000001:1165A0CE4:68D7279C:qmstart:101:root@pam!tok:").unwrap();
        assert_eq!(u.pstart, 0x1165A0CE4);
        assert_eq!(u.id, "101");
        assert_eq!(
            u.log_path(),
            "C/UPID:n-1:00000001:1165A0CE4:68D7279C:qmstart:101:root@pam!tok:"
        );
        for bad in [
            "",
            "UPID:pve1:000A1B2C:0003D4F1:67500A20:vzdump::root@pam",
            "UPID:pve1:000A1B2:0003D4F1:67500A20:vzdump::root@pam:",
            "UPID:pve1:000A1B2C:0003D4F:67500A20:vzdump::root@pam:",
            "UPID:pve1:000A1B2C:0003D4F1:67500A2:vzdump::root@pam:",
            "UPID:pve1:000A1B2C:0003D4F1:67500A20:vzdump:::",
            "UPID:-pve1:000A1B2C:0003D4F1:67500A20:vzdump::root@pam:",
            "UPID:pve1:000A1B2C:0003D4F1:67500A20:vz/dump::root@pam:",
            "UPID:pve1:000A1B2C:0003D4F1:67500A20:vzdump:../..:root@pam:",
            "UPID:pve1:000A1B2C:0003D4F1:6750",
            "UPID:pve1:000A1B2C:0003D4F1:67500A2G:vzdump::root@pam:",
            "UPID:pve_1:000A1B2C:0003D4F1:67500A20:vzdump::root@pam:",
        ] {
            assert!(parse_upid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn index_lines_with_and_without_end() {
        let line = format!("{MULTI} 67500E11 job errors");
        let l = parse_index_line(&line).unwrap();
        assert_eq!(
            l.end,
            Some(TaskEnd {
                time: 0x67500E11,
                status: Some(TaskStatus::Error("job errors"))
            })
        );
        let line = format!("{MULTI} 67500E11 WARNINGS: 2");
        let l = parse_index_line(&line).unwrap();
        assert_eq!(l.end.unwrap().status, Some(TaskStatus::Warnings(2)));
        let line = format!("{MULTI} 67500E11 OK");
        let l = parse_index_line(&line).unwrap();
        assert_eq!(l.end.unwrap().status, Some(TaskStatus::Ok));
        assert!(!TaskStatus::Ok.is_error() && !TaskStatus::Warnings(1).is_error());
        assert!(TaskStatus::parse("unexpected status").is_error());
        assert!(TaskStatus::parse("WARNINGS: x").is_error());
        // Proxmox's pattern accepts a bare UPID and a missing status.
        assert_eq!(parse_index_line(MULTI).unwrap().end, None);
        assert_eq!(
            parse_index_line(&format!("{MULTI} 67500E11"))
                .unwrap()
                .end
                .unwrap()
                .status,
            None
        );
        // Truncated lines: within the end time, within the UPID; no status after a space.
        for bad in [
            format!("{MULTI} 6750"),
            "UPID:pve1:000A1B2C:0003D".to_owned(),
            format!("{MULTI} 67500E11 "),
            format!("{MULTI} 67500X11 OK"),
            format!("{MULTI}  67500E11 OK"),
        ] {
            assert!(parse_index_line(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn active_lines() {
        let line = format!("{MULTI} 0");
        let running = parse_active_line(&line).unwrap();
        assert!(!running.saved && running.end.is_none());
        let line = format!("{MULTI} 1 67500E11 OK");
        let done = parse_active_line(&line).unwrap();
        assert!(done.saved);
        assert_eq!(done.end.unwrap().time, 0x67500E11);
        assert!(parse_active_line(MULTI).is_err());
        assert!(parse_active_line(&format!("{MULTI} 2")).is_err());
    }

    #[test]
    fn vzdump_logs() {
        let log = "INFO: starting new backup job: vzdump --all 1 --mode snapshot --storage local\n\
                   INFO: Starting Backup of VM 101 (lxc)\n\
                   INFO: Backup started at 2024-12-04 01:00:02\n\
                   INFO: Finished Backup of VM 101 (00:01:25)\n\
                   INFO: Starting Backup of VM 102 (lxc)\n\
                   ERROR: Backup of VM 102 failed - command 'tar' failed: exit code 2\n\
                   ERROR: Backup of VM 105 failed - unable to find configuration file for VM 105\n\
                   INFO: Starting Backup of VM 200 (qemu)\n\
                   INFO: Finished Backup of VM 200 (101:02:03)\n\
                   INFO: Starting Backup of VM 201 (qemu)\n\
                   INFO: Backup job finished with errors\n\
                   \n\
                   TASK ERROR: job errors\n";
        let parsed = parse_vzdump_log(log);
        assert_eq!(
            parsed.guests,
            vec![
                GuestBackup {
                    vmid: 101,
                    guest_type: Some(GuestType::Lxc),
                    outcome: GuestOutcome::Finished { seconds: 85 }
                },
                GuestBackup {
                    vmid: 102,
                    guest_type: Some(GuestType::Lxc),
                    outcome: GuestOutcome::Failed
                },
                GuestBackup {
                    vmid: 105,
                    guest_type: None,
                    outcome: GuestOutcome::Failed
                },
                GuestBackup {
                    vmid: 200,
                    guest_type: Some(GuestType::Qemu),
                    outcome: GuestOutcome::Finished {
                        seconds: 101 * 3600 + 2 * 60 + 3
                    }
                },
                GuestBackup {
                    vmid: 201,
                    guest_type: Some(GuestType::Qemu),
                    outcome: GuestOutcome::Unfinished
                },
            ]
        );
        assert_eq!(parsed.end, Some(OwnedStatus::Error("job errors".to_owned())));
        assert_eq!(parse_vzdump_log("TASK OK\n").end, Some(OwnedStatus::Ok));
        assert_eq!(
            parse_vzdump_log("x\nTASK WARNINGS: 3").end,
            Some(OwnedStatus::Warnings(3))
        );
        // A TASK line that is not the last line does not end the log.
        assert_eq!(parse_vzdump_log("TASK OK\nINFO: more\n").end, None);
        assert_eq!(parse_vzdump_log("").end, None);
        // Malformed per-guest lines are not guests.
        let odd = "INFO: Finished Backup of VM 101 (1:2:3)\nINFO: Finished Backup of VM 99 (00:00:01)\n\
                   INFO: Starting Backup of VM 101\nERROR: Backup of VM 0101 failed - x\n";
        assert!(parse_vzdump_log(odd).guests.is_empty());
        // A type we do not know is still a started backup, of no known type.
        let log = parse_vzdump_log("INFO: Starting Backup of VM 300 (openvz)\n");
        assert_eq!(log.guests[0].guest_type, None);
        assert_eq!(log.guests[0].outcome, GuestOutcome::Unfinished);
    }

    #[test]
    fn vmids_and_durations() {
        assert_eq!(parse_vmid("100"), Some(100));
        assert_eq!(parse_vmid("999999999"), Some(999_999_999));
        for bad in ["", "99", "0100", "1000000000", "10a", "+100"] {
            assert_eq!(parse_vmid(bad), None, "{bad}");
        }
        assert_eq!(parse_duration("00:00:00"), Some(0));
        assert_eq!(parse_duration("01:02:03"), Some(3723));
        for bad in [
            "1:2:3",
            "00:60:00",
            "00:00",
            "00:00:00:00",
            "aa:00:00",
            "99999999999999999999:00:00",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
