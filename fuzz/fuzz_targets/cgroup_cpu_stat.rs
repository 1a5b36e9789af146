#![no_main]
//! cgroup2 `cpu.stat` (parse::cgroup::parse_cpu_stat).

#[path = "common.rs"]
mod common;

use exporter::parse::cgroup;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    if let Ok(stat) = cgroup::parse_cpu_stat(text) {
        // Optional keys are absent when the input does not print them.
        for (key, value) in [
            ("nr_periods", stat.nr_periods),
            ("nr_throttled", stat.nr_throttled),
            ("throttled_usec", stat.throttled_usec),
            ("nr_bursts", stat.nr_bursts),
            ("burst_usec", stat.burst_usec),
            ("core_sched.force_idle_usec", stat.core_sched_force_idle_usec),
        ] {
            if !text.contains(key) {
                assert_eq!(value, None, "{key} absent from input but parsed");
            }
        }
        assert!(text.contains(&stat.usage_usec.to_string()));
    }
});
