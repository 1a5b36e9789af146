//! Carries the kernel side's rare events (aya-log records: an unexpected slot-table state, a
//! wake table overwriting queued tasks) into `tracing`.
//!
//! aya-log 0.3 hands records to a `log::Log`; [`TracingLog`] re-emits them as tracing events
//! with target `ebpf`. The ring buffer is drained by one thread that sleeps in poll(2) on the
//! ring buffer's fd and on an eventfd used to stop it, so it costs nothing while the kernel
//! side is quiet and needs no async runtime.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::thread::JoinHandle;

use aya::Ebpf;
use aya_log::EbpfLogger;

/// Forwards `log` records to `tracing`.
#[derive(Debug, Clone, Copy)]
pub struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "ebpf", "{message}"),
            log::Level::Warn => tracing::warn!(target: "ebpf", "{message}"),
            log::Level::Info => tracing::info!(target: "ebpf", "{message}"),
            log::Level::Debug => tracing::debug!(target: "ebpf", "{message}"),
            log::Level::Trace => tracing::trace!(target: "ebpf", "{message}"),
        }
    }

    fn flush(&self) {}
}

/// The draining thread; stopped and joined on drop.
#[derive(Debug)]
pub struct LogForwarder {
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl LogForwarder {
    /// Takes the log ring buffer out of `ebpf` and starts draining it.
    pub fn start(ebpf: &mut Ebpf) -> Result<LogForwarder, String> {
        let mut logger = EbpfLogger::init_with_logger(ebpf, TracingLog).map_err(|e| e.to_string())?;
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: a descriptor we just created and own.
        let stop = unsafe { OwnedFd::from_raw_fd(raw) };
        let stop_raw = stop.as_raw_fd();
        let thread = std::thread::Builder::new()
            .name("ebpf-log".into())
            .spawn(move || {
                let ring = logger.as_raw_fd();
                loop {
                    let mut fds = [
                        libc::pollfd { fd: ring, events: libc::POLLIN, revents: 0 },
                        libc::pollfd { fd: stop_raw, events: libc::POLLIN, revents: 0 },
                    ];
                    // SAFETY: two valid pollfd entries; stop_raw outlives the thread (joined
                    // before the OwnedFd is dropped).
                    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
                    if n < 0 {
                        if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                            continue;
                        }
                        tracing::error!(target: "ebpf", "poll on the eBPF log ring buffer failed: {}", std::io::Error::last_os_error());
                        return;
                    }
                    if fds[0].revents != 0 {
                        logger.flush();
                    }
                    if fds[1].revents != 0 {
                        logger.flush();
                        return;
                    }
                }
            })
            .map_err(|e| format!("spawning the eBPF log thread: {e}"))?;
        Ok(LogForwarder {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for LogForwarder {
    fn drop(&mut self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), (&raw const one).cast(), 8) };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
