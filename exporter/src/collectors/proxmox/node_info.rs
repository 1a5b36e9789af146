//! Collector `pve_node`: facts about the Proxmox VE node itself, from local files, without API
//! token or HTTP.
//!
//! Reads, under the file-tree root:
//! - `/var/lib/dpkg/status`: the `pve-manager` stanza (parsed by [`crate::parse::dpkg`]), for
//!   `pve_version_info{version}`. The file is megabytes on a real host: it is read at the first
//!   collection and again only when its size, mtime or inode change, streamed through one
//!   buffer.
//! - `$PVE_PATH/local/pve-ssl.pem`, `$PVE_PATH/local/pveproxy-ssl.pem` (only when an uploaded
//!   or ACME certificate replaces the node's own) and `$PVE_PATH/pve-root-ca.pem`, for
//!   `pve_certificate_expiry_timestamp_seconds{certificate}`: the notAfter of the first
//!   certificate in the file (a chain file starts with the server's own), labelled with the
//!   file's name.
//! - `/etc/subscription` (parsed by [`crate::parse::pve_subscription`]), for
//!   `pve_subscription_info{status,level}`, `pve_subscription_next_due_timestamp_seconds` and
//!   `pve_subscription_checked_timestamp_seconds`. The subscription key is never exported.
//!
//! Every file is parsed again only when its metadata changes. A missing file means its series
//! are absent (no subscription, no custom certificate); a file that cannot be read or parsed
//! costs its own series and is reported as the collector's error naming the file, while the
//! other files are still served.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::collectors::{Collector, Environment};
use crate::error::{CollectError, ParseError};
use crate::model::{Kind, MetricDesc, Scope, SnapshotBuilder, Unit};
use crate::parse::{dpkg, pve_subscription};

pub static VERSION_INFO: MetricDesc = MetricDesc {
    name: "pve_version_info",
    help: "The installed pve-manager version (/var/lib/dpkg/status).",
    kind: Kind::Info,
    unit: Unit::Ratio,
    labels: &["version"],
    scope: Scope::Node,
    otel: None,
};

pub static CERTIFICATE_EXPIRY: MetricDesc = MetricDesc {
    name: "pve_certificate_expiry_timestamp_seconds",
    help: "When the node's certificate expires (notAfter), Unix seconds; `certificate` is the file in /etc/pve.",
    kind: Kind::Gauge,
    unit: Unit::Seconds,
    labels: &["certificate"],
    scope: Scope::Node,
    otel: None,
};

pub static SUBSCRIPTION_INFO: MetricDesc = MetricDesc {
    name: "pve_subscription_info",
    help: "The subscription status the node recorded at its last check (/etc/subscription), and the key's level letter (c, b, s, p; empty for other keys).",
    kind: Kind::Info,
    unit: Unit::Ratio,
    labels: &["status", "level"],
    scope: Scope::Node,
    otel: None,
};

pub static SUBSCRIPTION_NEXT_DUE: MetricDesc = MetricDesc {
    name: "pve_subscription_next_due_timestamp_seconds",
    help: "The subscription's next due date (/etc/subscription nextduedate, midnight UTC), Unix seconds.",
    kind: Kind::Gauge,
    unit: Unit::Seconds,
    labels: &[],
    scope: Scope::Node,
    otel: None,
};

pub static SUBSCRIPTION_CHECKED: MetricDesc = MetricDesc {
    name: "pve_subscription_checked_timestamp_seconds",
    help: "When the node last checked its subscription with Proxmox's server (/etc/subscription checktime), Unix seconds.",
    kind: Kind::Gauge,
    unit: Unit::Seconds,
    labels: &[],
    scope: Scope::Node,
    otel: None,
};

/// The certificate files, relative to `$PVE_PATH`, in the order exported.
pub const CERTIFICATES: [&str; 3] = ["local/pve-ssl.pem", "local/pveproxy-ssl.pem", "pve-root-ca.pem"];

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

/// A file parsed once per change: the last value (or the last error's text) and the stamp it
/// was read at. `None` as value: the file does not exist.
#[derive(Debug)]
struct Watched<T> {
    path: PathBuf,
    stamp: Option<Stamp>,
    value: Result<Option<T>, String>,
}

impl<T> Watched<T> {
    fn new(path: PathBuf) -> Self {
        Watched {
            path,
            stamp: None,
            value: Ok(None),
        }
    }

    /// Loads the file again if its stamp changed; then its value or its error.
    fn refresh(&mut self, load: impl FnOnce(&Path) -> Result<T, CollectError>) -> Result<Option<&T>, CollectError> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(&self.path) {
            Ok(meta) => {
                let stamp = Stamp {
                    dev: meta.dev(),
                    ino: meta.ino(),
                    len: meta.len(),
                    mtime: meta.modified().ok(),
                };
                if self.stamp != Some(stamp) {
                    self.value = load(&self.path).map(Some).map_err(|e| e.to_string());
                    self.stamp = Some(stamp);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.stamp = None;
                self.value = Ok(None);
            }
            Err(e) => {
                // Not cached: the next collection tries again.
                self.stamp = None;
                self.value = Ok(None);
                return Err(CollectError::io(&self.path, e));
            }
        }
        match &self.value {
            Ok(value) => Ok(value.as_ref()),
            Err(message) => Err(CollectError::Other(message.clone())),
        }
    }
}

/// The notAfter of the first certificate in PEM text, Unix seconds.
pub fn certificate_not_after(pem: &[u8]) -> Result<i64, ParseError> {
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| ParseError::new(format!("bad PEM block: {e}")))?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        let certificate = block
            .parse_x509()
            .map_err(|e| ParseError::new(format!("bad X.509 certificate: {e}")))?;
        return Ok(certificate.validity().not_after.timestamp());
    }
    Err(ParseError::new("no PEM CERTIFICATE block"))
}

/// The `pve_node` collector.
#[derive(Debug)]
pub struct NodeInfoCollector {
    dpkg_status: Watched<Option<dpkg::Installed>>,
    certificates: Vec<(&'static str, Watched<i64>)>,
    subscription: Watched<Option<pve_subscription::Subscription>>,
}

impl NodeInfoCollector {
    pub fn new(env: &Environment) -> Self {
        NodeInfoCollector {
            dpkg_status: Watched::new(env.root_path.join("var/lib/dpkg/status")),
            certificates: CERTIFICATES
                .iter()
                .map(|relative| {
                    let name = relative.rsplit('/').next().unwrap_or(relative);
                    (name, Watched::new(env.pve_path.join(relative)))
                })
                .collect(),
            subscription: Watched::new(env.root_path.join("etc/subscription")),
        }
    }
}

fn load_dpkg_status(path: &Path) -> Result<Option<dpkg::Installed>, CollectError> {
    let file = std::fs::File::open(path).map_err(|e| CollectError::io(path, e))?;
    dpkg::find_installed(BufReader::with_capacity(64 * 1024, file), "pve-manager")
        .map_err(|e| CollectError::parse(path, e))
}

fn load_certificate(path: &Path) -> Result<i64, CollectError> {
    let bytes = std::fs::read(path).map_err(|e| CollectError::io(path, e))?;
    certificate_not_after(&bytes).map_err(|e| CollectError::parse(path, e))
}

fn load_subscription(path: &Path) -> Result<Option<pve_subscription::Subscription>, CollectError> {
    let text = std::fs::read_to_string(path).map_err(|e| CollectError::io(path, e))?;
    pve_subscription::parse(&text).map_err(|e| CollectError::parse(path, e))
}

impl Collector for NodeInfoCollector {
    fn name(&self) -> &'static str {
        "pve_node"
    }

    fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
        let none: [&str; 0] = [];
        let mut errors = Vec::new();
        match self.dpkg_status.refresh(load_dpkg_status) {
            Ok(Some(Some(installed))) => out.push(&VERSION_INFO, [installed.version.as_str()], 1.0),
            // No dpkg database, or pve-manager not installed: no version to report.
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
        for (name, watched) in &mut self.certificates {
            match watched.refresh(load_certificate) {
                Ok(Some(&not_after)) => out.push(&CERTIFICATE_EXPIRY, [*name], not_after as f64),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        match self.subscription.refresh(load_subscription) {
            Ok(Some(Some(s))) => {
                let level = s.level.map(String::from).unwrap_or_default();
                out.push(&SUBSCRIPTION_INFO, [s.status.as_str(), level.as_str()], 1.0);
                if let Some(due) = s.next_due {
                    out.push(&SUBSCRIPTION_NEXT_DUE, none, due as f64);
                }
                if let Some(checked) = s.checked {
                    out.push(&SUBSCRIPTION_CHECKED, none, checked as f64);
                }
            }
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
        super::guests::summarize(errors)
    }

    fn notes(&self) -> Vec<String> {
        let certificates: Vec<String> = self
            .certificates
            .iter()
            .map(|(_, w)| w.path.display().to_string())
            .collect();
        vec![format!(
            "pve-manager version from {} (read again only when it changes), certificates {}, subscription from {} (the key is never exported)",
            self.dpkg_status.path.display(),
            certificates.join(", "),
            self.subscription.path.display()
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_CA: &[u8] = include_bytes!("../../../../fixtures/proxmox-host/etc/pve/pve-root-ca.pem");
    const PROXY: &[u8] = include_bytes!("../../../../fixtures/proxmox-host/etc/pve/nodes/pve1/pveproxy-ssl.pem");

    #[test]
    fn not_after() {
        // notAfter=Jan  7 09:14:05 2033 GMT.
        assert_eq!(certificate_not_after(ROOT_CA), Ok(1_988_702_045));
        // The chain's first certificate (the server's, 2025-02-18 06:02:11 UTC), not its
        // issuer's (2027).
        assert_eq!(certificate_not_after(PROXY), Ok(1_739_858_531));
        // A private key before the certificate is passed over.
        let mut with_key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec();
        with_key.extend_from_slice(ROOT_CA);
        assert_eq!(certificate_not_after(&with_key), Ok(1_988_702_045));
    }

    #[test]
    fn garbage_certificates() {
        assert!(certificate_not_after(b"").is_err());
        assert!(certificate_not_after(b"not a certificate\n").is_err());
        assert!(certificate_not_after(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
        // Cut in the middle.
        assert!(certificate_not_after(&ROOT_CA[..ROOT_CA.len() / 2]).is_err());
    }
}
