#![no_main]
//! `/proc/<pid>/stat`: the guest-start reader (starts::parse_start_ticks) and the self-metrics reader (engine::parse_self_stat) agree on starttime.

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let ticks = exporter::starts::parse_start_ticks(text);
    if let Some(own) = exporter::engine::parse_self_stat(text) {
        assert_eq!(
            ticks.ok(),
            Some(own.starttime),
            "the two /proc/<pid>/stat parsers disagree"
        );
    }
});
