#![no_main]
//! `/etc/pve/.members`, `.vmlist`, `.version` (JSON written by pmxcfs) and `ha/manager_status` (JSON
//! written by the HA manager); the input is offered to all four.

#[path = "common.rs"]
mod common;

use exporter::parse::pve;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let _ = pve::parse_members(text);
    if let Ok(list) = pve::parse_vmlist(text) {
        assert!(list.ids.values().all(|e| !matches!(e.kind.as_str(), "")));
    }
    let _ = pve::parse_version(text);
    if let Ok(states) = pve::parse_ha_manager_status(text) {
        assert!(states.keys().all(|(_, vmid)| *vmid > 0));
    }
});
