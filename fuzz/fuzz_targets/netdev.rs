#![no_main]
//! `/proc/net/dev` (parse::netdev): the full parser and the allocation-free `for_each` agree.

#[path = "common.rs"]
mod common;

use exporter::parse::netdev;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let full = netdev::parse(text);
    let mut seen = Vec::new();
    let each = netdev::for_each(text, |name, c| seen.push((name.to_owned(), c.rx_bytes, c.tx_bytes)));
    match (full, each) {
        (Ok(rows), Ok(())) => {
            let rows: Vec<_> = rows.iter().map(|r| (r.name.clone(), r.rx_bytes, r.tx_bytes)).collect();
            assert_eq!(rows, seen);
        }
        (Err(_), Err(_)) => {}
        (full, each) => panic!("parse {full:?} but for_each {each:?}"),
    }
});
