#![no_main]
//! Proxmox status files: the storage lines of `/etc/pve/.rrd` and
//! `/var/lib/pve-manager/pve-replication-state.json`; the input is offered to both. Beyond not
//! panicking: every storage line kept is well formed (ids without '/', values non-negative and
//! finite), errors point at lines of the input, and the parsed replication state keeps no 0
//! timestamps (0 means never, which is absent).

#[path = "common.rs"]
mod common;

use exporter::parse::pve_state::{parse_replication_state, parse_rrd};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let lines = text.split('\n').count();
    let dump = parse_rrd(text);
    for storage in &dump.storages {
        assert!(!storage.node.is_empty() && !storage.storage.is_empty());
        assert!(!storage.storage.contains('/'));
        for value in [storage.total_bytes, storage.used_bytes].into_iter().flatten() {
            assert!(value.is_finite() && value >= 0.0, "{value}");
        }
        let best = dump.storage(&storage.node, &storage.storage).unwrap();
        assert!(best.ctime >= storage.ctime);
    }
    assert!(dump.errors.iter().all(|e| e.line >= 1 && e.line <= lines));

    if let Ok(state) = parse_replication_state(text) {
        for jobs in state.values() {
            for job in jobs.values() {
                assert!(job.last_sync.is_none_or(|t| t > 0.0));
                assert!(job.last_try.is_none_or(|t| t > 0.0));
                assert!(job.fail_count >= 0.0 && job.fail_count.is_finite());
                assert!(job.duration.is_none_or(|d| d >= 0.0 && d.is_finite()));
            }
        }
    }
});
