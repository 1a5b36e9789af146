//! LXC containers laid out as Proxmox VE lays them out (pve-container's generated config):
//! `lxc.cgroup.dir.container = lxc/<vmid>` with the inner `ns`, the monitor in
//! `lxc.monitor/<vmid>`, a veth `veth<vmid>i0` on the bridge named `eth0` inside, lxcfs, all in
//! the rig's own lxcpath (never /var/lib/lxc). Writes the config (a pure function of a
//! [`ContainerSpec`], tested on text), drives `lxc-create -t busybox`, `lxc-start`, `lxc-stop`,
//! `lxc-attach`, `lxc-info`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::command::run;

/// What a container is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Template {
    /// busybox-static with the host's libraries bind-mounted read-only (lxc-busybox).
    Busybox,
    /// The cached Debian tree of a suite, systemd as PID 1.
    DebianSystemd(crate::rootfs::Suite),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub vmid: u32,
    pub hostname: String,
    pub template: Template,
    /// `lxc.idmap` u/g 0 100000 65536.
    pub unprivileged: bool,
    /// The directory LXC uses as rootfs (a mounted raw image, a subvol dir, a plain dir).
    pub rootfs: PathBuf,
    pub bridge: String,
    pub address: Ipv4Addr,
    pub mac: String,
    /// The mount hook that binds lxcfs's files.
    pub lxcfs_hook: PathBuf,
}

/// The uid/gid an unprivileged container's root is on the host.
pub const IDMAP_BASE: u32 = 100_000;

impl ContainerSpec {
    pub fn name(&self) -> String {
        self.vmid.to_string()
    }
    pub fn veth(&self) -> String {
        format!("veth{}i0", self.vmid)
    }
    pub fn cgroup(&self) -> String {
        format!("lxc/{}", self.vmid)
    }
}

/// The keys every rig container gets, after whatever its template wrote.
pub fn proxmox_keys(spec: &ContainerSpec) -> String {
    let vmid = spec.vmid;
    let mut out = format!(
        "# The rig's keys (pve-container's layout)\n\
         lxc.rootfs.path = dir:{rootfs}\n\
         lxc.uts.name = {hostname}\n\
         lxc.apparmor.profile = unconfined\n\
         lxc.cgroup.dir.container = lxc/{vmid}\n\
         lxc.cgroup.dir.container.inner = ns\n\
         lxc.cgroup.dir.monitor = lxc.monitor/{vmid}\n\
         lxc.net.0.type = veth\n\
         lxc.net.0.veth.pair = veth{vmid}i0\n\
         lxc.net.0.link = {bridge}\n\
         lxc.net.0.name = eth0\n\
         lxc.net.0.hwaddr = {mac}\n\
         lxc.net.0.flags = up\n\
         lxc.net.0.ipv4.address = {address}/24\n\
         lxc.hook.mount = {hook}\n",
        rootfs = spec.rootfs.display(),
        hostname = spec.hostname,
        bridge = spec.bridge,
        mac = spec.mac,
        address = spec.address,
        hook = spec.lxcfs_hook.display(),
    );
    match spec.template {
        // A busybox container keeps CAP_SYS_ADMIN, so LXC mounts no cgroups inside unless forced.
        Template::Busybox => out.push_str("lxc.mount.auto = cgroup:mixed:force proc:mixed sys:ro\n"),
        Template::DebianSystemd(_) => out.push_str(
            "lxc.include = /usr/share/lxc/config/common.conf\n\
             lxc.arch = amd64\n\
             lxc.signal.halt = SIGRTMIN+3\n\
             lxc.tty.max = 2\n\
             lxc.autodev = 1\n\
             lxc.mount.auto = cgroup:mixed proc:mixed sys:mixed\n",
        ),
    }
    if spec.unprivileged {
        out.push_str(&format!(
            "lxc.include = /usr/share/lxc/config/userns.conf\n\
             lxc.idmap = u 0 {IDMAP_BASE} 65536\n\
             lxc.idmap = g 0 {IDMAP_BASE} 65536\n"
        ));
    }
    out
}

/// The final config: the template's lines without the keys the rig sets itself, then the rig's.
pub fn final_config(template_config: &str, spec: &ContainerSpec) -> String {
    let replaced = ["lxc.uts.name", "lxc.mount.auto", "lxc.rootfs.path"];
    let mut out: String = template_config
        .lines()
        .filter(|l| {
            let key = l.split('=').next().unwrap_or_default().trim();
            !l.trim_start().starts_with('#') && !replaced.contains(&key)
        })
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&proxmox_keys(spec));
    out
}

/// The busybox init script of a rig container: no udhcpc (it would remove the static address
/// there is no DHCP server to replace), no syslogd.
pub const BUSYBOX_RCS: &str = "#!/bin/sh\n/bin/mount -a\n";

/// Creates the container (without starting it) in `lxcpath`.
pub fn create(lxcpath: &Path, spec: &ContainerSpec, scratch: &Path) -> anyhow::Result<()> {
    let dir = lxcpath.join(spec.name());
    let lxcpath_text = lxcpath.display().to_string();
    match spec.template {
        Template::Busybox => {
            // The template runs without idmap (its own chown needs newuidmap, missing here);
            // the rig shifts the owners itself.
            let seed = scratch.join(format!("create-{}.conf", spec.vmid));
            std::fs::write(&seed, format!("lxc.rootfs.path = dir:{}\n", spec.rootfs.display()))?;
            run(
                "lxc-create",
                &[
                    "-P",
                    &lxcpath_text,
                    "-n",
                    &spec.name(),
                    "-t",
                    "busybox",
                    "-f",
                    &seed.display().to_string(),
                ],
            )?;
            std::fs::remove_file(&seed)?;
            std::fs::write(spec.rootfs.join("etc/init.d/rcS"), BUSYBOX_RCS)?;
            let template_config = std::fs::read_to_string(dir.join("config"))?;
            std::fs::write(dir.join("config"), final_config(&template_config, spec))?;
        }
        Template::DebianSystemd(suite) => {
            crate::rootfs::unpack_debian(&spec.rootfs, suite)?;
            std::fs::write(spec.rootfs.join("etc/hostname"), format!("{}\n", spec.hostname))?;
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("config"), final_config("", spec))?;
        }
    }
    if spec.unprivileged {
        crate::rootfs::shift_owners(&spec.rootfs, IDMAP_BASE)?;
    }
    Ok(())
}

pub fn state(lxcpath: &Path, name: &str) -> String {
    run(
        "lxc-info",
        &["-P", &lxcpath.display().to_string(), "-n", name, "-s", "-H"],
    )
    .unwrap_or_default()
    .trim()
    .to_owned()
}

/// The host pid of the container's init.
pub fn init_pid(lxcpath: &Path, name: &str) -> anyhow::Result<i32> {
    let text = run(
        "lxc-info",
        &["-P", &lxcpath.display().to_string(), "-n", name, "-p", "-H"],
    )?;
    text.trim()
        .parse()
        .with_context(|| format!("lxc-info -p said {text:?}"))
}

/// Starts the container and waits until it runs (and, with systemd, until boot finished).
pub fn start(lxcpath: &Path, spec: &ContainerSpec, log: &Path) -> anyhow::Result<()> {
    // A refused start says why in its log, which the rig's teardown removes with the rig dir.
    let with_log = |e: anyhow::Error| {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        e.context(format!("{}:\n{}", log.display(), text.trim_end()))
    };
    run(
        "lxc-start",
        &[
            "-P",
            &lxcpath.display().to_string(),
            "-n",
            &spec.name(),
            "-d",
            "-o",
            &log.display().to_string(),
            "-l",
            "WARN",
        ],
    )
    .map_err(with_log)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while state(lxcpath, &spec.name()) != "RUNNING" {
        if Instant::now() > deadline {
            bail!("container {} did not reach RUNNING; see {}", spec.vmid, log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if matches!(spec.template, Template::DebianSystemd(_)) {
        // systemctl fails until PID 1 has its bus socket; then `--wait` blocks until boot ends.
        let state = loop {
            match attach_output(lxcpath, spec.vmid, &["systemctl", "is-system-running", "--wait"]) {
                Ok(state) => break state.trim().to_owned(),
                Err(e) if Instant::now() > deadline => break format!("{e:#}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        if state != "running" {
            let failed =
                attach_output(lxcpath, spec.vmid, &["systemctl", "--failed", "--no-legend"]).unwrap_or_default();
            bail!(
                "systemd in container {} is {state:?}; failed units: {failed}",
                spec.vmid
            );
        }
    }
    Ok(())
}

pub fn stop(lxcpath: &Path, vmid: u32) -> anyhow::Result<()> {
    run(
        "lxc-stop",
        &["-P", &lxcpath.display().to_string(), "-n", &vmid.to_string(), "-k"],
    )?;
    Ok(())
}

/// `lxc-attach` with a clean environment (PATH only, plus `env`), running `argv`.
pub fn attach_command(lxcpath: &Path, vmid: u32, env: &[(&str, &str)], argv: &[&str]) -> Command {
    let mut command = Command::new("lxc-attach");
    command
        .arg("-P")
        .arg(lxcpath)
        .arg("-n")
        .arg(vmid.to_string())
        .arg("--clear-env")
        .arg("-v")
        .arg("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in env {
        command.arg("-v").arg(format!("{k}={v}"));
    }
    command.arg("--").args(argv).stdin(Stdio::null());
    command
}

/// Runs `argv` inside the container; its stdout, or an error with stderr.
pub fn attach_output(lxcpath: &Path, vmid: u32, argv: &[&str]) -> anyhow::Result<String> {
    attach_env_output(lxcpath, vmid, &[], argv)
}

pub fn attach_env_output(lxcpath: &Path, vmid: u32, env: &[(&str, &str)], argv: &[&str]) -> anyhow::Result<String> {
    let output = attach_command(lxcpath, vmid, env, argv)
        .output()
        .context("starting lxc-attach")?;
    if !output.status.success() {
        bail!(
            "in container {vmid}: {argv:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Starts `argv` inside the container in the background (the caller waits or kills it).
pub fn attach_spawn(lxcpath: &Path, vmid: u32, env: &[(&str, &str)], argv: &[&str]) -> anyhow::Result<Child> {
    attach_command(lxcpath, vmid, env, argv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting lxc-attach")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(template: Template, unprivileged: bool) -> ContainerSpec {
        ContainerSpec {
            vmid: 9101,
            hostname: "rig-a".into(),
            template,
            unprivileged,
            rootfs: PathBuf::from("/r/lxc/9101/rootfs"),
            bridge: "rigbr0".into(),
            address: Ipv4Addr::new(10, 213, 0, 11),
            mac: "BC:24:11:91:01:00".into(),
            lxcfs_hook: PathBuf::from("/r/lxcfs.hook"),
        }
    }

    #[test]
    fn template_keys_are_replaced_by_the_rigs() {
        let template = "# Template used\nlxc.rootfs.path = dir:/old\nlxc.uts.name = \"9101\"\n\
                        lxc.mount.auto = cgroup:mixed proc:mixed sys:ro\n\
                        lxc.mount.entry = /lib lib none ro,bind 0 0\n";
        let config = final_config(template, &spec(Template::Busybox, false));
        assert!(config.starts_with("lxc.mount.entry = /lib lib none ro,bind 0 0\n"));
        assert!(!config.contains("/old"));
        assert!(!config.contains("\"9101\""));
        assert_eq!(config.matches("lxc.mount.auto").count(), 1);
        assert!(config.contains("lxc.cgroup.dir.container = lxc/9101\n"));
        assert!(config.contains("lxc.cgroup.dir.container.inner = ns\n"));
        assert!(config.contains("lxc.cgroup.dir.monitor = lxc.monitor/9101\n"));
        assert!(config.contains("lxc.net.0.veth.pair = veth9101i0\n"));
        assert!(config.contains("lxc.net.0.ipv4.address = 10.213.0.11/24\n"));
        assert!(config.contains("cgroup:mixed:force"));
        assert!(!config.contains("idmap"));
    }

    #[test]
    fn unprivileged_and_systemd_keys() {
        let config = final_config("", &spec(Template::DebianSystemd(crate::rootfs::Suite::Bookworm), true));
        assert!(config.contains("lxc.idmap = u 0 100000 65536\n"));
        assert!(config.contains("lxc.idmap = g 0 100000 65536\n"));
        assert!(config.contains("lxc.signal.halt = SIGRTMIN+3\n"));
        assert!(config.contains("lxc.mount.auto = cgroup:mixed proc:mixed sys:mixed\n"));
    }
}
