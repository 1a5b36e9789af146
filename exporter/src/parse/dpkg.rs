//! Finder of one package's stanza in dpkg's database `/var/lib/dpkg/status` (deb-control(5)
//! syntax, dpkg-query(1) `Status` field): stanzas of `Field: value` lines separated by blank
//! lines; a line starting with a space or tab continues the previous field's value.
//!
//! The file lists every package ever installed and is megabytes on a Proxmox host, so the
//! finder streams it line by line through one reused buffer and keeps only the `Status` and
//! `Version` values of the stanza being read: no string per line or per stanza.
//!
//! `Status` is three words, `want error status` (`install ok installed`,
//! `deinstall ok config-files`, `hold ok installed`, ...). The package's files are on the
//! system when the error flag is `ok` and the status `installed`, whatever the want flag says
//! (`hold` is a pinned package, `deinstall` one marked for removal but not yet removed).

use std::io::BufRead;

use crate::error::ParseError;

/// An installed package's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub version: String,
    /// The whole `Status` value (`install ok installed`, `hold ok installed`).
    pub status: String,
}

/// The `Version` of package `name` when a stanza of that name has the status `ok installed`;
/// `Ok(None)` when the file has no such stanza (absent, or only removed/config-files stanzas).
/// A read error, a line that is not UTF-8 in a field this finder reads, or a stanza line
/// without a `:` fails.
pub fn find_installed(mut reader: impl BufRead, name: &str) -> Result<Option<Installed>, ParseError> {
    let mut line = Vec::with_capacity(256);
    let mut stanza = Stanza::default();
    let mut number = 0usize;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| ParseError::new(format!("read failed after line {number}: {e}")))?;
        number += 1;
        let text = trim_newline(&line);
        if read == 0 || text.iter().all(|b| b.is_ascii_whitespace()) {
            if let Some(found) = stanza.finish(name) {
                return Ok(Some(found));
            }
            if read == 0 {
                return Ok(None);
            }
            continue;
        }
        if matches!(text[0], b' ' | b'\t') {
            // A continuation line (Description, Conffiles, ...): never one of ours.
            continue;
        }
        let colon = text
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| ParseError::new(format!("line {number}: a field line without ':'")))?;
        let (key, value) = (&text[..colon], trim_ascii(&text[colon + 1..]));
        let slot = if key.eq_ignore_ascii_case(b"Package") {
            &mut stanza.package
        } else if key.eq_ignore_ascii_case(b"Status") {
            &mut stanza.status
        } else if key.eq_ignore_ascii_case(b"Version") {
            &mut stanza.version
        } else {
            continue;
        };
        let value = std::str::from_utf8(value).map_err(|_| {
            ParseError::new(format!(
                "line {number}: the {} value is not UTF-8",
                String::from_utf8_lossy(key)
            ))
        })?;
        slot.clear();
        slot.push_str(value);
    }
}

/// The fields of the stanza being read, in buffers reused from stanza to stanza.
#[derive(Debug, Default)]
struct Stanza {
    package: String,
    status: String,
    version: String,
}

impl Stanza {
    /// At the end of a stanza: the package when it is `name`, installed and versioned; the
    /// buffers are emptied for the next stanza either way.
    fn finish(&mut self, name: &str) -> Option<Installed> {
        let installed = self.package == name
            && !self.version.is_empty()
            && self.status.split_ascii_whitespace().skip(1).eq(["ok", "installed"]);
        let found = installed.then(|| Installed {
            version: self.version.clone(),
            status: self.status.clone(),
        });
        self.package.clear();
        self.status.clear();
        self.version.clear();
        found
    }
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ascii(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = include_str!("../../../fixtures/proxmox-host/var/lib/dpkg/status");

    fn find(text: &str, name: &str) -> Option<Installed> {
        find_installed(text.as_bytes(), name).unwrap()
    }

    #[test]
    fn fixture() {
        let pve = find(STATUS, "pve-manager").unwrap();
        assert_eq!(pve.version, "8.3.0");
        assert_eq!(pve.status, "install ok installed");
        // Removed with its configuration kept: not installed.
        assert_eq!(find(STATUS, "pve-kernel-5.15"), None);
        // A name that is only a prefix of a package, and one that appears only in a Depends.
        assert_eq!(find(STATUS, "pve"), None);
        assert_eq!(find(STATUS, "pve-cluster").unwrap().version, "8.0.10");
        assert_eq!(find(STATUS, "no-such-package"), None);
    }

    #[test]
    fn statuses() {
        let one = |status: &str| find(&format!("Package: a\nStatus: {status}\nVersion: 1\n"), "a");
        assert!(one("install ok installed").is_some());
        assert!(one("hold ok installed").is_some());
        assert!(one("deinstall ok config-files").is_none());
        assert!(one("install reinstreq half-installed").is_none());
        assert!(one("install ok unpacked").is_none());
        assert!(one("").is_none());
        // No Version: nothing to report.
        assert_eq!(find("Package: a\nStatus: install ok installed\n\n", "a"), None);
    }

    #[test]
    fn stanza_boundaries() {
        // Fields do not leak from one stanza into the next.
        let text = "Package: a\nStatus: install ok installed\n\nPackage: b\nVersion: 2\n\n";
        assert_eq!(find(text, "b"), None);
        // A continuation line that looks like a field is not one.
        let text = "Package: a\nStatus: install ok installed\nDescription: x\n Version: 9\nVersion: 1\n";
        assert_eq!(find(text, "a").unwrap().version, "1");
        // CRLF and no final newline.
        let text = "Package: a\r\nStatus: install ok installed\r\nVersion: 1.2\r\n";
        assert_eq!(find(text, "a").unwrap().version, "1.2");
        // The first installed stanza of the name wins.
        let text = "Package: a\nStatus: deinstall ok config-files\nVersion: 0\n\nPackage: a\nStatus: install ok installed\nVersion: 3\n";
        assert_eq!(find(text, "a").unwrap().version, "3");
    }

    #[test]
    fn garbage() {
        assert!(find_installed("Package: a\nno colon here\n".as_bytes(), "a").is_err());
        assert!(find_installed(&b"Package: a\nVersion: \xff\n"[..], "a").is_err());
        // Bytes that are not UTF-8 in a field this finder does not read cost nothing.
        let text = b"Package: a\nStatus: install ok installed\nDescription: \xff\nVersion: 1\n";
        assert_eq!(find_installed(&text[..], "a").unwrap().unwrap().version, "1");
        assert_eq!(find("", "a"), None);
        assert_eq!(find("\n\n\n", "a"), None);
    }
}
