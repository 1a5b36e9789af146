//! Parser of `/proc/diskstats` (Linux `block/genhd.c` `diskstats_show`,
//! `Documentation/admin-guide/iostats.rst`): one line per block device, partitions included,
//! `major minor name` followed by the device's I/O statistics.
//!
//! How many statistics a line has depends on the kernel: 11 before 4.18 (14 fields), 15 from
//! 4.18 (discards, 18 fields), 17 from 5.5 (flushes, 20 fields). One kernel prints one format
//! for every line; a line with any other count, or a value that is not an unsigned integer, is
//! malformed. Sector counts are in 512-byte units whatever the device's block size
//! (iostats.rst: "standard UNIX 512-byte sectors"); times are milliseconds (the kernel prints
//! several of them as 32-bit unsigned values, which wrap: a counter reset to Prometheus).
//!
//! A malformed line costs only itself: [`parse`] returns the good lines and one error per bad
//! line, so the reader can serve every other device and say what it skipped.

use crate::error::ParseError;

/// The I/O statistics of one device, in iostats.rst order. `discards` and `flushes` are `None`
/// on kernels that do not print them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskStats {
    pub major: u32,
    pub minor: u32,
    /// The kernel's device name (`sda`, `nvme0n1p1`, `dm-0`, `zd16`; may hold a `/`, which
    /// sysfs spells `!`).
    pub name: String,
    pub reads_completed: u64,
    pub reads_merged: u64,
    pub sectors_read: u64,
    pub read_time_ms: u64,
    pub writes_completed: u64,
    pub writes_merged: u64,
    pub sectors_written: u64,
    pub write_time_ms: u64,
    /// I/Os in flight now (a gauge, not a counter).
    pub io_in_progress: u64,
    pub io_time_ms: u64,
    pub weighted_io_time_ms: u64,
    pub discards: Option<Discards>,
    pub flushes: Option<Flushes>,
}

/// Discard statistics (kernel 4.18 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discards {
    pub completed: u64,
    pub merged: u64,
    pub sectors: u64,
    pub time_ms: u64,
}

/// Flush statistics (kernel 5.5 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushes {
    pub completed: u64,
    pub time_ms: u64,
}

/// What [`parse`] found: the devices of every well-formed line, in file order, and why each
/// other line was skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub devices: Vec<DiskStats>,
    pub malformed: Vec<ParseError>,
}

/// Bytes per diskstats sector, whatever the device's logical block size.
pub const SECTOR_BYTES: u64 = 512;

/// Parses one line.
pub fn parse_line(line: &str) -> Result<DiskStats, ParseError> {
    let bad = |why: &str| ParseError::new(format!("malformed diskstats line ({why}): {line:?}"));
    let mut fields = line.split_ascii_whitespace();
    let major = fields.next().ok_or_else(|| bad("empty"))?;
    let minor = fields.next().ok_or_else(|| bad("no minor number"))?;
    let name = fields.next().ok_or_else(|| bad("no device name"))?;
    let major = major.parse().map_err(|_| bad("major is not an unsigned integer"))?;
    let minor = minor.parse().map_err(|_| bad("minor is not an unsigned integer"))?;
    let mut values = [0u64; 17];
    let mut count = 0;
    for field in fields {
        let slot = values.get_mut(count).ok_or_else(|| bad("more than 17 statistics"))?;
        *slot = field
            .parse()
            .map_err(|_| bad("a statistic is not an unsigned integer"))?;
        count += 1;
    }
    if !matches!(count, 11 | 15 | 17) {
        return Err(bad(&format!("{count} statistics; kernels print 11, 15 or 17")));
    }
    let v = values;
    Ok(DiskStats {
        major,
        minor,
        name: name.to_owned(),
        reads_completed: v[0],
        reads_merged: v[1],
        sectors_read: v[2],
        read_time_ms: v[3],
        writes_completed: v[4],
        writes_merged: v[5],
        sectors_written: v[6],
        write_time_ms: v[7],
        io_in_progress: v[8],
        io_time_ms: v[9],
        weighted_io_time_ms: v[10],
        discards: (count >= 15).then_some(Discards {
            completed: v[11],
            merged: v[12],
            sectors: v[13],
            time_ms: v[14],
        }),
        flushes: (count == 17).then_some(Flushes {
            completed: v[15],
            time_ms: v[16],
        }),
    })
}

impl DiskStats {
    /// How many statistics the line had: 11, 15 or 17.
    pub fn statistics(&self) -> usize {
        match (self.discards, self.flushes) {
            (_, Some(_)) => 17,
            (Some(_), None) => 15,
            (None, None) => 11,
        }
    }
}

/// Parses the whole file; blank lines are ignored, every other line is a device or an error.
/// Since one kernel prints one format, a line with fewer statistics than the longest line is
/// a truncated one (cut to 11 or 15 statistics it would otherwise pass) and is malformed.
pub fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for line in super::lines(text).filter(|l| !l.trim_ascii().is_empty()) {
        match parse_line(line) {
            Ok(device) => parsed.devices.push(device),
            Err(e) => parsed.malformed.push(e),
        }
    }
    let format = parsed.devices.iter().map(DiskStats::statistics).max().unwrap_or(0);
    if parsed.devices.iter().any(|d| d.statistics() < format) {
        let (whole, short): (Vec<_>, Vec<_>) = parsed.devices.into_iter().partition(|d| d.statistics() == format);
        parsed.devices = whole;
        parsed.malformed.extend(short.into_iter().map(|d| {
            ParseError::new(format!(
                "malformed diskstats line ({} statistics where the other lines have {format}: cut short?): device {:?}",
                d.statistics(),
                d.name
            ))
        }));
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = include_str!("../../../fixtures/proxmox-host/proc/diskstats");

    #[test]
    fn kernel_6_line() {
        let d = parse_line(" 259       0 nvme0n1 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17").unwrap();
        assert_eq!((d.major, d.minor, d.name.as_str()), (259, 0, "nvme0n1"));
        assert_eq!(
            [d.reads_completed, d.reads_merged, d.sectors_read, d.read_time_ms],
            [1, 2, 3, 4]
        );
        assert_eq!(
            [d.writes_completed, d.writes_merged, d.sectors_written, d.write_time_ms],
            [5, 6, 7, 8]
        );
        assert_eq!([d.io_in_progress, d.io_time_ms, d.weighted_io_time_ms], [9, 10, 11]);
        assert_eq!(
            d.discards,
            Some(Discards {
                completed: 12,
                merged: 13,
                sectors: 14,
                time_ms: 15
            })
        );
        assert_eq!(
            d.flushes,
            Some(Flushes {
                completed: 16,
                time_ms: 17
            })
        );
    }

    #[test]
    fn older_kernels_lack_discards_and_flushes() {
        let d = parse_line("   8       0 sda 1 2 3 4 5 6 7 8 9 10 11").unwrap();
        assert_eq!((d.weighted_io_time_ms, d.discards, d.flushes), (11, None, None));
        let d = parse_line("   8       0 sda 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15").unwrap();
        assert_eq!(d.discards.map(|x| x.time_ms), Some(15));
        assert_eq!(d.flushes, None);
    }

    #[test]
    fn bad_lines_are_skipped_one_by_one() {
        for line in [
            "8 0 sda 1 2 3 4 5 6 7 8 9 10",
            "8 0 sda 1 2 3 4 5 6 7 8 9 10 11 12",
            "8 0 sda 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
            "8 0 sda 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18",
            "8 0 sda 1 2 3 4 5 6 7 8 9 10 -11",
            "x 0 sda 1 2 3 4 5 6 7 8 9 10 11",
            "8 0",
            "8",
        ] {
            let e = parse_line(line).unwrap_err();
            assert!(e.0.contains(line), "{e}");
        }
        let text = "8 0 sda 1 2 3 4 5 6 7 8 9 10 11\n8 1 sda1 1 2 3\n\n8 16 sdb 1 2 3 4 5 6 7 8 9 10 11\n";
        let p = parse(text);
        let names: Vec<_> = p.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sda", "sdb"]);
        assert_eq!(p.malformed.len(), 1);
        assert!(p.malformed[0].0.contains("sda1 1 2 3"));
        // A line cut to 15 statistics among lines of 17 parses as a line, not as a device.
        let text = "8 0 sda 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n8 16 sdb 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15\n";
        let p = parse(text);
        assert_eq!(p.devices.len(), 1);
        assert!(
            p.malformed[0].0.contains("\"sdb\"") && p.malformed[0].0.contains("15 statistics"),
            "{:?}",
            p.malformed
        );
    }

    #[test]
    fn host_fixture() {
        let p = parse(HOST);
        assert!(p.malformed.is_empty(), "{:?}", p.malformed);
        let names: Vec<_> = p.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "loop0",
                "nvme0n1",
                "nvme0n1p1",
                "sda",
                "sda1",
                "sda2",
                "sda3",
                "sdb",
                "sdb1",
                "dm-0",
                "dm-1",
                "zd0",
                "zd16",
                "zd16p1"
            ]
        );
        assert!(p.devices.iter().all(|d| d.flushes.is_some()));
    }
}
