#![no_main]
//! Proxmox guest configs (`/etc/pve/lxc/<vmid>.conf`, `/etc/pve/qemu-server/<vmid>.conf`).

#[path = "common.rs"]
mod common;

use exporter::parse::pve::{self, GuestType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    for kind in [GuestType::Lxc, GuestType::Qemu] {
        let config = pve::parse_guest_config(text, kind);
        assert_ne!(config.name.as_deref(), Some(""));
        assert!(
            config.nets.windows(2).all(|w| w[0].index < w[1].index),
            "nets not sorted and unique"
        );
        assert!(config.tags.iter().all(|t| !t.is_empty()));
        assert!(config.ignored_lines.len() <= text.lines().count());
        // Snapshots: each name once, none of them a pending section, the oldest time no later
        // than any snapshot's.
        for (i, s) in config.snapshots.iter().enumerate() {
            assert!(config.snapshots[..i].iter().all(|o| o.name != s.name), "repeated snapshot");
            assert!(kind == GuestType::Lxc || !s.name.eq_ignore_ascii_case("pending"));
            if let (Some(oldest), Some(time)) = (config.oldest_snapshot_time(), s.snaptime) {
                assert!(oldest <= time);
            }
        }
        assert!(config.lock.as_deref() != Some(""));
        // A creation time only from a VM's `meta:` line.
        assert!(config.created.is_none() || (kind == GuestType::Qemu && text.contains("ctime=")));
    }
});
