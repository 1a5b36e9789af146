//! Debian's own kernel, cached: the package `linux-image-amd64` points to (bookworm: 6.1),
//! fetched with `apt-get download` and unpacked with `dpkg-deb -x` into the rig's cache (the
//! host's /boot is never touched), its uncompressed `vmlinux` (QEMU boots it directly through
//! PVH) and the base initramfs: busybox-static and the modules the guests need (virtio disk,
//! veth, bridge) with the `modules.dep` that `busybox depmod` writes for them.
//!
//! Reads `apt-cache depends` output, the package's files and the host's busybox; produces a
//! [`Kernel`] whose files live in the cache and survive between runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::cpio::Archive;
use crate::command::run_in;

/// Where kernels and base images are kept between runs.
pub const DEFAULT_CACHE: &str = "/var/cache/metrics-exporter-rig/vm";

/// The modules loaded by the VM's /init (`modprobe` loads their dependencies from
/// `modules.dep`): the scratch disk, the containers' veth pairs and bridge, the VM's tap, and
/// FUSE for lxcfs.
pub const MODULES: &[&str] = &["virtio_pci", "virtio_blk", "veth", "bridge", "tun", "fuse"];

/// Bump when the base archive's recipe changes, so that a cached one is rebuilt.
const BASE_RECIPE: u32 = 3;

/// A cached kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The Debian package, e.g. `linux-image-6.1.0-57-amd64`.
    pub package: String,
    /// `uname -r` inside, e.g. `6.1.0-57-amd64`.
    pub release: String,
    pub vmlinux: PathBuf,
    /// busybox-static at /bin/busybox and the [`MODULES`] with their dependencies.
    pub base_initramfs: PathBuf,
}

/// The versioned kernel package a meta package depends on, from `apt-cache depends` output
/// (`  Depends: linux-image-6.1.0-57-amd64`).
pub fn parse_kernel_dependency(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.chars().any(|c| c.is_ascii_digit()))
        .map(str::to_owned)
}

/// Offset of the first xz stream in a bzImage (the compressed kernel follows the setup code).
pub fn find_xz_stream(bzimage: &[u8]) -> Option<usize> {
    const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
    bzimage.windows(XZ_MAGIC.len()).position(|w| w == XZ_MAGIC)
}

/// The modules `wanted` (by name, e.g. `veth`) and everything they depend on, as paths
/// relative to the modules directory, from a `modules.dep` text (`kernel/a.ko: kernel/b.ko`).
pub fn module_closure(modules_dep: &str, wanted: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut dependencies = std::collections::HashMap::new();
    for line in modules_dep.lines() {
        if let Some((module, deps)) = line.split_once(':') {
            dependencies.insert(module.trim(), deps.split_whitespace().collect::<Vec<_>>());
        }
    }
    let mut out = std::collections::BTreeSet::new();
    for name in wanted {
        let file = format!("/{name}.ko");
        let Some((module, deps)) = dependencies.iter().find(|(m, _)| m.ends_with(&file)) else {
            bail!("module {name} is not in modules.dep");
        };
        out.insert(module.to_string());
        out.extend(deps.iter().map(|d| d.to_string()));
    }
    Ok(out.into_iter().collect())
}

impl Kernel {
    /// The kernel `linux-image-amd64` points to, from the cache or fetched into it. Fails with
    /// the reason (no apt metadata, download refused, no busybox) rather than returning
    /// something that would boot differently.
    pub fn cached(cache: &Path) -> anyhow::Result<Kernel> {
        let depends = run_in("apt-cache", &["depends", "linux-image-amd64"], None)?;
        let package = parse_kernel_dependency(&depends)
            .with_context(|| format!("apt-cache depends linux-image-amd64 names no kernel package:\n{depends}"))?;
        let dir = cache.join(&package);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let find_deb = || -> anyhow::Result<Option<PathBuf>> {
            Ok(std::fs::read_dir(&dir)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "deb")))
        };
        // The package is kept (70 MB), not its unpacked tree (470 MB): the tree is only needed
        // to cut out vmlinux and to build the base archive, when either is missing.
        let deb = match find_deb()? {
            Some(deb) => deb,
            None => {
                run_in("apt-get", &["download", &package], Some(&dir))?;
                find_deb()?.with_context(|| format!("apt-get download left no .deb in {}", dir.display()))?
            }
        };
        let vmlinux = dir.join("vmlinux");
        let base_initramfs = dir.join(format!("base-{BASE_RECIPE}.cpio"));
        let release_file = dir.join("release");
        if !(vmlinux.exists() && base_initramfs.exists() && release_file.exists()) {
            let tree = dir.join("tree");
            let _ = std::fs::remove_dir_all(&tree);
            let unpacked = run_in(
                "dpkg-deb",
                &["-x", deb.to_str().context("path")?, tree.to_str().context("path")?],
                None,
            );
            if unpacked.is_err() {
                // A broken download is fetched again by the next run, not reused.
                let _ = std::fs::remove_file(&deb);
                let _ = std::fs::remove_dir_all(&tree);
            }
            unpacked?;
            let built = build_from_tree(&tree, &dir, &vmlinux, &base_initramfs);
            let _ = std::fs::remove_dir_all(&tree);
            let release = built?;
            std::fs::write(dir.join("release.partial"), &release)?;
            std::fs::rename(dir.join("release.partial"), &release_file)?;
        }
        let release =
            std::fs::read_to_string(&release_file).with_context(|| format!("reading {}", release_file.display()))?;
        Ok(Kernel {
            package,
            release,
            vmlinux,
            base_initramfs,
        })
    }
}

/// Cuts `vmlinux` out of the unpacked package `tree` and builds the base archive, whichever is
/// missing; the kernel release (`uname -r`).
fn build_from_tree(tree: &Path, dir: &Path, vmlinux: &Path, base_initramfs: &Path) -> anyhow::Result<String> {
    let release = std::fs::read_dir(tree.join("lib/modules"))
        .with_context(|| format!("{} has no lib/modules", tree.display()))?
        .filter_map(Result::ok)
        .find(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .with_context(|| format!("no release under {}/lib/modules", tree.display()))?;
    if !vmlinux.exists() {
        let vmlinuz = tree.join(format!("boot/vmlinuz-{release}"));
        let image = std::fs::read(&vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
        let offset = find_xz_stream(&image).with_context(|| format!("{} holds no xz stream", vmlinuz.display()))?;
        let tail = dir.join("vmlinux.xz");
        std::fs::write(&tail, &image[offset..])?;
        let output = Command::new("xz")
            .args(["-dc", "--single-stream"])
            .arg(&tail)
            .output()
            .context("cannot start xz (package xz-utils)")?;
        std::fs::remove_file(&tail)?;
        if !output.status.success() || !output.stdout.starts_with(b"\x7fELF") {
            bail!(
                "xz could not unpack the kernel of {}: {}",
                vmlinuz.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let partial = dir.join("vmlinux.partial");
        std::fs::write(&partial, &output.stdout)?;
        std::fs::rename(&partial, vmlinux)?;
    }
    if !base_initramfs.exists() {
        // Archives of older recipes are never used again.
        for entry in std::fs::read_dir(dir)?.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("base-") && name.ends_with(".cpio") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let bytes = base_archive(tree, &release)?;
        let partial = dir.join("base.partial");
        std::fs::write(&partial, bytes)?;
        std::fs::rename(&partial, base_initramfs)?;
    }
    Ok(release)
}

/// busybox-static, its applet links, the guests' modules and their `modules.dep`.
fn base_archive(tree: &Path, release: &str) -> anyhow::Result<Vec<u8>> {
    let busybox = Path::new("/bin/busybox");
    let applets =
        run_in("/bin/busybox", &["--list-full"], None).context("busybox --list-full (package busybox-static)")?;
    if run_in("ldd", &["/bin/busybox"], None).is_ok() {
        bail!("/bin/busybox is dynamically linked: install busybox-static");
    }
    let mut archive = Archive::new();
    archive.host_file(busybox, "bin/busybox")?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        if applet != "bin/busybox" {
            archive.symlink(applet, "/bin/busybox")?;
        }
    }
    for dir in ["proc", "sys", "dev", "tmp", "run", "etc", "var"] {
        archive.directory(dir)?;
    }

    // Stage the modules with their relative paths, then let busybox depmod write modules.dep
    // for exactly those (kmod is not installed on this machine kind).
    let modules_root = tree.join("lib/modules").join(release);
    let full_dep = match std::fs::read_to_string(modules_root.join("modules.dep")) {
        Ok(text) => text,
        Err(_) => {
            run_in(
                "/bin/busybox",
                &["depmod", "-b", tree.to_str().context("path")?, release],
                None,
            )?;
            std::fs::read_to_string(modules_root.join("modules.dep"))
                .with_context(|| format!("busybox depmod wrote no {}/modules.dep", modules_root.display()))?
        }
    };
    let modules = module_closure(&full_dep, MODULES)?;
    let stage = tempfile_dir()?;
    let stage_modules = stage.join("lib/modules").join(release);
    for module in &modules {
        let target = stage_modules.join(module);
        std::fs::create_dir_all(target.parent().context("module path")?)?;
        std::fs::copy(modules_root.join(module), &target).with_context(|| format!("copying module {module}"))?;
    }
    let depmod = run_in(
        "/bin/busybox",
        &["depmod", "-b", stage.to_str().context("path")?, release],
        None,
    );
    let dep = std::fs::read(stage_modules.join("modules.dep"));
    for module in &modules {
        let data = std::fs::read(stage_modules.join(module))?;
        archive.file(format!("lib/modules/{release}/{module}"), data, false)?;
    }
    let _ = std::fs::remove_dir_all(&stage);
    depmod?;
    archive.file(format!("lib/modules/{release}/modules.dep"), dep?, false)?;
    Ok(archive.to_bytes())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("rig-vm-modules-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dependency_of_the_meta_package() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(
            parse_kernel_dependency(text).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        assert_eq!(parse_kernel_dependency("linux-image-amd64\n"), None);
    }

    #[test]
    fn xz_stream_offset() {
        let mut image = vec![0u8; 100];
        image.extend_from_slice(b"\xfd7zXZ\x00rest");
        assert_eq!(find_xz_stream(&image), Some(100));
        assert_eq!(find_xz_stream(b"no stream"), None);
    }

    #[test]
    fn closure_of_modules() {
        let dep = "kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko\nkernel/net/802/stp.ko: kernel/net/llc/llc.ko\nkernel/net/llc/llc.ko:\nkernel/drivers/net/veth.ko:\n";
        assert_eq!(
            module_closure(dep, &["veth", "bridge"]).unwrap(),
            [
                "kernel/drivers/net/veth.ko",
                "kernel/net/802/stp.ko",
                "kernel/net/bridge/bridge.ko",
                "kernel/net/llc/llc.ko"
            ]
        );
        assert!(module_closure(dep, &["tun"]).is_err());
    }
}
