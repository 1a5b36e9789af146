//! Field offsets of `task_struct` from the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The sched_switch program reads three fields of the tasks it sees, with direct loads that the
//! verifier checks against BTF (a `tp_btf` program): `se.sum_exec_runtime` (the task's CPU
//! time, the same nanoseconds cpu.stat sums), `se.prev_sum_exec_runtime` (its value when the
//! fair class last picked the task: the start of its slice) and `sched_info.run_delay` (its
//! cumulative run-queue wait, `/proc/<pid>/schedstat`'s second field). Rust has no CO-RE relocations, so
//! userspace finds the offsets here and passes them as read-only globals at load.
//!
//! Format: <https://www.kernel.org/doc/html/v6.18/bpf/btf.html>. Only what is needed is
//! decoded: the type section's records, to find struct members by name, descending into
//! anonymous struct/union members (randomized or grouped layouts put fields there).

/// Byte offsets inside `struct task_struct`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskOffsets {
    pub sum_exec_runtime: u32,
    pub prev_sum_exec_runtime: u32,
    pub run_delay: u32,
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone, Copy)]
struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    vlen: usize,
    size_or_type: u32,
    /// Offset of the kind-specific data after the 12-byte header, in the type section.
    extra: usize,
}

struct Btf<'a> {
    types: Vec<Type>,
    section: &'a [u8],
    strings: &'a [u8],
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, String> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| format!("BTF truncated at byte {at}"))
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> Result<Btf<'a>, String> {
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err("not little-endian BTF (magic 0xeB9F)".into());
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let section = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or("BTF type section out of bounds")?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or("BTF strings out of bounds")?;
        // Type id 0 is void; ids start at 1.
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            kind_flag: false,
            vlen: 0,
            size_or_type: 0,
            extra: 0,
        }];
        let mut at = 0;
        while at < section.len() {
            let info = u32_at(section, at + 4)?;
            let t = Type {
                name_off: u32_at(section, at)?,
                kind: (info >> 24) & 0x1f,
                kind_flag: info >> 31 == 1,
                vlen: (info & 0xffff) as usize,
                size_or_type: u32_at(section, at + 8)?,
                extra: at + 12,
            };
            let extra = match t.kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * t.vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * t.vlen,
                _ => 0,
            };
            types.push(t);
            at += 12 + extra;
        }
        Ok(Btf {
            types,
            section,
            strings,
        })
    }

    fn name(&self, off: u32) -> &'a [u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize).map(|t| t.kind) {
                Some(KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG) => {
                    id = self.types[id as usize].size_or_type;
                }
                _ => break,
            }
        }
        id
    }

    fn struct_named(&self, name: &str) -> Option<u32> {
        // The complete definition (a forward declaration has kind FWD, not STRUCT).
        (1..self.types.len() as u32).find(|&id| {
            let t = &self.types[id as usize];
            t.kind == KIND_STRUCT && t.vlen > 0 && self.name(t.name_off) == name.as_bytes()
        })
    }

    /// (bit offset, type id) of member `name` of struct/union `id`, searching anonymous
    /// members too.
    fn member(&self, id: u32, name: &str, depth: u32) -> Option<(u32, u32)> {
        let t = *self.types.get(id as usize)?;
        if !matches!(t.kind, KIND_STRUCT | KIND_UNION) || depth > 8 {
            return None;
        }
        for i in 0..t.vlen {
            let at = t.extra + 12 * i;
            let (name_off, ty, raw) = (
                u32_at(self.section, at).ok()?,
                u32_at(self.section, at + 4).ok()?,
                u32_at(self.section, at + 8).ok()?,
            );
            let bit_offset = if t.kind_flag { raw & 0x00ff_ffff } else { raw };
            if name_off == 0 {
                if let Some((inner, found)) = self.member(self.resolve(ty), name, depth + 1) {
                    return Some((bit_offset + inner, found));
                }
            } else if self.name(name_off) == name.as_bytes() {
                return Some((bit_offset, ty));
            }
        }
        None
    }

    /// Byte offset of `path` (e.g. `["se", "sum_exec_runtime"]`) inside struct `root`.
    fn offset(&self, root: &str, path: &[&str]) -> Result<u32, String> {
        let mut id = self
            .struct_named(root)
            .ok_or_else(|| format!("BTF has no struct {root}"))?;
        let mut bits = 0;
        for field in path {
            let (offset, ty) = self
                .member(id, field, 0)
                .ok_or_else(|| format!("BTF: no member {field} in {root} path {path:?}"))?;
            bits += offset;
            id = self.resolve(ty);
        }
        if bits % 8 != 0 {
            return Err(format!("{root}.{path:?} is not byte-aligned"));
        }
        Ok(bits / 8)
    }
}

/// The offsets the sched_switch program needs, from the BTF blob of the running kernel.
pub fn task_offsets(btf: &[u8]) -> Result<TaskOffsets, String> {
    let btf = Btf::parse(btf)?;
    Ok(TaskOffsets {
        sum_exec_runtime: btf.offset("task_struct", &["se", "sum_exec_runtime"])?,
        prev_sum_exec_runtime: btf.offset("task_struct", &["se", "prev_sum_exec_runtime"])?,
        run_delay: btf.offset("task_struct", &["sched_info", "run_delay"])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the running kernel's BTF (world-readable; absent on kernels without BTF).
    #[test]
    fn offsets_of_the_running_kernel() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("offsets_of_the_running_kernel: NOT RUN: no /sys/kernel/btf/vmlinux");
            return;
        };
        let off = task_offsets(&data).unwrap();
        // u64 fields well inside task_struct, 8-aligned; both runtimes in `se`.
        assert_eq!(off.sum_exec_runtime % 8, 0, "{off:?}");
        assert_eq!(off.prev_sum_exec_runtime % 8, 0, "{off:?}");
        assert!(
            off.prev_sum_exec_runtime.abs_diff(off.sum_exec_runtime) <= 64,
            "{off:?}"
        );
        assert_eq!(off.run_delay % 8, 0, "{off:?}");
        assert!(
            off.sum_exec_runtime > 0 && off.run_delay > off.sum_exec_runtime,
            "{off:?}"
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(task_offsets(b"not btf at all, not btf at all").is_err());
        assert!(task_offsets(&[]).is_err());
    }
}
