#![no_main]
//! PSI files (`/proc/pressure/*`, cgroup `*.pressure`; parse::pressure).

#[path = "common.rs"]
mod common;

use exporter::parse::pressure;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    if let Ok(p) = pressure::parse(text) {
        assert!(text.contains("some"));
        // No `full` line, no `full` value (missing is not zero).
        if !text.contains("full") {
            assert!(p.full.is_none());
        }
        assert!(text.contains(&p.some.total_usec.to_string()));
    }
});
