//! Parser of `/proc/meminfo` (proc(5); Linux `fs/proc/meminfo.c`), via `procfs`'s
//! `Meminfo: FromBufRead` after a shape check of our own.
//!
//! Only the lines an exporter may trust in every setting are returned: inside an LXC container
//! lxcfs rewrites MemTotal, MemFree, MemAvailable, Cached and the Swap lines and copies the
//! rest from the host, so nothing else is exposed here.

use procfs::FromBufRead;

use crate::error::ParseError;

/// The memory figures, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub free: u64,
    /// `MemAvailable` (Linux 3.14+); absent on older kernels, never estimated here.
    pub available: Option<u64>,
    pub cached: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

/// Checks every line is `Key: <u64> [unit]` with a unit procfs converts and a value that
/// cannot overflow in its kB-to-bytes conversion. procfs slices the key's last byte off and
/// multiplies by 1024 unchecked, so text it was not written for (a non-ASCII key, a huge
/// value) must not reach it: that would be a panic, not an error.
fn check_shape(text: &str) -> Result<(), ParseError> {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let bad = |why: &str| ParseError::new(format!("malformed meminfo line ({why}): {line:?}"));
        let mut fields = line.split_ascii_whitespace();
        let key = fields.next().ok_or_else(|| bad("empty"))?;
        if !key.is_ascii() || !key.ends_with(':') || key.len() < 2 {
            return Err(bad("key is not `Name:`"));
        }
        let value: u64 = fields
            .next()
            .ok_or_else(|| bad("no value"))?
            .parse()
            .map_err(|_| bad("value is not an unsigned integer"))?;
        let limit = match fields.next() {
            None | Some("B") => u64::MAX,
            Some("kB" | "KiB" | "kiB" | "KB") => u64::MAX >> 10,
            Some("MiB" | "miB" | "MB" | "mB") => u64::MAX >> 20,
            Some("GiB" | "giB" | "GB" | "gB") => u64::MAX >> 30,
            Some(_) => return Err(bad("unknown unit")),
        };
        if value > limit || fields.next().is_some() {
            return Err(bad("value out of range or trailing fields"));
        }
    }
    Ok(())
}

/// Parses the whole file. A file missing a line every kernel prints (a truncated read) fails.
pub fn parse(text: &str) -> Result<MemInfo, ParseError> {
    check_shape(text)?;
    let m = procfs::Meminfo::from_buf_read(text.as_bytes()).map_err(|e| ParseError::new(format!("meminfo: {e}")))?;
    // procfs already converted kB to bytes.
    Ok(MemInfo {
        total: m.mem_total,
        free: m.mem_free,
        available: m.mem_available,
        cached: m.cached,
        swap_total: m.swap_total,
        swap_free: m.swap_free,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = include_str!("../../../fixtures/proxmox-host/proc/meminfo");
    const LXC: &str = include_str!("../../../fixtures/lxc-container/proc/meminfo");

    #[test]
    fn host_fixture() {
        let m = parse(HOST).unwrap();
        assert_eq!(m.total, 16694292480);
        assert_eq!(m.free, 3735529472);
        assert_eq!(m.available, Some(8290040832));
        assert_eq!(m.cached, 4379456512);
        assert_eq!(m.swap_total, 8589930496);
        assert_eq!(m.swap_free, 8180654080);
    }

    #[test]
    fn container_fixture_is_the_lxcfs_view() {
        let m = parse(LXC).unwrap();
        assert_eq!(m.total, 2147483648);
        assert_eq!(m.free, 910553088);
        assert_eq!(m.available, Some(1733681152));
        assert_eq!(m.swap_total, 536870912);
        assert_eq!(m.swap_free, 532676608);
    }

    #[test]
    fn truncated_or_garbage_fails_without_panic() {
        let cut = &HOST[..HOST.find("SwapTotal").unwrap()];
        assert!(parse(cut).is_err());
        assert!(parse(&HOST[..HOST.len() / 2]).is_err());
        assert!(parse("").is_err());
        assert!(parse("MemTotal: lots kB\n").is_err());
        assert!(parse("Memé: 5 kB\n").is_err());
        assert!(parse("MemTotal: 18446744073709551615 kB\n").is_err());
        assert!(parse("MemTotal: 5 parsecs\n").is_err());
    }
}
