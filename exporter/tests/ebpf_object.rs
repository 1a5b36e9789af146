//! Rootless: the embedded eBPF object holds every map and program userspace looks up, with
//! the types and sizes `exporter-common` declares. Runs anywhere (no bpf() syscall): it parses
//! the ELF with `aya_obj::Object::parse`.

use exporter_common as common;
use metrics_exporter::ebpf::{NOT_BUILT, OBJECT};

const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;
const BPF_F_MMAPABLE: u32 = 1 << 10;

#[test]
fn embedded_object_matches_the_contract() {
    if NOT_BUILT {
        // Loud on purpose: a build with AYA_BUILD_SKIP=1 has nothing to check.
        eprintln!("ebpf_object: built with AYA_BUILD_SKIP=1, the object is empty: NOT CHECKED");
        assert!(OBJECT.is_empty());
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must build the eBPF object"
        );
        return;
    }
    let obj = aya_obj::Object::parse(OBJECT).expect("the embedded object parses");

    let expect = |name: &str, map_type: u32, value_size: usize, max_entries: u32, flags: u32| {
        let map = obj
            .maps
            .get(name)
            .unwrap_or_else(|| panic!("map {name} missing; maps: {:?}", obj.maps.keys()));
        assert_eq!(map.map_type(), map_type, "{name} type");
        assert_eq!(map.key_size(), 4, "{name} key size");
        assert_eq!(map.value_size() as usize, value_size, "{name} value size");
        assert_eq!(map.max_entries(), max_entries, "{name} max entries");
        assert_eq!(map.map_flags() & BPF_F_MMAPABLE, flags, "{name} flags");
    };
    expect(
        common::SLOT_TABLE_MAP,
        BPF_MAP_TYPE_ARRAY,
        size_of::<common::SlotTable>(),
        1,
        BPF_F_MMAPABLE,
    );
    // Userspace multiplies the entries by the number of possible CPUs at load.
    expect(
        common::COUNTERS_MAP,
        BPF_MAP_TYPE_ARRAY,
        size_of::<common::GuestCounters>(),
        common::MAX_GUESTS,
        BPF_F_MMAPABLE,
    );
    expect(
        common::CPU_STATE_MAP,
        BPF_MAP_TYPE_PERCPU_ARRAY,
        size_of::<common::CpuState>(),
        1,
        0,
    );
    // Striped per CPU like the counters and read through a mapping: no bpf() lookup after the
    // capabilities are dropped.
    expect(
        common::EVENT_STATS_MAP,
        BPF_MAP_TYPE_ARRAY,
        8,
        common::EVENT_STATS_LEN,
        BPF_F_MMAPABLE,
    );
    let rodata = obj.maps.get(".rodata").expect(".rodata holds the task field offsets");
    assert!(rodata.value_size() >= 8, "two u32 offsets");
    let logs = obj.maps.get(common::LOG_MAP).expect("aya-log ring buffer");
    assert_eq!(logs.map_type(), BPF_MAP_TYPE_RINGBUF);

    for (program, _) in common::BTF_TRACEPOINTS.iter().chain(common::RAW_TRACEPOINTS) {
        assert!(
            obj.programs.contains_key(*program),
            "program {program} missing; programs: {:?}",
            obj.programs.keys()
        );
    }
    for program in [common::SKB_INGRESS_PROGRAM, common::SKB_EGRESS_PROGRAM] {
        assert!(obj.programs.contains_key(program), "program {program} missing");
    }
}
