#![no_main]
//! Flat-keyed cgroup files (`memory.stat`, `memory.events`, `pids.events`, `cgroup.events`...): the map parser and the allocation-free `flat_keyed_values` agree, and the map re-serialised parses again to itself.

#[path = "common.rs"]
mod common;

use exporter::parse::cgroup;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let Ok(map) = cgroup::parse_flat_keyed(text) else {
        // Same strictness: a text the map parser refuses is refused by the other too.
        assert!(cgroup::flat_keyed_values(text, &["fuzz_no_such_key"]).is_err());
        return;
    };
    for (key, value) in &map.0 {
        let [got] = cgroup::flat_keyed_values(text, &[key.as_str()]).expect("map parser accepted it");
        assert_eq!(got, Some(*value), "key {key:?}");
    }
    if map.get("fuzz_no_such_key").is_none() {
        assert_eq!(cgroup::flat_keyed_values(text, &["fuzz_no_such_key"]).unwrap(), [None]);
    }
    let reserialised: String = map.0.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    assert_eq!(cgroup::parse_flat_keyed(&reserialised).expect("re-serialised map"), map);
});
