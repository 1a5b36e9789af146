//! metrics-exporter: a Prometheus and OpenTelemetry exporter for Proxmox VE hosts and the LXC
//! containers on them. See README.md for what it exports and how it is run.

pub mod collectors;
pub mod config;
pub mod ebpf;
pub mod encode;
pub mod engine;
pub mod error;
pub mod http;
pub mod model;
pub mod otlp;
pub mod parse;
pub mod platform;
pub mod promfile;
pub mod run;
pub mod service;
pub mod starts;
pub mod tls;
pub mod web_config;
