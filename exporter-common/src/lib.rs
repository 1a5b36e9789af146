//! The kernel <-> userspace contract of metrics-exporter: every type shared with the eBPF
//! programs in `exporter-ebpf`, with fixed-width fields and explicit sizes.
//!
//! Layout rules: `#[repr(C)]`, only `u32`/`u64` fields, padding written out as fields, and a
//! `const` assertion of every size so that a change on one side cannot silently disagree with
//! the other. The pure functions at the end (hashing, histogram buckets)
//! are compiled into both sides so the kernel and userspace can never compute them differently.
//!
//! Map overview (names are the ELF symbols userspace looks up):
//! - [`SLOT_TABLE_MAP`]: one [`SlotTable`], mmap-ed read-write by userspace: the guest level and
//!   an open-addressed table cgroup id -> slot, filled at guest discovery.
//! - [`COUNTERS_MAP`]: [`GuestCounters`] striped per possible CPU (index `cpu * MAX_GUESTS +
//!   slot`), `BPF_F_MMAPABLE`, read by userspace without a syscall.
//! - [`CPU_STATE_MAP`]: per-CPU [`CpuState`] of the sched_switch program.
//! - [`EVENT_STATS_MAP`]: u64 counters of events the kernel side could not account, striped
//!   per possible CPU (index `cpu * EVENT_STATS_LEN + event`), `BPF_F_MMAPABLE`.
//!
//! After start-up userspace makes no bpf() call: it reads and writes the maps above only
//! through shared mappings (made while it still held its capabilities), so it needs no
//! capability afterwards, and new guests are placed by a plain memory write. That holds also
//! on kernels before 6.5, which refuse every bpf() command, even a lookup on a descriptor
//! already held, to a process without CAP_BPF while `kernel.unprivileged_bpf_disabled` is set.
//!
//! Read-only globals set by userspace at load: [`GLOBAL_SUM_EXEC_RUNTIME_OFFSET`],
//! [`GLOBAL_PREV_SUM_EXEC_RUNTIME_OFFSET`] and [`GLOBAL_RUN_DELAY_OFFSET`], byte offsets inside
//! `struct task_struct` found in the kernel's BTF (Rust has no CO-RE relocations).
#![no_std]

/// Guest slots. Counters are striped per possible CPU, so the counters map holds
/// `nr_cpus * MAX_GUESTS` entries of [`GuestCounters`] (288 KiB per CPU at 1024 slots).
pub const MAX_GUESTS: u32 = 1024;

/// Entries of the cgroup id -> slot table: a power of two, twice the slots, so that linear
/// probing stays short.
pub const SLOT_TABLE_BITS: u32 = 11;
pub const SLOT_TABLE_ENTRIES: usize = 1 << SLOT_TABLE_BITS;
/// The kernel probes at most this many entries (constant work per event); userspace refuses
/// a guest it cannot place within this many probes and counts it.
pub const SLOT_TABLE_PROBES: usize = 8;

/// Run-queue latency histogram: bucket 0 counts waits below 2^10 ns (~1 us); bucket k
/// (1..=25) waits in [2^(9+k), 2^(10+k)) ns; the last bucket everything from 2^35 ns (~34 s).
pub const RUNQ_BUCKETS: usize = 27;
pub const RUNQ_FIRST_BOUND_LOG2: u32 = 10;

/// Map names, as the ELF symbols of `exporter-ebpf`.
pub const SLOT_TABLE_MAP: &str = "SLOT_TABLE";
pub const COUNTERS_MAP: &str = "GUEST_COUNTERS";
pub const CPU_STATE_MAP: &str = "CPU_STATE";
pub const EVENT_STATS_MAP: &str = "EVENT_STATS";
/// aya-log's ring buffer (the name is fixed by aya-log).
pub const LOG_MAP: &str = "AYA_LOGS";

/// Globals (ELF symbols in .rodata) that userspace sets at load.
pub const GLOBAL_SUM_EXEC_RUNTIME_OFFSET: &str = "TASK_SUM_EXEC_RUNTIME_OFFSET";
pub const GLOBAL_RUN_DELAY_OFFSET: &str = "TASK_RUN_DELAY_OFFSET";
/// Byte offset of `task->se.prev_sum_exec_runtime`: the task's `sum_exec_runtime` when the
/// fair class last picked it to run (`set_next_entity()`), i.e. the start of its slice.
pub const GLOBAL_PREV_SUM_EXEC_RUNTIME_OFFSET: &str = "TASK_PREV_SUM_EXEC_RUNTIME_OFFSET";

/// BTF-enabled tracepoint programs (`tp_btf`): (ELF function name, tracepoint).
pub const BTF_TRACEPOINTS: &[(&str, &str)] = &[("sched_switch", "sched_switch")];
/// Raw tracepoint programs: (ELF function name, raw tracepoint it attaches to).
pub const RAW_TRACEPOINTS: &[(&str, &str)] = &[
    ("sched_process_fork", "sched_process_fork"),
    ("sched_process_exec", "sched_process_exec"),
    ("sched_process_exit", "sched_process_exit"),
];
/// cgroup_skb programs, attached once to the root of the cgroup2 hierarchy (a bpf_link, which
/// coexists with other programs there and below): every socket's packets reach them, present
/// and future guests alike, and the slot table decides which guest, if any, they count for.
pub const SKB_INGRESS_PROGRAM: &str = "guest_skb_ingress";
pub const SKB_EGRESS_PROGRAM: &str = "guest_skb_egress";

/// Events counted in `EVENT_STATS`; CPU `c`'s count of event `e` is entry
/// `c * EVENT_STATS_LEN + e`.
/// A guest task was switched out whose switch-in this CPU did not see (the sched_switch that
/// switched it in did not reach the program, or happened before attaching): its slice is
/// charged from `se.prev_sum_exec_runtime` (see [`GLOBAL_PREV_SUM_EXEC_RUNTIME_OFFSET`]) and
/// gives no run-queue wait sample.
pub const STAT_UNSEEN_SWITCH_IN: u32 = 0;
/// A slot-table entry named a slot outside `0..MAX_GUESTS` (never written by userspace: an
/// unexpected state).
pub const STAT_BAD_SLOT: u32 = 1;
pub const EVENT_STATS_LEN: u32 = 2;

/// One entry of the slot table. `cgroup_id == 0` means empty (no cgroup has inode 0).
///
/// Userspace writes `slot` before `cgroup_id` and clears `cgroup_id` first on release, through
/// a shared mapping: a reader that matches the id always finds the slot written before it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotEntry {
    pub cgroup_id: u64,
    pub slot: u32,
    pub _pad: u32,
}

/// The whole table as the single value of a one-entry array: the kernel does one map lookup
/// per event and then indexes it, instead of one lookup per probe.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SlotTable {
    /// The cgroup2 depth of guests (root = 0; `lxc/<vmid>` on Proxmox is 2). Computed by
    /// userspace from the real path of the first guest; 0 means no guest yet, which the kernel
    /// treats as "account nothing".
    pub guest_level: u32,
    pub _pad: u32,
    pub entries: [SlotEntry; SLOT_TABLE_ENTRIES],
}

/// Everything counted per guest, per CPU. Cumulative; the kernel only adds.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestCounters {
    /// Nanoseconds on CPU, charged at each switch-out of a guest task.
    pub cpu_ns: u64,
    /// Tasks (processes and threads) created by guest tasks.
    pub forks: u64,
    /// Successful execve calls in the guest.
    pub execs: u64,
    /// Tasks (threads) that exited in the guest.
    pub exits: u64,
    /// cgroup_skb ingress: packets delivered to guest sockets, and their L3 bytes.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// cgroup_skb egress: packets sent by guest sockets, and their L3 bytes.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Sum of run-queue waits in nanoseconds (the histogram's sum).
    pub runq_wait_ns: u64,
    /// Run-queue waits per log2 bucket (see [`RUNQ_BUCKETS`]); not cumulative across buckets.
    pub runq_buckets: [u64; RUNQ_BUCKETS],
}

impl GuestCounters {
    pub const ZERO: GuestCounters = GuestCounters {
        cpu_ns: 0,
        forks: 0,
        execs: 0,
        exits: 0,
        rx_packets: 0,
        rx_bytes: 0,
        tx_packets: 0,
        tx_bytes: 0,
        runq_wait_ns: 0,
        runq_buckets: [0; RUNQ_BUCKETS],
    };
    /// Number of `u64` words, for readers that sum stripes word by word.
    pub const WORDS: usize = core::mem::size_of::<GuestCounters>() / 8;
}

/// Per-CPU state of the sched_switch program.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuState {
    /// The task (its `task_struct` address) switched in last on this CPU, 0 before the first
    /// switch seen. Checked at switch-out so that a slice is charged only when this CPU saw
    /// its start for this very task.
    pub task: u64,
    /// `task->se.sum_exec_runtime` when it was switched in.
    pub sum_exec_runtime: u64,
    /// `task->sched_info.run_delay` when it was switched in (before this arrival's wait is
    /// added to it, which the kernel does after the tracepoint).
    pub run_delay: u64,
    pub _pad: u64,
}

const _: () = assert!(core::mem::size_of::<SlotEntry>() == 16);
const _: () = assert!(core::mem::size_of::<SlotTable>() == 8 + 16 * SLOT_TABLE_ENTRIES);
const _: () = assert!(core::mem::size_of::<GuestCounters>() == 8 * (9 + RUNQ_BUCKETS));
const _: () = assert!(core::mem::size_of::<GuestCounters>() == 288);
const _: () = assert!(core::mem::size_of::<CpuState>() == 32);
const _: () = assert!(SLOT_TABLE_ENTRIES >= 2 * MAX_GUESTS as usize);

/// Multiplicative (Fibonacci) hashing: cgroup ids are inode numbers that grow roughly in
/// sequence, and the top bits of the product spread them evenly.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// First table index probed for a cgroup id; probe `i` is `(home + i) % SLOT_TABLE_ENTRIES`.
#[inline(always)]
pub const fn slot_home(cgroup_id: u64) -> usize {
    (cgroup_id.wrapping_mul(GOLDEN) >> (64 - SLOT_TABLE_BITS)) as usize
}

/// floor(log2(v)) for v > 0, with a fixed number of comparisons (no loop for the verifier).
#[inline(always)]
pub const fn log2_floor(mut v: u64) -> u32 {
    let mut r = 0;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// The histogram bucket of a run-queue wait in nanoseconds.
#[inline(always)]
pub const fn runq_bucket(wait_ns: u64) -> usize {
    if wait_ns < 1 << RUNQ_FIRST_BOUND_LOG2 {
        return 0;
    }
    let k = (log2_floor(wait_ns) - (RUNQ_FIRST_BOUND_LOG2 - 1)) as usize;
    if k >= RUNQ_BUCKETS { RUNQ_BUCKETS - 1 } else { k }
}

/// Upper bound in nanoseconds of bucket `k` (exclusive); `None` for the last (+Inf) bucket.
pub const fn runq_bucket_upper_ns(k: usize) -> Option<u64> {
    if k + 1 >= RUNQ_BUCKETS {
        None
    } else {
        Some(1 << (RUNQ_FIRST_BOUND_LOG2 + k as u32))
    }
}

// SAFETY: all four types are #[repr(C)], consist only of u32/u64 fields and arrays of them
// with padding written out as fields (asserted above), so every bit pattern is a valid value
// and they contain no pointers or references.
#[cfg(feature = "user")]
unsafe impl aya::Pod for SlotEntry {}
// SAFETY: see above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for SlotTable {}
// SAFETY: see above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for GuestCounters {}
// SAFETY: see above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for CpuState {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_their_bounds() {
        assert_eq!(runq_bucket(0), 0);
        assert_eq!(runq_bucket(1023), 0);
        assert_eq!(runq_bucket(1024), 1);
        assert_eq!(runq_bucket(2047), 1);
        assert_eq!(runq_bucket(2048), 2);
        assert_eq!(runq_bucket(u64::MAX), RUNQ_BUCKETS - 1);
        for k in 0..RUNQ_BUCKETS - 1 {
            let upper = runq_bucket_upper_ns(k).unwrap();
            assert_eq!(runq_bucket(upper - 1), k, "bucket {k}");
            assert_eq!(runq_bucket(upper), k + 1, "bucket {k}");
        }
        assert_eq!(runq_bucket_upper_ns(RUNQ_BUCKETS - 1), None);
    }

    #[test]
    fn log2_matches_leading_zeros() {
        for shift in 0..64 {
            let v = 1u64 << shift;
            assert_eq!(log2_floor(v), 63 - v.leading_zeros());
            assert_eq!(log2_floor(v | (v >> 1)), 63 - v.leading_zeros());
        }
    }

    #[test]
    fn homes_stay_in_the_table() {
        for id in [1u64, 2, 4096, u64::MAX, 0x1_0000_0001] {
            assert!(slot_home(id) < SLOT_TABLE_ENTRIES);
        }
    }
}
