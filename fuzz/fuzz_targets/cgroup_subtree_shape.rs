#![no_main]
//! `cgroup.stat` subtree shape (parse::cgroup::parse_subtree_shape).

#[path = "common.rs"]
mod common;

use exporter::parse::cgroup;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    if let Ok(shape) = cgroup::parse_subtree_shape(text) {
        // The same file is a valid flat-keyed file holding the same nr_descendants.
        let map = cgroup::parse_flat_keyed(text).expect("subtree shape accepted a non flat-keyed text");
        assert_eq!(map.get("nr_descendants"), Some(shape.descendants));
        if !shape.counts_controllers {
            assert_eq!(shape.controllers, 0);
        }
        assert_eq!(cgroup::parse_subtree_shape(text).unwrap(), shape);
    }
});
