#![no_main]
//! `/proc/<pid>/cgroup` (collectors::node::parse_proc_cgroup) and `/proc/<pid>/status` CapEff (run::parse_effective_capabilities).

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let memberships = exporter::collectors::node::parse_proc_cgroup(text);
    assert!(memberships.len() <= text.lines().count());
    if exporter::run::parse_effective_capabilities(text).is_some() {
        assert!(text.contains("CapEff:"));
    }
});
