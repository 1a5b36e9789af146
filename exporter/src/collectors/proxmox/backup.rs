//! Collector `backup`: the result of every local guest's last vzdump backup and whether a
//! backup job covers it, from files on the node, without API token or HTTP call.
//!
//! Reads (under the file-tree root, the parent of `PROC_PATH`; see [`crate::parse::pve_tasks`]
//! and [`crate::parse::pve_jobs`] for the formats):
//! - `/var/log/pve/tasks/index`, the archive of finished tasks, and `index.1`, the archive
//!   before the last rotation: only the bytes appended since the last collection. Proxmox
//!   appends to `index` and renames it to `index.1` once it exceeds 50,000 bytes, so the
//!   collector keeps the file's inode and the offset read so far; a new inode means a
//!   rotation, and the rest of the old file is then read from `index.1` before the new
//!   `index` from its start; a file that shrank is read again from its start. A last line
//!   without its newline is being written: it is read once it is complete.
//! - `/var/log/pve/tasks/active`, when it changed: tasks that ended but are not archived yet
//!   (`saved` 0 with an end time). A running task (no end time) is no result.
//! - `/var/log/pve/tasks/<X>/<UPID>`, the log of each finished `vzdump` task, once: a task log
//!   does not change after the task ended. Its per-guest lines are the results.
//! - `$PVE_PATH/lxc/*.conf`, `$PVE_PATH/qemu-server/*.conf` (this node's guests and names:
//!   the scan the `guests` collector made in the same collection, see [`super::local_configs`];
//!   scanned here only when `guests` is not enabled), `$PVE_PATH/.members` (the node name),
//!   `$PVE_PATH/jobs.cfg`, `$PVE_PATH/user.cfg` and `$PVE_PATH/vzdump.cron`: re-read when
//!   their inode, size or mtime changes.
//!
//! Produces, per local guest, labelled `container_id`, `host_name`, `type` like the `guests`
//! collector's series: [`BACKUP_LAST_SUCCESS`], [`BACKUP_LAST_ATTEMPT`], [`BACKUP_LAST_FAILED`],
//! [`BACKUP_LAST_DURATION`] and [`BACKUP_COVERED`].
//!
//! What counts: a guest's attempt is in a finished vzdump task whose log names it; it
//! succeeded with `Finished Backup of VM <vmid>`, failed with `Backup of VM <vmid> failed` or
//! when the task ended after `Starting Backup of VM <vmid>` with neither (cut off). A task for
//! one guest (its UPID's id is the vmid) whose log names no guest (it failed before the guest
//! started, or the log is gone) is that guest's attempt with the task's status. Times are the
//! task's end time from the index (the task log's own timestamps are local time without a
//! zone). Results are kept per vmid since the exporter started, from what `index` and
//! `index.1` still hold then; a guest no finished task names has no `last_*` series. A result
//! whose Starting line names the other guest type (`lxc`, `qemu`), or that ended before a VM's
//! creation time (`meta: ctime` of its config), belongs to the guest that had the vmid before
//! (Proxmox reuses a destroyed guest's number) and is not served for this one.
//!
//! Errors, each naming its file: an index line that is not one Proxmox writes (it is skipped,
//! as Proxmox's own task list skips it), a task log that ends without a TASK line (its
//! per-guest lines are still used), a file that cannot be read. Errors of bytes and logs read
//! once are reported in the collection that read them; an unreadable jobs.cfg, user.cfg or
//! vzdump.cron (coverage unknown: the covered series are absent) on every collection.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::guests::{GuestsCollector, Key, Stamp};
use super::local_configs::LocalConfigs;
use super::metrics::GUEST_LABELS;
use crate::collectors::{Collector, Environment};
use crate::error::CollectError;
use crate::model::{Kind, LabelValue, MetricDesc, Sample, SnapshotBuilder, Unit, Value};
use crate::parse::pve::{self, GuestType};
use crate::parse::pve_jobs::{self, Jobs, Pools};
use crate::parse::pve_tasks::{self, GuestOutcome, TaskEnd, TaskStatus, Upid};

const fn backup(name: &'static str, help: &'static str, unit: Unit) -> MetricDesc {
    super::metrics::guest(name, help, Kind::Gauge, unit, &GUEST_LABELS, None)
}

pub static BACKUP_LAST_SUCCESS: MetricDesc = backup(
    "pve_guest_backup_last_success_timestamp_seconds",
    "End of the vzdump task in which the guest's last successful backup finished (Unix seconds, from /var/log/pve/tasks/index and the task's log); absent when no finished task on record backed the guest up.",
    Unit::Seconds,
);
pub static BACKUP_LAST_ATTEMPT: MetricDesc = backup(
    "pve_guest_backup_last_attempt_timestamp_seconds",
    "End of the last finished vzdump task that tried to back the guest up (Unix seconds); absent when none is on record.",
    Unit::Seconds,
);
pub static BACKUP_LAST_FAILED: MetricDesc = backup(
    "pve_guest_backup_last_failed",
    "1 when the guest's last backup attempt failed (its log line 'Backup of VM <vmid> failed', cut off, or its single-guest task ended in error), 0 when it succeeded.",
    Unit::Count("1"),
);
pub static BACKUP_LAST_DURATION: MetricDesc = backup(
    "pve_guest_backup_last_duration_seconds",
    "How long the guest's last successful backup took (vzdump's 'Finished Backup of VM <vmid> (HH:MM:SS)').",
    Unit::Seconds,
);
pub static BACKUP_COVERED: MetricDesc = backup(
    "pve_guest_backup_covered",
    "1 when an enabled vzdump job of /etc/pve/jobs.cfg (all/exclude, vmid or pool via user.cfg, node) or a line of the legacy /etc/pve/vzdump.cron selects the guest, else 0.",
    Unit::Count("1"),
);

/// Every metric of this collector, in the order of the collector's sample families.
pub static BACKUP_METRICS: &[&MetricDesc] = &[
    &BACKUP_LAST_SUCCESS,
    &BACKUP_LAST_ATTEMPT,
    &BACKUP_LAST_FAILED,
    &BACKUP_LAST_DURATION,
    &BACKUP_COVERED,
];

/// When a task ended and, to order tasks that ended in the same second, when it started.
type Instant = (u64, u64);

/// What the tasks on record say of one vmid.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct GuestRecord {
    /// The last attempt: when, and whether it failed.
    attempt: Option<(Instant, bool, Option<GuestType>)>,
    /// The last success: when, and how long it took (absent for a single-guest task whose log
    /// is gone).
    success: Option<(Instant, Option<u64>, Option<GuestType>)>,
}

/// Whether a result of a task that ended at `ended`, for a guest of `recorded` type, belongs
/// to the guest `key` now names, created at `created` (a VM's `meta: ctime`). Proxmox hands a
/// destroyed guest's vmid to the next new guest, so a guest may hold the number of one whose
/// backups are still on record: a result of the other type, or one that ended before the VM
/// was created, is not this guest's. A result of no known type (an index line whose log is
/// gone, a guest that failed before it started) is taken as the current guest's.
fn same_guest(recorded: Option<GuestType>, ended: u64, key: Key, created: Option<u64>) -> bool {
    recorded.is_none_or(|t| t == key.0) && created.is_none_or(|created| ended >= created)
}

/// Where the reading of the task archive stands: the file being followed (by device and
/// inode, which a rename keeps) and how many of its bytes were consumed (through the last
/// complete line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    dev: u64,
    ino: u64,
    offset: u64,
}

impl Cursor {
    fn is(&self, meta: &std::fs::Metadata) -> bool {
        self.dev == meta.dev() && self.ino == meta.ino()
    }
}

/// A small config file parsed when its stamp changes.
#[derive(Debug)]
enum Watched<T> {
    /// Not read yet.
    Unknown,
    /// The file does not exist: as good as empty.
    Absent,
    Parsed(Stamp, T),
    /// Could not be read: what depends on it is unknown.
    Failed(Stamp, String),
}

impl<T: Default> Watched<T> {
    /// Re-reads `path` when its stamp changed. Line errors of a new parse are pushed once; an
    /// unreadable file on every call.
    fn refresh(&mut self, path: &Path, parse: impl FnOnce(&str) -> (T, Vec<String>), errors: &mut Vec<CollectError>) {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *self = Watched::Absent;
                return;
            }
            Err(e) => {
                *self = Watched::Unknown;
                errors.push(CollectError::io(path, e));
                return;
            }
        };
        let stamp = Stamp::of(&meta);
        let current = match self {
            Watched::Parsed(s, _) | Watched::Failed(s, _) => *s == stamp,
            Watched::Unknown | Watched::Absent => false,
        };
        if !current {
            *self = match std::fs::read(path) {
                Ok(bytes) => {
                    let (value, line_errors) = parse(&String::from_utf8_lossy(&bytes));
                    if let Some(first) = line_errors.first() {
                        errors.push(CollectError::parse(
                            path,
                            format!("{first} ({} unusable line(s) in all)", line_errors.len()),
                        ));
                    }
                    Watched::Parsed(stamp, value)
                }
                Err(e) => Watched::Failed(stamp, CollectError::io(path, e).to_string()),
            };
        }
        if let Watched::Failed(_, message) = self {
            errors.push(CollectError::Other(message.clone()));
        }
    }

    /// The parsed value; the default for an absent file; `None` when unknown.
    fn get(&self) -> Option<std::borrow::Cow<'_, T>>
    where
        T: Clone,
    {
        match self {
            Watched::Parsed(_, value) => Some(std::borrow::Cow::Borrowed(value)),
            Watched::Absent => Some(std::borrow::Cow::Owned(T::default())),
            Watched::Unknown | Watched::Failed(..) => None,
        }
    }
}

/// The `backup` collector. Create it once and call `collect` repeatedly: the archive is read
/// incrementally and task logs once, so its value is the state it keeps.
#[derive(Debug)]
pub struct BackupCollector {
    pve_path: PathBuf,
    proc_path: PathBuf,
    root_path: PathBuf,
    tasks_dir: PathBuf,
    /// This node's guest configs, scanned once per collection with `guests`.
    local_configs: LocalConfigs,
    /// The number of the last scan of `local_configs` this collector used.
    configs_used: u64,
    members: Option<(Stamp, Option<String>)>,
    /// Label arrays per guest and the name they were built with.
    labels: HashMap<Key, (Option<String>, Arc<[LabelValue]>)>,
    cursor: Option<Cursor>,
    active: Option<Stamp>,
    /// Tasks taken from `active` before they reached the archive: skipped when they do.
    unarchived: HashSet<String>,
    records: HashMap<u32, GuestRecord>,
    jobs: Watched<Jobs>,
    cron: Watched<Jobs>,
    pools: Watched<Pools>,
    /// Bytes of `index` / `index.1` read, and task logs parsed, since start (for tests and
    /// /status: steady state reads nothing).
    bytes_read: u64,
    logs_parsed: u64,
    buf: Vec<u8>,
}

impl BackupCollector {
    /// Prepares empty state; nothing is read until the first collection.
    pub fn new(env: &Environment) -> Self {
        BackupCollector {
            pve_path: env.pve_path.clone(),
            proc_path: env.proc_path.clone(),
            root_path: env.root_path.clone(),
            tasks_dir: env.root_path.join("var/log/pve/tasks"),
            local_configs: env.local_configs.clone(),
            configs_used: 0,
            members: None,
            labels: HashMap::new(),
            cursor: None,
            active: None,
            unarchived: HashSet::new(),
            records: HashMap::new(),
            jobs: Watched::Unknown,
            cron: Watched::Unknown,
            pools: Watched::Unknown,
            bytes_read: 0,
            logs_parsed: 0,
            buf: Vec::new(),
        }
    }

    /// Bytes of the task archive (`index`, `index.1`) read since start.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// vzdump task logs read and parsed since start.
    pub fn logs_parsed(&self) -> u64 {
        self.logs_parsed
    }

    /// Reads what was appended to the archive since the last collection.
    fn read_archive(&mut self, errors: &mut Vec<CollectError>) {
        let index = self.tasks_dir.join("index");
        let index_meta = match stat(&index) {
            Ok(meta) => meta,
            Err(e) => return errors.push(e),
        };
        if let (Some(cursor), Some(meta)) = (self.cursor, &index_meta)
            && cursor.is(meta)
        {
            // The same file: read what was appended; one that shrank was rewritten in place.
            let from = if meta.len() < cursor.offset { 0 } else { cursor.offset };
            if meta.len() != from {
                self.read_from(&index, from, true, errors);
            }
            return;
        }
        // The file followed so far is not `index` any more: rotated to `index.1`, whose rest
        // is read first; or not followed yet (start) or lost (two rotations since the last
        // collection), and then all of `index.1` is read.
        let rotated = self.tasks_dir.join("index.1");
        match stat(&rotated) {
            Ok(Some(meta)) => {
                let from = match self.cursor {
                    Some(c) if c.is(&meta) && c.offset <= meta.len() => c.offset,
                    _ => 0,
                };
                self.cursor = None;
                self.read_from(&rotated, from, false, errors);
            }
            Ok(None) => self.cursor = None,
            Err(e) => errors.push(e),
        }
        if index_meta.is_some() {
            self.read_from(&index, 0, true, errors);
        }
    }

    /// Reads `path` from `offset` to its end and takes its complete lines; the cursor then
    /// follows this file. `live`: the file may still grow, so a last line without its newline
    /// is left for the next collection; otherwise it is a truncated line.
    fn read_from(&mut self, path: &Path, offset: u64, live: bool, errors: &mut Vec<CollectError>) {
        let mut file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => return errors.push(CollectError::io(path, e)),
        };
        // The descriptor's own inode: the name may have been renamed since the stat.
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(e) => return errors.push(CollectError::io(path, e)),
        };
        let offset = if offset > meta.len() { 0 } else { offset };
        self.buf.clear();
        let read = std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))
            .and_then(|_| file.read_to_end(&mut self.buf));
        if let Err(e) = read {
            return errors.push(CollectError::io(path, e));
        }
        self.bytes_read += self.buf.len() as u64;
        let complete = match self.buf.iter().rposition(|&b| b == b'\n') {
            Some(last) => last + 1,
            None => 0,
        };
        let consumed = if live { complete } else { self.buf.len() };
        let bytes = std::mem::take(&mut self.buf);
        let mut at = offset;
        for line in bytes[..consumed].split_inclusive(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(line));
            if line.last() != Some(&b'\n') {
                errors.push(CollectError::parse(
                    path,
                    format!("byte {at}: truncated last line {text:?} (no newline in a rotated file)"),
                ));
            } else if !text.is_empty() {
                match pve_tasks::parse_index_line(&text) {
                    Ok(entry) => {
                        if let Some(end) = entry.end
                            && !self.unarchived.remove(entry.upid.text)
                        {
                            self.task_finished(&entry.upid, end, errors);
                        }
                    }
                    Err(e) => errors.push(CollectError::parse(path, format!("byte {at}: {e}: line skipped"))),
                }
            }
            at += line.len() as u64;
        }
        self.buf = bytes;
        self.cursor = Some(Cursor {
            dev: meta.dev(),
            ino: meta.ino(),
            offset: offset + consumed as u64,
        });
    }

    /// Takes the finished tasks of `active` that are not archived yet.
    fn read_active(&mut self, errors: &mut Vec<CollectError>) {
        let path = self.tasks_dir.join("active");
        let meta = match stat(&path) {
            Ok(Some(meta)) => meta,
            Ok(None) => return self.active = None,
            Err(e) => return errors.push(e),
        };
        let stamp = Stamp::of(&meta);
        if self.active == Some(stamp) {
            return;
        }
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => return errors.push(CollectError::io(&path, e)),
        };
        self.active = Some(stamp);
        let mut listed = HashSet::new();
        for (number, line) in crate::parse::lines(&text).enumerate() {
            if line.is_empty() {
                continue;
            }
            match pve_tasks::parse_active_line(line) {
                Ok(task) => {
                    if let (false, Some(end)) = (task.saved, task.end) {
                        listed.insert(task.upid.text.to_owned());
                        if self.unarchived.insert(task.upid.text.to_owned()) {
                            self.task_finished(&task.upid, end, errors);
                        }
                    }
                }
                Err(e) => errors.push(CollectError::parse(&path, format!("line {}: {e}", number + 1))),
            }
        }
        // Tasks no longer listed unarchived were archived meanwhile (then skipped once when
        // read there) or dropped: either way nothing more to remember of them.
        self.unarchived.retain(|upid| listed.contains(upid));
    }

    /// Records what a finished task says of its guests.
    fn task_finished(&mut self, upid: &Upid<'_>, end: TaskEnd<'_>, errors: &mut Vec<CollectError>) {
        if upid.task_type != "vzdump" {
            return;
        }
        let at = (end.time, upid.start_time);
        let path = self.tasks_dir.join(upid.log_path());
        // Per vmid: `Some(duration)` for a success (the duration when a Finished line gave it),
        // `None` for a failure.
        let mut outcomes: Vec<(u32, Option<GuestType>, Option<Option<u64>>)> = Vec::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                self.logs_parsed += 1;
                let log = pve_tasks::parse_vzdump_log(&String::from_utf8_lossy(&bytes));
                if log.end.is_none() {
                    let status = end.status.map(|s| format!(" (archived as '{}')", status_text(s)));
                    errors.push(CollectError::parse(
                        &path,
                        format!(
                            "the task log ends without a TASK line{}: the task was cut off; its per-guest lines are used",
                            status.unwrap_or_default()
                        ),
                    ));
                }
                outcomes.extend(log.guests.iter().map(|g| {
                    let success = match g.outcome {
                        GuestOutcome::Finished { seconds } => Some(Some(seconds)),
                        GuestOutcome::Failed | GuestOutcome::Unfinished => None,
                    };
                    (g.vmid, g.guest_type, success)
                }));
            }
            // Removed by pveupdate's cleanup or by hand: the index line is all there is.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(CollectError::io(&path, e)),
        }
        if outcomes.is_empty()
            && let Some(vmid) = pve_tasks::parse_vmid(upid.id)
            && let Some(status) = end.status
        {
            // A success without a Finished line has no duration.
            outcomes.push((vmid, None, (!status.is_error()).then_some(None)));
        }
        for (vmid, guest_type, success) in outcomes {
            let record = self.records.entry(vmid).or_default();
            if record.attempt.is_none_or(|(when, _, _)| when <= at) {
                record.attempt = Some((at, success.is_none(), guest_type));
            }
            if let Some(seconds) = success
                && record.success.is_none_or(|(when, _, _)| when <= at)
            {
                record.success = Some((at, seconds, guest_type));
            }
        }
    }

    /// The guest's label array, rebuilt when its name changes.
    fn labels(&mut self, key: Key, name: Option<&str>) -> Arc<[LabelValue]> {
        if let Some((built, labels)) = self.labels.get(&key)
            && built.as_deref() == name
        {
            return Arc::clone(labels);
        }
        let name = name.map(str::to_owned);
        let host_name = name.clone().unwrap_or_else(|| pve::default_name(key.0, key.1));
        let labels: Arc<[LabelValue]> = Arc::new([
            LabelValue::from(key.1.to_string()),
            LabelValue::from(host_name),
            LabelValue::from(key.0.as_str()),
        ]);
        self.labels.insert(key, (name, Arc::clone(&labels)));
        labels
    }
}

/// A status as Proxmox writes it in the archive.
fn status_text(status: TaskStatus<'_>) -> String {
    match status {
        TaskStatus::Ok => "OK".to_owned(),
        TaskStatus::Warnings(n) => format!("WARNINGS: {n}"),
        TaskStatus::Error(e) => e.to_owned(),
    }
}

/// `stat` of a file that may be absent.
fn stat(path: &Path) -> Result<Option<std::fs::Metadata>, CollectError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CollectError::io(path, e)),
    }
}

impl Collector for BackupCollector {
    fn name(&self) -> &'static str {
        "backup"
    }

    fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
        let mut errors = Vec::new();
        let local_configs = self.local_configs.clone();
        let configs = local_configs.current(&self.pve_path, &mut self.configs_used, &mut errors);
        let node = GuestsCollector::local_node_name(
            &self.pve_path,
            &self.proc_path,
            &self.root_path,
            &mut self.members,
            &mut errors,
        );
        self.read_archive(&mut errors);
        self.read_active(&mut errors);
        self.jobs.refresh(
            &self.pve_path.join("jobs.cfg"),
            |t| split(pve_jobs::parse_jobs_cfg(t)),
            &mut errors,
        );
        self.cron.refresh(
            &self.pve_path.join("vzdump.cron"),
            |t| split(pve_jobs::parse_vzdump_cron(t)),
            &mut errors,
        );
        self.pools.refresh(
            &self.pve_path.join("user.cfg"),
            |t| {
                let mut pools = pve_jobs::parse_pools(t);
                let errors = std::mem::take(&mut pools.errors);
                (pools, errors.iter().map(ToString::to_string).collect())
            },
            &mut errors,
        );

        let mut families: [Vec<Sample>; 5] = Default::default();
        let keys: Vec<Key> = configs.configs.keys().copied().collect();
        let node = node.unwrap_or_default();
        let coverage = match (self.jobs.get(), self.cron.get(), self.pools.get()) {
            (Some(jobs), Some(cron), Some(pools)) => Some((jobs, cron, pools)),
            _ => None,
        };
        let mut covered: Vec<Option<bool>> = Vec::with_capacity(keys.len());
        for key in &keys {
            covered.push(coverage.as_ref().map(|(jobs, cron, pools)| {
                jobs.jobs
                    .iter()
                    .chain(&cron.jobs)
                    .any(|job| job.covers(key.1, &node, pools))
            }));
        }
        drop(coverage);
        for (key, covered) in keys.into_iter().zip(covered) {
            let labels = self.labels(key, configs.name(&key));
            let mut push = |family: usize, value: f64| {
                families[family].push(Sample {
                    labels: Arc::clone(&labels),
                    value: Value::Number(value),
                })
            };
            if let Some(record) = self.records.get(&key.1) {
                let created = configs.get(&key).and_then(|entry| entry.config.created);
                if let Some(((end, _), seconds, recorded)) = record.success
                    && same_guest(recorded, end, key, created)
                {
                    push(0, end as f64);
                    if let Some(seconds) = seconds {
                        push(3, seconds as f64);
                    }
                }
                if let Some(((end, _), failed, recorded)) = record.attempt
                    && same_guest(recorded, end, key, created)
                {
                    push(1, end as f64);
                    push(2, if failed { 1.0 } else { 0.0 });
                }
            }
            if let Some(covered) = covered {
                push(4, if covered { 1.0 } else { 0.0 });
            }
        }
        self.labels.retain(|k, _| configs.configs.contains_key(k));
        for (desc, samples) in BACKUP_METRICS.iter().zip(families) {
            if !samples.is_empty() {
                out.family(desc).take_samples(samples);
            }
        }
        super::guests::summarize(errors)
    }

    fn notes(&self) -> Vec<String> {
        vec![format!(
            "backup results from {} (index, index.1, active, vzdump task logs; {} bytes of the archive and {} task logs read since start); coverage from {} jobs.cfg, vzdump.cron and user.cfg",
            self.tasks_dir.display(),
            self.bytes_read,
            self.logs_parsed,
            self.pve_path.display()
        )]
    }
}

/// A [`Jobs`] and its line errors as text.
fn split(mut jobs: Jobs) -> (Jobs, Vec<String>) {
    let errors = std::mem::take(&mut jobs.errors);
    (jobs, errors.iter().map(ToString::to_string).collect())
}
