//! One comparison the rig makes: a quantity as the exporter exported it beside the same
//! quantity read independently by the rig, and the table printed by the tests (and copied into
//! closing notes). A report crosses the VM boundary as JSON (the verdict of the pure cgroup2 run).

use serde::{Deserialize, Serialize};

/// What the exporter's value must be, given the rig's own reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expect {
    /// The same value: a limit, a count that does not move while it is read.
    Equal(f64),
    /// A counter the rig read just before and just after the exporter's collection: the
    /// exporter's value lies between the two reads (inclusive).
    Between(f64, f64),
    /// A gauge that moves while it is read: within `relative` of `value` (0.05 = 5 %), or
    /// within `absolute` of it, whichever is larger.
    Near { value: f64, relative: f64, absolute: f64 },
    /// At least this much (e.g. an eBPF count of events the rig caused itself).
    AtLeast(f64),
    /// The exporter must not export this series.
    Absent,
}

/// One quantity of one guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The guest (e.g. `lxc/101`, `qemu/200`) or `inside lxc/101` for the in-container view.
    pub guest: String,
    /// What is compared, in words and with the series name (e.g. `cpu usage (container_cpu_usage_seconds_total)`).
    pub quantity: String,
    /// The exporter's value; `None` when the series is absent.
    pub exporter: Option<f64>,
    pub expect: Expect,
}

impl Check {
    pub fn passed(&self) -> bool {
        match (&self.expect, self.exporter) {
            (Expect::Absent, value) => value.is_none(),
            (_, None) => false,
            (Expect::Equal(want), Some(got)) => got == *want,
            (Expect::Between(low, high), Some(got)) => *low <= got && got <= *high,
            (
                Expect::Near {
                    value,
                    relative,
                    absolute,
                },
                Some(got),
            ) => (got - value).abs() <= (value.abs() * relative).max(*absolute),
            (Expect::AtLeast(low), Some(got)) => got >= *low,
        }
    }

    fn independent(&self) -> String {
        match &self.expect {
            Expect::Equal(v) => format!("{v}"),
            Expect::Between(low, high) => format!("{low} … {high}"),
            Expect::Near {
                value,
                relative,
                absolute,
            } => {
                format!("{value} (±{}% or ±{absolute})", relative * 100.0)
            }
            Expect::AtLeast(low) => format!("≥ {low}"),
            Expect::Absent => "absent".to_owned(),
        }
    }
}

/// All checks of one layout (`hybrid` on this machine, `cgroup2` in the VM).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub layout: String,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(layout: &str) -> Self {
        Report {
            layout: layout.to_owned(),
            checks: Vec::new(),
        }
    }

    pub fn push(&mut self, guest: &str, quantity: &str, exporter: Option<f64>, expect: Expect) {
        self.checks.push(Check {
            guest: guest.to_owned(),
            quantity: quantity.to_owned(),
            exporter,
            expect,
        });
    }

    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed()).collect()
    }

    /// A markdown table: layout, guest, quantity, exporter value, independent read, verdict.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| layout | guest | quantity | exporter | independent read | ok |\n|---|---|---|---|---|---|\n",
        );
        for c in &self.checks {
            let exporter = c.exporter.map_or_else(|| "absent".to_owned(), |v| format!("{v}"));
            let verdict = if c.passed() { "yes" } else { "**NO**" };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                self.layout,
                c.guest,
                c.quantity,
                exporter,
                c.independent(),
                verdict
            ));
        }
        out
    }

    /// Panics with the whole table when a check failed, so a CI log shows every value.
    pub fn assert_all_passed(&self) {
        let failed = self.failures().len();
        assert!(
            failed == 0 && !self.checks.is_empty(),
            "{failed} of {} checks failed ({} layout):\n{}",
            self.checks.len(),
            self.layout,
            self.table()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let mut r = Report::new("hybrid");
        r.push("lxc/101", "limit", Some(536870912.0), Expect::Equal(536870912.0));
        r.push("lxc/101", "cpu", Some(2.5), Expect::Between(2.0, 3.0));
        r.push("lxc/101", "cpu late", Some(3.5), Expect::Between(2.0, 3.0));
        r.push(
            "lxc/101",
            "memory",
            Some(104.0),
            Expect::Near {
                value: 100.0,
                relative: 0.05,
                absolute: 0.0,
            },
        );
        r.push("lxc/101", "gone", None, Expect::Absent);
        r.push("lxc/101", "missing", None, Expect::Equal(0.0));
        r.push("lxc/101", "forks", Some(10.0), Expect::AtLeast(11.0));
        let failed: Vec<&str> = r.failures().iter().map(|c| c.quantity.as_str()).collect();
        assert_eq!(failed, ["cpu late", "missing", "forks"]);
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert!(
            r.table()
                .contains("| hybrid | lxc/101 | cpu late | 3.5 | 2 … 3 | **NO** |")
        );
    }
}
