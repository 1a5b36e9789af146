//! The kernel side proper (compiled for the bpf target only).
//!
//! Kernel references (v6.18):
//! - sched_switch passes `(bool preempt, struct task_struct *prev, struct task_struct *next,
//!   unsigned int prev_state)` and fires in `__schedule()` before `context_switch()`, so
//!   `current` is still `prev`; `prev`'s `se.sum_exec_runtime` is already updated (by
//!   `update_curr()` when it was dequeued or put back) and `next`'s `sched_info.run_delay`
//!   does not yet hold the wait that ends now (`sched_info_arrive()` runs in
//!   `context_switch()`):
//!   <https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/sched.h>,
//!   <https://elixir.bootlin.com/linux/v6.18/source/kernel/sched/core.c>,
//!   <https://elixir.bootlin.com/linux/v6.18/source/kernel/sched/stats.h>
//! - `next` is picked before the tracepoint: for a fair task, `pick_next_task_fair()` ->
//!   `set_next_entity()` has set `se.prev_sum_exec_runtime = se.sum_exec_runtime`, the start
//!   of the slice that begins now; rt/dl tasks leave that field alone:
//!   <https://elixir.bootlin.com/linux/v6.18/source/kernel/sched/fair.c>
//! - A `tp_btf` program reads fields of its `task_struct` arguments with plain loads that the
//!   verifier checks against BTF, where a raw tracepoint would need `bpf_probe_read_kernel`
//!   (measured here: ~25 ns per read) and a clock (`bpf_ktime_get_ns`, ~50 ns).
//! - `bpf_get_current_ancestor_cgroup_id(level)` returns the cgroup id at `level` (root = 0) of
//!   `current`'s cgroup2 cgroup, 0 when the cgroup is shallower:
//!   <https://elixir.bootlin.com/linux/v6.18/source/kernel/bpf/helpers.c>
//! - Array maps' lookups are inlined by the verifier (`array_map_gen_lookup`), so the slot
//!   table and counters cost no helper call:
//!   <https://elixir.bootlin.com/linux/v6.18/source/kernel/bpf/arraymap.c>

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_F_MMAPABLE,
    helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_smp_processor_id, bpf_skb_ancestor_cgroup_id},
    macros::{btf_tracepoint, cgroup_skb, map, raw_tracepoint},
    maps::{Array, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext, SkBuffContext},
};
use aya_log_ebpf::error;
use exporter_common::{
    CpuState, EVENT_STATS_LEN, GuestCounters, MAX_GUESTS, RUNQ_BUCKETS, SLOT_TABLE_ENTRIES, SLOT_TABLE_PROBES,
    STAT_BAD_SLOT, STAT_UNSEEN_SWITCH_IN, SlotTable, runq_bucket, slot_home,
};

/// Byte offsets inside `struct task_struct`, set by userspace from the kernel's BTF at load
/// (`EbpfLoader::set_global`). In .rodata, which aya freezes: the verifier then knows their
/// values as constants and accepts the field loads they address.
#[unsafe(no_mangle)]
static TASK_SUM_EXEC_RUNTIME_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_RUN_DELAY_OFFSET: u32 = 0;
/// `task->se.prev_sum_exec_runtime` (see exporter_common::GLOBAL_PREV_SUM_EXEC_RUNTIME_OFFSET).
#[unsafe(no_mangle)]
static TASK_PREV_SUM_EXEC_RUNTIME_OFFSET: u32 = 0;

#[map]
static SLOT_TABLE: Array<SlotTable> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// `MAX_GUESTS` entries here; userspace sets `nr_cpus * MAX_GUESTS` at load (one stripe per
/// possible CPU), so each CPU writes only its own stripe and needs no atomic operation.
#[map]
static GUEST_COUNTERS: Array<GuestCounters> = Array::with_max_entries(MAX_GUESTS, BPF_F_MMAPABLE);

#[map]
static CPU_STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);

/// `EVENT_STATS_LEN` entries here; userspace sets `nr_cpus * EVENT_STATS_LEN` at load (one
/// stripe per possible CPU, like the counters) and reads them through a shared mapping: a
/// per-CPU array could only be read with a bpf() call, which needs CAP_BPF before Linux 6.5.
#[map]
static EVENT_STATS: Array<u64> = Array::with_max_entries(EVENT_STATS_LEN, BPF_F_MMAPABLE);

#[unsafe(no_mangle)]
#[unsafe(link_section = "license")]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program whose code can reach a panic, so this is dead.
    unsafe { core::hint::unreachable_unchecked() }
}

/// Adds one to this CPU's count of an event and returns the new value.
#[inline(always)]
fn count_event(index: u32) -> u64 {
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    match EVENT_STATS.get_ptr_mut(cpu * EVENT_STATS_LEN + index) {
        Some(p) => {
            // SAFETY: this CPU's stripe, written only by this CPU.
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
            error!(
                ctx,
                "slot table entry {} names slot {} (max {}); seen {} times on this CPU",
                hit as u64,
                slot as u64,
                MAX_GUESTS as u64,
                n
            );
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

/// A u64 field of a task, by byte offset.
#[inline(always)]
fn task_u64(task: *const u8, offset: u32) -> u64 {
    // SAFETY: a tp_btf argument is a trusted task_struct pointer; the verifier checks the
    // load against BTF (offset and size of a u64 field), and faults are caught by the JIT's
    // exception table.
    unsafe { core::ptr::read_volatile(task.add(offset as usize).cast::<u64>()) }
}

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    on_switch(&ctx);
    0
}

/// Charges `prev`'s slice to its guest with the kernel's own numbers: the growth of its
/// `se.sum_exec_runtime` (the same nanoseconds cpu.stat sums) and of its
/// `sched_info.run_delay` (the run-queue wait that preceded the slice, one histogram sample)
/// since its switch-in, which this CPU recorded. No clock is read, and wakeups need no program.
///
/// A switch-in can escape the record: the sched_switch that switched `prev` in may not have
/// reached this program, or it happened before attaching. On the development machine the
/// sched_switch events whose `prev` is one of PID 1's threads never reach it (their
/// switch-ins do), so each guest task such a thread hands the CPU to starts an unrecorded
/// slice: up to 230 ms of a 2 s pinned burner went uncharged. Such a slice is charged from the
/// fair class's own start of it, `se.prev_sum_exec_runtime`, which `set_next_entity()` set
/// when it picked `prev` and moves only forward after that (a mid-slice nice/affinity/cgroup
/// change sets it again): a fair task is never overcharged. Its wait is unknown and gives no
/// sample. The rt and deadline classes never set that field: an rt/dl guest task whose
/// switch-in went unseen is charged from its last pick as a fair task, an overcharge.
#[inline(always)]
fn on_switch(ctx: &BtfTracePointContext) {
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    // SAFETY: read-only globals (see their declaration).
    let runtime_off = unsafe { core::ptr::read_volatile(&TASK_SUM_EXEC_RUNTIME_OFFSET) };
    let delay_off = unsafe { core::ptr::read_volatile(&TASK_RUN_DELAY_OFFSET) };
    let Some(state) = CPU_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's value; preemption is disabled in __schedule.
    let state = unsafe { &mut *state };
    let (task, runtime0, delay0) = (state.task, state.sum_exec_runtime, state.run_delay);

    // Record the incoming task on every switch, whatever its cgroup. A record kept only when
    // "the incoming task is a guest" would have to look at `next`'s cgroup, but the cgroup
    // helpers see `current`, which is still `prev` here: such a design misses the switch-ins
    // from idle or from another cgroup, which are most of them when tasks migrate.
    state.task = next as u64;
    state.sum_exec_runtime = task_u64(next, runtime_off);
    state.run_delay = task_u64(next, delay_off);

    // `current` is `prev`: its guest is the one to charge.
    let Some(c) = current_guest(ctx) else {
        return;
    };
    // SAFETY: this CPU's stripe of the counters; no other CPU writes it.
    let c = unsafe { &mut *c };
    let runtime = task_u64(prev, runtime_off);
    let delay = task_u64(prev, delay_off);
    // Both counters only grow: a record ahead of them is not this slice's start.
    if task == prev as u64 && runtime0 <= runtime && delay0 <= delay {
        c.cpu_ns += runtime - runtime0;
        let wait = delay - delay0;
        c.runq_wait_ns += wait;
        let bucket = runq_bucket(wait);
        if bucket < RUNQ_BUCKETS {
            c.runq_buckets[bucket] += 1;
        }
        return;
    }
    count_event(STAT_UNSEEN_SWITCH_IN);
    // SAFETY: read-only global (see its declaration).
    let start_off = unsafe { core::ptr::read_volatile(&TASK_PREV_SUM_EXEC_RUNTIME_OFFSET) };
    let start = task_u64(prev, start_off);
    if start <= runtime {
        c.cpu_ns += runtime - start;
    }
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

/// The guest of an skb's socket. The cgroup_skb programs are attached at the root of the
/// cgroup2 hierarchy, so they run for every socket of the machine: the socket's cgroup folded
/// to the guest level is looked up in the slot table, and a socket of no guest (the host's own
/// processes, or any cgroup userspace never placed) costs that one lookup and counts nothing.
/// A guest started after the programs were attached is counted as soon as userspace writes its
/// table entry: no attach, no bpf() call, no capability.
///
/// `bpf_skb_ancestor_cgroup_id` reads the cgroup of `skb->sk`, which the cgroup_skb hook sets
/// to the full socket the packet is delivered to or sent from (the same socket whose cgroup
/// selected the programs), and returns 0 when that cgroup is shallower than `level`:
/// <https://elixir.bootlin.com/linux/v6.18/source/kernel/bpf/cgroup.c> (`__cgroup_bpf_run_filter_skb`),
/// <https://elixir.bootlin.com/linux/v6.18/source/net/core/filter.c> (`bpf_skb_ancestor_cgroup_id`).
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
