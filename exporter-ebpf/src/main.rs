//! eBPF programs of metrics-exporter. Built for `bpfel-unknown-none` by `exporter/build.rs`;
//! on any other target this crate is an empty shell so that workspace-wide builds succeed.
//!
//! What each program does (maps and layouts are in `exporter-common`):
//! - `sched_switch` (tp_btf): charges the slice of the task switched out to its guest, as the
//!   growth of its `se.sum_exec_runtime` (CPU time) and `sched_info.run_delay` (the run-queue
//!   wait before the slice, one histogram sample) since its switch-in on this CPU.
//! - `sched_process_fork|exec|exit`: task lifecycle counters of `current`'s guest.
//! - `guest_skb_ingress|egress` (cgroup_skb, attached once at the cgroup2 root): packets and L3
//!   bytes of guest sockets, found through the same slot table as the tracepoints.
//!
//! Every program does a constant amount of work: one slot-table lookup probing at most
//! `SLOT_TABLE_PROBES` entries, no loop over data of unbounded size.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
