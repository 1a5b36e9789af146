//! Parsers of the Proxmox cluster filesystem (pmxcfs, `/etc/pve`): guest configurations
//! (`lxc/<vmid>.conf`, `qemu-server/<vmid>.conf`), `.members`, `.vmlist`, `.version` and
//! `corosync.conf`.
//!
//! Formats as pmxcfs and pve-container / qemu-server write them (pve-cluster
//! `src/pmxcfs/status.c`, pve-container `src/PVE/LXC/Config.pm` `parse_pct_config`,
//! qemu-server `parse_vm_config`, pve-cluster `src/PVE/Corosync.pm`). The JSON files are parsed
//! as JSON (serde_json) because pmxcfs prints them with `printf` and their layout (`}}`, a blank
//! line before the last `}`) is not line-oriented.

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
    /// Lines of the main section that are neither `key: value`, comments nor blank: kept so the
    /// reader can say what it skipped instead of failing the whole guest.
    pub ignored_lines: Vec<String>,
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

/// Parses a guest config. Only the main section (before the first `[...]` header) describes
/// the guest: snapshot and pending sections repeat keys with old or future values. Unknown
/// keys are skipped; malformed lines are recorded in `ignored_lines`, never fatal, so one odd
/// line does not hide the guest's name. A number that does not parse is treated as absent.
pub fn parse_guest_config(text: &str, kind: GuestType) -> GuestConfig {
    let mut config = GuestConfig::default();
    let mut description = Vec::new();
    for raw in text.lines() {
        let line = raw.trim_end();
        if line.starts_with('[') {
            break;
        }
        if let Some(comment) = line.strip_prefix('#') {
            description.push(percent_decode(comment));
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            config.ignored_lines.push(line.to_owned());
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || key.contains(char::is_whitespace) {
            config.ignored_lines.push(line.to_owned());
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
            _ => {
                if let Some(index) = key.strip_prefix("net").and_then(|n| n.parse::<u32>().ok()) {
                    config.nets.push(parse_net(index, value, kind));
                }
            }
        }
    }
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
