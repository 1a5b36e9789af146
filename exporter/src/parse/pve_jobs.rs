//! Parsers of what decides which guests Proxmox backs up: the `vzdump` sections of
//! `/etc/pve/jobs.cfg`, the resource pools of `/etc/pve/user.cfg` and the legacy
//! `/etc/pve/vzdump.cron`; and [`BackupJob::covers`], which says whether a job backs a guest up.
//! Pure: each takes text and returns values plus the lines it could not use.
//!
//! Formats and meaning as Proxmox has them:
//! - jobs.cfg is a section config ([`super::pve_section`]): `vzdump: <id>` then indented
//!   `key value` lines; `enabled` defaults to 1 (pve-common `PVE::Job::Registry::parse_config`).
//! - Which guests a job selects (pve-manager `PVE::VZDump::get_included_guests`): `pool` first
//!   (the pool's guests in user.cfg), else `vmid` (a list), else `all` minus `exclude`; none of
//!   the three selects nothing. `node` keeps only the guests on that node (and the job runs
//!   only there: `PVE::API2::VZDump` returns at once on any other node). Lists are
//!   `PVE::Tools::split_list` lists (`,`, `;` or whitespace) of `pve-vmid`s; one invalid vmid
//!   makes the job fail before it backs up anything (`check_vmids` dies).
//! - user.cfg (pve-access-control `PVE::AccessControl::parse_user_config`): colon-separated
//!   lines, `pool:<name>:<comment>:<vmids>:<storages>:`; each field trimmed; a pool name must
//!   match `^[A-Za-z0-9.\-_]+(/[A-Za-z0-9.\-_]+){0,2}$`; a vmid already in an earlier pool is
//!   ignored (a guest belongs to one pool). A job's pool selects the pool's own guests only
//!   (`get_resource_pool_guest_members`), not those of nested pools.
//! - vzdump.cron (pve-guest-common `PVE::VZDump::Common::parse_vzdump_cron_config`): lines
//!   `<min> <hour> * * <dow> root [/path/][#]vzdump <args>`, a `#` before `vzdump` marking the
//!   job disabled; comments, blank lines and `PATH=` are skipped. The arguments are shell words
//!   read by `PVE::JSONSchema::get_options`: positional words are the vmid list, options are
//!   `--name value` or `--name=value` (`-name` too), boolean options (`all`, `quiet`, ...) take
//!   an optional value, list options (`exclude`) may repeat.

use std::collections::{BTreeMap, BTreeSet};

use super::pve_section::{self, LineError};
use super::pve_tasks::parse_vmid;

/// Which guests a job selects, in Proxmox's order of precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Pool(String),
    Vmids(BTreeSet<u32>),
    All {
        exclude: BTreeSet<u32>,
    },
    /// No `pool`, `vmid` or `all`, or a list with an invalid vmid: the job backs up nothing.
    Nothing,
}

/// One backup job: a `vzdump` section of jobs.cfg or a line of vzdump.cron.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupJob {
    /// The section id; `vzdump.cron:<line>` for a cron line.
    pub id: String,
    pub enabled: bool,
    /// Runs only on, and selects only guests of, this node.
    pub node: Option<String>,
    pub selection: Selection,
}

impl BackupJob {
    /// Whether this job backs up guest `vmid` of node `node` (a local guest, so it is in the
    /// cluster's VM list, which `all` and `pool` select from).
    pub fn covers(&self, vmid: u32, node: &str, pools: &Pools) -> bool {
        if !self.enabled || self.node.as_deref().is_some_and(|n| n != node) {
            return false;
        }
        match &self.selection {
            Selection::Pool(pool) => pools.members.get(pool).is_some_and(|m| m.contains(&vmid)),
            Selection::Vmids(vmids) => vmids.contains(&vmid),
            Selection::All { exclude } => !exclude.contains(&vmid),
            Selection::Nothing => false,
        }
    }
}

/// The jobs of a file and the lines that could not be used (1-based line numbers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jobs {
    pub jobs: Vec<BackupJob>,
    pub errors: Vec<LineError>,
}

/// `PVE::Tools::split_list` then `pve-vmid` for each: `Err` names the first invalid word.
fn vmid_list(text: &str) -> Result<BTreeSet<u32>, String> {
    text.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(|w| parse_vmid(w).ok_or_else(|| format!("'{w}' is not a valid vmid")))
        .collect()
}

/// The selection from the values of `pool`, `vmid`, `all` and `exclude`, with Proxmox's
/// precedence; `Err` when the list that decides holds an invalid vmid (the job then fails
/// before it backs anything up).
fn selection(pool: Option<&str>, vmid: Option<&str>, all: bool, exclude: Option<&str>) -> Result<Selection, String> {
    if let Some(pool) = pool.filter(|p| !p.is_empty()) {
        return Ok(Selection::Pool(pool.to_owned()));
    }
    if let Some(vmid) = vmid.filter(|v| !v.is_empty()) {
        return vmid_list(vmid).map(Selection::Vmids);
    }
    if all {
        return Ok(Selection::All {
            exclude: vmid_list(exclude.unwrap_or_default())?,
        });
    }
    Ok(Selection::Nothing)
}

/// The `vzdump` jobs of jobs.cfg (other job types are not backups and are skipped).
pub fn parse_jobs_cfg(text: &str) -> Jobs {
    let config = pve_section::parse_section_config(text);
    let mut jobs = Jobs {
        jobs: Vec::new(),
        errors: config.errors,
    };
    for section in config.sections.iter().filter(|s| s.section_type == "vzdump") {
        let mut boolean = |key: &str| match section.boolean(key) {
            Ok(value) => value,
            Err(e) => {
                jobs.errors.push(e);
                None
            }
        };
        // An unreadable `enabled` is not taken as enabled: that would claim coverage the job
        // may not give.
        let enabled = match section.entry("enabled") {
            None => true,
            Some(_) => boolean("enabled").unwrap_or(false),
        };
        let all = boolean("all").unwrap_or(false);
        let selection = match selection(section.get("pool"), section.get("vmid"), all, section.get("exclude")) {
            Ok(s) => s,
            Err(e) => {
                jobs.errors.push(LineError {
                    line: section.line,
                    message: format!("job '{}': {e}: the job backs up nothing", section.id),
                });
                Selection::Nothing
            }
        };
        jobs.jobs.push(BackupJob {
            id: section.id.clone(),
            enabled,
            node: section.get("node").map(str::to_owned),
            selection,
        });
    }
    jobs
}

/// The resource pools of user.cfg: which guests each holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pools {
    pub members: BTreeMap<String, BTreeSet<u32>>,
    pub errors: Vec<LineError>,
}

/// `verify_poolname`: up to three `/`-separated levels of `[A-Za-z0-9.\-_]+`.
fn valid_pool_name(name: &str) -> bool {
    let levels: Vec<&str> = name.split('/').collect();
    levels.len() <= 3
        && levels
            .iter()
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
}

/// The `pool:` lines of user.cfg (users, groups, ACLs and the rest are skipped).
pub fn parse_pools(text: &str) -> Pools {
    let mut pools = Pools::default();
    let mut claimed = BTreeSet::new();
    for (index, line) in text.split('\n').enumerate() {
        let fields: Vec<&str> = line.trim().split(':').map(str::trim).collect();
        if fields[0] != "pool" {
            continue;
        }
        let error = |message: String| LineError {
            line: index + 1,
            message,
        };
        let name = fields.get(1).copied().unwrap_or_default();
        if !valid_pool_name(name) {
            pools
                .errors
                .push(error(format!("invalid pool name {name:?}: pool ignored")));
            continue;
        }
        let members = pools.members.entry(name.to_owned()).or_default();
        let vmids = fields.get(3).copied().unwrap_or_default();
        for word in vmids
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .filter(|w| !w.is_empty())
        {
            // parse_user_config takes any `^\d+$` here; a guest id is a pve-vmid.
            let Some(vmid) = word
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| word.parse::<u32>().ok())
                .flatten()
            else {
                pools
                    .errors
                    .push(error(format!("pool '{name}': invalid vmid {word:?} ignored")));
                continue;
            };
            if claimed.insert(vmid) {
                members.insert(vmid);
            } else {
                pools.errors.push(error(format!(
                    "pool '{name}': vmid {vmid} is already in another pool; ignored"
                )));
            }
        }
    }
    pools
}

/// Shell words as `PVE::Tools::split_args` splits them: whitespace outside quotes separates,
/// `'...'` is literal, `"..."` and bare words honour backslash escapes. `None` on an
/// unterminated quote.
fn shell_words(text: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => w.push(chars.next()?),
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).push(chars.next()?),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Some(words)
}

/// The boolean options of vzdump (pve-guest-common `PVE::VZDump::Common` `$confdesc`): their
/// value is optional on the command line.
const CRON_BOOLEANS: &[&str] = &["all", "stdexcludes", "quiet", "stop", "remove", "protected", "stdout"];

/// `PVE::JSONSchema::parse_boolean`.
fn cron_boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "" | "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// One cron line's `vzdump` arguments as a job, or why they cannot be one.
fn cron_job(id: String, enabled: bool, args: &str) -> Result<BackupJob, String> {
    let words = shell_words(args).ok_or("unterminated quote")?;
    let mut positional: Vec<String> = Vec::new();
    let mut options: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut words = words.into_iter().peekable();
    while let Some(word) = words.next() {
        let Some(option) = word.strip_prefix("--").or_else(|| word.strip_prefix('-')) else {
            positional.push(word);
            continue;
        };
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name.to_owned(), value.to_owned()),
            None if CRON_BOOLEANS.contains(&option) => {
                // `:s`: the next word is the value unless it looks like an option.
                let value = words.next_if(|w| !w.starts_with('-')).unwrap_or_default();
                (option.to_owned(), value)
            }
            None => {
                let value = words.next().ok_or_else(|| format!("option '{option}' needs a value"))?;
                (option.to_owned(), value)
            }
        };
        options.entry(name).or_default().push(value);
    }
    let first = |name: &str| options.get(name).and_then(|v| v.first()).map(String::as_str);
    let all = match first("all") {
        None => false,
        Some(v) => cron_boolean(v).ok_or_else(|| format!("'--all {v}' is not a boolean"))?,
    };
    // List options repeat (`=s@`); the positional words are the `vmid` list.
    let exclude = options.get("exclude").map(|v| v.join(","));
    let vmids = positional.join(",");
    let selection = selection(first("pool"), Some(vmids.as_str()), all, exclude.as_deref())?;
    Ok(BackupJob {
        id,
        enabled,
        node: first("node").map(str::to_owned),
        selection,
    })
}

/// Splits the first word off `rest` and the whitespace after it.
fn next_word<'a>(rest: &mut &'a str) -> &'a str {
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (word, after) = rest.split_at(end);
    *rest = after.trim_start();
    word
}

/// `^(\d+)\s+(\d+)\s+\*\s+\*\s+(\S+)\s+root\s+(/\S+/)?(#)?vzdump(\s+(.*))?$`: whether the job is
/// enabled (no `#` before `vzdump`) and its arguments; `None` when the line is no vzdump job.
fn cron_command(line: &str) -> Option<(bool, &str)> {
    if line.starts_with(char::is_whitespace) {
        return None;
    }
    let mut rest = line;
    let fields: [&str; 6] = std::array::from_fn(|_| next_word(&mut rest));
    let digits = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit());
    let [minute, hour, day, month, dow, user] = fields;
    if !digits(minute) || !digits(hour) || day != "*" || month != "*" || dow.is_empty() || user != "root" {
        return None;
    }
    let program_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let (mut program, args) = rest.split_at(program_end);
    if program.starts_with('/') {
        // `/\S+/`: a directory of at least one character.
        let slash = program.rfind('/').filter(|&i| i >= 2)?;
        program = &program[slash + 1..];
    }
    match program {
        "vzdump" => Some((true, args)),
        "#vzdump" => Some((false, args)),
        _ => None,
    }
}

/// The jobs of vzdump.cron.
pub fn parse_vzdump_cron(text: &str) -> Jobs {
    let mut jobs = Jobs::default();
    for (index, line) in text.split('\n').enumerate() {
        let line_number = index + 1;
        if line.starts_with('#') || line.trim().is_empty() || is_path_line(line) {
            continue;
        }
        let error = |message: String| LineError {
            line: line_number,
            message,
        };
        let Some((enabled, args)) = cron_command(line) else {
            jobs.errors.push(error(format!("not a vzdump cron line: {line:?}")));
            continue;
        };
        match cron_job(format!("vzdump.cron:{line_number}"), enabled, args) {
            Ok(job) => jobs.jobs.push(job),
            Err(e) => jobs.errors.push(error(format!("{e}: the job is not used"))),
        }
    }
    jobs
}

/// `^PATH\s*=`.
fn is_path_line(line: &str) -> bool {
    line.strip_prefix("PATH")
        .is_some_and(|r| r.trim_start().starts_with('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u32]) -> BTreeSet<u32> {
        v.iter().copied().collect()
    }

    #[test]
    fn jobs_cfg_selections_and_precedence() {
        let text = "vzdump: backup-all\n\tschedule 01:00\n\tall 1\n\texclude 102,  103\n\tenabled 1\n\tstorage local\n\n\
                    vzdump: backup-list\n\tschedule sat 02:00\n\tvmid 200;101\n\n\
                    vzdump: backup-pool\n\tschedule 03:00\n\tpool prod\n\tvmid 999\n\tall 1\n\n\
                    vzdump: backup-off\n\tschedule 04:00\n\tall 1\n\tenabled 0\n\n\
                    vzdump: backup-pve2\n\tschedule 05:00\n\tall 1\n\tnode pve2\n\n\
                    realm-sync: sync-ldap\n\tschedule daily\n\trealm ldap\n\n\
                    vzdump: nothing\n\tschedule 06:00\n\tstorage local\n\n\
                    vzdump: bad\n\tvmid 101,x\n";
        let jobs = parse_jobs_cfg(text);
        let ids: Vec<&str> = jobs.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "backup-all",
                "backup-list",
                "backup-pool",
                "backup-off",
                "backup-pve2",
                "nothing",
                "bad"
            ]
        );
        let j = &jobs.jobs;
        assert_eq!(
            j[0].selection,
            Selection::All {
                exclude: set(&[102, 103])
            }
        );
        assert!(j[0].enabled);
        assert_eq!(j[1].selection, Selection::Vmids(set(&[101, 200])));
        assert!(j[1].enabled, "enabled defaults to 1");
        assert_eq!(
            j[2].selection,
            Selection::Pool("prod".into()),
            "pool wins over vmid and all"
        );
        assert!(!j[3].enabled);
        assert_eq!(j[4].node.as_deref(), Some("pve2"));
        assert_eq!(j[5].selection, Selection::Nothing);
        assert_eq!(j[6].selection, Selection::Nothing);
        assert_eq!(jobs.errors.len(), 1);
        assert_eq!(jobs.errors[0].line, 36);
        assert!(jobs.errors[0].message.contains("'x'"), "{}", jobs.errors[0]);

        let pools = parse_pools("pool:prod:Production::local:\n");
        let covered = |job: &BackupJob, vmid| job.covers(vmid, "pve1", &pools);
        assert!(covered(&j[0], 101) && !covered(&j[0], 102));
        assert!(covered(&j[1], 200) && !covered(&j[1], 102));
        assert!(!covered(&j[2], 999), "the pool is empty");
        assert!(!covered(&j[3], 101), "disabled");
        assert!(!covered(&j[4], 101), "another node's job");
        assert!(j[4].covers(101, "pve2", &pools));
    }

    #[test]
    fn unreadable_enabled_is_not_enabled() {
        let jobs = parse_jobs_cfg("vzdump: j\n\tall 1\n\tenabled yes\n");
        assert!(!jobs.jobs[0].enabled);
        assert_eq!(jobs.errors.len(), 1);
    }

    #[test]
    fn pools_as_access_control_reads_them() {
        let text = "user:root@pam:1:0:::root@example.com:::\n\
                    pool:prod:Production guests:101,200:local-lvm:\n\
                    pool: dev : : 102 101 ; 103 : :\n\
                    pool:bad name:::\n\
                    pool:team/a/b:::\n\
                    pool:team/a/b/c:::\n\
                    pool:empty::::\n\
                    acl:1:/pool/prod:@ops:PVEVMAdmin:\n\
                    pool:odd::0101,abc::\n";
        let pools = parse_pools(text);
        assert_eq!(pools.members["prod"], set(&[101, 200]));
        // 101 is prod's already.
        assert_eq!(pools.members["dev"], set(&[102, 103]));
        assert_eq!(pools.members["empty"], set(&[]));
        assert!(pools.members.contains_key("team/a/b"));
        assert!(!pools.members.contains_key("team/a/b/c"));
        assert!(!pools.members.contains_key("bad name"));
        // `^\d+$` takes 0101 as 101, which prod holds; `abc` is invalid.
        assert_eq!(pools.members["odd"], set(&[]));
        let lines: Vec<usize> = pools.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 6, 9, 9]);
    }

    #[test]
    fn vzdump_cron_lines() {
        let text = "# cluster wide vzdump cron schedule\n\
                    # Automatically generated file - do not edit\n\
                    \n\
                    PATH=\"/usr/sbin:/usr/bin:/sbin:/bin\"\n\
                    \n\
                    0 1 * * *           root vzdump --all 1 --exclude 102 --exclude 103 --mode snapshot --quiet 1\n\
                    30 2 * * sat        root vzdump 101 200 --storage local --mailto 'a b@x'\n\
                    0 3 * * *           root #vzdump 102\n\
                    0 4 * * mon,tue     root /usr/bin/vzdump --pool=prod --node pve2\n\
                    0 5 * * *           root vzdump --all --mode stop\n\
                    0 6 * * * root vzdump --all 101\n\
                    7 * * * * root vzdump 101\n\
                    0 7 * * * root vzdumpx 101\n";
        let jobs = parse_vzdump_cron(text);
        let j = &jobs.jobs;
        assert_eq!(j.len(), 5, "{jobs:?}");
        assert_eq!(j[0].id, "vzdump.cron:6");
        assert_eq!(
            j[0].selection,
            Selection::All {
                exclude: set(&[102, 103])
            }
        );
        assert!(j[0].enabled);
        assert_eq!(j[1].selection, Selection::Vmids(set(&[101, 200])));
        assert_eq!(j[2].selection, Selection::Vmids(set(&[102])));
        assert!(!j[2].enabled);
        assert_eq!(j[3].selection, Selection::Pool("prod".into()));
        assert_eq!(j[3].node.as_deref(), Some("pve2"));
        assert_eq!(j[4].selection, Selection::All { exclude: set(&[]) });
        // `--all 101`: 101 is taken as --all's value, which is no boolean; `7 *` has no hour;
        // `vzdumpx` is another program.
        let lines: Vec<usize> = jobs.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [11, 12, 13]);
    }

    #[test]
    fn shell_words_split_like_a_shell() {
        assert_eq!(
            shell_words(r#"a 'b c' "d \" e" f\ g  "#).unwrap(),
            ["a", "b c", "d \" e", "f g"]
        );
        assert_eq!(shell_words("x'y'z").unwrap(), ["xyz"]);
        assert_eq!(shell_words("''").unwrap(), [""]);
        assert!(shell_words("'open").is_none());
        assert!(shell_words("trailing\\").is_none());
    }
}
