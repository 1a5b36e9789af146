//! The `.prom` file output (PROMETHEUS_FILE): the Prometheus text of every snapshot, written
//! atomically so that a reader (node_exporter's textfile collector, a sidecar) never sees a
//! partial file: temporary file in the same directory, fsync, mode 0644, rename, fsync of the
//! directory.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::model::{Kind, MetricDesc, Scope, SnapshotBuilder, Unit};

/// Why the file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FileError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Checks at start that the file can be written where it is configured: the directory must
/// exist and be a directory.
pub fn check_target(path: &Path) -> Result<(), FileError> {
    let dir = directory_of(path);
    match std::fs::metadata(&dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(FileError {
            path: dir,
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        }),
        Err(source) => Err(FileError { path: dir, source }),
    }
}

fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `contents` to `path` atomically.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), FileError> {
    let dir = directory_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A dot-file name: the textfile collector only reads `*.prom`, so it never picks this up.
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| FileError { path: p, source }
    };
    let result = (|| {
        let mut file = std::fs::File::create(&tmp).map_err(err(&tmp))?;
        file.write_all(contents).map_err(err(&tmp))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(err(&tmp))?;
        file.sync_all().map_err(err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(err(path))?;
        // The rename is durable only once the directory entry is.
        std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(err(&dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

static FILE_WRITES: MetricDesc = MetricDesc {
    name: "metrics_exporter_file_writes_total",
    help: "Writes of PROMETHEUS_FILE by result.",
    kind: Kind::Counter,
    unit: Unit::Count("{write}"),
    labels: &["result"],
    scope: Scope::Node,
    otel: None,
};

/// State of the file output, shared with /health and /status.
#[derive(Debug, Default)]
pub struct FileOutput {
    pub path: PathBuf,
    state: Mutex<FileState>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct FileState {
    pub successes: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    pub healthy: bool,
}

impl FileOutput {
    pub fn new(path: PathBuf) -> Self {
        FileOutput {
            path,
            state: Mutex::new(FileState {
                healthy: true,
                ..Default::default()
            }),
        }
    }

    /// Writes and records the outcome; a failure is logged once per change of state.
    pub fn write(&self, contents: &[u8]) {
        let result = write_atomic(&self.path, contents);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) => {
                if !state.healthy {
                    tracing::info!(path = %self.path.display(), "PROMETHEUS_FILE written again");
                }
                state.successes += 1;
                state.healthy = true;
                state.last_error = None;
            }
            Err(e) => {
                if state.healthy {
                    // The configured path, not only the temporary file's that failed.
                    tracing::error!(path = %self.path.display(), error = %e, "cannot write PROMETHEUS_FILE");
                }
                state.failures += 1;
                state.healthy = false;
                state.last_error = Some(e.to_string());
            }
        }
    }

    pub fn state(&self) -> FileState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl crate::engine::SelfMetrics for FileOutput {
    fn add(&self, out: &mut SnapshotBuilder) {
        let state = self.state();
        out.push(&FILE_WRITES, ["success"], state.successes as f64);
        out.push(&FILE_WRITES, ["failure"], state.failures as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_with_mode_0644_and_no_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.prom");
        write_atomic(&path, b"a 1\n").unwrap();
        write_atomic(&path, b"a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("metrics.prom")]);
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let e = check_target(Path::new("/nonexistent-dir-for-test/metrics.prom")).unwrap_err();
        assert_eq!(e.path, PathBuf::from("/nonexistent-dir-for-test"));
        assert!(e.to_string().starts_with("/nonexistent-dir-for-test: "), "{e}");
        let output = FileOutput::new("/nonexistent-dir-for-test/m.prom".into());
        output.write(b"x 1\n");
        let state = output.state();
        assert!(!state.healthy);
        assert_eq!(state.failures, 1);
    }
}
