//! The real-guest rig: real LXC containers and QEMU guests, laid out as Proxmox VE lays them out
//! (on this machine's hybrid cgroups, and inside a TCG-booted Debian kernel with pure cgroup2),
//! and the comparison of what the exporter exported with what the rig read itself.
//!
//! Used by the exporter's real-guest tests and by `cargo xtask rig` (for a person who wants to
//! look). Everything the rig creates is its own (its lxcpath, cgroups, bridge, devices, files)
//! and is removed on drop, also on failure.

pub mod cgroups;
pub mod command;
pub mod exposition;
pub mod http;
pub mod ledger;
pub mod lxc;
pub mod lxcfs;
pub mod net;
pub mod pve;
pub mod qemu;
pub mod report;
pub mod rig;
pub mod rootfs;
pub mod single;
pub mod truth;
pub mod vm;
