#![no_main]
//! `/etc/pve/corosync.conf` (parse::pve::parse_corosync).

#[path = "common.rs"]
mod common;

use exporter::parse::pve;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    if let Ok(conf) = pve::parse_corosync(text) {
        assert!(conf.nodes.len() <= text.lines().count());
        if let Some(v) = conf.config_version {
            assert!(text.contains(&v.to_string()));
        }
        if !text.contains("cluster_name") {
            assert_eq!(conf.cluster_name, None);
        }
    }
});
