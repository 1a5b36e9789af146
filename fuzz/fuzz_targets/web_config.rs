#![no_main]
//! `WEB_CONFIG_FILE` (web_config::parse): exporter-toolkit's YAML web config. Nothing it names is
//! read; an error is one line that names the file and a key.

#[path = "common.rs"]
mod common;

use exporter::web_config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let file = std::path::Path::new("/etc/metrics-exporter/web.yml");
    match web_config::parse(file, text) {
        Ok(config) => {
            // Every user's hash was checked to be bcrypt; every header is one exporter-toolkit allows.
            for hash in config.users.values() {
                assert!(hash.expose().starts_with("$2"));
            }
            if let Some(tls) = &config.tls {
                assert!(tls.min_version <= tls.max_version);
            }
        }
        Err(e) => {
            let line = e.to_string();
            assert!(line.starts_with("invalid WEB_CONFIG_FILE=\"/etc/metrics-exporter/web.yml\": "), "{line}");
            assert!(!e.key.is_empty(), "{line}");
        }
    }
});
