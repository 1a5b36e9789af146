//! Collector `replication`: Proxmox storage replication jobs of the guests on this node and
//! their last results, without API token or HTTP.
//!
//! Reads `$PVE_PATH/.members` (this node's name), `$PVE_PATH/.vmlist` (which guests are on this
//! node, as pve-guest-common's job runner decides), `$PVE_PATH/replication.cfg` (section config,
//! `local: <vmid>-<n>` with `target`, `schedule` (default `*/15`), `disable`, `rate`,
//! `source`; re-parsed only when its mtime or size changed), the guests' configs
//! (`lxc/<vmid>.conf`, `qemu-server/<vmid>.conf`, for the name label) and the state
//! `<root>/var/lib/pve-manager/pve-replication-state.json` (re-parsed on change too).
//!
//! Produces, per job of a local guest, labelled `container_id`, `host_name`, `type` (like every
//! per-guest series), `job_id` and `target`. The job label is not called `job`: Prometheus
//! gives every scraped series the scrape job's `job` label and would rename ours to
//! `exported_job`, so alerts grouping `by (job)` would silently group by scrape job.
//! - `pve_replication_info{...,schedule}` 1, and `pve_replication_disabled` (1 for `disable`);
//! - from the state, when the job has an entry: `pve_replication_last_sync_timestamp_seconds`
//!   (start of the last successful sync; absent while it never succeeded: Proxmox writes 0),
//!   `pve_replication_last_try_timestamp_seconds` (start of the last attempt, absent if 0),
//!   `pve_replication_duration_seconds` (the last run), `pve_replication_failures`
//!   (`fail_count`: consecutive failures, reset by a success).
//!
//! A job id is `<vmid>-<n>` read as integers (`0100-00` is `100-0`, as `parse_section_header`
//! of `PVE::ReplicationConfig`); ids below 100, types other than `local`, jobs without target and
//! a second job of one guest to the same target (Proxmox drops it) are reported and skipped. An
//! invalid state file is reported naming it; the info series are still served.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::metrics::GUEST_LABELS;
use super::storage::{CachedFile, local_node};
use crate::collectors::{Collector, Environment};
use crate::error::{CollectError, read_optional, read_parsed};
use crate::model::{Kind, LabelValue, MetricDesc, SnapshotBuilder, Unit};
use crate::parse::pve::{self, GuestType};
use crate::parse::pve_section::{SectionConfig, parse_section_config};
use crate::parse::pve_state::{ReplicationState, parse_replication_state};

const L_JOB: &[&str] = &["container_id", "host_name", "type", "job_id", "target"];
const L_INFO: &[&str] = &["container_id", "host_name", "type", "job_id", "target", "schedule"];

/// A per-job metric: a guest series (it carries the guest's identity) with the job's labels.
const fn job_metric(
    name: &'static str,
    help: &'static str,
    kind: Kind,
    unit: Unit,
    labels: &'static [&'static str],
) -> MetricDesc {
    super::metrics::guest(name, help, kind, unit, labels, None)
}

pub static REPLICATION_INFO: MetricDesc = job_metric(
    "pve_replication_info",
    "A replication job of /etc/pve/replication.cfg for a guest on this node, with its schedule.",
    Kind::Info,
    Unit::Count("1"),
    L_INFO,
);
pub static REPLICATION_DISABLED: MetricDesc = job_metric(
    "pve_replication_disabled",
    "1 when the replication job is disabled in /etc/pve/replication.cfg, else 0.",
    Kind::Gauge,
    Unit::Count("1"),
    L_JOB,
);
pub static REPLICATION_LAST_SYNC: MetricDesc = job_metric(
    "pve_replication_last_sync_timestamp_seconds",
    "Start of the job's last successful sync (pve-replication-state.json last_sync); absent while it never succeeded.",
    Kind::Gauge,
    Unit::Seconds,
    L_JOB,
);
pub static REPLICATION_LAST_TRY: MetricDesc = job_metric(
    "pve_replication_last_try_timestamp_seconds",
    "Start of the job's last attempt (pve-replication-state.json last_try).",
    Kind::Gauge,
    Unit::Seconds,
    L_JOB,
);
pub static REPLICATION_DURATION: MetricDesc = job_metric(
    "pve_replication_duration_seconds",
    "How long the job's last run took (pve-replication-state.json duration).",
    Kind::Gauge,
    Unit::Seconds,
    L_JOB,
);
pub static REPLICATION_FAILURES: MetricDesc = job_metric(
    "pve_replication_failures",
    "Consecutive failed runs of the job since its last success (pve-replication-state.json fail_count).",
    Kind::Gauge,
    Unit::Count("{failure}"),
    L_JOB,
);

/// Every metric of the `replication` collector.
pub static REPLICATION_METRICS: &[&MetricDesc] = &[
    &REPLICATION_INFO,
    &REPLICATION_DISABLED,
    &REPLICATION_LAST_SYNC,
    &REPLICATION_LAST_TRY,
    &REPLICATION_DURATION,
    &REPLICATION_FAILURES,
];

/// One job of `replication.cfg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationJob {
    /// `<vmid>-<n>` with both numbers as integers.
    pub id: String,
    pub guest: u32,
    pub target: String,
    pub schedule: String,
    pub disabled: bool,
}

impl ReplicationJob {
    /// The key of the job in the state file (`get_unique_target_id` of type `local`).
    pub fn target_id(&self) -> String {
        format!("local/{}", self.target)
    }
}

/// `^(\d+)-(\d+)$` with the numbers read as integers, guest >= 100.
fn parse_job_id(id: &str) -> Result<(u32, String), String> {
    let invalid = || format!("invalid replication job id '{id}'");
    let (guest, number) = id.split_once('-').ok_or_else(invalid)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(guest) || !digits(number) {
        return Err(invalid());
    }
    let guest: u32 = guest.parse().map_err(|_| invalid())?;
    let number: u64 = number.parse().map_err(|_| invalid())?;
    if guest < 100 {
        return Err(format!("{} (guest IDs < 100 are reserved)", invalid()));
    }
    Ok((guest, format!("{guest}-{number}")))
}

/// The jobs of `config` and the problems found (each costs only its job or key).
pub fn replication_jobs(config: &SectionConfig) -> (Vec<ReplicationJob>, Vec<String>) {
    let mut problems: Vec<String> = config.errors.iter().map(|e| e.to_string()).collect();
    let mut jobs: Vec<ReplicationJob> = Vec::new();
    let mut seen: HashSet<(u32, String)> = HashSet::new();
    for section in &config.sections {
        let at = format!("line {}", section.line);
        if !section.section_type.eq_ignore_ascii_case("local") {
            problems.push(format!("{at}: unsupported replication type '{}'", section.section_type));
            continue;
        }
        let (guest, id) = match parse_job_id(&section.id) {
            Ok(parsed) => parsed,
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        let Some(target) = section.get("target") else {
            problems.push(format!("{at}: job {id} has no target"));
            continue;
        };
        if !seen.insert((guest, target.to_string())) {
            problems.push(format!(
                "{at}: job {id}: guest {guest} already has a job to '{target}' (Proxmox drops this one)"
            ));
            continue;
        }
        let disabled = match section.boolean("disable") {
            Ok(flag) => flag.unwrap_or(false),
            Err(e) => {
                problems.push(e.to_string());
                false
            }
        };
        jobs.push(ReplicationJob {
            id,
            guest,
            target: target.to_string(),
            schedule: section.get("schedule").unwrap_or("*/15").to_string(),
            disabled,
        });
    }
    (jobs, problems)
}

/// The `replication` collector.
#[derive(Debug)]
pub struct ReplicationCollector {
    pve_path: PathBuf,
    config: CachedFile<SectionConfig>,
    state: CachedFile<ReplicationState>,
}

impl ReplicationCollector {
    pub fn new(env: &Environment) -> Self {
        ReplicationCollector {
            pve_path: env.pve_path.clone(),
            config: CachedFile::new(env.pve_path.join("replication.cfg")),
            state: CachedFile::new(env.root_path.join("var/lib/pve-manager/pve-replication-state.json")),
        }
    }

    /// The guest's `container_id`, `host_name`, `type` labels (its configured name, or Proxmox's
    /// default name when the config has none or cannot be read).
    fn guest_labels(&self, vmid: u32, kind: GuestType, errors: &mut Vec<CollectError>) -> [LabelValue; 3] {
        let dir = match kind {
            GuestType::Lxc => "lxc",
            GuestType::Qemu => "qemu-server",
        };
        let path = self.pve_path.join(dir).join(format!("{vmid}.conf"));
        let name = match read_optional(&path) {
            Ok(Some(text)) => pve::parse_guest_config(&text, kind).name,
            Ok(None) => None,
            Err(e) => {
                errors.push(e);
                None
            }
        };
        [
            LabelValue::from(vmid.to_string()),
            LabelValue::from(name.unwrap_or_else(|| pve::default_name(kind, vmid))),
            LabelValue::from(kind.as_str()),
        ]
    }
}

impl Collector for ReplicationCollector {
    fn name(&self) -> &'static str {
        "replication"
    }

    fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
        let Some(config) = self.config.get(|text| Ok::<_, String>(parse_section_config(text)))? else {
            return Ok(());
        };
        let node = local_node(&self.pve_path)?;
        let vmlist = read_parsed(&self.pve_path.join(".vmlist"), pve::parse_vmlist)?;
        let mut errors: Vec<CollectError> = Vec::new();
        let (jobs, problems) = replication_jobs(&config);
        for problem in problems {
            errors.push(CollectError::parse(self.config.path(), problem));
        }
        let state = match self.state.get(parse_replication_state) {
            Ok(state) => state,
            Err(e) => {
                errors.push(e);
                None
            }
        };
        let empty = Arc::new(ReplicationState::new());
        let state = state.unwrap_or(empty);

        let mut labels_of: BTreeMap<u32, [LabelValue; 3]> = BTreeMap::new();
        for job in &jobs {
            let Some(entry) = vmlist.ids.get(&job.guest).filter(|e| e.node == node) else {
                continue;
            };
            let guest = labels_of
                .entry(job.guest)
                .or_insert_with(|| self.guest_labels(job.guest, entry.kind, &mut errors))
                .clone();
            let [id, name, kind] = guest;
            let labels: [LabelValue; 5] = [
                id.clone(),
                name.clone(),
                kind.clone(),
                LabelValue::from(job.id.as_str()),
                LabelValue::from(job.target.as_str()),
            ];
            let info = [
                id,
                name,
                kind,
                LabelValue::from(job.id.as_str()),
                LabelValue::from(job.target.as_str()),
                LabelValue::from(job.schedule.as_str()),
            ];
            out.push(&REPLICATION_INFO, info, 1.0);
            out.push(
                &REPLICATION_DISABLED,
                labels.clone(),
                if job.disabled { 1.0 } else { 0.0 },
            );
            let Some(job_state) = state.get(&job.guest).and_then(|t| t.get(&job.target_id())) else {
                continue;
            };
            if let Some(t) = job_state.last_sync {
                out.push(&REPLICATION_LAST_SYNC, labels.clone(), t);
            }
            if let Some(t) = job_state.last_try {
                out.push(&REPLICATION_LAST_TRY, labels.clone(), t);
            }
            if let Some(d) = job_state.duration {
                out.push(&REPLICATION_DURATION, labels.clone(), d);
            }
            out.push(&REPLICATION_FAILURES, labels, job_state.fail_count);
        }
        debug_assert_eq!(GUEST_LABELS, [L_JOB[0], L_JOB[1], L_JOB[2]]);
        super::guests::summarize(errors)
    }

    fn notes(&self) -> Vec<String> {
        vec![format!(
            "jobs from {}, state from {}",
            self.config.path().display(),
            self.state.path().display()
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_as_pvesr_writes_them_and_what_is_skipped() {
        let text = "local: 100-0\n\ttarget pve2\n\tschedule */30\n\trate 50\n\n\
                    local: 0101-00\n\ttarget pve2\n\tdisable\n\n\
                    local: 100-1\n\ttarget pve2\n\n\
                    local: 99-0\n\ttarget pve2\n\n\
                    remote: 102-0\n\ttarget x\n\n\
                    local: 103-0\n\tschedule */5\n\n\
                    LOCAL: 104-0\n\ttarget pve3\n";
        let (jobs, problems) = replication_jobs(&parse_section_config(text));
        assert_eq!(
            jobs,
            vec![
                ReplicationJob {
                    id: "100-0".into(),
                    guest: 100,
                    target: "pve2".into(),
                    schedule: "*/30".into(),
                    disabled: false
                },
                ReplicationJob {
                    id: "101-0".into(),
                    guest: 101,
                    target: "pve2".into(),
                    schedule: "*/15".into(),
                    disabled: true
                },
                ReplicationJob {
                    id: "104-0".into(),
                    guest: 104,
                    target: "pve3".into(),
                    schedule: "*/15".into(),
                    disabled: false
                },
            ]
        );
        assert_eq!(jobs[0].target_id(), "local/pve2");
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[0].contains("line 10") && problems[0].contains("already has a job"),
            "{problems:?}"
        );
        assert!(problems[1].contains("reserved"), "{problems:?}");
        assert!(
            problems[2].contains("unsupported replication type 'remote'"),
            "{problems:?}"
        );
        assert!(problems[3].contains("103-0 has no target"), "{problems:?}");
    }

    #[test]
    fn job_ids() {
        assert_eq!(parse_job_id("100-0"), Ok((100, "100-0".into())));
        assert_eq!(parse_job_id("00100-007"), Ok((100, "100-7".into())));
        for bad in ["100", "100-", "-1", "a-1", "100-1-2", "+100-1", "99-1", "100--1"] {
            assert!(parse_job_id(bad).is_err(), "{bad}");
        }
    }
}
