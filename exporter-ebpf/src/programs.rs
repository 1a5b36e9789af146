//! The kernel side proper (compiled for the bpf target only).
//!
//! Kernel references (v6.18):
//! - sched_switch passes `(bool preempt, struct task_struct *prev, struct task_struct *next,
//!   unsigned int prev_state)` and fires in `__schedule()` before `context_switch()`, so
//!   `current` is still `prev`:
//!   <https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/sched.h>,
//!   <https://elixir.bootlin.com/linux/v6.18/source/kernel/sched/core.c>
//! - `bpf_get_current_ancestor_cgroup_id(level)` returns the cgroup id at `level` (root = 0) of
//!   `current`'s cgroup2 cgroup, 0 when the cgroup is shallower:
//!   <https://elixir.bootlin.com/linux/v6.18/source/kernel/bpf/helpers.c>
//! - Array maps' lookups are inlined by the verifier (`array_map_gen_lookup`), so the slot
//!   table, counters and wake table cost no helper call:
//!   <https://elixir.bootlin.com/linux/v6.18/source/kernel/bpf/arraymap.c>

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_F_MMAPABLE,
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        bpf_skb_ancestor_cgroup_id,
    },
    macros::{cgroup_skb, map, raw_tracepoint},
    maps::{Array, PerCpuArray},
    programs::{RawTracePointContext, SkBuffContext},
};
use aya_log_ebpf::{error, warn};
use exporter_common::{
    CpuState, EVENT_STATS_LEN, GuestCounters, MAX_GUESTS, RUNQ_BUCKETS, SLOT_TABLE_ENTRIES,
    SLOT_TABLE_PROBES, STAT_BAD_SLOT, STAT_WAKE_OVERWRITTEN, SlotTable, WAKE_ENTRIES,
    runq_bucket, slot_home, wake_index, wake_pack, wake_tag, wake_wait,
};

#[map]
static SLOT_TABLE: Array<SlotTable> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// `MAX_GUESTS` entries here; userspace sets `nr_cpus * MAX_GUESTS` at load (one stripe per
/// possible CPU), so each CPU writes only its own stripe and needs no atomic operation.
#[map]
static GUEST_COUNTERS: Array<GuestCounters> = Array::with_max_entries(MAX_GUESTS, BPF_F_MMAPABLE);

#[map]
static CPU_STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

#[map]
static WAKE_TS: Array<u64> = Array::with_max_entries(WAKE_ENTRIES, 0);

#[map]
static EVENT_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(EVENT_STATS_LEN, 0);

#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program whose code can reach a panic, so this is dead.
    unsafe { core::hint::unreachable_unchecked() }
}

/// Adds one to a per-CPU event counter and returns the new value.
#[inline(always)]
fn count_event(index: u32) -> u64 {
    match EVENT_STATS.get_ptr_mut(index) {
        Some(p) => {
            // SAFETY: a per-CPU array value, written only by this CPU.
            unsafe {
                *p += 1;
                *p
            }
        }
        None => 0,
    }
}

/// The guest slot of a cgroup id at guest level, probing a bounded number of entries.
///
/// Every probe is looked at (no early exit on an empty entry): userspace can then free an
/// entry by zeroing it, without tombstones, and the work per event stays constant.
#[inline(always)]
fn slot_of<C: EbpfContext>(ctx: &C, table: &SlotTable, cgroup_id: u64) -> Option<u32> {
    if cgroup_id == 0 {
        return None;
    }
    let home = slot_home(cgroup_id);
    let base = table.entries.as_ptr();
    // The matching entry's index, or SLOT_TABLE_ENTRIES for none; the slot is read once after
    // the loop (reading it inside lets LLVM build code the verifier refuses).
    let mut hit = SLOT_TABLE_ENTRIES;
    let mut i = 0;
    while i < SLOT_TABLE_PROBES {
        let index = (home + i) & (SLOT_TABLE_ENTRIES - 1);
        // SAFETY: index is masked to the array's length. Volatile: userspace rewrites entries
        // through a shared mapping while programs run.
        let id = unsafe { core::ptr::read_volatile(&(*base.add(index)).cgroup_id) };
        if id == cgroup_id {
            hit = index;
        }
        i += 1;
    }
    if hit >= SLOT_TABLE_ENTRIES {
        return None;
    }
    // SAFETY: hit < SLOT_TABLE_ENTRIES (checked above).
    let slot = unsafe { core::ptr::read_volatile(&(*base.add(hit & (SLOT_TABLE_ENTRIES - 1))).slot) };
    if slot >= MAX_GUESTS {
        let n = count_event(STAT_BAD_SLOT);
        if n.is_power_of_two() {
            error!(ctx, "slot table entry {} names slot {} (max {}); seen {} times on this CPU", hit as u64, slot as u64, MAX_GUESTS as u64, n);
        }
        return None;
    }
    Some(slot)
}

/// This CPU's counters of a slot.
#[inline(always)]
fn counters(slot: u32) -> Option<*mut GuestCounters> {
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    GUEST_COUNTERS.get_ptr_mut(cpu * MAX_GUESTS + slot)
}

/// The guest of `current`, as a pointer to this CPU's counters.
#[inline(always)]
fn current_guest<C: EbpfContext>(ctx: &C) -> Option<*mut GuestCounters> {
    let table = SLOT_TABLE.get(0)?;
    let level = table.guest_level;
    if level == 0 {
        return None;
    }
    // SAFETY: a helper taking a plain integer.
    let cgroup_id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
    counters(slot_of(ctx, table, cgroup_id)?)
}

/// Records that `task` became runnable at `now` (a wakeup, or a preemption that leaves it
/// queued).
#[inline(always)]
fn mark_queued<C: EbpfContext>(ctx: &C, task: u64, now: u64) {
    let Some(entry) = WAKE_TS.get_ptr_mut(wake_index(task)) else {
        return;
    };
    // SAFETY: an array value; a plain u64 is read and written whole.
    unsafe {
        let old = *entry;
        if old != 0 && old & ((1 << exporter_common::WAKE_TAG_BITS) - 1) != wake_tag(task) {
            let n = count_event(STAT_WAKE_OVERWRITTEN);
            if n.is_power_of_two() {
                warn!(ctx, "wake table: a queued task's entry was overwritten ({} times on this CPU)", n);
            }
        }
        *entry = wake_pack(task, now);
    }
}

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch(ctx: RawTracePointContext) -> i32 {
    on_switch(&ctx);
    0
}

#[inline(always)]
fn on_switch(ctx: &RawTracePointContext) {
    let preempt: u64 = ctx.arg(0);
    let prev: u64 = ctx.arg(1);
    let next: u64 = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(state) = CPU_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's value; preemption is disabled in __schedule.
    let state = unsafe { &mut *state };
    let (task, start, pending) = (state.task, state.start_ns, state.pending_wait);

    // Stamp the incoming task on every switch, whatever its cgroup. A stamp taken only when
    // "the incoming task is a guest" would have to look at `next`'s cgroup, but the cgroup
    // helpers see `current`, which is still `prev` here: such a design misses every
    // switch-in from idle or from another cgroup, which is most of them when tasks migrate.
    state.task = next;
    state.start_ns = now;
    state.pending_wait = 0;
    if let Some(entry) = WAKE_TS.get_ptr_mut(wake_index(next)) {
        // SAFETY: an array value, read and cleared whole.
        unsafe {
            if let Some(wait) = wake_wait(*entry, next, now) {
                *entry = 0;
                state.pending_wait = wait + 1;
            }
        }
    }

    // `current` is `prev`: its guest is the one to charge.
    let Some(c) = current_guest(ctx) else {
        return;
    };
    // SAFETY: this CPU's stripe of the counters; no other CPU writes it.
    let c = unsafe { &mut *c };
    // Charge only an interval this CPU saw start for this task (not the first switch after
    // attaching, nor a switch-in whose event was lost).
    if task == prev && start != 0 {
        c.cpu_ns += now.wrapping_sub(start);
        if pending != 0 {
            let wait = pending - 1;
            c.runq_wait_ns += wait;
            let bucket = runq_bucket(wait);
            if bucket < RUNQ_BUCKETS {
                c.runq_buckets[bucket] += 1;
            }
        }
    }
    // A preempted task stays runnable: its next wait starts now.
    if preempt != 0 || prev_state == 0 {
        mark_queued(ctx, prev, now);
    }
}

#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn sched_wakeup(ctx: RawTracePointContext) -> i32 {
    on_wakeup(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: RawTracePointContext) -> i32 {
    on_wakeup(&ctx);
    0
}

/// Wakeups are recorded for every task: the woken task is not `current`, and finding its
/// cgroup would cost pointer chasing through task_struct. The wait is charged at the task's
/// own switch-out, where `current` tells its guest.
#[inline(always)]
fn on_wakeup(ctx: &RawTracePointContext) {
    let task: u64 = ctx.arg(0);
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    mark_queued(ctx, task, now);
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    // `current` is the parent; the child starts in the parent's cgroup.
    if let Some(c) = current_guest(&ctx) {
        // SAFETY: this CPU's stripe.
        unsafe { (*c).forks += 1 };
    }
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> i32 {
    if let Some(c) = current_guest(&ctx) {
        // SAFETY: this CPU's stripe.
        unsafe { (*c).execs += 1 };
    }
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(ctx: RawTracePointContext) -> i32 {
    if let Some(c) = current_guest(&ctx) {
        // SAFETY: this CPU's stripe.
        unsafe { (*c).exits += 1 };
    }
    0
}

/// The guest of an skb's socket. cgroup_skb programs are attached to each guest's cgroup, so
/// they run only for guest sockets; the lookup finds which guest.
#[inline(always)]
fn skb_guest(ctx: &SkBuffContext) -> Option<*mut GuestCounters> {
    let table = SLOT_TABLE.get(0)?;
    let level = table.guest_level;
    if level == 0 {
        return None;
    }
    // SAFETY: the context's own skb pointer.
    let cgroup_id = unsafe { bpf_skb_ancestor_cgroup_id(ctx.as_ptr().cast(), level as i32) };
    counters(slot_of(ctx, table, cgroup_id)?)
}

#[cgroup_skb(ingress)]
pub fn guest_skb_ingress(ctx: SkBuffContext) -> i32 {
    if let Some(c) = skb_guest(&ctx) {
        // SAFETY: this CPU's stripe.
        unsafe {
            (*c).rx_packets += 1;
            (*c).rx_bytes += u64::from(ctx.len());
        }
    }
    // 1 = let the packet pass: these programs only count.
    1
}

#[cgroup_skb(egress)]
pub fn guest_skb_egress(ctx: SkBuffContext) -> i32 {
    if let Some(c) = skb_guest(&ctx) {
        // SAFETY: this CPU's stripe.
        unsafe {
            (*c).tx_packets += 1;
            (*c).tx_bytes += u64::from(ctx.len());
        }
    }
    1
}
