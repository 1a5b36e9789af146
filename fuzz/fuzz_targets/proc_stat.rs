#![no_main]
//! `/proc/stat` (parse::stat): cpu lines and btime.

#[path = "common.rs"]
mod common;

use exporter::parse::stat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    if let Ok(parsed) = stat::parse(text) {
        // Every per-CPU row comes from its own `cpuN` line.
        let cpu_lines = text.lines().filter(|l| l.trim_start().starts_with("cpu")).count();
        assert!(
            parsed.cpus.len() <= cpu_lines,
            "{} cpu rows from {cpu_lines} cpu lines",
            parsed.cpus.len()
        );
    }
    if let Ok(btime) = stat::parse_btime(text) {
        // The value was printed in the input.
        assert!(text.contains(&btime.to_string()), "btime {btime} not in input");
    }
});
