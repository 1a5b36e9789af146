#![no_main]
//! cgroup v1 cpu files: `cpu.stat`, `cpuacct.stat` (`memory.oom_control` is flat-keyed, see cgroup_flat_keyed).

#[path = "common.rs"]
mod common;

use exporter::parse::cgroup;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    if let Ok(stat) = cgroup::parse_v1_cpu_stat(text) {
        for (key, value) in [
            ("nr_periods", stat.nr_periods),
            ("nr_throttled", stat.nr_throttled),
            ("throttled_time", stat.throttled_time_ns),
        ] {
            if !text.contains(key) {
                assert_eq!(value, None, "{key} absent from input but parsed");
            }
        }
    }
    if let Ok(acct) = cgroup::parse_cpuacct_stat(text) {
        assert!(text.contains(&acct.user_ticks.to_string()));
        assert!(text.contains(&acct.system_ticks.to_string()));
    }
});
