#![no_main]
//! Proxmox section-config files (`/etc/pve/storage.cfg`, `replication.cfg`, `jobs.cfg`,
//! `ha/resources.cfg`). Beyond not panicking: what the parser returns is well formed, and
//! writing the sections back the way Proxmox writes them and parsing again gives the same
//! sections.

#[path = "common.rs"]
mod common;

use exporter::parse::pve_section::{Section, parse_section_config};
use libfuzzer_sys::fuzz_target;

fn perl_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0B' | '\x0C')
}

fn write_back(sections: &[Section]) -> String {
    let mut text = String::new();
    for section in sections {
        text.push_str(&format!("{}: {}\n", section.section_type, section.id));
        for entry in &section.entries {
            match &entry.value {
                Some(value) => text.push_str(&format!("\t{} {}\n", entry.key, value)),
                None => text.push_str(&format!("\t{}\n", entry.key)),
            }
        }
        text.push('\n');
    }
    text
}

fn shape(sections: &[Section]) -> Vec<(&str, &str, Vec<(&str, Option<&str>)>)> {
    sections
        .iter()
        .map(|s| {
            let entries = s.entries.iter().map(|e| (e.key.as_str(), e.value.as_deref())).collect();
            (s.section_type.as_str(), s.id.as_str(), entries)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else { return };
    let lines = text.split('\n').count();
    let config = parse_section_config(text);
    let mut ids = std::collections::HashSet::new();
    let mut previous_line = 0;
    for section in &config.sections {
        assert!(ids.insert(section.id.as_str()), "id {:?} twice", section.id);
        assert!(section.line > previous_line && section.line <= lines);
        previous_line = section.line;
        for name in [&section.section_type, &section.id] {
            assert!(!name.is_empty() && !name.contains(perl_space), "{name:?}");
        }
        let mut entry_line = section.line;
        for entry in &section.entries {
            assert!(entry.line > entry_line && entry.line <= lines);
            entry_line = entry.line;
            assert!(!entry.key.is_empty() && !entry.key.contains(perl_space));
            if let Some(value) = &entry.value {
                assert!(!value.is_empty() && !value.contains('\n'));
                assert!(
                    !value.starts_with(perl_space) && !value.ends_with(perl_space),
                    "{value:?}"
                );
            }
        }
    }
    assert!(config.errors.iter().all(|e| e.line >= 1 && e.line <= lines));

    let again = parse_section_config(&write_back(&config.sections));
    assert!(again.errors.is_empty(), "{:?}", again.errors);
    assert_eq!(shape(&again.sections), shape(&config.sections));
});
