#![no_main]
//! cgroup v1 blkio rwstat files (`blkio.throttle.io_service_bytes_recursive`, `..._serviced_recursive`): merging both into one row set; a refused file leaves the other file rows untouched.

#[path = "common.rs"]
mod common;

use exporter::parse::cgroup::{self, BlkioCounters};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    // Fuzz the two files as one input split at the first NUL (or the same text twice).
    let (bytes, ops) = text.split_once('\0').unwrap_or((text, text));
    let mut rows = Vec::new();
    let _ = cgroup::parse_blkio_rwstat_into(bytes, BlkioCounters::Bytes, &mut rows);
    let before = rows.clone();
    if cgroup::parse_blkio_rwstat_into(ops, BlkioCounters::Operations, &mut rows).is_err() {
        assert_eq!(rows, before, "a refused file changed the rows");
    }
    // One row per device.
    for (i, r) in rows.iter().enumerate() {
        assert!(
            !rows[i + 1..].iter().any(|o| (o.major, o.minor) == (r.major, r.minor)),
            "device {}:{} twice",
            r.major,
            r.minor
        );
    }
});
