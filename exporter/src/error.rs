//! Errors of the library: every variant names the path or the input it is about.

use std::path::{Path, PathBuf};

/// Why a kernel or configuration file could not be turned into values.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The file is gone (ENOENT, ENODEV, ESRCH): for a cgroup this means the guest stopped.
    #[error("{path}: not there (never was, or removed while being read)")]
    Vanished { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A whole collector could not do its job for a reason that is not one file.
    #[error("{0}")]
    Other(String),
}

impl CollectError {
    /// Classifies an I/O error on `path`: disappearance is distinguished from failure.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        let gone = source.kind() == std::io::ErrorKind::NotFound
            || matches!(source.raw_os_error(), Some(libc::ENODEV) | Some(libc::ESRCH));
        if gone {
            CollectError::Vanished {
                path: path.to_path_buf(),
            }
        } else {
            CollectError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    pub fn parse(path: &Path, error: impl std::fmt::Display) -> Self {
        CollectError::Parse {
            path: path.to_path_buf(),
            message: error.to_string(),
        }
    }

    pub fn is_vanished(&self) -> bool {
        matches!(self, CollectError::Vanished { .. })
    }
}

/// A copy for a second report of the same problem (a scan shared by two collectors): an I/O
/// error keeps its errno, or else its kind and text.
impl Clone for CollectError {
    fn clone(&self) -> Self {
        match self {
            CollectError::Vanished { path } => CollectError::Vanished { path: path.clone() },
            CollectError::Io { path, source } => CollectError::Io {
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(errno) => std::io::Error::from_raw_os_error(errno),
                    None => std::io::Error::new(source.kind(), source.to_string()),
                },
            },
            CollectError::Parse { path, message } => CollectError::Parse {
                path: path.clone(),
                message: message.clone(),
            },
            CollectError::Other(message) => CollectError::Other(message.clone()),
        }
    }
}

/// A parse failure of one input text; the reader adds the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(message: impl Into<String>) -> Self {
        ParseError(message.into())
    }
}

/// Reads a whole (small, kernel-generated) file as text.
pub fn read_text(path: &Path) -> Result<String, CollectError> {
    std::fs::read_to_string(path).map_err(|e| CollectError::io(path, e))
}

/// Reads a file that a kernel or layout may legitimately lack: `Ok(None)` when it is absent.
pub fn read_optional(path: &Path) -> Result<Option<String>, CollectError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CollectError::io(path, e)),
    }
}

/// Reads and parses in one step, attaching the path to a parse error.
pub fn read_parsed<T>(path: &Path, parse: impl FnOnce(&str) -> Result<T, ParseError>) -> Result<T, CollectError> {
    let text = read_text(path)?;
    parse(&text).map_err(|e| CollectError::parse(path, e))
}
