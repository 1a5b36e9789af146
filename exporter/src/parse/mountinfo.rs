//! Parser of `/proc/<pid>/mountinfo` (proc(5); Linux `fs/proc_namespace.c` `show_mountinfo`).
//!
//! The kernel escapes space, tab, newline and backslash in paths as `\040`, `\011`, `\012`
//! and `\134` (`mangle()`); [`unescape_octal`] decodes them so that a mount point such as
//! `/srv/www data` reaches its label intact.

use crate::error::ParseError;

/// One line of mountinfo, paths decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_id: u32,
    pub parent_id: u32,
    /// `major:minor` of the filesystem.
    pub device_number: String,
    /// The path inside the filesystem that is mounted (`/` for a whole filesystem).
    pub root: String,
    pub mount_point: String,
    pub fs_type: String,
    /// The mount source, e.g. `/dev/sda1`, `tmpfs`, `/dev/fuse`.
    pub source: String,
    /// The superblock's options, the last field (`rw,memory` names a cgroup v1 hierarchy's
    /// controllers).
    pub super_options: String,
}

impl Mount {
    /// Whether this is a cgroup v1 hierarchy that carries `controller` (`cpuacct`, `pids`, or a
    /// named hierarchy such as `name=systemd`).
    pub fn is_cgroup_v1_with(&self, controller: &str) -> bool {
        self.fs_type == "cgroup" && self.super_options.split(',').any(|o| o == controller)
    }
}

/// Decodes the kernel's `\ooo` octal escapes; anything else is kept as written.
pub fn unescape_octal(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_owned();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value =
                (bytes[i + 1] - b'0') as u32 * 64 + (bytes[i + 2] - b'0') as u32 * 8 + (bytes[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one mountinfo line.
pub fn parse_line(line: &str) -> Result<Mount, ParseError> {
    let bad = || ParseError::new(format!("malformed mountinfo line: {line:?}"));
    let (before, after) = line.split_once(" - ").ok_or_else(bad)?;
    let mut fields = before.split(' ');
    let mount_id = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
    let parent_id = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
    let device_number = fields.next().filter(|f| f.contains(':')).ok_or_else(bad)?.to_owned();
    let root = unescape_octal(fields.next().ok_or_else(bad)?);
    let mount_point = unescape_octal(fields.next().ok_or_else(bad)?);
    fields.next().ok_or_else(bad)?; // mount options
    let mut tail = after.split(' ');
    let fs_type = unescape_octal(tail.next().filter(|f| !f.is_empty()).ok_or_else(bad)?);
    let source = unescape_octal(tail.next().ok_or_else(bad)?);
    let super_options = tail.next().unwrap_or_default().to_owned();
    Ok(Mount {
        mount_id,
        parent_id,
        device_number,
        root,
        mount_point,
        fs_type,
        source,
        super_options,
    })
}

/// Parses a whole mountinfo file. A malformed line fails the parse: a truncated table would
/// otherwise silently lose mounts.
pub fn parse(text: &str) -> Result<Vec<Mount>, ParseError> {
    text.lines().filter(|l| !l.trim().is_empty()).map(parse_line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_octal_escapes() {
        assert_eq!(unescape_octal(r"/srv/www\040data"), "/srv/www data");
        assert_eq!(unescape_octal(r"a\011b\012c\134d"), "a\tb\nc\\d");
        assert_eq!(unescape_octal(r"trailing\04"), r"trailing\04");
        assert_eq!(unescape_octal(r"not\x2doctal"), r"not\x2doctal");
    }

    #[test]
    fn parses_a_line_with_optional_fields() {
        let m = parse_line(
            r"1211 1210 253:7 / /srv/www\040data rw,relatime master:492 - ext4 /dev/mapper/pve-vm--101--disk--1 rw,stripe=16",
        )
        .unwrap();
        assert_eq!(m.mount_id, 1211);
        assert_eq!(m.parent_id, 1210);
        assert_eq!(m.device_number, "253:7");
        assert_eq!(m.mount_point, "/srv/www data");
        assert_eq!(m.fs_type, "ext4");
        assert_eq!(m.source, "/dev/mapper/pve-vm--101--disk--1");
        assert_eq!(m.super_options, "rw,stripe=16");
        assert!(!m.is_cgroup_v1_with("rw"));
    }

    #[test]
    fn names_the_controllers_of_cgroup_v1_hierarchies() {
        // As LXC 5.0.2 mounts them inside a container (cgroup:mixed).
        let cpuacct = parse_line(
            "88 80 0:30 / /sys/fs/cgroup/cpuacct rw,nosuid,nodev,noexec,relatime shared:26 - cgroup none rw,cpuacct",
        )
        .unwrap();
        assert!(cpuacct.is_cgroup_v1_with("cpuacct"));
        assert!(!cpuacct.is_cgroup_v1_with("cpu"));
        let joint = parse_line("32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct").unwrap();
        assert!(joint.is_cgroup_v1_with("cpu") && joint.is_cgroup_v1_with("cpuacct"));
        let unified = parse_line("90 80 0:38 / /sys/fs/cgroup/unified rw - cgroup2 none rw").unwrap();
        assert!(!unified.is_cgroup_v1_with("rw"));
    }

    #[test]
    fn rejects_truncated_lines() {
        assert!(parse_line("1211 1210 253:7 / /srv").is_err());
        assert!(parse("1 2 0:1 / / rw - ext4 /dev/x rw\ngarbage\n").is_err());
    }

    #[test]
    fn parses_the_container_fixture() {
        let text = include_str!("../../../fixtures/lxc-container/proc/self/mountinfo");
        let mounts = parse(text).unwrap();
        assert_eq!(mounts.len(), text.lines().count());
        assert!(
            mounts
                .iter()
                .any(|m| m.fs_type == "cgroup2" && m.mount_point == "/sys/fs/cgroup")
        );
    }
}
