#![no_main]
//! The pve_node collector's files: dpkg's status database (parse::dpkg), streamed, finds the
//! same stanza whatever the reader's buffer size, and what it finds is an installed stanza of
//! the name; /etc/subscription (parse::pve_subscription) never panics and yields a lower-case
//! status word.

use std::io::BufReader;

use exporter::parse::{dpkg, pve_subscription};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = dpkg::find_installed(data, "pve-manager");
    // Buffer boundaries anywhere in a line must not change the result.
    let tiny = dpkg::find_installed(BufReader::with_capacity(7, data), "pve-manager");
    assert_eq!(whole, tiny);
    if let Ok(Some(found)) = &whole {
        assert!(!found.version.is_empty());
        assert!(found.status.split_ascii_whitespace().skip(1).eq(["ok", "installed"]));
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(Some(s)) = pve_subscription::parse(text)
    {
        assert!(!s.status.is_empty() && s.status.bytes().all(|b| b.is_ascii_lowercase()));
        assert!(s.level.is_none_or(|l| "cbsp".contains(l)));
    }
});
