//! Parsers of the Proxmox cluster filesystem (pmxcfs, `/etc/pve`): guest configurations
//! (`lxc/<vmid>.conf`, `qemu-server/<vmid>.conf`: the main section and the snapshot
//! sections), `.members`, `.vmlist`, `.version`, `corosync.conf` and the HA manager's
//! `ha/manager_status`.
//!
//! Formats as pmxcfs and pve-container / qemu-server write them (pve-cluster
//! `src/pmxcfs/status.c`, pve-container `src/PVE/LXC/Config.pm` `parse_pct_config`,
//! qemu-server `parse_vm_config`, pve-cluster `src/PVE/Corosync.pm`, pve-ha-manager
//! `src/PVE/HA/Config.pm`). The JSON files are parsed as JSON (serde_json) because pmxcfs
//! prints them with `printf` and their layout (`}}`, a blank line before the last `}`) is not
//! line-oriented.

use std::collections::BTreeMap;

use crate::error::ParseError;

/// Which kind of guest a config or a vmlist entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestType {
    Lxc,
    Qemu,
}

impl GuestType {
    /// The value of the `type` label, as Proxmox spells it in `.vmlist`.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestType::Lxc => "lxc",
            GuestType::Qemu => "qemu",
        }
    }
}

/// One network interface of a guest config (`net<N>: ...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// The `N` of `netN`: the host-side device is `veth<vmid>i<N>` or `tap<vmid>i<N>`.
    pub index: u32,
    /// The guest-side interface name (`name=` of an LXC `netN`); VMs have none.
    pub name: Option<String>,
    /// `bridge=`: the host bridge the interface is plugged into.
    pub bridge: Option<String>,
    /// The guest's MAC address: LXC `hwaddr=`; QEMU `macaddr=` or the model's value
    /// (`virtio=BC:24:11:7E:20:0A`), as written.
    pub hwaddr: Option<String>,
}

/// Proxmox's name of a guest interface, the config key `net<N>` (what the GUI shows); the
/// host-side device of that interface is `veth<vmid>i<N>` (LXC) or `tap<vmid>i<N>` (QEMU).
pub fn net_key(index: u32) -> String {
    format!("net{index}")
}

/// The main section of a guest configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestConfig {
    /// `hostname:` (LXC) or `name:` (QEMU), whichever the config holds.
    pub name: Option<String>,
    /// `tags:` split on `;`, `,` and whitespace, in written order, empties dropped.
    pub tags: Vec<String>,
    /// The `#` lines before the first key, percent-decoded and joined with newlines.
    pub description: Option<String>,
    /// `cores:` as written (LXC: a CPU count limit; QEMU: cores per socket).
    pub cores: Option<u32>,
    /// `sockets:` (QEMU only).
    pub sockets: Option<u32>,
    /// `vcpus:` (QEMU only: hot-plugged vCPUs actually online).
    pub vcpus: Option<u32>,
    /// `memory:` in MiB.
    pub memory_mib: Option<u64>,
    /// `netN:` entries, ordered by N.
    pub nets: Vec<NetConfig>,
    /// `lock:` as written (pve-container: backup, create, destroyed, disk, fstrim, migrate,
    /// mounted, rollback, snapshot, snapshot-delete; qemu-server: backup, clone, create,
    /// migrate, rollback, snapshot, snapshot-delete, suspending, suspended). Proxmox removes
    /// the line when the operation ends (or an admin runs `pct unlock` / `qm unlock`).
    pub lock: Option<String>,
    /// `onboot:`. Absent means the schema's default, 0 (both pve-container and qemu-server
    /// declare `default => 0`), so this is `Some(false)` then; `None` only when the value is
    /// not a boolean Proxmox accepts (the line is in `ignored_lines`).
    pub onboot: Option<bool>,
    /// `template:`, with the same default (0) and the same `None` for a value that is not a
    /// boolean.
    pub template: Option<bool>,
    /// The `ctime` of a VM's `meta:` line (`creation-qemu=<version>,ctime=<epoch>`): when
    /// qemu-server created the VM (it writes the line at creation since Proxmox VE 7; container
    /// configs have none). `None` without it, or when it is not an integer (the line is then in
    /// `ignored_lines`).
    pub created: Option<u64>,
    /// `parent:`: the snapshot the current state was taken after (the newest snapshot of the
    /// branch the guest runs on).
    pub parent: Option<String>,
    /// The snapshot sections (`[name]`), each name once, in file order. Not the pending
    /// section (`[PENDING]` in VM configs, `[pve:pending]` in container configs) nor a VM's
    /// `[special:cloudinit]` / `[special:fleecing]`.
    pub snapshots: Vec<SnapshotSection>,
    /// Lines that could not be used: main-section lines that are neither `key: value`,
    /// comments nor blank, and values of `onboot`, `template` (main section) and `snaptime`
    /// (snapshot sections) that do not parse. Kept so the reader can say what it skipped
    /// instead of failing the whole guest.
    pub ignored_lines: Vec<String>,
}

/// One snapshot section of a guest config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSection {
    /// The section's name as written between the brackets.
    pub name: String,
    /// `snaptime:`, Unix seconds (Proxmox writes `time()` when it creates the snapshot);
    /// `None` when the line is missing or malformed.
    pub snaptime: Option<u64>,
}

impl GuestConfig {
    /// The oldest snapshot's `snaptime`; `None` without snapshots, and when any snapshot has
    /// no readable `snaptime` (the oldest is then unknown, not the oldest of the others).
    pub fn oldest_snapshot_time(&self) -> Option<u64> {
        let mut oldest: Option<u64> = None;
        for snapshot in &self.snapshots {
            let time = snapshot.snaptime?;
            oldest = Some(oldest.map_or(time, |o| o.min(time)));
        }
        oldest
    }
}

/// Decodes the percent-encoding pve-common `encode_text` applies to description lines.
/// An invalid escape is kept as written: a description is free text, not worth failing on.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a `tags:` value the way Proxmox accepts it (`;`, `,` or whitespace).
pub fn split_tags(value: &str) -> Vec<String> {
    value
        .split(|c: char| c == ';' || c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether `value` is a MAC address as Proxmox writes them (six `:`-separated hex pairs).
fn is_mac(value: &str) -> bool {
    let parts: Vec<&str> = value.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The properties of a `netN:` value (`name=eth0,bridge=vmbr0,hwaddr=...` for LXC;
/// `virtio=BC:24:11:7E:20:0A,bridge=vmbr0` or `model=virtio,macaddr=...` for QEMU, whose
/// model key carries the MAC address in the short form, qemu-server `parse_net`). Empty values
/// are absent.
fn parse_net(index: u32, value: &str, kind: GuestType) -> NetConfig {
    let mut net = NetConfig {
        index,
        ..Default::default()
    };
    for (key, v) in value.split(',').filter_map(|kv| kv.split_once('=')) {
        let (key, v) = (key.trim(), v.trim());
        if v.is_empty() {
            continue;
        }
        match (kind, key) {
            (GuestType::Lxc, "name") => net.name = Some(v.to_owned()),
            (GuestType::Lxc, "hwaddr") | (GuestType::Qemu, "macaddr") => net.hwaddr = Some(v.to_owned()),
            (_, "bridge") => net.bridge = Some(v.to_owned()),
            // The short form's model key (`virtio=`, `e1000=`, ...): the only other key whose
            // value is a MAC address.
            (GuestType::Qemu, _) if net.hwaddr.is_none() && is_mac(v) => net.hwaddr = Some(v.to_owned()),
            _ => {}
        }
    }
    net
}

/// What a line of a guest config that starts a section is, by the rules of pve-container
/// `parse_pct_config` and qemu-server `parse_vm_config` (the header must be the whole line,
/// trailing whitespace allowed).
#[derive(Debug, PartialEq, Eq)]
enum Header<'a> {
    /// `[PENDING]` (VM) or `[pve:pending]` (container), any case: changes not applied yet.
    Pending,
    /// A VM's `[special:cloudinit]` or `[special:fleecing]`, or any other bracketed line of a
    /// VM config (qemu-server skips an unknown section): not a snapshot.
    Other,
    /// `[name]` with a name of `[a-z][a-z0-9_-]+`, any case.
    Snapshot(&'a str),
}

/// A snapshot name as the section regex of both parsers accepts it: `[a-z][a-z0-9_\-]+`,
/// case-insensitive (so at least two characters).
fn is_snapshot_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() >= 2
        && bytes[0].is_ascii_alphabetic()
        && bytes[1..]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The section `line` (trailing whitespace already removed) starts, if it is a header.
/// Container configs: `[pve:pending]` is the pending section, so `[PENDING]` there is a
/// snapshot name like any other, and a bracketed line of neither form is no header at all
/// (pve-container reports it as a line it cannot parse). VM configs: `[PENDING]` is the pending
/// section and every other bracketed line starts a section, known or skipped.
fn section_header(line: &str, kind: GuestType) -> Option<Header<'_>> {
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    match kind {
        GuestType::Lxc => {
            if inner.eq_ignore_ascii_case("pve:pending") {
                Some(Header::Pending)
            } else if is_snapshot_name(inner) {
                Some(Header::Snapshot(inner))
            } else {
                None
            }
        }
        GuestType::Qemu => {
            if inner.contains(']') {
                None
            } else if inner.eq_ignore_ascii_case("PENDING") {
                Some(Header::Pending)
            } else if is_snapshot_name(inner) {
                Some(Header::Snapshot(inner))
            } else {
                Some(Header::Other)
            }
        }
    }
}

/// A boolean as Proxmox accepts one (pve-common `parse_boolean`: `1|on|yes|true`,
/// `0|off|no|false`, any case).
pub fn parse_boolean(value: &str) -> Option<bool> {
    const TRUE: [&str; 4] = ["1", "on", "yes", "true"];
    const FALSE: [&str; 4] = ["0", "off", "no", "false"];
    if TRUE.iter().any(|t| value.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if FALSE.iter().any(|f| value.eq_ignore_ascii_case(f)) {
        Some(false)
    } else {
        None
    }
}

/// Which part of a guest config a line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Main,
    /// Index into [`GuestConfig::snapshots`].
    Snapshot(usize),
    /// The pending section, a VM's special sections, a repeated snapshot section: nothing of
    /// them is read.
    Skipped,
}

/// Parses a guest config. Only the main section (before the first section header) describes
/// the guest: snapshot and pending sections repeat keys with old or future values. Of the
/// snapshot sections only their names and `snaptime` are kept. Unknown keys are skipped;
/// malformed lines are recorded in `ignored_lines`, never fatal, so one odd line does not hide
/// the guest's name. A number that does not parse is treated as absent.
pub fn parse_guest_config(text: &str, kind: GuestType) -> GuestConfig {
    let mut config = GuestConfig::default();
    let mut description = Vec::new();
    let mut onboot = Some(false);
    let mut template = Some(false);
    let mut part = Part::Main;
    for raw in text.lines() {
        let line = raw.trim_end();
        if let Some(header) = section_header(line, kind) {
            part = match header {
                Header::Pending | Header::Other => Part::Skipped,
                // A repeated name: Proxmox warns and fills the same snapshot again; it is
                // still one snapshot, and its first snaptime is kept here.
                Header::Snapshot(name) if config.snapshots.iter().any(|s| s.name == name) => Part::Skipped,
                Header::Snapshot(name) => {
                    config.snapshots.push(SnapshotSection {
                        name: name.to_owned(),
                        snaptime: None,
                    });
                    Part::Snapshot(config.snapshots.len() - 1)
                }
            };
            continue;
        }
        if part == Part::Skipped {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if part == Part::Main {
                description.push(percent_decode(comment));
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            if part == Part::Main {
                config.ignored_lines.push(line.to_owned());
            }
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || key.contains(char::is_whitespace) {
            if part == Part::Main {
                config.ignored_lines.push(line.to_owned());
            }
            continue;
        }
        if let Part::Snapshot(index) = part {
            if key == "snaptime" {
                // qemu-server's schema: an integer, minimum 0.
                let time = value.parse::<u64>().ok();
                if time.is_none() {
                    config.ignored_lines.push(line.to_owned());
                }
                config.snapshots[index].snaptime = time;
            }
            continue;
        }
        match key {
            "hostname" if kind == GuestType::Lxc => config.name = Some(value.to_owned()),
            "name" if kind == GuestType::Qemu => config.name = Some(value.to_owned()),
            "tags" => config.tags = split_tags(value),
            "cores" => config.cores = value.parse().ok(),
            "sockets" => config.sockets = value.parse().ok(),
            "vcpus" => config.vcpus = value.parse().ok(),
            "memory" => config.memory_mib = value.parse().ok(),
            "lock" => config.lock = Some(value.to_owned()).filter(|v| !v.is_empty()),
            "parent" => config.parent = Some(value.to_owned()).filter(|v| !v.is_empty()),
            "meta" if kind == GuestType::Qemu => {
                // A property string; qemu-server's schema: ctime an integer, minimum 0.
                let ctime = value.split(',').find_map(|part| part.trim().strip_prefix("ctime="));
                config.created = ctime.and_then(|t| t.parse::<u64>().ok());
                if ctime.is_some() && config.created.is_none() {
                    config.ignored_lines.push(line.to_owned());
                }
            }
            "onboot" | "template" => {
                let parsed = parse_boolean(value);
                if parsed.is_none() {
                    config.ignored_lines.push(line.to_owned());
                }
                if key == "onboot" {
                    onboot = parsed;
                } else {
                    template = parsed;
                }
            }
            _ => {
                if let Some(index) = key.strip_prefix("net").and_then(|n| n.parse::<u32>().ok()) {
                    config.nets.push(parse_net(index, value, kind));
                }
            }
        }
    }
    config.onboot = onboot;
    config.template = template;
    config.name = config.name.filter(|n| !n.is_empty());
    config.nets.sort_by_key(|n| n.index);
    config.nets.dedup_by_key(|n| n.index);
    if !description.is_empty() {
        config.description = Some(description.join("\n"));
    }
    config
}

/// The default name pve-container / qemu-server `vmstatus` shows for a guest without one.
pub fn default_name(kind: GuestType, vmid: u32) -> String {
    match kind {
        GuestType::Lxc => format!("CT{vmid}"),
        GuestType::Qemu => format!("VM {vmid}"),
    }
}

/// pmxcfs writes integers (0/1) for booleans; accept JSON booleans too.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    use serde::Deserialize;
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Int(i64),
        Bool(bool),
    }
    Ok(match Flag::deserialize(d)? {
        Flag::Int(n) => n != 0,
        Flag::Bool(b) => b,
    })
}

/// `.members` `cluster` object (absent on a standalone node).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct MembersCluster {
    pub name: String,
    /// corosync `config_version`.
    pub version: u64,
    /// Configured node count.
    pub nodes: u64,
    #[serde(deserialize_with = "flag")]
    pub quorate: bool,
}

/// One node of `.members` `nodelist`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct MemberNode {
    pub id: u64,
    #[serde(deserialize_with = "flag")]
    pub online: bool,
    #[serde(default)]
    pub ip: Option<String>,
}

/// `/etc/pve/.members` (pmxcfs `cfs_create_memberlist_msg`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Members {
    pub nodename: String,
    pub version: u64,
    #[serde(default)]
    pub cluster: Option<MembersCluster>,
    /// Node name to node; ordered by name for stable output.
    #[serde(default)]
    pub nodelist: BTreeMap<String, MemberNode>,
}

pub fn parse_members(text: &str) -> Result<Members, ParseError> {
    serde_json::from_str(text).map_err(|e| ParseError::new(format!("invalid .members JSON: {e}")))
}

/// One entry of `.vmlist` `ids`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct VmlistEntry {
    pub node: String,
    #[serde(rename = "type")]
    pub kind: GuestType,
    /// Bumped by pmxcfs on every write of the guest's config.
    pub version: u64,
}

/// `/etc/pve/.vmlist` (pmxcfs `cfs_create_vmlist_msg`): every guest of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Vmlist {
    pub version: u64,
    /// vmid to entry.
    #[serde(default)]
    pub ids: BTreeMap<u32, VmlistEntry>,
}

pub fn parse_vmlist(text: &str) -> Result<Vmlist, ParseError> {
    serde_json::from_str(text).map_err(|e| ParseError::new(format!("invalid .vmlist JSON: {e}")))
}

/// The fields of `/etc/pve/.version` this exporter uses (pmxcfs `cfs_create_version_msg`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Version {
    /// When pmxcfs started (Unix seconds).
    pub starttime: u64,
    /// Version of `.members` content.
    pub clinfo: u64,
    /// Version of `.vmlist` content.
    pub vmlist: u64,
}

pub fn parse_version(text: &str) -> Result<Version, ParseError> {
    serde_json::from_str(text).map_err(|e| ParseError::new(format!("invalid .version JSON: {e}")))
}

/// The HA resource id of a guest (pve-ha-manager `parse_sid`): `ct:<vmid>` for a container,
/// `vm:<vmid>` for a VM. Other resource types (the simulator's, future ones) are not guests:
/// `None`.
pub fn parse_ha_sid(sid: &str) -> Option<(GuestType, u32)> {
    let (kind, vmid) = sid.split_once(':')?;
    let kind = match kind {
        "ct" => GuestType::Lxc,
        "vm" => GuestType::Qemu,
        _ => return None,
    };
    if vmid.is_empty() || !vmid.bytes().all(|b| b.is_ascii_digit()) || vmid.starts_with('0') {
        return None;
    }
    Some((kind, vmid.parse().ok()?))
}

/// One entry of `manager_status` `service_status`; only the state is read.
#[derive(serde::Deserialize)]
struct HaServiceJson {
    #[serde(default)]
    state: Option<String>,
}

/// The part of `manager_status` this exporter reads.
#[derive(serde::Deserialize)]
struct HaManagerStatusJson {
    #[serde(default)]
    service_status: BTreeMap<String, HaServiceJson>,
}

/// `/etc/pve/ha/manager_status`: the CRM master's view, written as JSON (pve-ha-manager
/// `PVE::HA::Config` `json_writer`, `encode_json`), of every HA resource of the cluster:
/// `service_status` keyed by resource id, each with `state` (the CRM states of
/// `PVE::HA::Manager`: started, stopped, request_stop, request_start,
/// request_start_balance, fence, recovery, migrate, relocate, freeze, error) and the `node`
/// it is on. Returns the state of each guest resource; an empty file is an empty status, as
/// Proxmox's `json_reader` reads it; an entry without a state is left out.
pub fn parse_ha_manager_status(text: &str) -> Result<BTreeMap<(GuestType, u32), String>, ParseError> {
    if text.is_empty() {
        return Ok(BTreeMap::new());
    }
    let status: HaManagerStatusJson =
        serde_json::from_str(text).map_err(|e| ParseError::new(format!("invalid HA manager_status JSON: {e}")))?;
    Ok(status
        .service_status
        .into_iter()
        .filter_map(|(sid, service)| Some((parse_ha_sid(&sid)?, service.state?)))
        .collect())
}

/// `/etc/pve/ha/resources.cfg` (pve-ha-manager `PVE::HA::Resources`, a section config:
/// `ct: 101` / `vm: 200` headers, the type read in lower case, with indented `state ...`
/// lines): the state requested for each guest resource, as `read_and_check_resources_config`
/// completes it: `started` when absent, `enabled` read as its alias `started`, else
/// `stopped`, `disabled` or `ignored`. Also returns a message per line not used (a section
/// with another state, a header whose id is no vmid, what the section-config parser
/// rejects): those guests have no state, the others keep theirs. Resource types other than
/// `ct` and `vm` are not guests and are skipped.
pub fn parse_ha_resources(text: &str) -> (BTreeMap<(GuestType, u32), String>, Vec<String>) {
    let config = super::pve_section::parse_section_config(text);
    let mut problems: Vec<String> = config.errors.iter().map(ToString::to_string).collect();
    let mut states = BTreeMap::new();
    for section in &config.sections {
        let kind = section.section_type.to_ascii_lowercase();
        if kind != "ct" && kind != "vm" {
            continue;
        }
        let Some(key) = parse_ha_sid(&format!("{kind}:{}", section.id)) else {
            problems.push(format!("line {}: '{}' is not a guest id", section.line, section.id));
            continue;
        };
        let state = match section.entry("state").map(|e| (e.line, e.value.as_deref())) {
            None => "started",
            Some((_, Some("enabled"))) => "started",
            Some((_, Some(state @ ("started" | "stopped" | "disabled" | "ignored")))) => state,
            Some((line, other)) => {
                problems.push(format!(
                    "line {line}: {kind}:{}: state {:?} is none of started, stopped, enabled, disabled, ignored",
                    section.id,
                    other.unwrap_or("")
                ));
                continue;
            }
        };
        states.insert(key, state.to_owned());
    }
    (states, problems)
}

/// What this exporter takes from `corosync.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Corosync {
    /// `totem { cluster_name }`.
    pub cluster_name: Option<String>,
    /// `totem { config_version }`.
    pub config_version: Option<u64>,
    /// `name:` of every `nodelist { node { ... } }`, in file order.
    pub nodes: Vec<String>,
}

/// Parses corosync.conf's nested `section { key: value }` syntax (corosync.conf(5)). Only the
/// keys above are kept; unbalanced braces are an error because the nesting decides meaning.
pub fn parse_corosync(text: &str) -> Result<Corosync, ParseError> {
    let mut out = Corosync::default();
    let mut stack: Vec<String> = Vec::new();
    for (number, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_suffix('{') {
            stack.push(section.trim().to_owned());
            continue;
        }
        if line == "}" {
            if stack.pop().is_none() {
                return Err(ParseError::new(format!(
                    "corosync.conf line {}: unbalanced '}}'",
                    number + 1
                )));
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(ParseError::new(format!(
                "corosync.conf line {}: expected key: value",
                number + 1
            )));
        };
        let (key, value) = (key.trim(), value.trim());
        let path: Vec<&str> = stack.iter().map(String::as_str).collect();
        match (path.as_slice(), key) {
            (["totem"], "cluster_name") => out.cluster_name = Some(value.to_owned()),
            (["totem"], "config_version") => {
                out.config_version = Some(value.parse().map_err(|_| {
                    ParseError::new(format!("corosync.conf line {}: config_version {value:?}", number + 1))
                })?)
            }
            (["nodelist", "node"], "name") => out.nodes.push(value.to_owned()),
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(ParseError::new(format!(
            "corosync.conf: unclosed section {:?}",
            stack.join(" > ")
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/proxmox-host/etc/pve/");

    fn read(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURE}{name}")).unwrap()
    }

    #[test]
    fn lxc_main_section_only_and_description_decoded() {
        let c = parse_guest_config(&read("lxc/101.conf"), GuestType::Lxc);
        assert_eq!(c.name.as_deref(), Some("web"));
        assert_eq!(c.tags, ["prod", "nginx"]);
        assert_eq!(c.description.as_deref(), Some("Public web frontend: nginx + php-fpm"));
        assert_eq!(c.memory_mib, Some(2048));
        assert_eq!(c.cores, Some(2));
        assert_eq!(
            c.nets,
            [
                NetConfig {
                    index: 0,
                    name: Some("eth0".into()),
                    bridge: Some("vmbr0".into()),
                    hwaddr: Some("BC:24:11:5A:10:01".into()),
                },
                NetConfig {
                    index: 1,
                    name: Some("eth1".into()),
                    bridge: Some("vmbr0".into()),
                    hwaddr: Some("BC:24:11:5A:10:02".into()),
                }
            ]
        );
        assert!(c.ignored_lines.is_empty(), "{:?}", c.ignored_lines);
    }

    #[test]
    fn raw_lxc_keys_and_missing_tags() {
        let c = parse_guest_config(&read("lxc/102.conf"), GuestType::Lxc);
        assert_eq!(c.name.as_deref(), Some("db"));
        assert!(c.tags.is_empty());
        assert_eq!(c.memory_mib, Some(4096));
    }

    #[test]
    fn qemu_uses_name_and_has_no_guest_side_interface_names() {
        let c = parse_guest_config(&read("qemu-server/200.conf"), GuestType::Qemu);
        assert_eq!(c.name.as_deref(), Some("win11"));
        assert_eq!(c.tags, ["lab"]);
        assert_eq!((c.cores, c.sockets), (Some(2), Some(1)));
        assert_eq!(
            c.nets,
            [NetConfig {
                index: 0,
                name: None,
                bridge: Some("vmbr0".into()),
                hwaddr: Some("BC:24:11:7E:20:0A".into()),
            }]
        );
        // `hostname` is not a QEMU key; `name` is not an LXC key.
        let c = parse_guest_config("hostname: x\n", GuestType::Qemu);
        assert_eq!(c.name, None);
    }

    #[test]
    fn net_lines_of_both_kinds_and_forms() {
        let c = parse_guest_config(
            "net0: model=e1000,macaddr=02:00:00:00:00:03,bridge=vmbr1,firewall=1\nnet1: virtio=02:00:00:00:00:04\nnet2: bridge=vmbr0,name=eth9\n",
            GuestType::Qemu,
        );
        assert_eq!(c.nets[0].hwaddr.as_deref(), Some("02:00:00:00:00:03"));
        assert_eq!(c.nets[0].bridge.as_deref(), Some("vmbr1"));
        assert_eq!(c.nets[1].hwaddr.as_deref(), Some("02:00:00:00:00:04"));
        assert_eq!(c.nets[1].bridge, None);
        // `name=` is LXC's; a VM's in-guest name is not in its config.
        assert_eq!(c.nets[2].name, None);
        let c = parse_guest_config("net3: name=,bridge=vmbr0,type=veth\nnet: x\nnetx: y\n", GuestType::Lxc);
        assert_eq!(
            c.nets,
            [NetConfig {
                index: 3,
                name: None,
                bridge: Some("vmbr0".into()),
                hwaddr: None
            }]
        );
        assert_eq!(net_key(3), "net3");
        assert!(is_mac("bc:24:11:7e:20:0a") && !is_mac("BC:24:11:7E:20") && !is_mac("vmbr0"));
    }

    #[test]
    fn garbage_lines_are_recorded_not_fatal() {
        let text = "\u{0}\u{1}binary junk\nhostname: ok\nnot a key line\n: empty key\nkey with space: v\nmemory: lots\n\ntags: a, b c;d\n";
        let c = parse_guest_config(text, GuestType::Lxc);
        assert_eq!(c.name.as_deref(), Some("ok"));
        assert_eq!(c.memory_mib, None);
        assert_eq!(c.tags, ["a", "b", "c", "d"]);
        assert_eq!(c.ignored_lines.len(), 4, "{:?}", c.ignored_lines);
    }

    fn snapshot(name: &str, snaptime: Option<u64>) -> SnapshotSection {
        SnapshotSection {
            name: name.into(),
            snaptime,
        }
    }

    #[test]
    fn guest_state_of_the_fixture_configs() {
        // 101: two snapshots and a [pve:pending] section, which is not one.
        let c = parse_guest_config(&read("lxc/101.conf"), GuestType::Lxc);
        assert_eq!(
            c.snapshots,
            [snapshot("snap1", Some(1727788800)), snapshot("snap2", Some(1730462400))]
        );
        assert_eq!(c.oldest_snapshot_time(), Some(1727788800));
        assert_eq!(c.parent.as_deref(), Some("snap2"));
        assert_eq!(
            (c.lock.as_deref(), c.onboot, c.template),
            (None, Some(true), Some(false))
        );
        // The snapshots' comments are not the guest's description.
        assert_eq!(c.description.as_deref(), Some("Public web frontend: nginx + php-fpm"));
        // 102: a snapshot-mode backup in progress: locked, and its `vzdump` snapshot is real.
        let c = parse_guest_config(&read("lxc/102.conf"), GuestType::Lxc);
        assert_eq!(c.lock.as_deref(), Some("backup"));
        assert_eq!(c.snapshots, [snapshot("vzdump", Some(1733394600))]);
        assert_eq!(c.parent.as_deref(), Some("vzdump"));
        // 103: a template without an onboot line: Proxmox's default, 0.
        let c = parse_guest_config(&read("lxc/103.conf"), GuestType::Lxc);
        assert_eq!((c.template, c.onboot), (Some(true), Some(false)));
        assert!(c.snapshots.is_empty() && c.oldest_snapshot_time().is_none());
        // 200: its [PENDING] section (memory 8192) is neither a snapshot nor the config.
        let c = parse_guest_config(&read("qemu-server/200.conf"), GuestType::Qemu);
        assert!(c.snapshots.is_empty(), "{:?}", c.snapshots);
        assert_eq!(c.memory_mib, Some(4096));
        assert_eq!(c.onboot, Some(true));
        assert!(c.ignored_lines.is_empty(), "{:?}", c.ignored_lines);
    }

    #[test]
    fn section_headers_by_guest_type() {
        let text = "name: x\n\n[PENDING]\nmemory: 1\n\n[special:cloudinit]\nipconfig0: ip=dhcp\n\n[pve:pending]\nsnaptime: 5\n\n[a]\nsnaptime: 6\n\n[Before-Upgrade_2]\nsnaptime: 7\n";
        // VM: [PENDING] and [special:*] are no snapshots; [pve:pending] and [a] are unknown
        // sections (skipped by qemu-server); a name is [a-z][a-z0-9_-]+ in any case.
        let c = parse_guest_config(text, GuestType::Qemu);
        assert_eq!(c.snapshots, [snapshot("Before-Upgrade_2", Some(7))]);
        assert_eq!(c.name.as_deref(), Some("x"));
        // Container: [pve:pending] is the pending section, and [PENDING] a snapshot name like
        // any other (pve-container's regex); [special:cloudinit] and [a] are no headers there,
        // so their lines belong to the section before them (snaptime 6 to the pending one).
        let c = parse_guest_config(text, GuestType::Lxc);
        assert_eq!(
            c.snapshots,
            [snapshot("PENDING", None), snapshot("Before-Upgrade_2", Some(7))]
        );
        // Any case, trailing whitespace allowed; the pending section's keys are not read.
        let c = parse_guest_config("lock: migrate\n[PENDING] \t\nlock: backup\n", GuestType::Qemu);
        assert!(c.snapshots.is_empty());
        assert_eq!(c.lock.as_deref(), Some("migrate"));
        let c = parse_guest_config("onboot: 1\n[PVE:Pending]\nonboot: 0\n", GuestType::Lxc);
        assert_eq!((c.onboot, c.snapshots.len()), (Some(true), 0));
    }

    #[test]
    fn snapshot_times_missing_malformed_and_repeated() {
        // A repeated section is one snapshot (Proxmox fills the same one again); its first
        // snaptime is kept.
        let c = parse_guest_config(
            "[s1]\nsnaptime: 300\n[s2]\nsnaptime: 200\n[s1]\nsnaptime: 100\n",
            GuestType::Qemu,
        );
        assert_eq!(c.snapshots, [snapshot("s1", Some(300)), snapshot("s2", Some(200))]);
        assert_eq!(c.oldest_snapshot_time(), Some(200));
        // A malformed snaptime: the snapshot counts, the oldest time is unknown, the line is
        // reported.
        let c = parse_guest_config("[s1]\nsnaptime: 100\n[s2]\nsnaptime: yesterday\n", GuestType::Lxc);
        assert_eq!(c.snapshots.len(), 2);
        assert_eq!(c.oldest_snapshot_time(), None);
        assert_eq!(c.ignored_lines, ["snaptime: yesterday"]);
        // No snaptime line at all: unknown too, nothing to report.
        let c = parse_guest_config("[s1]\nsnaptime: 100\n[s2]\nvmstate: x\n", GuestType::Qemu);
        assert_eq!((c.snapshots.len(), c.oldest_snapshot_time()), (2, None));
        assert!(c.ignored_lines.is_empty());
        // A snapshot section's garbage is not the main section's.
        let c = parse_guest_config("[s1]\nnot a key\nsnaptime: -5\n", GuestType::Qemu);
        assert_eq!(c.ignored_lines, ["snaptime: -5"]);
    }

    #[test]
    fn booleans_and_locks_as_proxmox_reads_them() {
        for (value, want) in [
            ("1", Some(true)),
            ("yes", Some(true)),
            ("On", Some(true)),
            ("TRUE", Some(true)),
            ("0", Some(false)),
            ("no", Some(false)),
            ("off", Some(false)),
            ("False", Some(false)),
            ("2", None),
            ("", None),
        ] {
            assert_eq!(parse_boolean(value), want, "{value:?}");
        }
        let c = parse_guest_config("onboot: maybe\ntemplate: 1\nlock:\n", GuestType::Lxc);
        assert_eq!((c.onboot, c.template, c.lock), (None, Some(true), None));
        assert_eq!(c.ignored_lines, ["onboot: maybe"]);
        let c = parse_guest_config("", GuestType::Qemu);
        assert_eq!((c.onboot, c.template), (Some(false), Some(false)));
        let c = parse_guest_config("lock: suspended\n", GuestType::Qemu);
        assert_eq!(c.lock.as_deref(), Some("suspended"));
    }

    #[test]
    fn a_vms_creation_time_from_its_meta_line() {
        let c = parse_guest_config("meta: creation-qemu=9.0.2,ctime=1727000000\nname: a\n", GuestType::Qemu);
        assert_eq!(c.created, Some(1_727_000_000));
        // Either order; the main section's line, not a snapshot's.
        let c = parse_guest_config(
            "meta: ctime=1700000000,creation-qemu=8.1.5\n\n[s1]\nmeta: ctime=1600000000\n",
            GuestType::Qemu,
        );
        assert_eq!(c.created, Some(1_700_000_000));
        // Without ctime (older configs), containers (pve-container has no meta), a bad value.
        assert_eq!(
            parse_guest_config("meta: creation-qemu=6.1.0\n", GuestType::Qemu).created,
            None
        );
        assert_eq!(
            parse_guest_config("meta: ctime=1700000000\n", GuestType::Lxc).created,
            None
        );
        let c = parse_guest_config("meta: creation-qemu=8.1.5,ctime=-1\n", GuestType::Qemu);
        assert_eq!(c.created, None);
        assert_eq!(c.ignored_lines, ["meta: creation-qemu=8.1.5,ctime=-1"]);
    }

    #[test]
    fn ha_manager_status() {
        let states = parse_ha_manager_status(&read("ha/manager_status")).unwrap();
        assert_eq!(
            states,
            BTreeMap::from([
                ((GuestType::Lxc, 101), "started".to_owned()),
                ((GuestType::Qemu, 200), "error".to_owned()),
                ((GuestType::Lxc, 300), "started".to_owned()),
            ])
        );
        // An empty file is an empty status (pve-ha-manager's json_reader); no service_status
        // (a CRM with nothing to manage) too.
        assert!(parse_ha_manager_status("").unwrap().is_empty());
        assert!(
            parse_ha_manager_status("{\"master_node\":\"pve1\"}")
                .unwrap()
                .is_empty()
        );
        // Entries without a state and resources that are no guests are left out.
        let states = parse_ha_manager_status(
            "{\"service_status\":{\"vm:1\":{\"node\":\"a\"},\"fa:2\":{\"state\":\"started\"},\"vm:03\":{\"state\":\"stopped\"},\"ct:4\":{\"state\":\"freeze\"}}}",
        )
        .unwrap();
        assert_eq!(states, BTreeMap::from([((GuestType::Lxc, 4), "freeze".to_owned())]));
        let e = parse_ha_manager_status("{\"service_status\":{\"ct:101\":").unwrap_err();
        assert!(e.0.contains("manager_status"), "{e}");
        assert!(parse_ha_manager_status("{\"service_status\":[]}").is_err());
    }

    #[test]
    fn ha_sids() {
        assert_eq!(parse_ha_sid("ct:101"), Some((GuestType::Lxc, 101)));
        assert_eq!(parse_ha_sid("vm:200"), Some((GuestType::Qemu, 200)));
        for sid in ["101", "ct:", "ct:0101", "ct:1a", "lxc:101", "vm:99999999999", "vm:-1"] {
            assert_eq!(parse_ha_sid(sid), None, "{sid}");
        }
    }

    #[test]
    fn ha_resources_requested_states() {
        let (states, problems) = parse_ha_resources(&read("ha/resources.cfg"));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            states,
            BTreeMap::from([
                // No state line: `started`, pve-ha-manager's default.
                ((GuestType::Lxc, 101), "started".to_owned()),
                ((GuestType::Lxc, 102), "ignored".to_owned()),
                ((GuestType::Qemu, 200), "started".to_owned()),
                ((GuestType::Lxc, 300), "started".to_owned()),
            ])
        );
        // `enabled` is the old name of `started`; the type is read in lower case; a bad state
        // or id costs only its section; other resource types are no guests.
        let (states, problems) = parse_ha_resources(
            "CT: 105\n\tstate enabled\n\nvm: 106\n\tstate running\n\nvm: abc\n\tstate started\n\nfa: 107\n\tstate started\n\nvm: 108\n\tstate disabled\n",
        );
        assert_eq!(
            states,
            BTreeMap::from([
                ((GuestType::Lxc, 105), "started".to_owned()),
                ((GuestType::Qemu, 108), "disabled".to_owned()),
            ])
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("line 5") && problems[0].contains("running"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("line 7") && problems[1].contains("abc"),
            "{problems:?}"
        );
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%3Ab"), "a:b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9t%C3%A9"), "été");
    }

    #[test]
    fn members_of_a_cluster() {
        let m = parse_members(&read(".members")).unwrap();
        assert_eq!(m.nodename, "pve1");
        let c = m.cluster.unwrap();
        assert_eq!(
            (c.name.as_str(), c.version, c.nodes, c.quorate),
            ("homelab", 2, 2, true)
        );
        assert_eq!(m.nodelist.len(), 2);
        assert_eq!(
            m.nodelist["pve2"],
            MemberNode {
                id: 2,
                online: true,
                ip: Some("192.168.1.12".into())
            }
        );
    }

    #[test]
    fn members_of_a_standalone_node_and_invalid_json() {
        let m = parse_members("{\n\"nodename\": \"solo\",\n\"version\": 0\n}\n").unwrap();
        assert_eq!(m.nodename, "solo");
        assert!(m.cluster.is_none() && m.nodelist.is_empty());
        let e = parse_members("{\"nodename\": \"pve1\", \"version\": 6, \"cluster\": {").unwrap_err();
        assert!(e.0.contains(".members"), "{e}");
    }

    #[test]
    fn vmlist_with_double_brace_and_blank_line() {
        let v = parse_vmlist(&read(".vmlist")).unwrap();
        assert_eq!(v.version, 14);
        assert_eq!(v.ids.len(), 5);
        assert_eq!(v.ids[&300].node, "pve2");
        assert_eq!(v.ids[&200].kind, GuestType::Qemu);
        assert_eq!(v.ids[&101].version, 3);
    }

    #[test]
    fn version_and_corosync() {
        let v = parse_version(&read(".version")).unwrap();
        assert_eq!((v.starttime, v.clinfo, v.vmlist), (1732185352, 6, 14));
        let c = parse_corosync(&read("corosync.conf")).unwrap();
        assert_eq!(c.cluster_name.as_deref(), Some("homelab"));
        assert_eq!(c.config_version, Some(2));
        assert_eq!(c.nodes, ["pve1", "pve2"]);
        assert!(parse_corosync("totem {\n cluster_name: x\n").is_err());
        assert!(parse_corosync("}\n").is_err());
    }
}
