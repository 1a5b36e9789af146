//! Running the system tools the rig drives (`lxc-*`, `ip`, `losetup`, `mount`, `mkfs.ext4`,
//! `tar`, `debootstrap`): one place that turns a non-zero exit into an error naming the command
//! and its stderr. Reads nothing itself; produces the command's stdout.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// Runs `program args…` to completion; its stdout on success, an error with stderr otherwise.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    run_in(program, args, None)
}

/// [`run`] in the directory `dir` (e.g. `apt-get download`, which writes where it runs).
pub fn run_in(program: &str, args: &[&str], dir: Option<&Path>) -> anyhow::Result<String> {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = command
        .output()
        .with_context(|| format!("cannot start {program} (is its package installed?)"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed with {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Like [`run`], for teardown: failures are reported on stderr, never raised, so that one step
/// that fails does not keep the others from running.
pub fn run_quietly(program: &str, args: &[&str]) -> bool {
    match run(program, args) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("rig teardown: {e:#}");
            false
        }
    }
}

/// True when `program` is on PATH.
pub fn available(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
