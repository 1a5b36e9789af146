//! The `metrics-exporter` binary: command line, exit statuses, and the tokio runtime.

use std::process::ExitCode;

use metrics_exporter::config::{RawConfig, VARIABLES, validate};
use metrics_exporter::run::Purpose;
use metrics_exporter::{collectors, run};

fn help() -> String {
    let mut text = String::from(
        "metrics-exporter: Prometheus and OTLP metrics for Proxmox VE hosts, LXC containers and Linux hosts\n\n\
         Usage: metrics-exporter [--once | --check-config | --version | --help]\n\n\
         (no argument)   serve /metrics, /health, /status, /collectors and POST /collect\n\
         --once          run one collection and print it as Prometheus text (without eBPF)\n\
         --check-config  print the configuration, the platform and the eBPF plan as JSON (no bpf())\n\
         --version       print the version\n\n\
         Configuration is read from the environment:\n\n",
    );
    for (name, default, accepted) in VARIABLES {
        text.push_str(&format!("  {name}\n      default: {default}\n      {accepted}\n"));
    }
    text.push_str(&format!("\nCollectors: {}\n", collectors::names().join(", ")));
    text
}

/// Bounds glibc malloc's memory for a long-running process with few threads.
///
/// - Arenas: glibc gives each thread that meets contention its own arena (up to 8 per core),
///   each with its own heap that is trimmed on its own. Here two tokio workers and up to eight
///   blocking threads allocate, but never much at once, so two arenas are plenty; more only
///   hold freed memory apart.
/// - Mapping threshold: glibc raises its threshold for serving a request from its own `mmap`
///   to the size of any mapped block freed (up to 32 MiB), so after the first encoded text
///   (MBs at 1000 guests) is freed, every later one comes from the heap and fragments it. A
///   fixed threshold keeps large buffers (encoded text, gzip, big vectors) in their own
///   mappings, which return to the kernel the moment they are freed.
fn configure_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn main() -> ExitCode {
    configure_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let purpose = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => Purpose::Serve,
        ["--once"] => Purpose::Once,
        ["--check-config"] => Purpose::CheckConfig,
        ["--version" | "-V"] => {
            println!("metrics-exporter {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        ["--help" | "-h"] => {
            print!("{}", help());
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("metrics-exporter: unknown arguments {args:?}; see --help");
            return ExitCode::from(2);
        }
    };
    let config = match RawConfig::from_env().and_then(|raw| validate(&raw, &collectors::names())) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("metrics-exporter: {e}");
            return ExitCode::from(2);
        }
    };
    run::init_logging(&config);
    let prepared = match run::prepare(config, purpose) {
        Ok(prepared) => prepared,
        Err(e) => {
            eprintln!("metrics-exporter: {e:#}");
            let is_config = e.downcast_ref::<run::StartupConfigError>().is_some();
            return ExitCode::from(if is_config { 2 } else { 1 });
        }
    };
    match purpose {
        Purpose::CheckConfig => {
            let report = run::check_config_report(&prepared);
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Purpose::Once => {
            let (text, any_success) = run::once(prepared);
            print!("{text}");
            if any_success {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Purpose::Serve => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .max_blocking_threads(8)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("metrics-exporter: cannot start the async runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match runtime.block_on(run::serve(prepared)) {
                Ok(()) => ExitCode::SUCCESS,
                // One line, as for every other start failure (a port in use): a log record of
                // the same error beside it would say it twice.
                Err(e) => {
                    eprintln!("metrics-exporter: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
