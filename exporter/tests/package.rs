//! The Debian package (issue 13, point 1): `cargo xtask deb` builds it, lintian finds no error
//! in it, and in a real Debian 12 system container (LXC, systemd as PID 1, a memory limit; the
//! rig's `SystemdContainer`) `apt install ./metrics-exporter_*.deb` enables and starts the
//! service, which serves /metrics with the container's memory limit as its memory total (lxcfs
//! stays visible through the unit's sandbox), runs as `metrics-exporter` with no capability (the
//! README's statement for the container unit); an edit of /etc/default/metrics-exporter survives
//! an upgrade to a rebuilt package with a higher version, which restarts the service; remove
//! stops it; purge leaves nothing behind (package, files, user, group, unit state).
//!
//! Also, without privileges: debian/metrics-exporter.default lists every variable of
//! `config::VARIABLES`, commented out at its default (`UPDATE_DEFAULT_FILE=1` rewrites it).
//!
//! Both in a privileged and in an unprivileged container (Proxmox VE's default), and the same
//! sequence in a privileged Debian 13 (trixie, Proxmox VE 9's base) container: one package for
//! both releases. And the eBPF unit under that real systemd with its whole sandbox (a drop-in
//! lifts its container condition): in the container's cgroup namespace it refuses the programs
//! with the reason under EBPF=auto, keeping no capability on any thread, and does not start under
//! EBPF=on. The root tests print the package's size, its install time in the container and
//! the time from `apt install` to the first served /metrics (the closing note copies them).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{is_root, parse_exposition, require, require_command, value};
use guest_rig::rootfs::Suite;
use guest_rig::single::SystemdContainer;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The default file the package installs, rendered from the exporter's variable table.
fn default_file_text() -> String {
    let mut out = String::from(
        "# /etc/default/metrics-exporter: the environment of metrics-exporter.service (in a\n\
         # container) and metrics-exporter-ebpf.service (on a host). Every variable the exporter\n\
         # reads is listed, commented out at its default: uncomment a line and set a value, then\n\
         # `systemctl restart metrics-exporter metrics-exporter-ebpf`. Package upgrades keep\n\
         # your edits (a conffile). Generated from the table in exporter/src/config.rs.\n",
    );
    for (name, default, meaning) in metrics_exporter::config::VARIABLES {
        out.push_str(&format!("\n# {name}: {meaning}\n"));
        if default.starts_with('(') {
            // A default that is a rule, not a value: say it, leave the value empty.
            out.push_str(&format!("# default: {}\n#{name}=\n", default.trim_matches(['(', ')'])));
        } else {
            out.push_str(&format!("#{name}={default}\n"));
        }
    }
    out
}

#[test]
fn default_file_lists_every_variable_commented_at_its_default() {
    let path = repo().join("debian/metrics-exporter.default");
    let expected = default_file_text();
    if std::env::var_os("UPDATE_DEFAULT_FILE").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let shipped = std::fs::read_to_string(&path).unwrap();
    assert!(
        shipped == expected,
        "{} differs from config::VARIABLES; UPDATE_DEFAULT_FILE=1 cargo test -p metrics-exporter \
         --test package default_file rewrites it",
        path.display()
    );
    // Every line is a comment: the defaults apply until the administrator uncomments one.
    assert!(shipped.lines().all(|l| l.is_empty() || l.starts_with('#')));
    assert!(shipped.contains("\n#METRICS_PORT=9100\n"));
}

/// Builds the package with `cargo xtask deb` into `out`; returns its path.
/// One package build at a time: cargo-deb strips the binary into the same temporary file of the
/// target dir (`<name>.stripped-0.tmp`, outside cargo's lock) in every run, so two tests
/// building at once could pack the other's half-written binary. That was the trixie test's
/// failure in CI (lintian: `executable-not-elf-or-script`, then a unit that never came up).
static PACKAGE_BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn build_package(out: &Path, deb_version: Option<&str>) -> PathBuf {
    let _one_at_a_time = PACKAGE_BUILD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // A target dir of its own: the outer `cargo test` may hold the locks of its own.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("package-build");
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(repo())
        .env("CARGO_TARGET_DIR", &target)
        .args(["run", "--quiet", "--package", "xtask", "--", "deb", "--output"])
        .arg(out);
    if let Some(version) = deb_version {
        command.args(["--deb-version", version]);
    }
    let output = command.output().expect("cargo runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "cargo xtask deb failed: {stderr}");
    let path = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .expect("cargo xtask deb prints the package path")
        .trim()
        .to_owned();
    PathBuf::from(path)
}

/// Whether the package's /usr/bin/metrics-exporter starts with the ELF magic.
fn packs_an_elf_binary(deb: &Path) -> bool {
    let out = Command::new("sh")
        .arg("-c")
        .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -xOf - ./usr/bin/metrics-exporter | head -c 4")
        .arg("sh")
        .arg(deb)
        .output()
        .unwrap();
    out.stdout == b"\x7fELF"
}

/// Every file below `dir` (none when it does not exist).
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_below(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn deb_field(deb: &Path, field: &str) -> String {
    let out = Command::new("dpkg-deb")
        .arg("--field")
        .arg(deb)
        .arg(field)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `/proc/<pid>/status` field `name` (e.g. `Uid`, `CapEff`), read inside the container.
fn status_field(ct: &SystemdContainer, pid: &str, name: &str) -> String {
    let status = ct.attach(&["cat", &format!("/proc/{pid}/status")]).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

fn main_pid(ct: &SystemdContainer, unit: &str) -> String {
    ct.attach(&["systemctl", "show", "--property=MainPID", "--value", unit])
        .unwrap()
        .trim()
        .to_owned()
}

fn is_active(ct: &SystemdContainer, unit: &str) -> String {
    // `systemctl is-active` exits non-zero for anything but active: read its word either way.
    let out = guest_rig::lxc::attach_command(&ct.lxcpath, ct.spec.vmid, &[], &["systemctl", "is-active", unit])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// What systemd knows about `unit` (status and its last journal lines), for a failure message:
/// a start that fails only under load (seen twice in CI on trixie) must say why.
fn unit_diagnostics(ct: &SystemdContainer, unit: &str) -> String {
    let run = |argv: &[&str]| {
        let out = guest_rig::lxc::attach_command(&ct.lxcpath, ct.spec.vmid, &[], argv)
            .output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            });
        out.unwrap_or_else(|e| format!("{argv:?}: {e}"))
    };
    format!(
        "systemctl status {unit}:\n{}\njournal:\n{}",
        run(&["systemctl", "status", "--no-pager", "-l", unit]),
        run(&["journalctl", "--no-pager", "-n", "60", "-u", unit])
    )
}

/// The unit's state once a start or restart job apt left behind has settled: `systemctl
/// is-active` says `activating`/`deactivating` while one runs (a restart under load was still
/// in flight when apt returned), so wait up to 60 s for anything else, then return it.
fn settled_state(ct: &SystemdContainer, unit: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = is_active(ct, unit);
        if !matches!(state.as_str(), "activating" | "deactivating" | "reloading") || Instant::now() >= deadline {
            return state;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Scrapes /metrics on the container's bridge address until it answers 200 or `limit` passes.
fn first_metrics(address: SocketAddr, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(response) = guest_rig::http::get(address, "/metrics")
            && response.status == 200
        {
            return Some(response.text());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Runs a command inside the container with apt's non-interactive front end.
fn apt(ct: &SystemdContainer, args: &[&str]) -> String {
    let mut argv = vec!["apt-get", "-y", "-q"];
    argv.extend(args);
    guest_rig::lxc::attach_env_output(
        &ct.lxcpath,
        ct.spec.vmid,
        &[("DEBIAN_FRONTEND", "noninteractive")],
        &argv,
    )
    .unwrap_or_else(|e| panic!("apt-get {args:?}: {e:#}"))
}

/// Executables of running processes inside the container that are the exporter.
fn exporter_processes(ct: &SystemdContainer) -> String {
    ct.attach(&[
        "sh",
        "-c",
        "for p in /proc/[0-9]*; do readlink $p/exe; done | grep metrics-exporter || true",
    ])
    .unwrap()
    .trim()
    .to_owned()
}

#[test]
fn package_installs_upgrades_and_purges_in_a_privileged_systemd_container() {
    prove_package(Suite::Bookworm, false);
}

/// Proxmox VE's default container type: root inside is uid 100000 outside.
#[test]
fn package_installs_upgrades_and_purges_in_an_unprivileged_systemd_container() {
    prove_package(Suite::Bookworm, true);
}

/// Debian 13 (trixie, systemd 257): the same package, the same sequence.
#[test]
fn package_installs_upgrades_and_purges_in_a_privileged_trixie_systemd_container() {
    prove_package(Suite::Trixie, false);
}

fn prove_package(suite: Suite, unprivileged: bool) {
    let why = guest_rig::rig::unavailable();
    if !require(
        &format!("root and the rig's tools ({})", why.clone().unwrap_or_default()),
        is_root() && why.is_none(),
    ) || !require_command("lintian")
        || !require_command("dpkg-deb")
    {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let first = build_package(out.path(), None);
    let version = deb_field(&first, "Version");
    // A rebuilt package with a higher version: the same tree, the revision bumped.
    let upgraded_version = format!("{version}+rebuild1");
    let second_dir = out.path().join("upgrade");
    let second = build_package(&second_dir, Some(&upgraded_version));
    assert_eq!(deb_field(&second, "Version"), upgraded_version);
    let file_name = first.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(file_name, format!("metrics-exporter_{version}_amd64.deb"));

    // lintian: no error (warnings and informational tags are printed, not failed on).
    let lintian = Command::new("lintian")
        .args(["--fail-on", "error"])
        .arg(&first)
        .output()
        .unwrap();
    let lintian_text = String::from_utf8_lossy(&lintian.stdout).to_string();
    eprintln!("lintian:\n{lintian_text}");
    assert!(lintian.status.success(), "lintian reports errors:\n{lintian_text}");
    // A warning to lintian, a package that cannot run to us.
    for deb in [&first, &second] {
        assert!(
            packs_an_elf_binary(deb),
            "{}: /usr/bin/metrics-exporter is not an ELF file",
            deb.display()
        );
    }
    assert!(!lintian_text.lines().any(|l| l.starts_with("E: ")), "{lintian_text}");

    // The package's contents.
    let contents = Command::new("dpkg-deb").arg("--contents").arg(&first).output().unwrap();
    let contents = String::from_utf8_lossy(&contents.stdout).to_string();
    for path in [
        "./usr/bin/metrics-exporter",
        "./lib/systemd/system/metrics-exporter.service",
        "./lib/systemd/system/metrics-exporter-ebpf.service",
        "./etc/default/metrics-exporter",
        "./usr/share/doc/metrics-exporter/README.md",
        "./usr/share/doc/metrics-exporter/copyright",
    ] {
        assert!(contents.contains(path), "{path} missing from the package:\n{contents}");
    }
    // The monitoring mixin, file for file, when mixin/ holds any (`cargo xtask deb` leaves it
    // out otherwise).
    let mixin = repo().join("mixin");
    for file in files_below(&mixin) {
        let relative = file.strip_prefix(&mixin).unwrap().display().to_string();
        let packaged = format!("./usr/share/metrics-exporter/{relative}");
        assert!(contents.contains(&packaged), "{packaged} missing from the package");
    }
    let conffiles = Command::new("dpkg-deb")
        .arg("--info")
        .arg(&first)
        .arg("conffiles")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&conffiles.stdout).trim(),
        "/etc/default/metrics-exporter",
        "the default file is the package's one conffile"
    );

    let memory_mib = 512;
    let kind = if unprivileged { "unprivileged" } else { "privileged" };
    let codename = suite.codename();
    let dir = PathBuf::from(guest_rig::rig::RIG_ROOT).join(format!("package-{}-{codename}-{kind}", std::process::id()));
    let ct =
        SystemdContainer::up(&dir, suite, memory_mib, unprivileged).expect("the Debian systemd container comes up");
    // The tree is the suite asked for (os-release names it), not the other cached one.
    let os_release = ct.attach(&["cat", "/etc/os-release"]).unwrap();
    assert!(
        os_release.lines().any(|l| l == format!("VERSION_CODENAME={codename}")),
        "{os_release}"
    );
    let address = SocketAddr::from((ct.spec.address, 9100));
    ct.copy_in(&first, &format!("/root/{file_name}")).unwrap();
    let second_name = second.file_name().unwrap().to_string_lossy().into_owned();
    ct.copy_in(&second, &format!("/root/{second_name}")).unwrap();

    // Install, timing apt and, in parallel, the first answered /metrics.
    let started = Instant::now();
    let installer = {
        let lxcpath = ct.lxcpath.clone();
        let vmid = ct.spec.vmid;
        let deb = format!("/root/{file_name}");
        std::thread::spawn(move || {
            let result = guest_rig::lxc::attach_env_output(
                &lxcpath,
                vmid,
                &[("DEBIAN_FRONTEND", "noninteractive")],
                &["apt-get", "install", "-y", "-q", &deb],
            );
            (result, started.elapsed())
        })
    };
    let first_text = first_metrics(address, Duration::from_secs(120));
    let first_metrics_after = started.elapsed();
    let (install_result, install_time) = installer.join().unwrap();
    let install_log = install_result.unwrap_or_else(|e| panic!("apt install: {e:#}"));
    let text = first_text.unwrap_or_else(|| {
        panic!(
            "no /metrics at {address} after install:\n{install_log}\n{}",
            unit_diagnostics(&ct, "metrics-exporter.service")
        )
    });

    // The container unit runs; the eBPF unit's condition (not in a container) keeps it off.
    assert_eq!(is_active(&ct, "metrics-exporter.service"), "active");
    assert_eq!(is_active(&ct, "metrics-exporter-ebpf.service"), "inactive");
    assert_eq!(
        ct.attach(&["systemctl", "is-enabled", "metrics-exporter.service"])
            .unwrap()
            .trim(),
        "enabled"
    );

    // lxcfs visible through the sandbox: the memory total is the container's limit.
    let series = parse_exposition(&text);
    assert_eq!(
        value(&series, "node_memory_total_bytes", &[]),
        ct.memory_limit_bytes().map(|b| b as f64),
        "memory total is not the container's limit"
    );

    // The process: user metrics-exporter (in www-data), no capability at all.
    let pid = main_pid(&ct, "metrics-exporter.service");
    let uid = ct.attach(&["id", "-u", "metrics-exporter"]).unwrap().trim().to_owned();
    let groups = ct.attach(&["id", "-nG", "metrics-exporter"]).unwrap();
    assert!(groups.split_whitespace().any(|g| g == "www-data"), "groups: {groups}");
    let uids = status_field(&ct, &pid, "Uid");
    assert!(
        uids.split_whitespace().all(|u| u == uid),
        "Uid: {uids}, metrics-exporter is {uid}"
    );
    for cap in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(status_field(&ct, &pid, cap), "0000000000000000", "{cap}");
    }
    let process_groups = status_field(&ct, &pid, "Groups");
    assert!(
        process_groups.split_whitespace().any(|g| g == "33"),
        "Groups: {process_groups}"
    );

    // An administrator's edit, then an upgrade: the edit stays and applies (restarted).
    ct.attach(&[
        "sed",
        "-i",
        "s/^#METRICS_PORT=9100$/METRICS_PORT=9177/",
        "/etc/default/metrics-exporter",
    ])
    .unwrap();
    apt(&ct, &["install", &format!("/root/{second_name}")]);
    assert_eq!(
        ct.attach(&["dpkg-query", "-W", "-f=${Version}", "metrics-exporter"])
            .unwrap(),
        upgraded_version
    );
    let default_file = ct.attach(&["cat", "/etc/default/metrics-exporter"]).unwrap();
    assert!(default_file.contains("\nMETRICS_PORT=9177\n"), "{default_file}");
    let settled = settled_state(&ct, "metrics-exporter.service");
    assert_eq!(
        settled,
        "active",
        "{}",
        unit_diagnostics(&ct, "metrics-exporter.service")
    );
    // Settled by itself, not brought back by Restart=on-failure after a crash.
    assert_eq!(
        ct.attach(&[
            "systemctl",
            "show",
            "-p",
            "NRestarts",
            "--value",
            "metrics-exporter.service"
        ])
        .unwrap()
        .trim(),
        "0",
        "the upgraded service crashed and was restarted"
    );
    assert_ne!(
        main_pid(&ct, "metrics-exporter.service"),
        pid,
        "the upgrade restarts the service"
    );
    let after_upgrade = first_metrics(SocketAddr::from((ct.spec.address, 9177)), Duration::from_secs(60));
    assert!(
        after_upgrade.is_some(),
        "no /metrics on the edited port after the upgrade"
    );
    assert!(
        guest_rig::http::get(address, "/metrics").is_err(),
        "the old port still answers"
    );

    // Remove: stopped, binary gone, the conffile kept (until purge).
    apt(&ct, &["remove", "metrics-exporter"]);
    assert_eq!(exporter_processes(&ct), "", "an exporter still runs after remove");
    assert_ne!(is_active(&ct, "metrics-exporter.service"), "active");
    let status = ct
        .attach(&["dpkg-query", "-W", "-f=${db:Status-Abbrev}", "metrics-exporter"])
        .unwrap();
    assert_eq!(status.trim(), "rc", "after remove only the conffile stays");

    // Purge: nothing left.
    apt(&ct, &["purge", "metrics-exporter"]);
    let known = guest_rig::lxc::attach_command(
        &ct.lxcpath,
        ct.spec.vmid,
        &[],
        &["dpkg-query", "-W", "metrics-exporter"],
    )
    .output()
    .unwrap();
    assert!(!known.status.success(), "dpkg still knows the package after purge");
    for database in ["passwd", "group"] {
        let entry = guest_rig::lxc::attach_command(
            &ct.lxcpath,
            ct.spec.vmid,
            &[],
            &["getent", database, "metrics-exporter"],
        )
        .output()
        .unwrap();
        assert!(
            !entry.status.success(),
            "{database} still has metrics-exporter after purge"
        );
    }
    let leftovers = ct
        .attach(&[
            "sh",
            "-c",
            "ls -d /etc/default/metrics-exporter /usr/bin/metrics-exporter /lib/systemd/system/metrics-exporter* \
             /etc/systemd/system/*/metrics-exporter* /var/lib/systemd/deb-systemd-helper-enabled/*metrics-exporter* \
             /var/lib/systemd/deb-systemd-helper-enabled/*/metrics-exporter* /var/lib/metrics-exporter \
             /var/lib/private/metrics-exporter /usr/share/doc/metrics-exporter /usr/share/metrics-exporter 2>/dev/null || true",
        ])
        .unwrap();
    assert_eq!(leftovers.trim(), "", "left behind after purge");
    assert_eq!(exporter_processes(&ct), "");

    let size = std::fs::metadata(&first).unwrap().len();
    ct.down();
    eprintln!(
        "{codename} {kind} container: package {file_name}: {size} bytes ({:.1} MiB); apt install in the container: {:.2} s; \
         apt install to first served /metrics: {:.2} s",
        size as f64 / 1048576.0,
        install_time.as_secs_f64(),
        first_metrics_after.as_secs_f64()
    );
}

/// The eBPF unit as the package installs it, under a real systemd (252, Debian 12) with its
/// whole sandbox (syscall filter, address families, bounding set, ProtectControlGroups...), in a
/// privileged container (which keeps CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN in its bounding
/// set). A drop-in lifts the unit's `ConditionVirtualization=!container` and sets
/// PLATFORM=proxmox (detection rightly calls this node a container). The container has a cgroup
/// namespace of its own, where the guests' cgroup levels are not the kernel's: the first run of
/// this test loaded the programs there (6 of them, capabilities dropped) and served 0 forks,
/// execs and exits for a busy guest. So the exporter now refuses them in a cgroup namespace:
/// with EBPF=auto the unit runs, says why, serves the guest from cgroupfs and keeps no
/// capability on any thread; with EBPF=on it does not start, and its journal says why. The unit
/// adds no cgroup namespace of its own (its process shares PID 1's), under systemd 252 and 257
/// alike: on a Proxmox host (PVE 8 on bookworm, PVE 9 on trixie) it sees the host's.
#[test]
fn ebpf_unit_under_systemd_in_a_cgroup_namespace() {
    prove_ebpf_unit(Suite::Bookworm);
}

/// Debian 13 (systemd 257, which gave ProtectControlGroups= its `private` and `strict` values).
#[test]
fn ebpf_unit_under_trixie_systemd_in_a_cgroup_namespace() {
    prove_ebpf_unit(Suite::Trixie);
}

fn prove_ebpf_unit(suite: Suite) {
    let why = guest_rig::rig::unavailable();
    if !require(
        &format!("root and the rig's tools ({})", why.clone().unwrap_or_default()),
        is_root() && why.is_none(),
    ) || !require_command("dpkg-deb")
    {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let deb = build_package(out.path(), None);
    let file_name = deb.file_name().unwrap().to_string_lossy().into_owned();
    let dir = PathBuf::from(guest_rig::rig::RIG_ROOT).join(format!(
        "package-{}-ebpf-unit-{}",
        std::process::id(),
        suite.codename()
    ));
    let ct = SystemdContainer::up(&dir, suite, 512, false).expect("the Debian systemd container comes up");
    ct.copy_in(&deb, &format!("/root/{file_name}")).unwrap();
    apt(&ct, &["install", &format!("/root/{file_name}")]);
    ct.attach(&["systemctl", "disable", "--now", "metrics-exporter.service"])
        .unwrap();
    // A guest as the exporter finds one: a config, and a cgroup `lxc/9999` in the container's
    // cgroup2 (where its mount table says; /sys/fs/cgroup/unified on this hybrid host).
    let mounts = ct.attach(&["cat", "/proc/self/mountinfo"]).unwrap();
    let cgroup2 = mounts
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4))
        .expect("a cgroup2 mount in the container")
        .to_owned();
    let drop_in = "/etc/systemd/system/metrics-exporter-ebpf.service.d";
    let unit = "metrics-exporter-ebpf.service";
    let configure = |ebpf: &str| {
        format!(
            "mkdir -p {drop_in} && \
             printf '[Unit]\\nConditionVirtualization=\\n[Service]\\nEnvironment=PLATFORM=proxmox EBPF={ebpf}\\n' \
               > {drop_in}/test.conf && systemctl daemon-reload"
        )
    };
    ct.attach(&[
        "sh",
        "-c",
        &format!(
            "mkdir -p /etc/pve/lxc {cgroup2}/lxc/9999 && printf 'hostname: late\\nmemory: 512\\n' > /etc/pve/lxc/9999.conf && \
             {} && systemctl start {unit}",
            configure("auto")
        ),
    ])
    .unwrap();
    let address = SocketAddr::from((ct.spec.address, 9100));
    let text = first_metrics(address, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no /metrics from the eBPF unit:\n{}", unit_diagnostics(&ct, unit)));
    let series = parse_exposition(&text);
    let enabled = series
        .iter()
        .find(|s| s.0 == "metrics_exporter_ebpf_enabled")
        .expect("metrics_exporter_ebpf_enabled");
    assert_eq!(enabled.2, 0.0, "{}", unit_diagnostics(&ct, unit));
    assert!(enabled.1["reason"].contains("cgroup namespace"), "{:?}", enabled.1);
    assert_eq!(value(&series, "metrics_exporter_capabilities_dropped", &[]), Some(1.0));
    let guest = [("container_id", "9999"), ("host_name", "late")];
    assert!(
        value(&series, "container_cpu_usage_seconds_total", &guest).is_some(),
        "the guest from cgroupfs"
    );
    let pid = main_pid(&ct, unit);
    let namespace = |pid: &str| {
        ct.attach(&["readlink", &format!("/proc/{pid}/ns/cgroup")])
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(
        namespace(&pid),
        namespace("1"),
        "the unit made a cgroup namespace of its own"
    );
    let tasks = ct.attach(&["ls", &format!("/proc/{pid}/task")]).unwrap();
    let tids: Vec<&str> = tasks.split_whitespace().collect();
    assert!(tids.len() > 1, "threads: {tasks}");
    for tid in &tids {
        let task = format!("{pid}/task/{tid}");
        for cap in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            assert_eq!(status_field(&ct, &task, cap), "0000000000000000", "thread {tid} {cap}");
        }
        assert_eq!(status_field(&ct, &task, "NoNewPrivs"), "1", "thread {tid}");
    }
    assert_eq!(
        ct.attach(&["systemctl", "show", "-p", "NRestarts", "--value", unit])
            .unwrap()
            .trim(),
        "0"
    );

    // EBPF=on promises the programs or no start.
    ct.attach(&["sh", "-c", &format!("systemctl stop {unit} && {}", configure("on"))])
        .unwrap();
    let started = guest_rig::lxc::attach_command(&ct.lxcpath, ct.spec.vmid, &[], &["systemctl", "start", unit])
        .output()
        .unwrap();
    // `systemctl start` of a simple service returns once it is forked; it then exits 1 (and is
    // restarted every 5 s by Restart=on-failure, refusing each time).
    let journal = || {
        ct.attach(&["journalctl", "--no-pager", "-u", unit, "-n", "20"])
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !journal().contains("EBPF=on but the eBPF programs cannot run") {
        assert!(
            Instant::now() < deadline,
            "EBPF=on did not refuse (start: {started:?}):\n{}",
            journal()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(journal().contains("cgroup namespace"), "{}", journal());
    assert_eq!(
        ct.attach(&["systemctl", "show", "-p", "ExecMainStatus", "--value", unit])
            .unwrap()
            .trim(),
        "1",
        "{}",
        journal()
    );
    ct.down();
}
