//! Parsers of the OpenZFS kstat files under `/proc/spl/kstat/zfs` (SPL `module/os/linux/spl/
//! spl-kstat.c`: `kstat_seq_show_headers`, `kstat_seq_show_named`).
//!
//! A named kstat such as `arcstats` is a header line of seven numbers (kstat id, type, flags,
//! number of entries, data size, creation and snapshot time in ns), a column line `name type
//! data`, then one `name type value` line per entry. `type` is the KSTAT_DATA_* number: 0 char,
//! 1 int32, 2 uint32, 3 int64, 4 uint64, 5 long, 6 ulong, 7 string. Numbers are what the
//! collector exports; a string entry is skipped (none of the ARC's entries is one).
//!
//! A pool's `<pool>/state` is one word and a newline: `spa_state_to_name()` (module/zfs/
//! spa_misc.c) gives ONLINE, DEGRADED, FAULTED, OFFLINE, REMOVED, UNAVAIL, SUSPENDED, and for
//! pools in transition SPLIT, TRANSITIONING or UNKNOWN.

use crate::error::ParseError;

/// One numeric kstat entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: &'a str,
    /// Signed types (int32, int64, long) may be negative: ARC's `memory_available_bytes` is.
    pub value: i128,
}

/// What [`parse_named`] found: every numeric entry in file order, and why each other entry
/// line was skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Named<'a> {
    pub entries: Vec<Entry<'a>>,
    pub malformed: Vec<ParseError>,
}

impl Named<'_> {
    /// The value of entry `name`, if the file has it.
    pub fn get(&self, name: &str) -> Option<i128> {
        self.entries.iter().find(|e| e.name == name).map(|e| e.value)
    }
}

/// Parses a named kstat. The two header lines must be there (otherwise this is not a kstat
/// file and the whole parse fails); an entry line that does not parse is skipped and reported
/// in [`Named::malformed`], so one bad line costs one value.
pub fn parse_named(text: &str) -> Result<Named<'_>, ParseError> {
    let mut lines = super::lines(text);
    let header = lines.next().unwrap_or_default();
    let numbers = header.split_ascii_whitespace();
    if numbers.clone().count() != 7
        || !numbers.clone().all(|f| {
            f.parse::<u64>().is_ok() || f.strip_prefix("0x").is_some_and(|h| u64::from_str_radix(h, 16).is_ok())
        })
    {
        return Err(ParseError::new(format!(
            "not a kstat file: first line is not the seven-number kstat header: {header:?}"
        )));
    }
    let columns = lines.next().unwrap_or_default();
    if !columns.split_ascii_whitespace().eq(["name", "type", "data"]) {
        return Err(ParseError::new(format!(
            "not a named kstat: second line is not `name type data`: {columns:?}"
        )));
    }
    let mut named = Named::default();
    for line in lines.filter(|l| !l.trim_ascii().is_empty()) {
        match parse_entry(line) {
            Ok(Some(entry)) => named.entries.push(entry),
            Ok(None) => {}
            Err(e) => named.malformed.push(e),
        }
    }
    Ok(named)
}

/// One entry line; `Ok(None)` for a string entry.
fn parse_entry(line: &str) -> Result<Option<Entry<'_>>, ParseError> {
    let bad = |why: &str| ParseError::new(format!("malformed kstat line ({why}): {line:?}"));
    let mut fields = line.split_ascii_whitespace();
    let (Some(name), Some(kind), Some(value)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(bad("fewer than three fields"));
    };
    let kind: u8 = kind.parse().map_err(|_| bad("type is not a number"))?;
    if kind == 7 {
        return Ok(None);
    }
    if fields.next().is_some() {
        return Err(bad("more than three fields"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(bad("name is not a kstat name"));
    }
    let value: i128 = match kind {
        // uint32, uint64, ulong.
        2 | 4 | 6 => value
            .parse::<u64>()
            .map_err(|_| bad("value is not an unsigned integer"))?
            .into(),
        // char (printed as a number), int32, int64, long.
        0 | 1 | 3 | 5 => value.parse::<i64>().map_err(|_| bad("value is not an integer"))?.into(),
        _ => return Err(bad("unknown kstat type")),
    };
    Ok(Some(Entry { name, value }))
}

/// Parses a pool's `state` file: the state word, as printed (upper case).
pub fn parse_pool_state(text: &str) -> Result<&str, ParseError> {
    let word = text.strip_suffix('\n').unwrap_or(text);
    if word.is_empty() || word.len() > 32 || !word.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
        return Err(ParseError::new(format!(
            "not a pool state (one upper-case word): {text:?}"
        )));
    }
    Ok(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCSTATS: &str = include_str!("../../../fixtures/proxmox-host/proc/spl/kstat/zfs/arcstats");

    #[test]
    fn arcstats_fixture() {
        let n = parse_named(ARCSTATS).unwrap();
        assert!(n.malformed.is_empty(), "{:?}", n.malformed);
        // The header announces the number of entries; every one is numeric in ZFS 2.2.
        let announced: usize = ARCSTATS.split_ascii_whitespace().nth(3).unwrap().parse().unwrap();
        assert_eq!(n.entries.len(), announced);
        assert_eq!(n.get("size"), Some(3_284_109_952));
        assert_eq!(n.get("c_min"), Some(521_696_640));
        assert_eq!(n.get("memory_available_bytes"), Some(3_213_721_600));
        assert_eq!(n.get("no_such_entry"), None);
    }

    #[test]
    fn a_garbage_line_costs_itself() {
        let text = "13 1 0x01 3 816 5826580283 4298263489920\nname                            type data\nhits                            4    10\ngarbage\nmisses                          4    -1\nsize                            4    7\n";
        let n = parse_named(text).unwrap();
        assert_eq!(
            n.entries,
            [
                Entry {
                    name: "hits",
                    value: 10
                },
                Entry { name: "size", value: 7 }
            ]
        );
        assert_eq!(n.malformed.len(), 2);
        assert!(n.malformed[0].0.contains("garbage"));
        assert!(n.malformed[1].0.contains("misses"));
    }

    #[test]
    fn types() {
        let head = "1 1 0x01 1 272 1 2\nname type data\n";
        // (value of x, entries, malformed lines) of a file with one entry line.
        let one = |line: &str| {
            let text = format!("{head}{line}\n");
            let n = parse_named(&text).unwrap();
            (n.get("x"), n.entries.len(), n.malformed.len())
        };
        assert_eq!(one("x 3 -5"), (Some(-5), 1, 0));
        assert_eq!(one("x 4 18446744073709551615"), (Some(u64::MAX as i128), 1, 0));
        assert_eq!(one("x 4 -5"), (None, 0, 1));
        // A string entry is skipped without complaint.
        assert_eq!(one("x 7 some text here"), (None, 0, 0));
        assert_eq!(one("x 9 1"), (None, 0, 1));
        assert_eq!(one("x 4 1 2"), (None, 0, 1));
        assert_eq!(one("x! 4 1"), (None, 0, 1));
    }

    #[test]
    fn not_kstat_files() {
        assert!(parse_named("").is_err());
        assert!(parse_named("hits 4 1\n").is_err());
        assert!(parse_named("1 1 0x01 1 272 1 2\nhits 4 1\n").is_err());
        assert!(parse_named("1 1 0x01 1 272 1\nname type data\n").is_err());
    }

    #[test]
    fn pool_states() {
        assert_eq!(parse_pool_state("ONLINE\n"), Ok("ONLINE"));
        assert_eq!(parse_pool_state("DEGRADED"), Ok("DEGRADED"));
        assert!(parse_pool_state("").is_err());
        assert!(parse_pool_state("\n").is_err());
        assert!(parse_pool_state("online\n").is_err());
        assert!(parse_pool_state("ONLINE\nONLINE\n").is_err());
    }
}
