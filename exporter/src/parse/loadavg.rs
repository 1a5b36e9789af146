//! Parser of `/proc/loadavg` (proc(5); Linux `fs/proc/loadavg.c`):
//! `0.74 0.81 0.77 2/389 1873342`.
//!
//! Hand-written rather than `procfs::LoadAverage`: that type holds the averages as `f32`, so
//! 0.74 would be exported as 0.7400000095367432.

use crate::error::ParseError;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAvg {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
    /// Runnable scheduling entities (threads) right now.
    pub running: u64,
    /// Scheduling entities (threads) that exist.
    pub total: u64,
    pub last_pid: u64,
}

pub fn parse(text: &str) -> Result<LoadAvg, ParseError> {
    let bad = || ParseError::new(format!("malformed loadavg: {:?}", text.trim()));
    let mut fields = text.split_ascii_whitespace();
    let mut avg = || -> Result<f64, ParseError> {
        let v: f64 = fields.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        if v.is_finite() && v >= 0.0 { Ok(v) } else { Err(bad()) }
    };
    let (one, five, fifteen) = (avg()?, avg()?, avg()?);
    let (running, total) = fields.next().and_then(|f| f.split_once('/')).ok_or_else(bad)?;
    let running = running.parse().map_err(|_| bad())?;
    let total = total.parse().map_err(|_| bad())?;
    let last_pid = fields.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    if fields.next().is_some() {
        return Err(bad());
    }
    Ok(LoadAvg {
        one,
        five,
        fifteen,
        running,
        total,
        last_pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_fixture() {
        let l = parse(include_str!("../../../fixtures/proxmox-host/proc/loadavg")).unwrap();
        assert_eq!((l.one, l.five, l.fifteen), (0.74, 0.81, 0.77));
        assert_eq!((l.running, l.total, l.last_pid), (2, 389, 1873342));
    }

    #[test]
    fn malformed() {
        assert!(parse("").is_err());
        assert!(parse("0.74 0.81 0.77 2/389").is_err());
        assert!(parse("0.74 0.81 0.77 2-389 1").is_err());
        assert!(parse("0.74 0.81 x 2/389 1").is_err());
        assert!(parse("0.74 0.81 -1 2/389 1").is_err());
        assert!(parse("0.74 0.81 0.77 2/389 1 9").is_err());
    }
}
