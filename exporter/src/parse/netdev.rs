//! Parser of `/proc/net/dev` (and `/proc/<pid>/net/dev`): per-interface counters of one
//! network namespace (Linux `net/core/net-procfs.c` `dev_seq_printf_stats`).
//!
//! Two header lines, then one line per interface: `name:` and 16 unsigned counters, 8 receive
//! (bytes packets errs drop fifo frame compressed multicast) and 8 transmit (bytes packets errs
//! drop fifo colls carrier compressed).
//!
//! Note on `drop`: the kernel prints `rx_dropped + rx_missed_errors` in the receive `drop`
//! column (and `tx_dropped` for transmit), so it can exceed sysfs
//! `statistics/rx_dropped`. node_exporter exports this column as is; so do we.

use crate::error::ParseError;

/// The counters of one interface, in `/proc/net/dev` column order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetDevStats {
    /// The interface name (kernel names never contain `:` or whitespace).
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errs: u64,
    /// `rx_dropped + rx_missed_errors`.
    pub rx_drop: u64,
    pub rx_fifo: u64,
    pub rx_frame: u64,
    pub rx_compressed: u64,
    pub rx_multicast: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errs: u64,
    pub tx_drop: u64,
    pub tx_fifo: u64,
    pub tx_colls: u64,
    pub tx_carrier: u64,
    pub tx_compressed: u64,
}

/// Splits one interface line (`  eth0: 1 2 ... 16`) into the name and the 16 counters.
fn split_line(line: &str) -> Result<(&str, [u64; 16]), ParseError> {
    let bad = |why: &str| ParseError::new(format!("malformed /proc/net/dev line ({why}): {line:?}"));
    let (name, rest) = line
        .split_once(':')
        .ok_or_else(|| bad("no ':' after the interface name"))?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(bad("bad interface name"));
    }
    let mut values = [0u64; 16];
    let mut fields = rest.split_ascii_whitespace();
    for slot in values.iter_mut() {
        let field = fields.next().ok_or_else(|| bad("fewer than 16 counters"))?;
        *slot = field.parse().map_err(|_| bad("counter is not an unsigned integer"))?;
    }
    if fields.next().is_some() {
        return Err(bad("more than 16 counters"));
    }
    Ok((name, values))
}

/// The counters of one interface line, without its name (see [`for_each`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errs: u64,
    /// `rx_dropped + rx_missed_errors`.
    pub rx_drop: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errs: u64,
    pub tx_drop: u64,
}

/// Checks the file as [`parse`] does and calls `each` with every interface's name and main
/// counters, in file order, allocating nothing: the host's table lists every veth and tap, so
/// at a thousand guests a String per line was a measurable share of a collection. `each` may
/// have been called for earlier lines when a later line fails the parse: the caller discards
/// what it kept then.
pub fn for_each(text: &str, mut each: impl FnMut(&str, &Counters)) -> Result<(), ParseError> {
    let mut lines = text.lines();
    check_header(lines.next(), lines.next())?;
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let (name, v) = split_line(line)?;
        each(
            name,
            &Counters {
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errs: v[2],
                rx_drop: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errs: v[10],
                tx_drop: v[11],
            },
        );
    }
    Ok(())
}

fn check_header(first: Option<&str>, second: Option<&str>) -> Result<(), ParseError> {
    let (first, second) = (first.unwrap_or_default(), second.unwrap_or_default());
    if !first.starts_with("Inter-|") || !second.contains("|bytes") {
        return Err(ParseError::new("not /proc/net/dev: header lines missing"));
    }
    Ok(())
}

/// Parses one interface line (`  eth0: 1 2 ... 16`).
pub fn parse_line(line: &str) -> Result<NetDevStats, ParseError> {
    let (name, values) = split_line(line)?;
    let [
        rx_bytes,
        rx_packets,
        rx_errs,
        rx_drop,
        rx_fifo,
        rx_frame,
        rx_compressed,
        rx_multicast,
        tx_bytes,
        tx_packets,
        tx_errs,
        tx_drop,
        tx_fifo,
        tx_colls,
        tx_carrier,
        tx_compressed,
    ] = values;
    Ok(NetDevStats {
        name: name.to_owned(),
        rx_bytes,
        rx_packets,
        rx_errs,
        rx_drop,
        rx_fifo,
        rx_frame,
        rx_compressed,
        rx_multicast,
        tx_bytes,
        tx_packets,
        tx_errs,
        tx_drop,
        tx_fifo,
        tx_colls,
        tx_carrier,
        tx_compressed,
    })
}

/// Parses the whole file: checks the two header lines, then every interface line, in file
/// order. Any malformed line fails the parse (a truncated file must not lose interfaces
/// silently or report a cut-off counter).
pub fn parse(text: &str) -> Result<Vec<NetDevStats>, ParseError> {
    let mut lines = text.lines();
    check_header(lines.next(), lines.next())?;
    lines.filter(|l| !l.trim().is_empty()).map(parse_line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = include_str!("../../../fixtures/proxmox-host/proc/net/dev");
    const LXC: &str = include_str!("../../../fixtures/lxc-container/proc/net/dev");

    #[test]
    fn host_fixture() {
        let devs = parse(HOST).unwrap();
        assert_eq!(devs.len(), 10);
        let eno1 = devs.iter().find(|d| d.name == "eno1").unwrap();
        assert_eq!(eno1.rx_bytes, 1774203318662);
        assert_eq!(eno1.rx_packets, 1388004213);
        assert_eq!(eno1.rx_drop, 12985);
        assert_eq!(eno1.rx_multicast, 3911442);
        assert_eq!(eno1.tx_bytes, 498330417905);
        assert_eq!(eno1.tx_packets, 901447310);
        let tap = devs.iter().find(|d| d.name == "tap200i0").unwrap();
        assert_eq!(tap.tx_drop, 117);
        assert_eq!(devs[0].name, "lo");
        assert_eq!(devs[9].name, "veth101i1");
    }

    #[test]
    fn container_fixture() {
        let devs = parse(LXC).unwrap();
        let names: Vec<_> = devs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["lo", "eth0", "eth1"]);
        assert_eq!(devs[1].rx_bytes, 27908331540);
        assert_eq!(devs[1].tx_bytes, 318442907166);
        assert_eq!(devs[2].tx_packets, 9201447);
    }

    #[test]
    fn for_each_agrees_with_parse() {
        let full = parse(HOST).unwrap();
        let mut seen = Vec::new();
        for_each(HOST, |name, c| seen.push((name.to_owned(), *c))).unwrap();
        assert_eq!(seen.len(), full.len());
        for ((name, c), d) in seen.iter().zip(&full) {
            assert_eq!(name, &d.name);
            assert_eq!(
                [
                    c.rx_bytes,
                    c.rx_packets,
                    c.rx_errs,
                    c.rx_drop,
                    c.tx_bytes,
                    c.tx_packets,
                    c.tx_errs,
                    c.tx_drop
                ],
                [
                    d.rx_bytes,
                    d.rx_packets,
                    d.rx_errs,
                    d.rx_drop,
                    d.tx_bytes,
                    d.tx_packets,
                    d.tx_errs,
                    d.tx_drop
                ]
            );
        }
        assert!(for_each(&HOST[..HOST.len() - 30], |_, _| {}).is_err());
        assert!(for_each("garbage\n", |_, _| {}).is_err());
    }

    #[test]
    fn name_glued_to_counters() {
        let d = parse_line("verylongname0:1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16").unwrap();
        assert_eq!(d.name, "verylongname0");
        assert_eq!((d.rx_bytes, d.tx_compressed), (1, 16));
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(parse("").is_err());
        assert!(parse("garbage\nmore garbage\n").is_err());
        let header: String = HOST.lines().take(2).map(|l| format!("{l}\n")).collect();
        assert!(parse(&format!("{header}  eth0: 1 2 3\n")).is_err());
        assert!(parse(&format!("{header}  eth0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n")).is_err());
        assert!(parse(&format!("{header}  eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 -16\n")).is_err());
        assert!(parse(&format!("{header}  eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n")).is_err());
        // A file cut in the middle of the last line.
        let cut = &HOST[..HOST.len() - 30];
        assert!(parse(cut).is_err());
        assert!(parse(&header).unwrap().is_empty());
    }
}
