//! eBPF programs of metrics-exporter. Built for `bpfel-unknown-none` by `exporter/build.rs`;
//! on any other target this crate is an empty shell so that workspace-wide builds succeed.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {}
