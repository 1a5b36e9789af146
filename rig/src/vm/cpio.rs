//! An initramfs archive in the kernel's `newc` cpio format (Documentation/driver-api/
//! early-userspace/buffer-format.rst), built in memory from host files and generated text.
//! Reads host files (and, for dynamically linked programs, the libraries `ldd` names); produces
//! the archive's bytes. The kernel accepts several archives concatenated, later entries
//! overriding earlier ones: the cached base (busybox, modules) and a per-run payload.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

#[derive(Debug, Clone, PartialEq)]
enum Entry {
    Directory,
    File { data: Vec<u8>, executable: bool },
    Symlink(String),
}

/// Entries by path inside the archive. A `BTreeMap` orders a directory before everything
/// below it (a path sorts before every longer path it prefixes), which is the order the kernel
/// needs: it does not create missing parents.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

/// The archive path of `path` without its leading `/` (`usr/bin/ip`), or an error for `..`.
fn relative(path: &Path) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => parts.push(part.to_str().context("non-UTF-8 path")?.to_owned()),
            _ => bail!("{} is not a plain path", path.display()),
        }
    }
    if parts.is_empty() {
        bail!("empty archive path");
    }
    Ok(parts.join("/"))
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    fn add_parents(&mut self, path: &str) {
        let mut prefix = String::new();
        let parents: Vec<&str> = path.split('/').collect();
        for part in &parents[..parents.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            self.entries.entry(prefix.clone()).or_insert(Entry::Directory);
        }
    }

    pub fn directory(&mut self, path: impl AsRef<Path>) -> anyhow::Result<&mut Self> {
        let path = relative(path.as_ref())?;
        self.add_parents(&path);
        self.entries.insert(path, Entry::Directory);
        Ok(self)
    }

    pub fn file(&mut self, path: impl AsRef<Path>, data: Vec<u8>, executable: bool) -> anyhow::Result<&mut Self> {
        let path = relative(path.as_ref())?;
        self.add_parents(&path);
        self.entries.insert(path, Entry::File { data, executable });
        Ok(self)
    }

    pub fn symlink(&mut self, path: impl AsRef<Path>, target: &str) -> anyhow::Result<&mut Self> {
        let path = relative(path.as_ref())?;
        self.add_parents(&path);
        self.entries.insert(path, Entry::Symlink(target.to_owned()));
        Ok(self)
    }

    /// Copies the host file `host` (following symlinks) to `inside`.
    pub fn host_file(&mut self, host: &Path, inside: impl AsRef<Path>) -> anyhow::Result<&mut Self> {
        use std::os::unix::fs::PermissionsExt;
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        let mode = std::fs::metadata(host)
            .with_context(|| format!("stat {}", host.display()))?
            .permissions()
            .mode();
        self.file(inside, data, mode & 0o111 != 0)
    }

    /// Copies a host program to `inside` and every shared library `ldd` lists for it to the
    /// same path as on the host, so that a glibc binary runs inside as it does outside.
    pub fn host_program(&mut self, host: &Path, inside: impl AsRef<Path>) -> anyhow::Result<&mut Self> {
        self.host_file(host, inside)?;
        let output = Command::new("ldd")
            .arg(host)
            .output()
            .with_context(|| format!("running ldd {}", host.display()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        // A static binary makes ldd exit 1 with "not a dynamic executable": no libraries.
        for library in ldd_libraries(&text) {
            self.host_file(Path::new(&library), &library)?;
        }
        Ok(self)
    }

    /// The archive in `newc` format, padded to 512 bytes so that another archive can follow.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (inode, (path, entry)) in self.entries.iter().enumerate() {
            let (mode, data): (u32, &[u8]) = match entry {
                Entry::Directory => (0o040755, &[]),
                Entry::File { data, executable } => (if *executable { 0o100755 } else { 0o100644 }, data),
                Entry::Symlink(target) => (0o120777, target.as_bytes()),
            };
            write_record(&mut out, inode as u32 + 1, mode, path, data);
        }
        write_record(&mut out, 0, 0, "TRAILER!!!", &[]);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

fn pad4(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(4) * 4, 0);
}

fn write_record(out: &mut Vec<u8>, inode: u32, mode: u32, name: &str, data: &[u8]) {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let fields = [
        inode,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        0, // rdevmajor
        0, // rdevminor
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

/// The absolute library paths of `ldd` output (`libc.so.6 => /lib/…/libc.so.6 (0x…)` and the
/// loader's `/lib64/ld-linux-x86-64.so.2 (0x…)`; the vDSO has no file).
pub fn ldd_libraries(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, right)) => right.trim(),
                None => line,
            };
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_records_and_parents() {
        let mut archive = Archive::new();
        archive.file("/bin/x", b"abc".to_vec(), true).unwrap();
        archive.symlink("bin/sh", "busybox").unwrap();
        assert_eq!(archive.paths().collect::<Vec<_>>(), ["bin", "bin/sh", "bin/x"]);
        let bytes = archive.to_bytes();
        assert_eq!(bytes.len() % 512, 0);
        // First record: the directory `bin`, inode 1, mode 040755, name size 4.
        assert!(bytes.starts_with(b"07070100000001000041ED"));
        assert_eq!(&bytes[94..102], b"00000004");
        assert_eq!(&bytes[110..114], b"bin\0");
        let text = String::from_utf8_lossy(&bytes);
        // `bin/x` holds its data right after its name, padded to 4 bytes.
        let at = text.find("bin/x\0").unwrap();
        assert_eq!(&bytes[at - 110 + 54..at - 110 + 62], b"00000003");
        assert_eq!((at + 6).div_ceil(4) * 4, text.find("abc").unwrap());
        assert!(text.contains("TRAILER!!!"));
        assert!(archive.file("../x", vec![], false).is_err());
    }

    #[test]
    fn ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            ldd_libraries(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(ldd_libraries("\tnot a dynamic executable\n").is_empty());
    }
}
