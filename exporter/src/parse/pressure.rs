//! Parser of pressure stall information: `/proc/pressure/{cpu,memory,io}` and a cgroup's
//! `{cpu,memory,io}.pressure` (the same format; Documentation/accounting/psi.rst).
//!
//! ```text
//! some avg10=0.18 avg60=0.21 avg300=0.17 total=1871004556
//! full avg10=0.15 avg60=0.17 avg300=0.14 total=1288101224
//! ```
//! `total=` is cumulative stall time in microseconds. The `full` line is optional: kernels
//! before 5.13 print no `full` line for cpu. On the system level (not in a cgroup) the kernel
//! prints a cpu `full` line of all zeros by design; the reader decides what to do with it.

use crate::error::ParseError;

/// One `some` or `full` line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PressureLine {
    /// Share of time stalled over the last 10, 60 and 300 seconds, in percent.
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Cumulative stall time in microseconds.
    pub total_usec: u64,
}

/// A whole pressure file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pressure {
    /// At least one task stalled ("waiting" in node_exporter and cAdvisor).
    pub some: PressureLine,
    /// All non-idle tasks stalled at once ("stalled"); absent on kernels that do not print it.
    pub full: Option<PressureLine>,
}

fn parse_line(line: &str) -> Result<(&str, PressureLine), ParseError> {
    let bad = |why: &str| ParseError::new(format!("malformed pressure line ({why}): {line:?}"));
    let mut fields = line.split_ascii_whitespace();
    let kind = fields.next().ok_or_else(|| bad("empty"))?;
    let (mut avg10, mut avg60, mut avg300, mut total) = (None, None, None, None);
    for field in fields {
        let (key, value) = field.split_once('=').ok_or_else(|| bad("field without ="))?;
        match key {
            "avg10" | "avg60" | "avg300" => {
                let v: f64 = value.parse().map_err(|_| bad("average is not a number"))?;
                if !v.is_finite() || v < 0.0 {
                    return Err(bad("average out of range"));
                }
                match key {
                    "avg10" => avg10 = Some(v),
                    "avg60" => avg60 = Some(v),
                    _ => avg300 = Some(v),
                }
            }
            "total" => total = Some(value.parse::<u64>().map_err(|_| bad("total is not an integer"))?),
            // Future keys are ignored rather than failing the whole file.
            _ => {}
        }
    }
    match (avg10, avg60, avg300, total) {
        (Some(avg10), Some(avg60), Some(avg300), Some(total_usec)) => Ok((
            kind,
            PressureLine {
                avg10,
                avg60,
                avg300,
                total_usec,
            },
        )),
        _ => Err(bad("missing avg10, avg60, avg300 or total")),
    }
}

/// Parses a pressure file. The `some` line is required; a second `some` or `full`, or an
/// unknown line kind, is an error (the text is not what this parser understands).
pub fn parse(text: &str) -> Result<Pressure, ParseError> {
    let mut some = None;
    let mut full = None;
    for line in super::lines(text).filter(|l| !l.trim().is_empty()) {
        let (kind, parsed) = parse_line(line)?;
        let slot = match kind {
            "some" => &mut some,
            "full" => &mut full,
            other => {
                return Err(ParseError::new(format!("unknown pressure line kind {other:?}")));
            }
        };
        if slot.replace(parsed).is_some() {
            return Err(ParseError::new(format!("pressure line {kind:?} appears twice")));
        }
    }
    let some = some.ok_or_else(|| ParseError::new("pressure file has no \"some\" line"))?;
    Ok(Pressure { some, full })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_cpu_pressure_with_zero_full_line() {
        let p = parse(include_str!("../../../fixtures/proxmox-host/proc/pressure/cpu")).unwrap();
        assert_eq!(p.some.total_usec, 4475687443);
        assert_eq!(p.some.avg10, 1.86);
        assert_eq!(p.some.avg300, 1.28);
        assert_eq!(p.full.unwrap().total_usec, 0);
    }

    #[test]
    fn parses_container_memory_pressure() {
        let text = include_str!("../../../fixtures/lxc-container/sys/fs/cgroup/memory.pressure");
        let p = parse(text).unwrap();
        assert_eq!(p.some.total_usec, 48702991);
        let full = p.full.unwrap();
        assert_eq!(full.total_usec, 31950110);
        assert_eq!(full.avg60, 0.12);
    }

    #[test]
    fn full_line_is_optional() {
        let p = parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=12\n").unwrap();
        assert_eq!(p.some.total_usec, 12);
        assert!(p.full.is_none());
    }

    #[test]
    fn rejects_truncated_and_garbage() {
        assert!(parse("").is_err());
        assert!(parse("some avg10=0.00 avg60=0.00 avg300=0.00 tot").is_err());
        assert!(parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=-4").is_err());
        assert!(parse("full avg10=0.00 avg60=0.00 avg300=0.00 total=4").is_err());
        assert!(parse("some avg10=x avg60=0.00 avg300=0.00 total=4").is_err());
        assert!(parse("bogus avg10=0.00 avg60=0.00 avg300=0.00 total=4").is_err());
        let twice = "some avg10=0 avg60=0 avg300=0 total=1\nsome avg10=0 avg60=0 avg300=0 total=2";
        assert!(parse(twice).is_err());
    }
}
