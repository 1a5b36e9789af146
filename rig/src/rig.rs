//! The rig as a whole: brings up the guests of issue 11 on this machine and takes them down.
//!
//! - A (vmid base+1): privileged busybox container, rootfs on a raw ext4 image attached to a
//!   loop device (`images/<vmid>/vm-<vmid>-disk-0.raw`), limits set on `lxc/<vmid>` as `pct set`
//!   writes them (memory, swap, CPU quota that throttles a burner, pids), and a non-limiting
//!   blkio rule on its loop device (see [`BLKIO_ACCOUNTING_BPS`]).
//! - B (base+2): unprivileged busybox container on a subvol directory.
//! - C (base+3): Debian bookworm with systemd as PID 1 on a subvol directory.
//! - VM1 (base+4): QEMU in `qemu.slice/<vmid>.scope`, one tap; VM2 (base+5): two taps.
//!
//! Everything lives in the rig dir (lxcpath, images, PVE_PATH tree, pid files, lxcfs when the
//! rig starts it), on its own bridge, in cgroups whose vmids were free. `<dir>/state.json` is
//! the ledger of what was made ([`crate::ledger`]); `<dir>/rig.json` describes the guests.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::cgroups::{Hierarchies, Limits};
use crate::ledger::{Ledger, Undo, process_start_time};
use crate::lxc::{ContainerSpec, Template};
use crate::net::{Bridge, create_bridge, create_tap, link_exists};
use crate::pve::{GuestConfig, Net};
use crate::qemu::VmSpec;
use crate::{command, lxc, lxcfs, pve, qemu, rootfs};

/// Where rig dirs go by default.
pub const RIG_ROOT: &str = "/var/lib/metrics-exporter-rig";

/// On kernels 6.9 and later, v1 `blkio.throttle.io_service*` count only on a queue where some
/// throttle rule exists (blk-throttle is activated lazily). The rig sets this write limit on
/// A's loop device (1 TiB/s: it never limits anything) so that the hybrid layout has IO
/// accounting at all, as a Proxmox host with any disk throttle has.
pub const BLKIO_ACCOUNTING_BPS: u64 = 1 << 40;

/// Which role a guest plays in the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    A,
    B,
    C,
    Vm1,
    Vm2,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub role: Role,
    pub spec: ContainerSpec,
    pub config: GuestConfig,
    pub limits: Limits,
    /// A's loop device and its image.
    pub loop_device: Option<String>,
    pub image: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vm {
    pub role: Role,
    pub spec: VmSpec,
    pub config: GuestConfig,
    pub limits: Limits,
    pub pid: i32,
}

/// What the rig made, for tests and for `cargo xtask rig status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Description {
    pub dir: PathBuf,
    pub lxcpath: PathBuf,
    pub pve_path: PathBuf,
    pub node: String,
    pub bridge: Bridge,
    pub lxcfs_dir: PathBuf,
    pub containers: Vec<Container>,
    pub vms: Vec<Vm>,
}

impl Description {
    pub fn container(&self, role: Role) -> &Container {
        self.containers
            .iter()
            .find(|c| c.role == role)
            .expect("the rig made this container")
    }
    pub fn vm(&self, role: Role) -> &Vm {
        self.vms.iter().find(|v| v.role == role).expect("the rig made this VM")
    }

    /// The exporter's environment for host mode against this rig.
    pub fn exporter_env(&self) -> Vec<(String, String)> {
        vec![
            ("PLATFORM".into(), "proxmox".into()),
            ("PVE_PATH".into(), self.pve_path.display().to_string()),
            ("EBPF".into(), "on".into()),
        ]
    }

    /// What a person needs to look: guests, cgroups, devices, PVE_PATH, the exporter command.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "rig dir {}\nlxcpath {} (lxc-ls -P {} -f)\nbridge {} {}/24 (no uplink, no forwarding)\nlxcfs {}\nPVE_PATH {} (node {})\n",
            self.dir.display(),
            self.lxcpath.display(),
            self.lxcpath.display(),
            self.bridge.name,
            self.bridge.address(),
            self.lxcfs_dir.display(),
            self.pve_path.display(),
            self.node
        );
        for c in &self.containers {
            out.push_str(&format!(
                "container {:?} {} ({}{}): cgroup lxc/{}/ns, monitor lxc.monitor/{}, {} {} on {}, rootfs {}{}\n",
                c.role,
                c.spec.vmid,
                c.spec.hostname,
                if c.spec.unprivileged { ", unprivileged" } else { "" },
                c.spec.vmid,
                c.spec.vmid,
                c.spec.veth(),
                c.spec.address,
                self.bridge.name,
                c.spec.rootfs.display(),
                c.loop_device.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
            ));
        }
        for v in &self.vms {
            let taps: Vec<String> = (0..v.spec.macs.len()).map(|i| v.spec.tap(i)).collect();
            out.push_str(&format!(
                "vm {:?} {} ({}): pid {}, cgroup {}, {}\n",
                v.role,
                v.spec.vmid,
                v.spec.name,
                v.pid,
                v.spec.cgroup(),
                taps.join(" ")
            ));
        }
        out.push_str(&format!(
            "exporter: PLATFORM=proxmox PVE_PATH={} EBPF=on metrics-exporter\n\
             in a container: lxc-attach -P {} -n <vmid> -- <command>\n",
            self.pve_path.display(),
            self.lxcpath.display()
        ));
        out
    }
}

impl Description {
    /// What is left of this rig on the machine after a teardown (empty when nothing is): its
    /// dir, cgroups of its vmids, its links, loop devices on its images, QEMU processes.
    pub fn leftovers(&self, cgroups: &Hierarchies) -> Vec<String> {
        let mut left = Vec::new();
        if self.dir.exists() {
            left.push(format!("dir {}", self.dir.display()));
        }
        let mut links = vec![self.bridge.name.clone()];
        for c in &self.containers {
            let vmid = c.spec.vmid;
            for rel in [format!("lxc/{vmid}"), format!("lxc.monitor/{vmid}")] {
                left.extend(
                    cgroups
                        .dirs(&rel)
                        .into_iter()
                        .filter(|d| d.exists())
                        .map(|d| format!("cgroup {}", d.display())),
                );
            }
            links.push(c.spec.veth());
            if let (Some(device), Some(image)) = (&c.loop_device, &c.image) {
                let name = device.trim_start_matches("/dev/");
                let backing =
                    std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).unwrap_or_default();
                if Path::new(backing.trim()) == image {
                    left.push(format!("loop device {device}"));
                }
            }
        }
        for v in &self.vms {
            left.extend(
                cgroups
                    .dirs(&v.spec.cgroup())
                    .into_iter()
                    .filter(|d| d.exists())
                    .map(|d| format!("cgroup {}", d.display())),
            );
            links.extend((0..v.spec.macs.len()).map(|i| v.spec.tap(i)));
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", v.pid)).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&v.spec.name) {
                left.push(format!("QEMU pid {}", v.pid));
            }
        }
        left.extend(
            links
                .into_iter()
                .filter(|l| link_exists(l))
                .map(|l| format!("link {l}")),
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.dir.display().to_string();
        left.extend(
            mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| m.starts_with(&dir))
                .map(|m| format!("mount {m}")),
        );
        left
    }
}

/// A rig that is up. Dropping it takes everything down.
#[derive(Debug)]
pub struct Rig {
    pub description: Description,
    pub cgroups: Hierarchies,
    ledger: Ledger,
    /// How long `up` took.
    pub setup: Duration,
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

fn description_path(dir: &Path) -> PathBuf {
    dir.join("rig.json")
}

/// True when no trace of guest `vmid` exists: no cgroup in any hierarchy, no host device.
fn vmid_free(cgroups: &Hierarchies, vmid: u32) -> bool {
    let cgroup_free = [
        format!("lxc/{vmid}"),
        format!("lxc.monitor/{vmid}"),
        format!("qemu.slice/{vmid}.scope"),
    ]
    .iter()
    .all(|rel| !cgroups.exists_anywhere(rel));
    cgroup_free && (0..4).all(|i| !link_exists(&format!("veth{vmid}i{i}")) && !link_exists(&format!("tap{vmid}i{i}")))
}

/// The first base (9200, 9210, …) whose five vmids are all free.
fn pick_base(cgroups: &Hierarchies) -> anyhow::Result<u32> {
    (9200..9990)
        .step_by(10)
        .find(|base| (1..=5).all(|i| vmid_free(cgroups, base + i)))
        .context("no free block of vmids between 9200 and 9990")
}

fn mac(vmid: u32, index: u32) -> String {
    // Proxmox's OUI (BC:24:11) and the vmid's digits: unique per guest and NIC.
    format!("BC:24:11:{:02X}:{:02X}:{index:02X}", vmid / 100, vmid % 100)
}

const TOOLS: &[&str] = &[
    "lxc-create",
    "lxc-start",
    "lxc-attach",
    "lxcfs",
    "qemu-system-x86_64",
    "debootstrap",
    "busybox",
    "ip",
    "losetup",
    "mkfs.ext4",
    "tar",
];

/// Makes `dir` (which must not exist) a rig's own: created, its parent locked (two rigs or
/// containers coming up at once, a test and `cargo xtask rig up`, would pick the same free
/// vmids and bridge: the returned lock orders them until it is dropped), readable by
/// unprivileged containers' roots (uid 100000 must traverse it), a ledger in it, and a tmpfs of
/// `size` over it: unpacking the Debian tree and removing it again costs a second instead of
/// the 15 s that unlinking ~10,000 files takes on this machine's disk (mounted with `discard`).
/// The ledger is written on the tmpfs from then on.
pub(crate) fn claim_dir(dir: &Path, size: &str) -> anyhow::Result<(std::fs::File, Ledger)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock = lock_dir(dir.parent().unwrap_or(Path::new("/")))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let mut ledger = Ledger::create(&state_path(dir))?;
    ledger.record(Undo::RemoveTree(dir.to_path_buf()))?;
    let options = format!("size={size},mode=0755");
    command::run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            &options,
            "metrics-exporter-rig",
            &dir.display().to_string(),
        ],
    )?;
    ledger.record(Undo::Unmount(dir.to_path_buf()))?;
    Ok((lock, ledger))
}

/// An exclusive `flock` on a directory, held until the returned descriptor is dropped.
fn lock_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let file = std::fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; it blocks until the lock is ours.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!("cannot lock {}: {}", dir.display(), std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Why the rig cannot run here, if it cannot (not root, a tool missing).
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("root".to_owned());
    }
    let missing: Vec<&str> = TOOLS.iter().copied().filter(|t| !command::available(t)).collect();
    (!missing.is_empty()).then(|| format!("the commands {} (cargo xtask setup)", missing.join(", ")))
}

impl Rig {
    /// Brings the rig up in `dir` (which must not exist). On failure everything made so far is
    /// removed before the error is returned.
    pub fn up(dir: &Path) -> anyhow::Result<Rig> {
        if let Some(why) = unavailable() {
            bail!("the rig needs {why}");
        }
        if dir.exists() {
            bail!(
                "{} exists: a rig is up there (cargo xtask rig down) or the path is not the rig's",
                dir.display()
            );
        }
        let started = Instant::now();
        let (_lock, ledger) = claim_dir(dir, "4g")?;
        let cgroups = Hierarchies::read()?;
        let mut rig = Rig {
            description: Description {
                dir: dir.to_path_buf(),
                lxcpath: dir.join("lxc"),
                pve_path: dir.join("pve"),
                node: String::new(),
                bridge: Bridge {
                    name: String::new(),
                    subnet: 0,
                },
                lxcfs_dir: PathBuf::new(),
                containers: Vec::new(),
                vms: Vec::new(),
            },
            cgroups,
            ledger,
            setup: Duration::ZERO,
        };
        // On error, `rig` is dropped here and unwinds what was made.
        rig.build()?;
        rig.setup = started.elapsed();
        Ok(rig)
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let dir = self.description.dir.clone();
        let base = pick_base(&self.cgroups)?;
        // The parents Proxmox's layout puts guests in: made (and later removed) only where
        // they do not exist yet.
        for parent in ["lxc", "lxc.monitor", "lxc.pivot", "qemu.slice"] {
            self.cgroups.create(parent, &mut self.ledger)?;
        }
        self.description.bridge = create_bridge(&mut self.ledger)?;
        self.description.lxcfs_dir = lxcfs::ensure(&dir, &mut self.ledger)?;
        let hook = dir.join("lxcfs.hook");
        std::fs::write(&hook, lxcfs::mount_hook(&self.description.lxcfs_dir))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
        std::fs::create_dir_all(&self.description.lxcpath)?;
        let images = dir.join("images");

        // Debian tree first: a debootstrap on a fresh machine is the slow step, and nothing
        // is running yet while it happens.
        rootfs::debian_tarball(rootfs::Suite::Bookworm)?;

        let plan = [
            (Role::A, base + 1, "rig-a", Template::Busybox, false),
            (Role::B, base + 2, "rig-b", Template::Busybox, true),
            (
                Role::C,
                base + 3,
                "rig-c",
                Template::DebianSystemd(rootfs::Suite::Bookworm),
                false,
            ),
        ];
        for (role, vmid, hostname, template, unprivileged) in plan {
            let (rootfs_dir, loop_device, image) = match role {
                Role::A => {
                    let mount = self.description.lxcpath.join(format!("{vmid}/rootfs"));
                    let image = rootfs::raw_image_path(&images, vmid);
                    let device = rootfs::raw_image(&image, 512, &mount, &mut self.ledger)?;
                    (mount, Some(device), Some(image))
                }
                _ => {
                    let subvol = rootfs::subvol_path(&images, vmid);
                    std::fs::create_dir_all(&subvol)?;
                    for d in [images.as_path(), subvol.parent().unwrap_or(&images)] {
                        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
                    }
                    (subvol, None, None)
                }
            };
            let address = self.description.bridge.host(10 + (vmid - base) as u8);
            let spec = ContainerSpec {
                vmid,
                hostname: hostname.to_owned(),
                template,
                unprivileged,
                rootfs: rootfs_dir,
                bridge: self.description.bridge.name.clone(),
                address,
                mac: mac(vmid, 0),
                lxcfs_hook: hook.clone(),
            };
            let limits = match role {
                // Small enough that a burner throttles and a 400 MB allocation is OOM-killed.
                Role::A => Limits {
                    memory_mib: Some(256),
                    swap_mib: Some(64),
                    cpulimit: Some(0.2),
                    pids_max: Some(128),
                },
                _ => Limits {
                    memory_mib: Some(512),
                    swap_mib: Some(512),
                    cpulimit: None,
                    pids_max: None,
                },
            };
            let volume = match role {
                Role::A => format!("local:{vmid}/vm-{vmid}-disk-0.raw,size=512M"),
                _ => format!("local:{vmid}/subvol-{vmid}-disk-0.subvol,size=0T"),
            };
            let config = GuestConfig {
                vmid,
                lxc: true,
                name: hostname.to_owned(),
                memory_mib: limits.memory_mib.unwrap_or(512),
                swap_mib: limits.swap_mib,
                cores: 1,
                cpulimit: limits.cpulimit,
                nets: vec![Net {
                    mac: spec.mac.clone(),
                    bridge: self.description.bridge.name.clone(),
                    guest_name: Some("eth0".into()),
                    address: Some(address.to_string()),
                }],
                tags: vec!["rig".into(), format!("{role:?}").to_lowercase()],
                unprivileged,
                rootfs: Some(volume),
            };
            lxc::create(&self.description.lxcpath, &spec, &dir)?;
            self.description.containers.push(Container {
                role,
                spec,
                config,
                limits,
                loop_device,
                image,
            });
            self.start_container(vmid)?;
        }

        for (role, vmid, name, nics) in [(Role::Vm1, base + 4, "rig-vm1", 1), (Role::Vm2, base + 5, "rig-vm2", 2)] {
            let spec = VmSpec {
                vmid,
                name: name.to_owned(),
                memory_mib: 128,
                macs: (0..nics).map(|i| mac(vmid, i)).collect(),
            };
            // SeaBIOS with nothing to boot spins its vCPU: a tenth of a core is plenty.
            let limits = Limits {
                memory_mib: None,
                swap_mib: None,
                cpulimit: Some(0.1),
                pids_max: None,
            };
            self.cgroups.create(&spec.cgroup(), &mut self.ledger)?;
            limits.apply(&self.cgroups, &spec.cgroup())?;
            for i in 0..nics {
                create_tap(&spec.tap(i as usize), &self.description.bridge, &mut self.ledger)?;
            }
            let pid_file = dir.join(format!("qemu-{vmid}.pid"));
            let pid = qemu::start(&spec, &self.cgroups.join_script(&spec.cgroup()), &pid_file)?;
            let start_time = process_start_time(pid).context("QEMU exited at once")?;
            self.ledger.record(Undo::Kill { pid, start_time })?;
            let config = GuestConfig {
                vmid,
                lxc: false,
                name: name.to_owned(),
                memory_mib: spec.memory_mib,
                swap_mib: None,
                cores: 1,
                cpulimit: limits.cpulimit,
                nets: spec
                    .macs
                    .iter()
                    .map(|m| Net {
                        mac: m.clone(),
                        bridge: self.description.bridge.name.clone(),
                        guest_name: None,
                        address: None,
                    })
                    .collect(),
                tags: vec!["rig".into(), format!("{role:?}").to_lowercase()],
                unprivileged: false,
                rootfs: None,
            };
            self.description.vms.push(Vm {
                role,
                spec,
                config,
                limits,
                pid,
            });
        }

        self.description.node = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "rig".to_owned());
        let configs: Vec<GuestConfig> = self
            .description
            .containers
            .iter()
            .map(|c| c.config.clone())
            .chain(self.description.vms.iter().map(|v| v.config.clone()))
            .collect();
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        pve::write_tree(&self.description.pve_path, &self.description.node, &configs, boot)?;
        std::fs::write(description_path(&dir), serde_json::to_string_pretty(&self.description)?)?;
        Ok(())
    }

    /// Starts a rig container (again) and applies its limits as Proxmox does at every start.
    pub fn start_container(&mut self, vmid: u32) -> anyhow::Result<()> {
        let c = self
            .description
            .containers
            .iter()
            .find(|c| c.spec.vmid == vmid)
            .context("not a rig container")?
            .clone();
        // Recorded before the start, so they unwind after the stop: LXC's own cgroups of this
        // (free) vmid and its veth, in case LXC leaves any behind.
        for rel in [format!("lxc/{vmid}"), format!("lxc.monitor/{vmid}")] {
            for d in self.cgroups.dirs(&rel) {
                self.ledger.record(Undo::RemoveCgroupTree(d))?;
            }
        }
        self.ledger.record(Undo::DeleteLink(c.spec.veth()))?;
        self.ledger.record(Undo::StopContainer {
            lxcpath: self.description.lxcpath.clone(),
            name: c.spec.name(),
        })?;
        let log = self.description.dir.join(format!("lxc-{vmid}.log"));
        lxc::start(&self.description.lxcpath, &c.spec, &log)?;
        c.limits.apply(&self.cgroups, &c.spec.cgroup())?;
        if let Some(device) = &c.loop_device
            && let Some(blkio) = self.cgroups.v1("blkio")
        {
            let number = crate::truth::device_number(Path::new(device)).context("loop device number")?;
            crate::cgroups::write(
                &blkio.join(c.spec.cgroup()).join("blkio.throttle.write_bps_device"),
                &format!("{number} {BLKIO_ACCOUNTING_BPS}"),
            )?;
        }
        Ok(())
    }

    /// Stops a rig container (its cgroups go; the rootfs and config stay).
    pub fn stop_container(&self, vmid: u32) -> anyhow::Result<()> {
        lxc::stop(&self.description.lxcpath, vmid)
    }

    pub fn lxcpath(&self) -> &Path {
        &self.description.lxcpath
    }

    /// Takes everything down now; returns how long that took.
    pub fn down(mut self) -> Duration {
        let started = Instant::now();
        self.ledger.unwind();
        started.elapsed()
    }

    /// Takes down a rig left by another process (`cargo xtask rig down`).
    pub fn down_dir(dir: &Path) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut ledger = Ledger::load(&state_path(dir))?;
        ledger.unwind();
        Ok(started.elapsed())
    }

    /// The description a rig in `dir` wrote (`cargo xtask rig status`).
    pub fn describe_dir(dir: &Path) -> anyhow::Result<Description> {
        let path = description_path(dir);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Leaves the rig up for another process to take down (`cargo xtask rig up`).
    pub fn keep(self) -> Description {
        let description = self.description.clone();
        std::mem::forget(self);
        description
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.ledger.unwind();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_unique_per_guest_and_nic() {
        assert_eq!(mac(9201, 0), "BC:24:11:5C:01:00");
        assert_ne!(mac(9201, 0), mac(9202, 0));
        assert_ne!(mac(9205, 0), mac(9205, 1));
    }
}
