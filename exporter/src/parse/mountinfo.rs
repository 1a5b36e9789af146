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
    Ok(Mount {
        mount_id,
        parent_id,
        device_number,
        root,
        mount_point,
        fs_type,
        source,
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
