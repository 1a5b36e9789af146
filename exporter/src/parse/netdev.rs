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

/// Parses one interface line (`  eth0: 1 2 ... 16`).
pub fn parse_line(line: &str) -> Result<NetDevStats, ParseError> {
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
    let first = lines.next().unwrap_or_default();
    let second = lines.next().unwrap_or_default();
    if !first.starts_with("Inter-|") || !second.contains("|bytes") {
        return Err(ParseError::new("not /proc/net/dev: header lines missing"));
    }
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
