#![no_main]
//! What decides backup coverage: `/etc/pve/jobs.cfg` vzdump sections, `/etc/pve/user.cfg`
//! pools and `/etc/pve/vzdump.cron` (parse::pve_jobs). Beyond not panicking: errors point at
//! lines of the input, a guest is in at most one pool, every cron job names its line, and
//! asking a job whether it covers a guest never fails.

#[path = "common.rs"]
mod common;

use std::collections::BTreeSet;

use exporter::parse::pve_jobs::{self, Selection};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let lines = text.split('\n').count();
    let pools = pve_jobs::parse_pools(text);
    let mut seen = BTreeSet::new();
    for members in pools.members.values() {
        for vmid in members {
            assert!(seen.insert(*vmid), "vmid {vmid} in two pools");
        }
    }
    let jobs = pve_jobs::parse_jobs_cfg(text);
    let cron = pve_jobs::parse_vzdump_cron(text);
    for error in pools.errors.iter().chain(&jobs.errors).chain(&cron.errors) {
        assert!((1..=lines).contains(&error.line), "{error}");
    }
    for job in &cron.jobs {
        let line: usize = job.id.strip_prefix("vzdump.cron:").unwrap().parse().unwrap();
        assert!((1..=lines).contains(&line));
    }
    for job in jobs.jobs.iter().chain(&cron.jobs) {
        if let Selection::Vmids(v) | Selection::All { exclude: v } = &job.selection {
            assert!(v.iter().all(|id| (100..=999_999_999).contains(id)));
        }
        for vmid in [100, 101, 999_999_999] {
            let covered = job.covers(vmid, "pve1", &pools);
            if !job.enabled || job.selection == Selection::Nothing {
                assert!(!covered);
            }
        }
    }
});
