#![no_main]
//! OpenZFS kstat files (parse::zfs): a named kstat's numeric entries written back in the
//! kernel's format parse to the same entries, and a pool state word parses to itself.

#[path = "common.rs"]
mod common;

use exporter::parse::zfs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    if let Ok(state) = zfs::parse_pool_state(text) {
        assert!(!state.is_empty() && state.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
        assert_eq!(zfs::parse_pool_state(&format!("{state}\n")), Ok(state));
    }
    let Ok(named) = zfs::parse_named(text) else { return };
    let lines = text.lines().skip(2).filter(|l| !l.trim_ascii().is_empty()).count();
    assert!(named.entries.len() + named.malformed.len() <= lines);
    let mut written = format!(
        "1 1 0x01 {} 0 0 0\nname                            type data\n",
        named.entries.len()
    );
    for e in &named.entries {
        assert!(!e.name.is_empty());
        let kind = if e.value < 0 { 3 } else { 4 };
        written += &format!("{:<31} {:<4} {}\n", e.name, kind, e.value);
    }
    let again = zfs::parse_named(&written).expect("written back");
    assert!(again.malformed.is_empty(), "{:?}", again.malformed);
    assert_eq!(again.entries, named.entries);
});
