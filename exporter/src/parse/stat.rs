//! Parser of the `cpu` lines and of `btime` of `/proc/stat` (proc(5); Linux `fs/proc/stat.c`).
//!
//! Values are in USER_HZ ticks. `guest` and `guest_nice` are already included in `user` and
//! `nice` (the kernel adds guest time to both). Hand-written rather than
//! `procfs::KernelStats`: that keeps per-CPU lines in a `Vec` without their number, and the
//! kernel prints online CPUs only, so with a CPU offline the position is not the CPU number.

use crate::error::ParseError;

/// One `cpu` or `cpuN` line, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTicks {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
    pub guest: u64,
    pub guest_nice: u64,
}

impl CpuTicks {
    /// The exported modes and their ticks (guest time is inside user and nice: not a mode).
    pub fn modes(&self) -> [(&'static str, u64); 8] {
        [
            ("user", self.user),
            ("nice", self.nice),
            ("system", self.system),
            ("idle", self.idle),
            ("iowait", self.iowait),
            ("irq", self.irq),
            ("softirq", self.softirq),
            ("steal", self.steal),
        ]
    }
}

/// The cpu lines of `/proc/stat`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stat {
    /// The aggregate `cpu` line.
    pub total: CpuTicks,
    /// `(N, ticks)` for every `cpuN` line, in file order.
    pub cpus: Vec<(u32, CpuTicks)>,
}

fn parse_cpu_line(line: &str) -> Result<CpuTicks, ParseError> {
    let bad = |why: &str| ParseError::new(format!("malformed /proc/stat cpu line ({why}): {line:?}"));
    let mut v = [0u64; 10];
    let mut fields = line.split_ascii_whitespace().skip(1);
    let mut n = 0;
    for (slot, field) in v.iter_mut().zip(&mut fields) {
        *slot = field.parse().map_err(|_| bad("not an unsigned integer"))?;
        n += 1;
    }
    // Every kernel since 2.6.33 prints all ten; fewer means a cut line, not zeros.
    if n < 10 {
        return Err(bad("fewer than 10 values"));
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice] = v;
    Ok(CpuTicks {
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
        guest,
        guest_nice,
    })
}

/// Parses the cpu lines; other lines are ignored. A file without the aggregate line fails.
pub fn parse(text: &str) -> Result<Stat, ParseError> {
    let mut total = None;
    let mut cpus = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let label = rest.split_ascii_whitespace().next().unwrap_or_default();
        if rest.starts_with(' ') {
            total = Some(parse_cpu_line(line)?);
        } else {
            let n: u32 = label
                .parse()
                .map_err(|_| ParseError::new(format!("bad cpu number in /proc/stat line {line:?}")))?;
            cpus.push((n, parse_cpu_line(line)?));
        }
    }
    let total = total.ok_or_else(|| ParseError::new("/proc/stat has no aggregate cpu line"))?;
    Ok(Stat { total, cpus })
}

/// The `btime` line: the boot time in whole seconds since the Unix epoch (the kernel prints
/// the wall clock minus the time since boot, truncated). Inside an LXC container lxcfs copies
/// this line from the host's file unchanged, so it is the host's boot.
pub fn parse_btime(text: &str) -> Result<u64, ParseError> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .ok_or_else(|| ParseError::new("/proc/stat has no btime line"))?;
    line.trim()
        .parse()
        .map_err(|_| ParseError::new(format!("malformed /proc/stat btime line: {line:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = include_str!("../../../fixtures/proxmox-host/proc/stat");

    #[test]
    fn host_fixture() {
        let s = parse(HOST).unwrap();
        assert_eq!(s.total.user, 25213876);
        assert_eq!(s.total.guest, 5279766);
        assert_eq!(s.cpus.len(), 2);
        assert_eq!(s.cpus[0].0, 0);
        assert_eq!(s.cpus[1].0, 1);
        assert_eq!(s.cpus[1].1.idle, 101850612);
        // Per-CPU lines add up to the aggregate for every mode.
        let sum: u64 = s.cpus.iter().map(|(_, c)| c.user).sum();
        assert_eq!(sum, s.total.user);
        let modes = s.total.modes();
        assert_eq!(modes[3], ("idle", 202121193));
    }

    #[test]
    fn offline_cpu_keeps_its_number() {
        let s = parse("cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 1 1 1 1 1 1 1 1 1\ncpu3 2 2 2 2 2 2 2 2 2 2\n").unwrap();
        assert_eq!(s.cpus.iter().map(|c| c.0).collect::<Vec<_>>(), [0, 3]);
    }

    #[test]
    fn boot_time() {
        assert_eq!(parse_btime(HOST), Ok(1732185325));
        assert_eq!(
            parse_btime("cpu  1 2 3 4 5 6 7 8 9 10\nbtime 17\nprocesses 3\n"),
            Ok(17)
        );
        assert!(parse_btime("cpu  1 2 3 4 5 6 7 8 9 10\n").is_err());
        assert!(parse_btime("btime x\n").is_err());
        assert!(parse_btime("btime -5\n").is_err());
        assert!(parse_btime("btime \n").is_err());
    }

    #[test]
    fn malformed() {
        assert!(parse("").is_err());
        assert!(parse("intr 1 2 3\n").is_err());
        assert!(parse("cpu  1 2 3\n").is_err());
        assert!(parse("cpu  1 2 3 4 5 6 7 8 9 x\n").is_err());
        assert!(parse("cpu  1 2 3 4 5 6 7 8 9 10\ncpuX 1 2 3 4 5 6 7 8 9 10\n").is_err());
        let cut = &HOST[..HOST.find("cpu1").unwrap() + 20];
        assert!(parse(cut).is_err());
    }
}
