//! Parser of Proxmox's section-config format, the one of `/etc/pve/storage.cfg`,
//! `/etc/pve/replication.cfg`, `/etc/pve/jobs.cfg` and others. It produces the sections in
//! file order (type, id, key/value entries with their line numbers) and one error per line it
//! could not use, without dropping the other sections.
//!
//! The rules are those of pve-common `src/PVE/SectionConfig.pm` `parse_config` and
//! `parse_section_header`, minus the per-plugin schema (which this exporter does not have):
//! - the text is split at `\n`; line numbers count every line, comments included;
//! - a line whose first non-space character is `#` is a comment, skipped everywhere (it does
//!   not end a section);
//! - a header is `^(\S+):\s*(\S+)\s*$`: type, a colon, the id (the type is the longest match,
//!   so `a:b: c` is type `a:b`, id `c`); a header starts at column 0;
//! - the lines after a header, up to the first empty line (Perl: the first *false* line, which
//!   is also a line of just `0`), belong to it; each must be `^\s+(\S+)(\s+(.*\S))?\s*$`:
//!   indented key, then optionally whitespace and a value whose trailing whitespace is cut;
//!   a key without a value is a boolean set to 1 (SectionConfig `check_value`), any other
//!   property without a value is an error there, so the value stays `None` here and the
//!   typed getters decide;
//! - an unusable line is reported and skipped; the section goes on;
//! - a repeated section id replaces the earlier section (`$ids->{$sectionId} = $config`), which
//!   this parser reports as an error of the later header line;
//! - Perl's `\s` is space, `\t`, `\n`, `\r`, vertical tab and form feed, so a CRLF file parses
//!   as an LF one except that a line holding only `\r` is not empty: it does not end a section
//!   (it is reported as an unusable line), exactly as in Proxmox.
//!
//! Repeated keys are kept in order (array properties such as jobs.cfg's are legitimately
//! repeated; for a scalar property SectionConfig keeps the first and reports "duplicate
//! attribute", which [`Section::get`] mirrors by returning the first).

use std::fmt;

/// One `key value` line of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    /// `None` for a key written alone (a boolean flag set to 1 in Proxmox's reading).
    pub value: Option<String>,
    /// 1-based line number in the file.
    pub line: usize,
}

/// One `<type>: <id>` section with its entries in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The header's type (`dir`, `zfspool`, `local`, `vzdump`, ...).
    pub section_type: String,
    pub id: String,
    /// 1-based line number of the header.
    pub line: usize,
    pub entries: Vec<Entry>,
}

/// A line the parser could not use, or a section that replaced an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for LineError {}

/// The sections of one file and the errors of the lines that were not used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SectionConfig {
    /// In file order; after a repeated id only the later section is kept, at its own place.
    pub sections: Vec<Section>,
    pub errors: Vec<LineError>,
}

impl SectionConfig {
    /// The section with this id, if any.
    pub fn section(&self, id: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.id == id)
    }
}

impl Section {
    /// The entry of `key` that Proxmox uses for a scalar property: the first one.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// The value of `key` (first occurrence); `None` when absent or written without a value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key)?.value.as_deref()
    }

    /// A boolean property as SectionConfig checks it: absent is `None`, a key alone or `1` is
    /// true, `0` is false, anything else is an error naming the line (JSONSchema `check_type`
    /// accepts only `1` and `0` for booleans in config files).
    pub fn boolean(&self, key: &str) -> Result<Option<bool>, LineError> {
        let Some(entry) = self.entry(key) else {
            return Ok(None);
        };
        match entry.value.as_deref() {
            None | Some("1") => Ok(Some(true)),
            Some("0") => Ok(Some(false)),
            Some(other) => Err(LineError {
                line: entry.line,
                message: format!("section '{}': '{key}' is not a boolean (1 or 0): '{other}'", self.id),
            }),
        }
    }
}

/// Perl's `\s` (without the Unicode rules, as Proxmox reads these files as bytes).
fn is_perl_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0B' | '\x0C')
}

/// Perl's truth of a line: the empty string and `"0"` are false, and a false line ends a
/// section (`while ($line = $nextline->())`).
fn is_perl_false(line: &str) -> bool {
    line.is_empty() || line == "0"
}

fn is_comment(line: &str) -> bool {
    line.trim_start_matches(is_perl_space).starts_with('#')
}

/// `^(\S+):\s*(\S+)\s*$` with the type as long as possible.
fn parse_header(line: &str) -> Option<(&str, &str)> {
    let body = line.trim_end_matches(is_perl_space);
    // The id is the last run of non-space characters; everything before it is `type:` plus
    // optional spaces. The header has no space inside the type, so `type:` is one run too.
    let id_start = body.rfind(is_perl_space).map_or(0, |i| i + 1);
    let (head_with_spaces, id) = body.split_at(id_start);
    let head = head_with_spaces.trim_end_matches(is_perl_space);
    if head.is_empty() && !head_with_spaces.is_empty() {
        // Only spaces before the last run: an indented line, which `^(\S+):` never matches.
        return None;
    }
    if head.is_empty() {
        // No space at all: `type:id` with the type as long as possible, so the colon is the
        // last one that still leaves a non-empty id. `:` is ASCII, so the cuts are on char
        // boundaries.
        let last = body.rfind(':')?;
        let colon = if last + 1 == body.len() {
            body[..last].rfind(':')?
        } else {
            last
        };
        let (section_type, id) = (&body[..colon], &body[colon + 1..]);
        if section_type.is_empty() || id.is_empty() {
            return None;
        }
        return Some((section_type, id));
    }
    let section_type = head.strip_suffix(':')?;
    if section_type.is_empty() || section_type.contains(is_perl_space) || id.is_empty() {
        return None;
    }
    Some((section_type, id))
}

/// `^\s+(\S+)(\s+(.*\S))?\s*$`: key and optional value of a line inside a section.
fn parse_entry(line: &str) -> Option<(&str, Option<&str>)> {
    let rest = line.strip_prefix(is_perl_space)?;
    let rest = rest.trim_start_matches(is_perl_space).trim_end_matches(is_perl_space);
    if rest.is_empty() {
        return None;
    }
    match rest.find(is_perl_space) {
        None => Some((rest, None)),
        Some(end) => {
            let value = rest[end..].trim_start_matches(is_perl_space);
            Some((&rest[..end], Some(value)))
        }
    }
}

/// Parses a section-config file. Never fails as a whole: unusable lines become [`LineError`]s.
pub fn parse_section_config(text: &str) -> SectionConfig {
    let mut config = SectionConfig::default();
    let mut current: Option<Section> = None;

    for (index, line) in text.split('\n').enumerate() {
        let line_number = index + 1;
        if is_comment(line) {
            continue;
        }
        if let Some(section) = current.as_mut() {
            if is_perl_false(line) {
                let done = current.take().expect("checked above");
                finish_section(&mut config, done);
                continue;
            }
            match parse_entry(line) {
                Some((key, value)) => section.entries.push(Entry {
                    key: key.to_string(),
                    value: value.map(str::to_string),
                    line: line_number,
                }),
                None => config.errors.push(LineError {
                    line: line_number,
                    message: format!("section '{}': not an indented 'key value' line: {line:?}", section.id),
                }),
            }
            continue;
        }
        if is_perl_false(line) {
            continue;
        }
        match parse_header(line) {
            Some((section_type, id)) => {
                current = Some(Section {
                    section_type: section_type.to_string(),
                    id: id.to_string(),
                    line: line_number,
                    entries: Vec::new(),
                })
            }
            None => config.errors.push(LineError {
                line: line_number,
                message: format!("not a '<type>: <id>' section header: {line:?}"),
            }),
        }
    }
    if let Some(section) = current.take() {
        finish_section(&mut config, section);
    }
    config
}

/// Adds a finished section; one with an id seen before replaces the earlier (Proxmox keeps the
/// last), and that is reported so an administrator finds the duplicate.
fn finish_section(config: &mut SectionConfig, section: Section) {
    if let Some(position) = config.sections.iter().position(|s| s.id == section.id) {
        let earlier = config.sections.remove(position);
        config.errors.push(LineError {
            line: section.line,
            message: format!(
                "section id '{}' repeated (first at line {}): the later section replaces it, as in Proxmox",
                section.id, earlier.line
            ),
        });
    }
    config.sections.push(section);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (pve_section_config): an indented `type:id` line outside a section was
    /// taken as a header whose type began with the tab; Perl's `^(\S+):` refuses it.
    #[test]
    fn an_indented_line_outside_a_section_is_no_header() {
        for line in ["\tscvzdump:hedule ", " dir:local", "\tdir: local"] {
            let config = parse_section_config(&format!("{line}\n"));
            assert!(config.sections.is_empty(), "{line:?}: {:?}", config.sections);
            assert_eq!(config.errors.len(), 1, "{line:?}");
            assert_eq!(config.errors[0].line, 1);
        }
        let config = parse_section_config("dir:local\n");
        assert_eq!(
            (config.sections[0].section_type.as_str(), config.sections[0].id.as_str()),
            ("dir", "local")
        );
    }

    fn entries(section: &Section) -> Vec<(&str, Option<&str>, usize)> {
        section
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_deref(), e.line))
            .collect()
    }

    #[test]
    fn storage_cfg_as_proxmox_writes_it() {
        let text = "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\nzfspool: local-zfs\n\tpool rpool/data\n\tsparse\n\tcontent images,rootdir\n";
        let config = parse_section_config(text);
        assert_eq!(config.errors, vec![]);
        assert_eq!(config.sections.len(), 2);
        let local = &config.sections[0];
        assert_eq!(
            (local.section_type.as_str(), local.id.as_str(), local.line),
            ("dir", "local", 1)
        );
        assert_eq!(
            entries(local),
            vec![
                ("path", Some("/var/lib/vz"), 2),
                ("content", Some("iso,vztmpl,backup"), 3)
            ]
        );
        let zfs = config.section("local-zfs").unwrap();
        assert_eq!(zfs.section_type, "zfspool");
        assert_eq!(zfs.line, 5);
        assert_eq!(
            entries(zfs),
            vec![
                ("pool", Some("rpool/data"), 6),
                ("sparse", None, 7),
                ("content", Some("images,rootdir"), 8)
            ]
        );
        assert_eq!(zfs.boolean("sparse"), Ok(Some(true)));
        assert_eq!(zfs.boolean("disable"), Ok(None));
        assert_eq!(zfs.get("sparse"), None);
    }

    #[test]
    fn comments_are_skipped_but_counted_and_do_not_end_a_section() {
        let text = "# storage\nlocal: 100-0\n  # a note\n\ttarget pve2\n\t#another\n\tschedule */15\n";
        let config = parse_section_config(text);
        assert_eq!(config.errors, vec![]);
        let job = &config.sections[0];
        assert_eq!(
            (job.section_type.as_str(), job.id.as_str(), job.line),
            ("local", "100-0", 2)
        );
        assert_eq!(
            entries(job),
            vec![("target", Some("pve2"), 4), ("schedule", Some("*/15"), 6)]
        );
    }

    #[test]
    fn an_empty_line_ends_the_section_so_a_later_indented_line_is_an_error() {
        let text = "dir: a\n\tpath /a\n\n\tcontent images\ndir: b\n";
        let config = parse_section_config(text);
        assert_eq!(config.sections.len(), 2);
        assert_eq!(entries(&config.sections[0]), vec![("path", Some("/a"), 2)]);
        assert_eq!(config.sections[1].entries, vec![]);
        assert_eq!(config.errors.len(), 1);
        assert_eq!(config.errors[0].line, 4);
        assert!(
            config.errors[0]
                .to_string()
                .starts_with("line 4: not a '<type>: <id>' section header")
        );
    }

    #[test]
    fn a_section_without_blank_line_before_the_next_header_swallows_it_as_a_bad_line() {
        // Proxmox reads a header inside a section as a line that is not indented: an error, and
        // the section goes on. Writers always put a blank line between sections.
        let text = "dir: a\n\tpath /a\ndir: b\n\tpath /b\n";
        let config = parse_section_config(text);
        assert_eq!(config.sections.len(), 1);
        assert_eq!(
            entries(&config.sections[0]),
            vec![("path", Some("/a"), 2), ("path", Some("/b"), 4)]
        );
        assert_eq!(config.sections[0].get("path"), Some("/a"));
        assert_eq!(config.errors.len(), 1);
        assert_eq!(config.errors[0].line, 3);
        assert!(config.errors[0].message.contains("section 'a'"), "{}", config.errors[0]);
    }

    #[test]
    fn crlf_lines_parse_like_lf_lines_but_a_lone_cr_does_not_end_a_section() {
        let text = "dir: a\r\n\tpath /a b \r\n\tshared\r\n\r\n\tcontent x\r\n";
        let config = parse_section_config(text);
        assert_eq!(config.sections.len(), 1);
        let a = &config.sections[0];
        assert_eq!(a.id, "a");
        assert_eq!(
            entries(a),
            vec![
                ("path", Some("/a b"), 2),
                ("shared", None, 3),
                ("content", Some("x"), 5)
            ]
        );
        assert_eq!(config.errors.len(), 1);
        assert_eq!(config.errors[0].line, 4);
    }

    #[test]
    fn header_forms() {
        assert_eq!(parse_header("dir: local"), Some(("dir", "local")));
        assert_eq!(parse_header("dir:local"), Some(("dir", "local")));
        assert_eq!(parse_header("dir:\t local  \t"), Some(("dir", "local")));
        assert_eq!(parse_header("a:b: c"), Some(("a:b", "c")));
        assert_eq!(parse_header("a:b:c"), Some(("a:b", "c")));
        assert_eq!(parse_header("pbs: backup:1"), Some(("pbs", "backup:1")));
        assert_eq!(parse_header("dir:"), None);
        assert_eq!(parse_header("dir: "), None);
        assert_eq!(parse_header(":x"), None);
        assert_eq!(parse_header(": x"), None);
        assert_eq!(parse_header("dir local"), None);
        assert_eq!(parse_header("dir: a b"), None);
        assert_eq!(parse_header("d ir: a"), None);
        assert_eq!(parse_header(" dir: a"), None);
        assert_eq!(parse_header("dir:é"), Some(("dir", "é")));
        assert_eq!(parse_header("é:"), None);
    }

    #[test]
    fn greedy_type_on_a_run_of_colons() {
        // `^(\S+):\s*(\S+)\s*$` on "::": (\S+) must leave ':' then (\S+) needs one more char,
        // so "::" does not match, ":::" is type ":" id ":".
        assert_eq!(parse_header("::"), None);
        assert_eq!(parse_header(":::"), Some((":", ":")));
    }

    #[test]
    fn entry_forms() {
        assert_eq!(parse_entry("\tkey value"), Some(("key", Some("value"))));
        assert_eq!(parse_entry("  key   a  b  "), Some(("key", Some("a  b"))));
        assert_eq!(parse_entry("\tflag"), Some(("flag", None)));
        assert_eq!(parse_entry("\tflag \t"), Some(("flag", None)));
        assert_eq!(parse_entry("\x0Bkey v\x0C"), Some(("key", Some("v"))));
        assert_eq!(parse_entry("key value"), None);
        assert_eq!(parse_entry("   "), None);
        assert_eq!(parse_entry(""), None);
    }

    #[test]
    fn a_line_of_just_zero_is_false_in_perl_and_ends_the_section() {
        let text = "dir: a\n\tpath /a\n0\n\tcontent x\n";
        let config = parse_section_config(text);
        assert_eq!(entries(&config.sections[0]), vec![("path", Some("/a"), 2)]);
        assert_eq!(config.errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn a_repeated_id_keeps_the_later_section_and_reports_it() {
        let text = "dir: s\n\tpath /one\n\nnfs: t\n\tserver x\n\nzfspool: s\n\tpool p\n";
        let config = parse_section_config(text);
        let ids: Vec<&str> = config.sections.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, vec!["t", "s"]);
        assert_eq!(config.section("s").unwrap().section_type, "zfspool");
        assert_eq!(config.errors.len(), 1);
        assert_eq!(config.errors[0].line, 7);
        assert!(
            config.errors[0].message.contains("first at line 1"),
            "{}",
            config.errors[0]
        );
    }

    #[test]
    fn garbage_between_sections_costs_only_its_line() {
        let text = "what is this\ndir: a\n\tpath /a\n\n  stray\nlvmthin: b\n\tthinpool data\n";
        let config = parse_section_config(text);
        let ids: Vec<&str> = config.sections.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "b"]);
        assert_eq!(config.errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![1, 5]);
    }

    #[test]
    fn booleans_accept_only_what_proxmox_accepts() {
        let config = parse_section_config("dir: a\n\tdisable\n\tshared 0\n\tsparse yes\n\tx 1\n");
        let a = &config.sections[0];
        assert_eq!(a.boolean("disable"), Ok(Some(true)));
        assert_eq!(a.boolean("shared"), Ok(Some(false)));
        assert_eq!(a.boolean("x"), Ok(Some(true)));
        let error = a.boolean("sparse").unwrap_err();
        assert_eq!(error.line, 4);
        assert!(error.message.contains("'yes'"), "{error}");
    }

    #[test]
    fn empty_and_comment_only_texts_have_no_sections() {
        for text in ["", "\n", "# only\n#comments", "\n\n0\n"] {
            assert_eq!(parse_section_config(text), SectionConfig::default(), "{text:?}");
        }
    }
}
