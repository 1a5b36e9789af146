//! Parsers of two status files Proxmox itself keeps: the storage lines of pmxcfs's `/etc/pve/.rrd`
//! and pve-manager's `/var/lib/pve-manager/pve-replication-state.json`.
//!
//! `.rrd` (pve-cluster `src/pmxcfs/status.c` `cfs_rrd_dump`): one line per key pvestatd
//! broadcast in the last five minutes, `<key>:<data>\n`, and a NUL byte after the last line.
//! pvestatd (pve-manager `PVE/Service/pvestatd.pm` `update_storage_status`) sends, for each
//! *active* storage, the key `pve2-storage/<node>/<storage>` (or `pve-storage-9.0/<node>/<storage>`
//! once `/var/lib/rrdcached/db/pve-storage-9.0` exists, i.e. Proxmox VE 9) with the data
//! `<ctime>:<total>:<used>`, bytes, an undefined value written as `U`. pmxcfs accepts any
//! `pve-storage-*` key of a newer format and keeps its first two columns; so does this parser.
//! Node and guest lines (`pve2-node/`, `pve-vm-9.0/`, ...) are not storage lines and are skipped.
//!
//! The replication state (pve-guest-common `src/PVE/ReplicationState.pm`): JSON
//! `{ "<vmid>": { "local/<target>": { last_sync, last_try, fail_count, duration, error, ... } } }`
//! (`get_unique_target_id` of the `local` job type is `local/<target>`). `last_sync` and
//! `last_try` are epoch seconds (0 = never), `duration` seconds of the last run, `error` the
//! last failure's text, removed after a success. An empty file is an empty state
//! (`read_state` returns `{}` for it).

use std::collections::BTreeMap;

use crate::error::ParseError;
use crate::parse::pve_section::LineError;

/// Which key family a storage line used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RrdFormat {
    /// `pve2-storage/` (Proxmox VE up to 8).
    Pve2,
    /// `pve-storage-9.0/` and any newer `pve-storage-*` (first two columns).
    Pve9,
}

/// One storage line of `.rrd`.
#[derive(Debug, Clone, PartialEq)]
pub struct RrdStorage {
    pub node: String,
    pub storage: String,
    pub format: RrdFormat,
    /// When pvestatd measured it (epoch seconds).
    pub ctime: u64,
    /// `None` for `U` (unknown).
    pub total_bytes: Option<f64>,
    pub used_bytes: Option<f64>,
}

/// The storage lines of a `.rrd` dump, and one error per storage line that could not be read
/// (the other lines are kept).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RrdDump {
    pub storages: Vec<RrdStorage>,
    pub errors: Vec<LineError>,
}

impl RrdDump {
    /// The freshest line of `storage` on `node` (during an upgrade both key formats may be
    /// there for five minutes; the later measurement wins, the newer format on a tie).
    pub fn storage(&self, node: &str, storage: &str) -> Option<&RrdStorage> {
        self.storages
            .iter()
            .filter(|s| s.node == node && s.storage == storage)
            .max_by_key(|s| (s.ctime, s.format))
    }
}

/// A value column: a non-negative number, or `U`.
fn rrd_value(field: &str) -> Result<Option<f64>, String> {
    if field == "U" {
        return Ok(None);
    }
    match field.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
        _ => Err(format!("not a byte count or U: {field:?}")),
    }
}

fn storage_line(key: &str, data: &str) -> Result<Option<RrdStorage>, String> {
    let (format, rest) = if let Some(rest) = key.strip_prefix("pve2-storage/") {
        (RrdFormat::Pve2, rest)
    } else if let Some(rest) = key.strip_prefix("pve-storage-") {
        let (_version, rest) = rest.split_once('/').ok_or("storage key without node")?;
        (RrdFormat::Pve9, rest)
    } else {
        return Ok(None);
    };
    // pmxcfs refuses a key whose node or storage is empty or whose storage holds a '/'.
    let (node, storage) = rest.split_once('/').ok_or("storage key without storage id")?;
    if node.is_empty() || storage.is_empty() || storage.contains('/') {
        return Err(format!("storage key is not <node>/<storage>: {rest:?}"));
    }
    let mut fields = data.split(':');
    let ctime = fields.next().unwrap_or_default();
    let ctime = ctime
        .parse::<u64>()
        .map_err(|_| format!("time is not epoch seconds: {ctime:?}"))?;
    let (Some(total), Some(used)) = (fields.next(), fields.next()) else {
        return Err("fewer than 3 fields (<time>:<total>:<used>)".into());
    };
    if format == RrdFormat::Pve2 && fields.next().is_some() {
        return Err("more than 3 fields for a pve2-storage line".into());
    }
    Ok(Some(RrdStorage {
        node: node.to_string(),
        storage: storage.to_string(),
        format,
        ctime,
        total_bytes: rrd_value(total)?,
        used_bytes: rrd_value(used)?,
    }))
}

/// Parses the storage lines of `.rrd`. Other lines are skipped; a storage line that cannot be
/// read is reported with its line number.
pub fn parse_rrd(text: &str) -> RrdDump {
    // pmxcfs ends the dump with a NUL ("never return undef").
    let text = text.trim_end_matches('\0');
    let mut dump = RrdDump::default();
    for (index, line) in super::lines(text).enumerate() {
        if line.is_empty() {
            continue;
        }
        let Some((key, data)) = line.split_once(':') else {
            if line.contains("-storage") {
                dump.errors.push(LineError {
                    line: index + 1,
                    message: format!("storage line without ':' data: {line:?}"),
                });
            }
            continue;
        };
        match storage_line(key, data) {
            Ok(Some(storage)) => dump.storages.push(storage),
            Ok(None) => {}
            Err(message) => dump.errors.push(LineError {
                line: index + 1,
                message: format!("{key}: {message}"),
            }),
        }
    }
    dump
}

/// The state of one replication job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobState {
    /// Start of the last successful sync; 0 (never) is `None`.
    pub last_sync: Option<f64>,
    /// Start of the last attempt; 0 (never) is `None`.
    pub last_try: Option<f64>,
    /// Consecutive failures since the last success (0 when absent, as `extract_job_state`).
    pub fail_count: f64,
    /// Seconds the last run took; absent before the first run ended.
    pub duration: Option<f64>,
    /// The last failure's message; gone after a success.
    pub error: Option<String>,
}

/// vmid -> target id (`local/<node>`) -> state.
pub type ReplicationState = BTreeMap<u32, BTreeMap<String, JobState>>;

/// A number as Perl's JSON encoder may write it: a JSON number, or a string holding one (a
/// value last used as a string is encoded as a string).
fn perl_number(value: &serde_json::Value) -> Option<f64> {
    match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

fn number_field(
    job: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    at: &str,
) -> Result<Option<f64>, ParseError> {
    match job.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => match perl_number(value) {
            Some(n) if n.is_finite() && n >= 0.0 => Ok(Some(n)),
            _ => Err(ParseError::new(format!(
                "{at}: '{key}' is not a non-negative number: {value}"
            ))),
        },
    }
}

/// Parses `pve-replication-state.json`.
pub fn parse_replication_state(text: &str) -> Result<ReplicationState, ParseError> {
    if text.is_empty() {
        return Ok(ReplicationState::new());
    }
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ParseError::new(format!("invalid replication state JSON: {e}")))?;
    let top = json
        .as_object()
        .ok_or_else(|| ParseError::new("replication state is not a JSON object"))?;
    let mut state = ReplicationState::new();
    for (vmid_text, targets) in top {
        let vmid: u32 = vmid_text
            .parse()
            .map_err(|_| ParseError::new(format!("replication state key is not a guest id: {vmid_text:?}")))?;
        let targets = targets
            .as_object()
            .ok_or_else(|| ParseError::new(format!("guest {vmid}: state is not an object")))?;
        let mut jobs = BTreeMap::new();
        for (tid, job) in targets {
            let at = format!("guest {vmid} {tid}");
            let job = job
                .as_object()
                .ok_or_else(|| ParseError::new(format!("{at}: state is not an object")))?;
            let error = match job.get("error") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            };
            jobs.insert(
                tid.clone(),
                JobState {
                    last_sync: number_field(job, "last_sync", &at)?.filter(|t| *t > 0.0),
                    last_try: number_field(job, "last_try", &at)?.filter(|t| *t > 0.0),
                    fail_count: number_field(job, "fail_count", &at)?.unwrap_or(0.0),
                    duration: number_field(job, "duration", &at)?,
                    error,
                },
            );
        }
        state.insert(vmid, jobs);
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrd_storage_lines_of_both_formats_and_the_nul() {
        let text = "pve2-node/pve1:1733390000:1.5:0.1:0.2:0.3:100:50:10:5:1000:500:20:30\n\
                    pve2-storage/pve1/local-zfs:1733390000:1000000:250000\n\
                    pve-storage-9.0/pve1/thin:1733390010:2000:U\n\
                    pve-storage-9.5/pve1/future:1733390020:3000:1000:7:8\n\
                    pve-vm-9.0/101:1733390000:1:2\n\0";
        let dump = parse_rrd(text);
        assert_eq!(dump.errors, vec![]);
        assert_eq!(dump.storages.len(), 3);
        let zfs = dump.storage("pve1", "local-zfs").unwrap();
        assert_eq!(zfs.format, RrdFormat::Pve2);
        assert_eq!(
            (zfs.ctime, zfs.total_bytes, zfs.used_bytes),
            (1733390000, Some(1e6), Some(250000.0))
        );
        let thin = dump.storage("pve1", "thin").unwrap();
        assert_eq!(
            (thin.format, thin.total_bytes, thin.used_bytes),
            (RrdFormat::Pve9, Some(2000.0), None)
        );
        let future = dump.storage("pve1", "future").unwrap();
        assert_eq!((future.total_bytes, future.used_bytes), (Some(3000.0), Some(1000.0)));
        assert!(dump.storage("pve2", "thin").is_none());
    }

    #[test]
    fn the_freshest_line_wins_when_both_formats_are_there() {
        let text = "pve2-storage/n/s:100:10:1\npve-storage-9.0/n/s:160:10:2\n";
        assert_eq!(parse_rrd(text).storage("n", "s").unwrap().used_bytes, Some(2.0));
        let text = "pve-storage-9.0/n/s:100:10:2\npve2-storage/n/s:160:10:1\n";
        assert_eq!(parse_rrd(text).storage("n", "s").unwrap().used_bytes, Some(1.0));
    }

    #[test]
    fn a_truncated_storage_line_costs_only_itself() {
        let text = "pve2-storage/n/a:100:10:1\npve2-storage/n/b:100:10\npve2-storage/n/c:10\n\
                    pve2-storage/n/d:100:ten:1\npve2-storage/n\npve2-storage/n/e:100:-5:1\npve2-storage/n/f:100:20:5\n\0";
        let dump = parse_rrd(text);
        let ids: Vec<&str> = dump.storages.iter().map(|s| s.storage.as_str()).collect();
        assert_eq!(ids, vec!["a", "f"]);
        assert_eq!(
            dump.errors.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![2, 3, 4, 5, 6]
        );
        assert!(
            dump.errors[0].message.contains("pve2-storage/n/b"),
            "{}",
            dump.errors[0]
        );
    }

    #[test]
    fn an_empty_dump_is_just_the_nul() {
        assert_eq!(parse_rrd("\0"), RrdDump::default());
        assert_eq!(parse_rrd(""), RrdDump::default());
    }

    #[test]
    fn replication_state_as_pve_manager_writes_it() {
        let text = r#"{"100":{"local/pve2":{"last_sync":1733389200,"last_try":1733389200,"fail_count":0,"duration":3.52,"last_node":"pve1","last_iteration":1733389200,"storeid_list":["local-zfs"]}},"101":{"local/pve2":{"last_sync":0,"last_try":"1733389800","fail_count":3,"duration":1.2,"error":"no space left"}}}"#;
        let state = parse_replication_state(text).unwrap();
        let ok = &state[&100]["local/pve2"];
        assert_eq!(
            ok,
            &JobState {
                last_sync: Some(1733389200.0),
                last_try: Some(1733389200.0),
                fail_count: 0.0,
                duration: Some(3.52),
                error: None
            }
        );
        let failing = &state[&101]["local/pve2"];
        assert_eq!(failing.last_sync, None, "0 means never");
        assert_eq!(failing.last_try, Some(1733389800.0), "a number written as a string");
        assert_eq!(failing.fail_count, 3.0);
        assert_eq!(failing.error.as_deref(), Some("no space left"));
    }

    #[test]
    fn replication_state_errors_name_what_is_wrong() {
        assert_eq!(parse_replication_state("").unwrap(), ReplicationState::new());
        for (text, needle) in [
            ("{\"100\": {", "invalid replication state JSON"),
            ("[]", "not a JSON object"),
            ("{\"abc\": {}}", "not a guest id"),
            ("{\"100\": 5}", "guest 100: state is not an object"),
            (
                "{\"100\": {\"local/x\": {\"fail_count\": \"many\"}}}",
                "guest 100 local/x: 'fail_count'",
            ),
        ] {
            let error = parse_replication_state(text).unwrap_err();
            assert!(error.to_string().contains(needle), "{text}: {error}");
        }
    }
}
