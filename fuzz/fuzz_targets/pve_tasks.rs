#![no_main]
//! Proxmox's task files: lines of `/var/log/pve/tasks/index` and `active`, and a vzdump task
//! log (parse::pve_tasks). Beyond not panicking: a decoded UPID encodes back to its text (up to
//! the case of its hex digits) and names a log inside the tasks directory; a log's guests are
//! distinct valid vmids, each of the type its Starting line names, if any; a TASK status is
//! only found on the last line.

#[path = "common.rs"]
mod common;

use exporter::parse::pve_tasks::{self, Upid};
use libfuzzer_sys::fuzz_target;

fn check_upid(upid: &Upid<'_>) {
    // pstart is 8 or 9 digits as written (a 9th may be a leading zero).
    let width = upid.text.split(':').nth(3).unwrap().len();
    let encoded = format!(
        "UPID:{}:{:08X}:{:0width$X}:{:08X}:{}:{}:{}:",
        upid.node, upid.pid, upid.pstart, upid.start_time, upid.task_type, upid.id, upid.user
    );
    assert!(encoded.eq_ignore_ascii_case(upid.text), "{encoded} vs {}", upid.text);
    let path = upid.log_path();
    assert!(upid.log_dir.is_ascii_hexdigit());
    assert_eq!(path.matches('/').count(), 1, "{path}");
    assert!(path.ends_with(upid.text));
    assert!(upid.start_time <= u64::from(u32::MAX));
}

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    for line in exporter::parse::lines(text) {
        if let Ok(entry) = pve_tasks::parse_index_line(line) {
            check_upid(&entry.upid);
            assert!(line.starts_with(entry.upid.text));
            if let Some(end) = entry.end {
                assert!(end.time <= u64::from(u32::MAX));
            }
        }
        if let Ok(entry) = pve_tasks::parse_active_line(line) {
            check_upid(&entry.upid);
        }
    }
    let log = pve_tasks::parse_vzdump_log(text);
    let mut vmids: Vec<u32> = log.guests.iter().map(|g| g.vmid).collect();
    for (vmid, guest) in vmids.iter().zip(&log.guests) {
        assert!((100..=999_999_999).contains(vmid));
        assert!(text.contains(&format!("Backup of VM {vmid}")));
        if let Some(kind) = guest.guest_type {
            let started = format!("INFO: Starting Backup of VM {vmid} ({})", kind.as_str());
            assert!(text.contains(&started), "a type no Starting line names");
        }
    }
    vmids.sort_unstable();
    vmids.dedup();
    assert_eq!(vmids.len(), log.guests.len(), "one entry per guest");
    if log.end.is_some() {
        let last = exporter::parse::lines(text).filter(|l| !l.trim().is_empty()).last();
        assert!(last.is_some_and(|l| l.starts_with("TASK ")));
    }
});
