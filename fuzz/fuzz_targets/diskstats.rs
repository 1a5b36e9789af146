#![no_main]
//! `/proc/diskstats` (parse::diskstats): every non-blank line is a device or an error, the
//! devices all have the file's longest statistics count (11, 15 or 17), and a device printed
//! back as a kernel line parses to itself.

#[path = "common.rs"]
mod common;

use exporter::parse::diskstats;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let parsed = diskstats::parse(text);
    let lines = text.lines().filter(|l| !l.trim_ascii().is_empty()).count();
    assert_eq!(parsed.devices.len() + parsed.malformed.len(), lines);
    let format = parsed.devices.first().map(|d| d.statistics());
    for d in &parsed.devices {
        assert!(matches!(d.statistics(), 11 | 15 | 17));
        assert_eq!(Some(d.statistics()), format, "one format per file");
        let mut line = format!(
            "{} {} {} {} {} {} {} {} {} {} {} {} {} {}",
            d.major,
            d.minor,
            d.name,
            d.reads_completed,
            d.reads_merged,
            d.sectors_read,
            d.read_time_ms,
            d.writes_completed,
            d.writes_merged,
            d.sectors_written,
            d.write_time_ms,
            d.io_in_progress,
            d.io_time_ms,
            d.weighted_io_time_ms
        );
        if let Some(x) = d.discards {
            line += &format!(" {} {} {} {}", x.completed, x.merged, x.sectors, x.time_ms);
        }
        if let Some(x) = d.flushes {
            line += &format!(" {} {}", x.completed, x.time_ms);
        }
        assert_eq!(diskstats::parse_line(&line).as_ref(), Ok(d), "{line:?}");
    }
});
