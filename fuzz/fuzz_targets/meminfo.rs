#![no_main]
//! `/proc/meminfo` (parse::meminfo).

#[path = "common.rs"]
mod common;

use exporter::parse::meminfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let first = meminfo::parse(text);
    // Pure: the same text gives the same answer (no hidden state between calls).
    assert_eq!(format!("{first:?}"), format!("{:?}", meminfo::parse(text)));
    if let Ok(info) = first {
        // A value absent from the input is absent from the output, never 0.
        if !text.contains("MemAvailable") {
            assert_eq!(info.available, None);
        }
    }
});
