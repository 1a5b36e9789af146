#![no_main]
//! `/proc/loadavg` (parse::loadavg).

#[path = "common.rs"]
mod common;

use exporter::parse::loadavg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    if let Ok(load) = loadavg::parse(text) {
        // The integers were printed in the input.
        for n in [load.running, load.total, load.last_pid] {
            assert!(text.contains(&n.to_string()), "{n} not in input");
        }
    }
});
