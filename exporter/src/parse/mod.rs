//! Pure parsers of kernel and Proxmox text formats. Each takes the file's text and returns
//! typed values or a [`crate::error::ParseError`]; readers (in the collectors) add the path.

pub mod cgroup;
pub mod diskstats;
pub mod dpkg;
pub mod loadavg;
pub mod meminfo;
pub mod mountinfo;
pub mod netdev;
pub mod pressure;
pub mod pve;
pub mod pve_jobs;
pub mod pve_section;
pub mod pve_state;
pub mod pve_subscription;
pub mod pve_tasks;
pub mod stat;
pub mod zfs;

/// The fields of a `/proc/<pid>/stat` line after the command name, from field 3 (state) on.
/// The command name (field 2, in parentheses) may hold spaces and parentheses itself, so the
/// fields start after the last `)`; the kernel separates them with single spaces, so only
/// ASCII whitespace splits (a vertical tab is not a separator: fuzzing found two readers that
/// disagreed on it). `None` without a `)`.
pub fn pid_stat_fields(text: &str) -> Option<std::str::SplitAsciiWhitespace<'_>> {
    Some(text[text.rfind(')')? + 1..].split_ascii_whitespace())
}

/// The lines of a kernel file, exactly as `str::lines` gives them (split at `\n`, a `\r`
/// before it removed), found with a plain byte loop instead of its per-line `memchr` call:
/// kernel files have many short lines (a cgroup's `memory.stat` has fifty of some 25 bytes),
/// and `str::lines` was a fifth of the Proxmox guests collector's own instructions at a
/// thousand guests (callgrind).
pub fn lines(text: &str) -> Lines<'_> {
    Lines { rest: text }
}

/// Iterator of [`lines`].
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        match self.rest.bytes().position(|b| b == b'\n') {
            Some(end) => {
                // Cutting at an ASCII byte keeps both sides valid UTF-8 (char boundaries).
                let (line, rest) = (&self.rest[..end], &self.rest[end + 1..]);
                self.rest = rest;
                Some(line.strip_suffix('\r').unwrap_or(line))
            }
            None => Some(std::mem::take(&mut self.rest)),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_are_those_of_str_lines() {
        for text in [
            "",
            "\n",
            "a",
            "a\n",
            "a\nb",
            "a\nb\n",
            "a\r\nb\r\n",
            "\n\na\n\n",
            "é ü\nx\r",
            "a\r\r\n",
            "key 1\n\nkey 2",
        ] {
            let ours: Vec<&str> = super::lines(text).collect();
            let std: Vec<&str> = text.lines().collect();
            assert_eq!(ours, std, "{text:?}");
        }
    }
}
