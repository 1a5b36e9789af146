#![no_main]
//! Single-value cgroup files (`memory.current`, `memory.max`, `pids.max`, `cpu.max`, `cpu.cfs_quota_us`, `cgroup.procs`): parsed values re-serialised parse again to the same value.

#[path = "common.rs"]
mod common;

use exporter::parse::cgroup::{self, Limit};
use libfuzzer_sys::fuzz_target;

fn limit_text(limit: Limit) -> String {
    match limit {
        Limit::Unlimited => "max".to_owned(),
        Limit::Value(v) => v.to_string(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    if let Ok(n) = cgroup::parse_u64(text) {
        assert_eq!(cgroup::parse_u64(&format!("{n}\n")).unwrap(), n);
    }
    if let Ok(limit) = cgroup::parse_limit(text) {
        assert_eq!(cgroup::parse_limit(&limit_text(limit)).unwrap(), limit);
    }
    if let Ok(max) = cgroup::parse_cpu_max(text) {
        let again = cgroup::parse_cpu_max(&format!("{} {}\n", limit_text(max.quota_usec), max.period_usec)).unwrap();
        assert_eq!(again, max);
        if let Some(cpus) = max.cpus() {
            assert!(cpus.is_finite() && cpus >= 0.0, "cpus {cpus}");
        }
    }
    if let Ok(quota) = cgroup::parse_cfs_quota(text) {
        let written = match quota {
            Limit::Unlimited => "-1".to_owned(),
            Limit::Value(v) => v.to_string(),
        };
        assert_eq!(cgroup::parse_cfs_quota(&written).unwrap(), quota);
    }
    if let Ok(pids) = cgroup::parse_pids(text) {
        let written: String = pids.iter().map(|p| format!("{p}\n")).collect();
        assert_eq!(cgroup::parse_pids(&written).unwrap(), pids);
    }
});
