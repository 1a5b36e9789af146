//! `cargo xtask soak otlp-outage [--minutes N]` and `cargo xtask soak churn [--cycles N]`: the
//! long versions of two fault-matrix tests (issue 14, point 5), on the release binary.
//!
//! - `otlp-outage` (default 10 minutes): the exporter pushes OTLP to a loopback port nobody
//!   listens on for N minutes, then a real OTLP/gRPC receiver appears there
//!   (`exporter/tests/fault_matrix.rs`, `otlp_outage_*`, whose CI run lasts 30 s).
//! - `churn` (default 100 cycles): container B of the real-guest rig is stopped and started N
//!   times under the exporter in host mode with eBPF on (`exporter/tests/guest_churn.rs`,
//!   5 cycles in CI). Needs root and the rig's packages (installed if missing).
//!
//! One test, two lengths: the soak is the CI test with a larger number, so what CI proves and
//! what the soak measures cannot drift apart. The test prints its figures (baseline and final
//! RSS, descriptors, series, queue, recovery). CI=true is set so that a missing privilege
//! fails the soak instead of skipping it.

use anyhow::{Context, bail};

/// The option `name`'s whole-number value in `args`, else `default`.
fn number(args: &[String], name: &str, default: u64) -> anyhow::Result<u64> {
    let mut value = default;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == name {
            value = args
                .next()
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0)
                .with_context(|| format!("{name} needs a whole number above 0"))?;
        } else {
            bail!("unknown soak argument {arg:?}");
        }
    }
    Ok(value)
}

/// Runs one test of the exporter's test file `file` with `--release`, its output shown.
fn soak_test(file: &str, test: &str, variable: &str, value: u64) -> anyhow::Result<()> {
    let value = value.to_string();
    crate::run(
        "cargo",
        &[
            "test",
            "--release",
            "--package",
            "metrics-exporter",
            "--test",
            file,
            "--",
            "--exact",
            test,
            "--nocapture",
        ],
        &[(variable, value.as_str()), ("CI", "true")],
    )
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("otlp-outage") => {
            let minutes = number(&args[1..], "--minutes", 10)?;
            soak_test(
                "fault_matrix",
                "otlp_outage_keeps_memory_and_queue_bounded_and_recovers_within_an_interval",
                "SOAK_OTLP_OUTAGE_SECONDS",
                minutes * 60,
            )
        }
        Some("churn") => {
            let cycles = number(&args[1..], "--cycles", 100)?;
            crate::setup::apt_install(crate::setup::RIG_PACKAGES)?;
            soak_test(
                "guest_churn",
                "guest_churn_returns_to_the_baseline",
                "SOAK_CHURN_CYCLES",
                cycles,
            )
        }
        _ => bail!("usage: cargo xtask soak otlp-outage [--minutes N] | churn [--cycles N]"),
    }
}
