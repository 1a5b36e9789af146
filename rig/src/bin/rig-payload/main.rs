//! The payload of the pure cgroup v2 VM (see `guest_rig::vm`): runs as /init's child inside a
//! TCG-booted Debian kernel, builds Proxmox-shaped guests in the cgroup2 hierarchy mounted at
//! /sys/fs/cgroup, runs the real exporter against them, reads every quantity itself from the
//! raw files and prints the [`Report`] as JSON between marker lines on the console.
//!
//! Invoked with a role as first argument it is one of the guests' workloads instead (a burner,
//! a memory hog, a block-IO job...), started by the orchestrator inside a guest's cgroup.
//!
//! Exit code: 0 when the report was printed (its checks may still have failed: the host-side
//! test judges them), 1 when the guests could not be built (the reason is on the console).

mod work;

use std::time::Instant;

use anyhow::Context;
use guest_rig::report::Report;
use guest_rig::vm::{VERDICT_BEGIN, VERDICT_END};

mod orchestrate;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(role) = args.first() {
        if let Err(e) = work::run_role(role, &args[1..]) {
            eprintln!("rig-payload {role}: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let start = Instant::now();
    let outcome: anyhow::Result<Report> = orchestrate::run().context("building the guests");
    match outcome {
        Ok(report) => {
            let json = serde_json::to_string(&report).expect("a report serialises");
            eprintln!("rig-payload: {} checks in {:?}", report.checks.len(), start.elapsed());
            println!("{VERDICT_BEGIN}\n{json}\n{VERDICT_END}");
        }
        Err(e) => {
            eprintln!("rig-payload failed after {:?}: {e:#}", start.elapsed());
            std::process::exit(1);
        }
    }
}
