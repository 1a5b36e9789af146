//! Shared mappings of `BPF_F_MMAPABLE` array maps.
//!
//! aya 0.14 has no mmap API: the map's fd is mapped with `libc::mmap` (docs/TOOLCHAIN.md).
//! The kernel maps an array's values back to back, each rounded up to 8 bytes, from offset 0
//! (<https://elixir.bootlin.com/linux/v6.18/source/kernel/bpf/arraymap.c>, `array_map_mmap`).
//! The counters map is mapped read-only; the slot table read-write, so that userspace updates
//! it without a syscall and with the store order the kernel side relies on.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

/// One mapping, unmapped on drop. The mapping keeps the map alive in the kernel by itself.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; every access goes through volatile reads or
// writes of aligned u32/u64 words, and `&mut self` guards the writes made by this process.
unsafe impl Send for Mapping {}
// SAFETY: see above; readers only perform volatile loads.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes (rounded up to whole pages) of an mmap-able array map.
    pub fn new(fd: BorrowedFd<'_>, len: usize, writable: bool) -> std::io::Result<Mapping> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let len = len.div_ceil(page) * page;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh shared mapping of a descriptor we hold; the kernel checks len
        // against the map's size.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The u64 at word index `i`.
    #[inline(always)]
    pub fn read_u64(&self, i: usize) -> u64 {
        assert!(
            (i + 1) * 8 <= self.len,
            "word {i} outside a mapping of {} bytes",
            self.len
        );
        // SAFETY: in bounds (checked), 8-aligned (the mapping is page-aligned); volatile
        // because the kernel writes it concurrently.
        unsafe { std::ptr::read_volatile(self.ptr.as_ptr().cast::<u64>().add(i)) }
    }

    /// Base pointer for bulk readers that check bounds once.
    #[inline(always)]
    pub(crate) fn words(&self) -> *const u64 {
        self.ptr.as_ptr().cast::<u64>().cast_const()
    }

    #[inline(always)]
    pub fn write_u64(&mut self, i: usize, value: u64) {
        assert!(
            (i + 1) * 8 <= self.len,
            "word {i} outside a mapping of {} bytes",
            self.len
        );
        // SAFETY: in bounds and aligned; the mapping is writable when this is called (only
        // the slot table is written, and it is mapped writable).
        unsafe { std::ptr::write_volatile(self.ptr.as_ptr().cast::<u64>().add(i), value) }
    }

    #[inline(always)]
    pub fn write_u32(&mut self, byte_offset: usize, value: u32) {
        assert!(
            byte_offset.is_multiple_of(4) && byte_offset + 4 <= self.len,
            "u32 at {byte_offset} outside the mapping"
        );
        // SAFETY: in bounds and aligned (checked).
        unsafe { std::ptr::write_volatile(self.ptr.as_ptr().add(byte_offset).cast::<u32>(), value) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the region mmap returned.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
