#![no_main]
//! `/proc/self/mountinfo` (parse::mountinfo).

#[path = "common.rs"]
mod common;

use exporter::parse::mountinfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    if let Ok(mounts) = mountinfo::parse(text) {
        assert!(mounts.len() <= text.lines().count());
    }
    for line in text.lines() {
        let _ = mountinfo::parse_line(line);
        // Unescaping only shortens (`\NNN` is four bytes for one character of at most two).
        assert!(mountinfo::unescape_octal(line).len() <= line.len());
    }
});
