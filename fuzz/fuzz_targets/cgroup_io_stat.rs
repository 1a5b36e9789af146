#![no_main]
//! cgroup2 `io.stat` (parse::cgroup::parse_io_stat and parse_io_stat_into): both agree.

#[path = "common.rs"]
mod common;

use exporter::parse::cgroup;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let full = cgroup::parse_io_stat(text);
    let mut into = Vec::new();
    let merged = cgroup::parse_io_stat_into(text, &mut into);
    if let (Ok(devices), Ok(())) = (&full, &merged) {
        for d in devices {
            let row = into
                .iter()
                .find(|r| (r.major, r.minor) == (d.major, d.minor))
                .unwrap_or_else(|| panic!("device {}:{} missing from parse_io_stat_into", d.major, d.minor));
            // parse_io_stat keeps the last line of a device, parse_io_stat_into merges; only
            // check a device printed once.
            if devices
                .iter()
                .filter(|o| (o.major, o.minor) == (d.major, d.minor))
                .count()
                == 1
            {
                assert_eq!(
                    (row.rbytes, row.wbytes, row.rios, row.wios),
                    (d.rbytes(), d.wbytes(), d.rios(), d.wios())
                );
            }
        }
    }
});
