//! Kept-open kernel files read with `pread` at offset 0.
//!
//! Reads: any cgroupfs, procfs or plain file it is given. Produces: the file's current bytes.
//!
//! Why: on this kind of machine an open + read + close of a cgroup file costs 7-10 µs and a
//! `pread` on a descriptor kept open 1.3 µs (TOOLCHAIN.md); kernfs and procfs regenerate the
//! content on every read at offset 0, so a descriptor kept per guest between collections gives
//! fresh values for a fraction of the cost. When the cgroup is removed, kernfs answers reads
//! on its old descriptors with ENODEV, which [`crate::error::CollectError::io`] classifies as
//! vanished: the caller reopens once (the guest may have restarted under the same name) or
//! drops the guest.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::CollectError;

/// How many descriptors the collector may keep open, shared by every [`KeptFile`] of it.
/// Beyond the budget files are read with open + read + close: slower, never wrong. A clone is
/// one pointer (a thousand guests keep some fifteen thousand files).
#[derive(Debug, Clone)]
pub(crate) struct FdBudget(Arc<BudgetState>);

#[derive(Debug)]
pub(crate) struct BudgetState {
    used: AtomicUsize,
    limit: usize,
    /// Whether files read only now and then ([`KeptFile::rare`]) may keep a descriptor.
    keep_rare: AtomicBool,
    /// Rare files in existence, and opens of other files refused a descriptor since the last
    /// [`FdBudget::balance`].
    rare_files: AtomicUsize,
    refused: AtomicUsize,
    /// What [`FdBudget::expect`] was told, for [`FdBudget::balance`] before any file exists.
    expected: AtomicUsize,
}

impl std::ops::Deref for FdBudget {
    type Target = BudgetState;
    fn deref(&self) -> &BudgetState {
        &self.0
    }
}

impl FdBudget {
    pub(crate) fn new(limit: usize) -> Self {
        FdBudget(Arc::new(BudgetState {
            used: AtomicUsize::new(0),
            limit,
            keep_rare: AtomicBool::new(true),
            rare_files: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            expected: AtomicUsize::new(0),
        }))
    }

    /// Decides, once per collection, whether rarely read files may keep descriptors: when
    /// the budget cannot hold every file (a low hard RLIMIT_NOFILE), the files read on every
    /// collection should have them (an open + close there costs on every collection, for a
    /// rare file only on the collections that read it). Rare files stop keeping descriptors
    /// once another file was refused one, and keep them again once all of them fit.
    pub(crate) fn balance(&self) {
        let refused = self.refused.swap(0, Ordering::Relaxed);
        let present = self.in_use() + self.rare_files.load(Ordering::Relaxed);
        // Before any file exists, only the expectation says what the files will want.
        let wanted = if present == 0 {
            self.expected.load(Ordering::Relaxed)
        } else {
            present
        };
        let keep = if refused > 0 {
            false
        } else {
            self.keeps_rare() || wanted <= self.limit
        };
        self.keep_rare.store(keep, Ordering::Relaxed);
    }

    /// Told how many descriptors the files to come will want: when that is beyond the budget,
    /// rarely read files start without descriptors, instead of taking them first and giving
    /// them back only after a file read on every collection was refused one (which cost the
    /// first collections an open and a close per refused file).
    pub(crate) fn expect(&self, descriptors: usize) {
        self.expected.store(descriptors, Ordering::Relaxed);
        if descriptors > self.limit {
            self.keep_rare.store(false, Ordering::Relaxed);
        }
    }

    fn keeps_rare(&self) -> bool {
        self.keep_rare.load(Ordering::Relaxed)
    }

    /// The budget this process can afford: raises the soft RLIMIT_NOFILE to the hard limit
    /// (the default soft limit of 1024 is far below one descriptor per guest file at a
    /// thousand guests) and keeps an eighth of it, at least 256, for everything else. A hard
    /// limit below [`WANTED_NOFILE`] is raised to it first where the process may
    /// (CAP_SYS_RESOURCE, as the root service has): at a thousand guests some 20,000
    /// descriptors are kept, and every file beyond the budget costs an open and a close on
    /// each collection instead of one pread.
    pub(crate) fn from_rlimit() -> Self {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass and has no other effect.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
        if !ok {
            return FdBudget::new(512);
        }
        if limit.rlim_max < WANTED_NOFILE {
            let raised = libc::rlimit {
                rlim_cur: WANTED_NOFILE,
                rlim_max: WANTED_NOFILE,
            };
            // SAFETY: setrlimit reads the struct. Without CAP_SYS_RESOURCE it fails with
            // EPERM and changes nothing; the hard limit we have is used below.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit = raised;
            }
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            // SAFETY: setrlimit reads the struct; raising the soft limit up to the hard limit
            // needs no privilege. On failure the old limit stays and is used below.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit = raised;
            }
        }
        let total = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX).min(1 << 20);
        let reserve = (total / 8).max(256);
        FdBudget::new(total.saturating_sub(reserve))
    }

    /// Grows the process's descriptor table now to at least `descriptors` slots (no more than
    /// the budget). Why: the kernel grows the table by doubling, and in a process with
    /// more than one thread each doubling waits for an RCU grace period; opening the files of a
    /// thousand guests grew it nine times and spent 110-140 ms of the first collection waiting
    /// (measured here). Called while the process has one thread (start-up), the growth costs
    /// some microseconds. The table takes 8 bytes of kernel memory per slot; it never shrinks.
    pub(crate) fn reserve_table(&self, descriptors: usize) {
        let wanted = descriptors.min(self.limit);
        if wanted == 0 {
            return;
        }
        // SAFETY: F_DUPFD_CLOEXEC duplicates stdin's descriptor (or fails) to the lowest free
        // number at or above `wanted`, which makes the kernel size its table for it; the duplicate is
        // closed at once and nothing else refers to it.
        unsafe {
            let fd = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, wanted as libc::c_int);
            if fd >= 0 {
                libc::close(fd);
            }
        }
    }

    fn take(&self) -> bool {
        let mut current = self.used.load(Ordering::Relaxed);
        loop {
            if current >= self.limit {
                return false;
            }
            match self
                .used
                .compare_exchange_weak(current, current + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    fn give_back(&self) {
        self.used.fetch_sub(1, Ordering::Relaxed);
    }

    /// Descriptors kept open now.
    pub(crate) fn in_use(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// The RLIMIT_NOFILE a privileged process raises itself to when its hard limit is lower
/// (systemd's default hard limit is 524288; containers and older init systems give less).
const WANTED_NOFILE: libc::rlim_t = 65536;

#[derive(Debug)]
enum State {
    /// Not opened yet (or closed after the cgroup went away).
    Closed,
    Open(File),
    /// The file did not exist at the last attempt: the layout or kernel lacks it. Retried
    /// after [`ABSENT_RETRY`] reads, because a controller can be enabled later.
    Absent {
        skipped: u32,
    },
}

/// How many reads an absent file is skipped before the next open attempt.
const ABSENT_RETRY: u32 = 16;

/// One file, kept open between reads. Its path is its directory, shared with the other files
/// of the cgroup, and a static name: a thousand guests keep some fifteen thousand of these,
/// and a full path each was 1.3 MB of heap.
#[derive(Debug)]
pub(crate) struct KeptFile {
    dir: Arc<Path>,
    name: &'static str,
    state: State,
    budget: FdBudget,
    /// Read only now and then (limits): yields its descriptor when the budget is short.
    rare: bool,
}

impl Drop for KeptFile {
    fn drop(&mut self) {
        if matches!(self.state, State::Open(_)) {
            self.budget.give_back();
        }
        if self.rare {
            self.budget.rare_files.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Reads from offset 0 to the end into `buf` (cleared first).
///
/// Reads into the vector's spare capacity without zeroing it first: the buffer is shared by
/// every file of a collection and grows to the size of the largest (the host's /proc/net/dev at
/// a thousand guests is hundreds of KiB), and clearing it before each small read would cost
/// more than the read itself.
fn pread_all(file: &File, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    if buf.capacity() < 4096 {
        buf.reserve(4096);
    }
    loop {
        let start = buf.len();
        let spare = buf.spare_capacity_mut();
        let want = spare.len();
        // SAFETY: pread writes at most `want` bytes into the spare capacity we pass, which is
        // valid for writes of that length; the descriptor is owned by `file` and open.
        let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), want, start as libc::off_t) };
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        let n = n as usize;
        // SAFETY: the kernel initialized the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(start + n) };
        // A short read is the end for regular files, procfs and kernfs seq files alike:
        // seq_file fills the user buffer until the sequence ends.
        if n < want {
            return Ok(());
        }
        buf.reserve(buf.capacity());
    }
}

impl KeptFile {
    pub(crate) fn new(dir: &Arc<Path>, name: &'static str, budget: &FdBudget) -> Self {
        KeptFile {
            dir: Arc::clone(dir),
            name,
            state: State::Closed,
            budget: budget.clone(),
            rare: false,
        }
    }

    /// A file read only on some collections (see [`FdBudget::balance`]).
    pub(crate) fn rare(dir: &Arc<Path>, name: &'static str, budget: &FdBudget) -> Self {
        let mut file = KeptFile::new(dir, name, budget);
        file.rare = true;
        budget.rare_files.fetch_add(1, Ordering::Relaxed);
        file
    }

    fn may_keep(&self) -> bool {
        !self.rare || self.budget.keeps_rare()
    }

    fn take_descriptor(&self) -> bool {
        if !self.may_keep() {
            return false;
        }
        let taken = self.budget.take();
        if !taken && !self.rare {
            self.budget.refused.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// The full path (built on demand: for opens and error messages).
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(self.name)
    }

    /// The directory the file is in.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Closes the descriptor so that the next read reopens the path (after ENODEV: the cgroup
    /// this descriptor belonged to is gone, a new one may have the same name).
    pub(crate) fn reset(&mut self) {
        if matches!(self.state, State::Open(_)) {
            self.budget.give_back();
        }
        self.state = State::Closed;
    }

    /// Whether a descriptor is kept open now.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// Whether the last read found the file missing (the layout or kernel lacks it).
    pub(crate) fn is_absent(&self) -> bool {
        matches!(self.state, State::Absent { .. })
    }

    /// Whether the last read found the file missing for the first time (not a skipped retry).
    pub(crate) fn newly_absent(&self) -> bool {
        matches!(self.state, State::Absent { skipped: 0 })
    }

    /// Reads the whole file into `buf`. `Ok(false)`: the file does not exist (absent, not
    /// zero). `Err(Vanished)`: the open descriptor's object is gone (ENODEV) or the open failed
    /// with ENODEV/ESRCH.
    pub(crate) fn read(&mut self, buf: &mut Vec<u8>) -> Result<bool, CollectError> {
        match &mut self.state {
            State::Open(file) => match pread_all(file, buf) {
                Ok(()) => {
                    if !self.may_keep() {
                        self.reset();
                    }
                    return Ok(true);
                }
                Err(e) => {
                    let error = CollectError::io(&self.path(), e);
                    self.reset();
                    return Err(error);
                }
            },
            State::Absent { skipped } if *skipped < ABSENT_RETRY => {
                *skipped += 1;
                return Ok(false);
            }
            _ => {}
        }
        match File::open(self.path()) {
            Ok(file) => {
                let result = pread_all(&file, buf);
                if let Err(e) = result {
                    self.state = State::Closed;
                    return Err(CollectError::io(&self.path(), e));
                }
                if self.take_descriptor() {
                    self.state = State::Open(file);
                } else {
                    self.state = State::Closed;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.state = State::Absent { skipped: 0 };
                Ok(false)
            }
            Err(e) => {
                self.state = State::Closed;
                Err(CollectError::io(&self.path(), e))
            }
        }
    }

    /// Opens the file now without reading it, so that the next [`KeptFile::read`] is a pread
    /// only: the opens of a guest seen for the first time can so be done ahead, on several
    /// threads. A missing file is remembered as absent (the next read skips it, as after a
    /// read that found it missing); any other failure is left for that read to report.
    pub(crate) fn open_ahead(&mut self) {
        if !matches!(self.state, State::Closed) || !self.may_keep() {
            return;
        }
        match File::open(self.path()) {
            Ok(file) => {
                if self.take_descriptor() {
                    self.state = State::Open(file);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.state = State::Absent { skipped: 0 },
            Err(_) => {}
        }
    }

    /// Like [`KeptFile::read`] but a missing file is an error (the file must exist, e.g. a
    /// cgroup's `cpu.stat`): its absence means the cgroup is gone.
    pub(crate) fn read_required(&mut self, buf: &mut Vec<u8>) -> Result<(), CollectError> {
        if matches!(self.state, State::Absent { .. }) {
            self.state = State::Closed;
        }
        if self.read(buf)? {
            Ok(())
        } else {
            self.state = State::Closed;
            Err(CollectError::Vanished { path: self.path() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fresh_content_and_grows_past_the_first_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let root: Arc<Path> = dir.path().into();
        let path = dir.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let budget = FdBudget::new(10);
        let mut f = KeptFile::new(&root, "f", &budget);
        assert_eq!(f.path(), path);
        let mut buf = Vec::new();
        assert!(f.read(&mut buf).unwrap());
        assert_eq!(buf, b"one");
        assert_eq!(budget.in_use(), 1);
        let big = "x".repeat(100_000);
        std::fs::write(&path, &big).unwrap();
        assert!(f.read(&mut buf).unwrap());
        assert_eq!(buf.len(), 100_000);
        drop(f);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn absent_files_are_not_errors_and_are_retried_later() {
        let dir = tempfile::tempdir().unwrap();
        let root: Arc<Path> = dir.path().into();
        let path = dir.path().join("io.stat");
        let budget = FdBudget::new(10);
        let mut f = KeptFile::new(&root, "io.stat", &budget);
        let mut buf = Vec::new();
        assert!(!f.read(&mut buf).unwrap());
        std::fs::write(&path, "8:0 rbytes=1").unwrap();
        let mut seen = false;
        for _ in 0..=ABSENT_RETRY {
            seen |= f.read(&mut buf).unwrap();
        }
        assert!(seen);
        assert!(f.read_required(&mut buf).is_ok());
        let mut missing = KeptFile::new(&root, "cpu.stat", &budget);
        assert!(missing.read_required(&mut buf).unwrap_err().is_vanished());
    }

    #[test]
    fn rare_files_give_their_descriptors_back_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let root: Arc<Path> = dir.path().into();
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        let budget = FdBudget::new(1);
        let mut f = KeptFile::rare(&root, "memory.max", &budget);
        let mut buf = Vec::new();
        assert!(f.read(&mut buf).unwrap());
        assert_eq!(budget.in_use(), 1);
        // Another file is refused a descriptor: the rare one gives its own back.
        std::fs::write(dir.path().join("cpu.stat"), "usage_usec 1\n").unwrap();
        let mut g = KeptFile::new(&root, "cpu.stat", &budget);
        assert!(g.read(&mut buf).unwrap());
        assert_eq!(budget.in_use(), 1);
        budget.balance();
        assert!(f.read(&mut buf).unwrap());
        assert_eq!(buf, b"max\n");
        assert_eq!(budget.in_use(), 0);
        assert!(f.read(&mut buf).unwrap());
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_budget_told_it_is_short_keeps_no_rare_descriptor_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let root: Arc<Path> = dir.path().into();
        std::fs::write(dir.path().join("pids.max"), "max\n").unwrap();
        let budget = FdBudget::new(10);
        budget.expect(11);
        // The first collection balances before it has made any file.
        budget.balance();
        let mut rare = KeptFile::rare(&root, "pids.max", &budget);
        let mut buf = Vec::new();
        assert!(rare.read(&mut buf).unwrap());
        assert_eq!(buf, b"max\n");
        assert_eq!(budget.in_use(), 0);
        // Once everything fits, rare files keep descriptors again.
        budget.balance();
        assert!(rare.read(&mut buf).unwrap());
        assert_eq!(budget.in_use(), 1);
        // A budget that can hold what is expected keeps them from the start.
        let roomy = FdBudget::new(10);
        roomy.expect(10);
        let mut rare = KeptFile::rare(&root, "pids.max", &roomy);
        assert!(rare.read(&mut buf).unwrap());
        assert_eq!(roomy.in_use(), 1);
    }

    /// `FDSize` of /proc/self/status: the slots of this process's descriptor table.
    fn table_slots() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("FDSize:")).unwrap();
        line["FDSize:".len()..].trim().parse().unwrap()
    }

    #[test]
    fn the_descriptor_table_is_grown_ahead_and_nothing_stays_open() {
        let budget = FdBudget::new(4000);
        let before = table_slots();
        let open_before = std::fs::read_dir("/proc/self/fd").unwrap().count();
        budget.reserve_table(before + 1000);
        assert!(table_slots() >= before + 1000, "{before} -> {}", table_slots());
        // Never beyond the budget.
        let small = FdBudget::new(10);
        let slots = table_slots();
        small.reserve_table(1_000_000);
        assert_eq!(table_slots(), slots);
        // Other tests open files meanwhile: allow for them, but not for a leaked duplicate of
        // a high number.
        let open_after = std::fs::read_dir("/proc/self/fd").unwrap().flatten();
        let high = open_after
            .filter(|e| e.file_name().to_str().and_then(|n| n.parse::<usize>().ok()) >= Some(before + 1000))
            .count();
        assert_eq!(high, 0, "{open_before} open before");
    }

    #[test]
    fn over_budget_files_are_read_without_keeping_them() {
        let dir = tempfile::tempdir().unwrap();
        let budget = FdBudget::new(1);
        let root: Arc<Path> = dir.path().into();
        let mut files: Vec<_> = ["0", "1", "2"]
            .into_iter()
            .map(|name| {
                std::fs::write(dir.path().join(name), name).unwrap();
                KeptFile::new(&root, name, &budget)
            })
            .collect();
        let mut buf = Vec::new();
        for (i, f) in files.iter_mut().enumerate() {
            assert!(f.read(&mut buf).unwrap());
            assert_eq!(buf, i.to_string().as_bytes());
        }
        assert_eq!(budget.in_use(), 1);
    }
}
