//! Pure parsers of kernel and Proxmox text formats. Each takes the file's text and returns
//! typed values or a [`crate::error::ParseError`]; readers (in the collectors) add the path.

pub mod cgroup;
pub mod loadavg;
pub mod meminfo;
pub mod mountinfo;
pub mod netdev;
pub mod pressure;
pub mod pve;
pub mod stat;
