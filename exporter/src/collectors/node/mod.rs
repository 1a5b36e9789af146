//! Node collectors: the machine or container the exporter runs on.
//!
//! Inside an LXC container every value is the container's, never the host's: each collector
//! picks its source from [`Environment::platform`] (lxcfs-virtualized files where they are
//! the container's, the cgroup namespace root `env.cgroup_path` otherwise) and says in
//! [`Collector::notes`] what it cannot derive there.

use crate::collectors::{Collector, Environment};

pub mod cpu;
pub mod filesystem;
pub mod load;
pub mod memory;
pub mod network;
pub mod pressure;
pub mod process;

/// The collector for a catalogue name, `None` for a name that is not a node collector.
pub fn create(name: &str, env: &Environment) -> Option<Box<dyn Collector>> {
    Some(match name {
        "cpu" => Box::new(cpu::CpuCollector::new(env)),
        "load" => Box::new(load::LoadCollector::new(env)),
        "memory" => Box::new(memory::MemoryCollector::new(env)),
        "filesystem" => Box::new(filesystem::FilesystemCollector::new(env)),
        "network" => Box::new(network::NetworkCollector::new(env)),
        "pressure" => Box::new(pressure::PressureCollector::new(env)),
        "process" => Box::new(process::ProcessCollector::new(env)),
        _ => return None,
    })
}

/// A collector's answer when the cgroup2 hierarchy it needs was not found at start.
pub(crate) fn no_cgroup(what: &str) -> crate::error::CollectError {
    crate::error::CollectError::Other(format!(
        "{what}: no cgroup2 hierarchy was found (set CGROUP_PATH); refusing to report host values for a container"
    ))
}
