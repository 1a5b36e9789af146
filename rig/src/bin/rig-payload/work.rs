//! The guests' workloads (roles of the payload binary, each started inside a guest's cgroup)
//! and the one way the orchestrator starts them: joined to a cgroup and, for a container, to a
//! network namespace before `exec`, so that every task of the workload is the guest's from its
//! first instruction.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// The network namespace a workload runs in.
#[derive(Debug, Clone, Copy)]
pub enum Netns {
    /// The VM's own (the "host" of the guests).
    Host,
    /// A new one, created by `unshare` before exec (a container's init).
    New,
    /// The one process `pid` is in (another task of the same container).
    Of(u32),
}

/// Starts `/rig-payload <role> <args>` inside cgroup `cgroup` (a directory of the cgroup2 tree).
pub fn spawn(cgroup: &Path, netns: Netns, role: &str, args: &[&str]) -> anyhow::Result<Child> {
    let mut command = Command::new(guest_rig::vm::PAYLOAD_PATH);
    command.arg(role).args(args);
    spawn_command(cgroup, netns, command)
}

/// Starts `command` inside cgroup `cgroup` and network namespace `netns`.
pub fn spawn_command(cgroup: &Path, netns: Netns, mut command: Command) -> anyhow::Result<Child> {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))
        .with_context(|| format!("opening {}/cgroup.procs", cgroup.display()))?;
    let namespace: Option<OwnedFd> = match netns {
        Netns::Of(pid) => Some(
            std::fs::File::open(format!("/proc/{pid}/ns/net"))
                .with_context(|| format!("opening the network namespace of {pid}"))?
                .into(),
        ),
        _ => None,
    };
    let new_netns = matches!(netns, Netns::New);
    let procs_fd = procs.as_raw_fd();
    let namespace_fd = namespace.as_ref().map(|f| f.as_raw_fd());
    command.stdin(Stdio::null());
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe system
    // calls (write, unshare, setns) on descriptors opened before the fork.
    unsafe {
        command.pre_exec(move || {
            // "0" moves the writing task: the child itself, before it runs anything else.
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            if new_netns && libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = namespace_fd
                && libc::setns(fd, libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting {command:?} in {}", cgroup.display()))?;
    drop(procs);
    drop(namespace);
    Ok(child)
}

/// Runs one role to its end (or forever, for the long-lived ones).
pub fn run_role(role: &str, args: &[String]) -> anyhow::Result<()> {
    let arg = |i: usize| -> anyhow::Result<&str> {
        args.get(i)
            .map(String::as_str)
            .with_context(|| format!("{role} needs argument {}", i + 1))
    };
    match role {
        "sleep" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        "burn" => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        "noop" => Ok(()),
        "children" => {
            let n: usize = arg(0)?.parse()?;
            for _ in 0..n {
                let status = Command::new(guest_rig::vm::PAYLOAD_PATH).arg("noop").status()?;
                if !status.success() {
                    bail!("noop child exited with {status}");
                }
            }
            Ok(())
        }
        "hog" => hog(arg(0)?.parse()?),
        "io" => block_io(Path::new(arg(0)?), arg(1)?.parse()?),
        "cache" => page_cache(Path::new(arg(0)?), arg(1)?.parse()?, Path::new(arg(2)?)),
        "tap" => tap(arg(0)?, arg(1)?, arg(2)?.parse()?, Path::new(arg(3)?)),
        "as-container" => as_container(args),
        "udp-send" => udp_send(arg(0)?, arg(1)?.parse()?, arg(2)?.parse()?),
        other => bail!("unknown role {other}"),
    }
}

/// Touches `mib` MiB of anonymous memory, page by page; under a smaller memory.max (and no
/// room in swap) the OOM killer ends it. Returning is a failure: the limit did not hold.
fn hog(mib: usize) -> anyhow::Result<()> {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mib {
        let mut chunk = vec![0u8; 1 << 20];
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        chunks.push(std::hint::black_box(chunk));
    }
    bail!("touched {mib} MiB without being killed")
}

/// Writes then reads `blocks` blocks of 4 KiB at the start of `device` with O_DIRECT (one bio
/// each, no page cache), so that the guest's io.stat counts exactly this IO.
fn block_io(device: &Path, blocks: usize) -> anyhow::Result<()> {
    const BLOCK: usize = 4096;
    let path = CString::new(device.as_os_str().as_encoded_bytes())?;
    // SAFETY: a valid NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_DIRECT) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("opening {}", device.display()));
    }
    let layout = std::alloc::Layout::from_size_align(BLOCK, BLOCK)?;
    // SAFETY: non-zero size; freed below with the same layout.
    let buffer = unsafe { std::alloc::alloc_zeroed(layout) };
    let result = (|| {
        for i in 0..blocks {
            // SAFETY: buffer is BLOCK bytes, aligned as O_DIRECT requires.
            let n = unsafe { libc::pwrite(fd, buffer.cast(), BLOCK, (i * BLOCK) as i64) };
            if n != BLOCK as isize {
                bail!("write {i}: {}", std::io::Error::last_os_error());
            }
        }
        for i in 0..blocks {
            // SAFETY: as above.
            let n = unsafe { libc::pread(fd, buffer.cast(), BLOCK, (i * BLOCK) as i64) };
            if n != BLOCK as isize {
                bail!("read {i}: {}", std::io::Error::last_os_error());
            }
        }
        Ok(())
    })();
    // SAFETY: allocated above with this layout; fd is ours.
    unsafe {
        std::alloc::dealloc(buffer, layout);
        libc::close(fd);
    }
    result
}

/// Reads `mib` MiB of `device` through the page cache, which charges the cached pages to the
/// reader's cgroup (`memory.stat` `file`: usage and the GUI's figure then differ), creates
/// `ready`, and keeps the device open: the last close of a block device drops its page cache.
fn page_cache(device: &Path, mib: usize, ready: &Path) -> anyhow::Result<()> {
    let mut file = std::fs::File::open(device).with_context(|| format!("opening {}", device.display()))?;
    let mut buffer = vec![0u8; 1 << 20];
    for i in 0..mib {
        file.read_exact(&mut buffer)
            .with_context(|| format!("reading MiB {i} of {}", device.display()))?;
    }
    std::fs::write(ready, "")?;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A VM's NIC as QEMU holds it: attaches to the tap device `name` (created by the host side),
/// sends `frames` Ethernet frames of 500 bytes to `destination` (the bridge's MAC, so they end
/// there and are not flooded to the other guests), creates `ready`, then reads what the host
/// sends it until killed.
fn tap(name: &str, destination: &str, frames: usize, ready: &Path) -> anyhow::Result<()> {
    let mut mac = [0u8; 6];
    for (byte, text) in mac.iter_mut().zip(destination.trim().split(':')) {
        *byte = u8::from_str_radix(text, 16).with_context(|| format!("MAC {destination}"))?;
    }
    let device = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("opening /dev/net/tun")?;
    // struct ifreq: the name, then the flags as a short (the union's first member).
    let mut request = [0u8; 40];
    request[..name.len()].copy_from_slice(name.as_bytes());
    request[16..18].copy_from_slice(&((libc::IFF_TAP | libc::IFF_NO_PI) as u16).to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `request` is large enough for.
    if unsafe { libc::ioctl(device.as_raw_fd(), libc::TUNSETIFF, request.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("TUNSETIFF {name}"));
    }
    let mut frame = vec![0u8; 500];
    frame[..6].copy_from_slice(&mac);
    frame[6..12].copy_from_slice(&[0xbc, 0x24, 0x11, 0x00, 0x02, 0x00]);
    // IEEE 802 local experimental ethertype: no protocol handler takes it.
    frame[12..14].copy_from_slice(&[0x88, 0xb5]);
    let mut device = device;
    for i in 0..frames {
        device
            .write_all(&frame)
            .with_context(|| format!("writing frame {i} to {name}"))?;
    }
    std::fs::write(ready, "")?;
    // Read what the host sends, as QEMU does: tun counts a frame as the tap's transmit when
    // the reader takes it, not when the host queues it.
    let mut buffer = vec![0u8; 65536];
    loop {
        device
            .read(&mut buffer)
            .with_context(|| format!("reading from {name}"))?;
    }
}

/// Where the payload mounts lxcfs, and the /proc files it serves that LXC mounts over /proc.
pub const LXCFS_MOUNT: &str = "/var/lib/lxcfs";
const LXCFS_PROC_FILES: &[&str] = &["cpuinfo", "diskstats", "loadavg", "meminfo", "stat", "swaps", "uptime"];

/// Becomes `args` (a program and its arguments) as a container's process sees the system:
/// a cgroup namespace rooted at the cgroup this process is in, cgroup2 mounted again in a
/// private mount namespace (what LXC's `lxc.mount.auto = cgroup` gives a container) and
/// lxcfs's files over /proc.
fn as_container(args: &[String]) -> anyhow::Result<()> {
    let (program, rest) = args.split_first().context("as-container needs a program")?;
    let c = |s: &str| CString::new(s).expect("no NUL");
    let (none, root, target, kind) = (c("none"), c("/"), c("/sys/fs/cgroup"), c("cgroup2"));
    // SAFETY: plain system calls with valid NUL-terminated strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWCGROUP | libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error()).context("unshare cgroup and mount namespaces");
        }
        if libc::mount(
            none.as_ptr(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error()).context("making / private");
        }
        // The kernel refuses the same superblock twice on one mount point (EBUSY): the host's
        // view goes first, as it is not in a container's mount table either.
        if libc::umount2(target.as_ptr(), libc::MNT_DETACH) != 0 {
            return Err(std::io::Error::last_os_error()).context("unmounting the VM's cgroup2");
        }
        if libc::mount(kind.as_ptr(), target.as_ptr(), kind.as_ptr(), 0, std::ptr::null()) != 0 {
            return Err(std::io::Error::last_os_error()).context("mounting cgroup2");
        }
    }
    // lxcfs's files over /proc where it serves them, as LXC's lxcfs hook mounts them.
    for file in LXCFS_PROC_FILES {
        let source = Path::new(LXCFS_MOUNT).join("proc").join(file);
        if !source.exists() {
            continue;
        }
        let (source, target) = (c(source.to_str().context("path")?), c(&format!("/proc/{file}")));
        // SAFETY: as above.
        if unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        } != 0
        {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("bind-mounting lxcfs over /proc/{file}"));
        }
    }
    Err(Command::new(program).args(rest).exec()).with_context(|| format!("exec {program}"))
}

/// Sends `count` datagrams of `size` bytes to `address`.
fn udp_send(address: &str, count: usize, size: usize) -> anyhow::Result<()> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    let payload = vec![0x5au8; size];
    for _ in 0..count {
        socket
            .send_to(&payload, address)
            .with_context(|| format!("sending to {address}"))?;
    }
    Ok(())
}

/// Writes `text` to a cgroup or proc file (one write, as the kernel expects).
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {text:?} to {}", path.display()))
}

pub fn read(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(text)
}
