//! Configuration from the environment.
//!
//! `envy` reads every variable as an optional string ([`RawConfig`]); [`validate`] is a pure
//! function that turns those strings into a typed [`Config`] or one [`ConfigError`] naming the
//! variable, the value given and the values accepted. Defaults live in [`VARIABLES`], which also
//! feeds `--help` and the README table, so there is one place that says what a default is.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Every variable the exporter reads: (name, default, accepted values / meaning).
pub const VARIABLES: &[(&str, &str, &str)] = &[
    (
        "EXPORT_FORMAT",
        "prometheus",
        "prometheus, otlp, or both as prometheus,otlp",
    ),
    (
        "PROMETHEUS_FILE",
        "(unset: no file)",
        "path of a .prom file rewritten atomically after every collection; its directory must exist",
    ),
    (
        "OTEL_ENDPOINT",
        "localhost:4317",
        "OTLP gRPC collector as host:port (a http:// or https:// scheme is accepted)",
    ),
    ("OTEL_SERVICE_NAME", "metrics-exporter", "OpenTelemetry service.name"),
    (
        "OTEL_SERVICE_VERSION",
        "(this build's version)",
        "OpenTelemetry service.version",
    ),
    ("OTEL_INSECURE", "true", "true or false: plain-text gRPC instead of TLS"),
    (
        "COLLECTION_INTERVAL",
        "30",
        "seconds between collections, an integer from 1 to 3600",
    ),
    ("METRICS_PORT", "9100", "TCP port of the HTTP server, 1 to 65535"),
    (
        "LISTEN_ADDRESS",
        "0.0.0.0",
        "IPv4 or IPv6 address the HTTP server binds (:: for every address)",
    ),
    (
        "ENABLED_COLLECTORS",
        "(every collector that applies to the platform)",
        "comma-separated collector names (see /collectors)",
    ),
    (
        "LOG_LEVEL",
        "info",
        "trace, debug, info, warn (warning), error (critical); any case",
    ),
    ("LOG_FORMAT", "json", "json or text"),
    (
        "INSTANCE_ID",
        "(host_name:container_id)",
        "the instance identifier exported in metrics_exporter_instance_info",
    ),
    (
        "SERVICE_INSTANCE_ID",
        "(INSTANCE_ID)",
        "OpenTelemetry service.instance.id",
    ),
    (
        "CONTAINER_ID",
        "(derived inside LXC from the root mount: volume name, subvol directory or loop-backed raw image)",
        "the container_id label; set it where it cannot be derived",
    ),
    ("PLATFORM", "auto", "auto, proxmox, lxc or host"),
    ("PROC_PATH", "/proc", "where procfs is mounted"),
    ("SYS_PATH", "/sys", "where sysfs is mounted"),
    (
        "CGROUP_PATH",
        "(the cgroup2 mount in $PROC_PATH/self/mountinfo)",
        "root of the cgroup2 hierarchy",
    ),
    ("PVE_PATH", "/etc/pve", "the Proxmox cluster filesystem"),
    ("EBPF", "auto", "auto, on or off"),
    (
        "WEB_CONFIG_FILE",
        "(unset: plain HTTP, no authentication)",
        "absolute path of a YAML file in Prometheus exporter-toolkit's web config format: TLS, client certificates, basic auth (bcrypt), response headers; re-read when it changes",
    ),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "(unset)",
        "OTLP gRPC collector URL (http:// or https://); wins over OTEL_ENDPOINT",
    ),
    (
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "(unset)",
        "OTLP gRPC collector URL for metrics; wins over OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_ENDPOINT",
    ),
    (
        "OTEL_EXPORTER_OTLP_HEADERS",
        "(none)",
        "key=value,... gRPC metadata sent with every export, values percent-encoded; never logged",
    ),
    (
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "10000",
        "export timeout in milliseconds, 1 to 600000",
    ),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "none", "gzip or none"),
    (
        "OTEL_RESOURCE_ATTRIBUTES",
        "(none)",
        "key=value,... extra resource attributes, values percent-encoded; OTEL_SERVICE_NAME, OTEL_SERVICE_VERSION and SERVICE_INSTANCE_ID win over the same keys here",
    ),
];

/// The variables exactly as found in the environment.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct RawConfig {
    pub export_format: Option<String>,
    pub prometheus_file: Option<String>,
    pub otel_endpoint: Option<String>,
    pub otel_service_name: Option<String>,
    pub otel_service_version: Option<String>,
    pub otel_insecure: Option<String>,
    pub collection_interval: Option<String>,
    pub metrics_port: Option<String>,
    pub listen_address: Option<String>,
    pub enabled_collectors: Option<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub instance_id: Option<String>,
    pub service_instance_id: Option<String>,
    pub container_id: Option<String>,
    pub platform: Option<String>,
    pub proc_path: Option<String>,
    pub sys_path: Option<String>,
    pub cgroup_path: Option<String>,
    pub pve_path: Option<String>,
    pub ebpf: Option<String>,
    pub web_config_file: Option<String>,
}

impl RawConfig {
    /// Reads the process environment. Every field is a string, so this fails only on a
    /// value that is not valid Unicode.
    pub fn from_env() -> Result<Self, ConfigError> {
        envy::from_env::<RawConfig>().map_err(|e| ConfigError {
            variable: "(environment)".into(),
            value: String::new(),
            accepted: e.to_string(),
        })
    }
}

/// One invalid variable. Displayed as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable}={value:?}: accepted values: {accepted}")]
pub struct ConfigError {
    pub variable: String,
    pub value: String,
    pub accepted: String,
}

fn invalid(variable: &str, value: &str, accepted: impl Into<String>) -> ConfigError {
    ConfigError {
        variable: variable.into(),
        value: value.into(),
        accepted: accepted.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlatformChoice {
    Auto,
    Proxmox,
    Lxc,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EbpfMode {
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// Where collections go. Prometheus text is always served on /metrics; `prometheus`
/// says whether it is the configured export, `otlp` whether snapshots are pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ExportFormat {
    pub prometheus: bool,
    pub otlp: bool,
}

impl ExportFormat {
    pub fn as_str(&self) -> &'static str {
        match (self.prometheus, self.otlp) {
            (true, true) => "prometheus,otlp",
            (false, true) => "otlp",
            _ => "prometheus",
        }
    }
}

/// OTLP settings as given; the OTLP exporter validates and completes them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OtelSettings {
    pub endpoint: Option<String>,
    pub service_name: String,
    pub service_version: String,
    pub insecure: bool,
    pub service_instance_id: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Config {
    pub export_format: ExportFormat,
    pub prometheus_file: Option<PathBuf>,
    pub otel: OtelSettings,
    #[serde(serialize_with = "serialize_seconds")]
    pub collection_interval: Duration,
    pub metrics_port: u16,
    pub listen_address: IpAddr,
    /// `None`: every collector that applies to the detected platform.
    pub enabled_collectors: Option<Vec<String>>,
    /// A `tracing` filter directive: trace, debug, info, warn or error.
    pub log_level: &'static str,
    pub log_format: LogFormat,
    pub instance_id: Option<String>,
    pub container_id: Option<String>,
    pub platform: PlatformChoice,
    pub proc_path: PathBuf,
    pub sys_path: PathBuf,
    /// `None`: found in `$PROC_PATH/self/mountinfo` at start.
    pub cgroup_path: Option<PathBuf>,
    pub pve_path: PathBuf,
    pub ebpf: EbpfMode,
    /// `WEB_CONFIG_FILE`: TLS and basic auth (crate::web_config reads it).
    pub web_config_file: Option<PathBuf>,
}

fn serialize_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// Whether the OTLP export exists in this build. The OTLP issue flips this.
pub const OTLP_AVAILABLE: bool = true;

/// Names accepted in ENABLED_COLLECTORS, with the seed's spellings as aliases.
pub const COLLECTOR_ALIASES: &[(&str, &str)] = &[("disk", "filesystem"), ("processes", "process"), ("net", "network")];

/// Validates raw variables against the catalogue of collector names.
pub fn validate(raw: &RawConfig, collector_names: &[&str]) -> Result<Config, ConfigError> {
    fn trimmed(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }

    let export_format = match trimmed(&raw.export_format) {
        None => ExportFormat {
            prometheus: true,
            otlp: false,
        },
        Some(v) => {
            let accepted = if OTLP_AVAILABLE {
                "prometheus, otlp, prometheus,otlp"
            } else {
                "prometheus (otlp is not available in this version)"
            };
            let mut format = ExportFormat {
                prometheus: false,
                otlp: false,
            };
            for part in v.split(',').map(|p| p.trim().to_ascii_lowercase()) {
                match part.as_str() {
                    "prometheus" => format.prometheus = true,
                    "otlp" if OTLP_AVAILABLE => format.otlp = true,
                    _ => return Err(invalid("EXPORT_FORMAT", v, accepted)),
                }
            }
            format
        }
    };

    let prometheus_file = trimmed(&raw.prometheus_file).map(PathBuf::from);
    if let Some(path) = &prometheus_file
        && (path.file_name().is_none() || path.is_dir())
    {
        return Err(invalid(
            "PROMETHEUS_FILE",
            &path.display().to_string(),
            "a file path (not a directory)",
        ));
    }

    let insecure = match trimmed(&raw.otel_insecure) {
        None => true,
        Some(v) => parse_bool(v).ok_or_else(|| invalid("OTEL_INSECURE", v, "true or false"))?,
    };
    let otel = OtelSettings {
        endpoint: trimmed(&raw.otel_endpoint).map(str::to_owned),
        service_name: trimmed(&raw.otel_service_name).unwrap_or("metrics-exporter").to_owned(),
        service_version: trimmed(&raw.otel_service_version)
            .unwrap_or(env!("CARGO_PKG_VERSION"))
            .to_owned(),
        insecure,
        service_instance_id: trimmed(&raw.service_instance_id).map(str::to_owned),
    };

    let collection_interval = match trimmed(&raw.collection_interval) {
        None => Duration::from_secs(30),
        Some(v) => match v.parse::<u64>() {
            Ok(n @ 1..=3600) => Duration::from_secs(n),
            _ => {
                return Err(invalid(
                    "COLLECTION_INTERVAL",
                    v,
                    "an integer number of seconds from 1 to 3600",
                ));
            }
        },
    };

    let metrics_port = match trimmed(&raw.metrics_port) {
        None => 9100,
        Some(v) => match v.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(invalid("METRICS_PORT", v, "an integer from 1 to 65535")),
        },
    };

    let listen_address = match trimmed(&raw.listen_address) {
        None => IpAddr::from([0, 0, 0, 0]),
        Some(v) => v
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map_err(|_| {
                invalid(
                    "LISTEN_ADDRESS",
                    v,
                    "an IPv4 or IPv6 address such as 0.0.0.0, 127.0.0.1, :: or ::1",
                )
            })?,
    };

    let enabled_collectors = match trimmed(&raw.enabled_collectors) {
        None => None,
        Some(v) => {
            let mut names = Vec::new();
            for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let lower = part.to_ascii_lowercase();
                let canonical = COLLECTOR_ALIASES
                    .iter()
                    .find(|(alias, _)| *alias == lower)
                    .map(|(_, name)| *name)
                    .unwrap_or(lower.as_str());
                if !collector_names.contains(&canonical) {
                    return Err(invalid(
                        "ENABLED_COLLECTORS",
                        v,
                        format!("comma-separated names from: {}", collector_names.join(", ")),
                    ));
                }
                if !names.iter().any(|n| n == canonical) {
                    names.push(canonical.to_owned());
                }
            }
            if names.is_empty() { None } else { Some(names) }
        }
    };

    let log_level = match trimmed(&raw.log_level).map(str::to_ascii_lowercase).as_deref() {
        None => "info",
        Some("trace") => "trace",
        Some("debug") => "debug",
        Some("info") => "info",
        Some("warn" | "warning") => "warn",
        Some("error" | "critical") => "error",
        Some(_) => {
            return Err(invalid(
                "LOG_LEVEL",
                trimmed(&raw.log_level).unwrap_or_default(),
                "trace, debug, info, warn, warning, error, critical (any case)",
            ));
        }
    };

    let log_format = match trimmed(&raw.log_format).map(str::to_ascii_lowercase).as_deref() {
        None | Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        Some(_) => {
            return Err(invalid(
                "LOG_FORMAT",
                trimmed(&raw.log_format).unwrap_or_default(),
                "json or text",
            ));
        }
    };

    let platform = match trimmed(&raw.platform).map(str::to_ascii_lowercase).as_deref() {
        None | Some("auto") => PlatformChoice::Auto,
        Some("proxmox") => PlatformChoice::Proxmox,
        Some("lxc") => PlatformChoice::Lxc,
        Some("host") => PlatformChoice::Host,
        Some(_) => {
            return Err(invalid(
                "PLATFORM",
                trimmed(&raw.platform).unwrap_or_default(),
                "auto, proxmox, lxc or host",
            ));
        }
    };

    let ebpf = match trimmed(&raw.ebpf).map(str::to_ascii_lowercase).as_deref() {
        None | Some("auto") => EbpfMode::Auto,
        Some("on" | "true" | "1") => EbpfMode::On,
        Some("off" | "false" | "0") => EbpfMode::Off,
        Some(_) => {
            return Err(invalid(
                "EBPF",
                trimmed(&raw.ebpf).unwrap_or_default(),
                "auto, on or off",
            ));
        }
    };

    let path = |variable: &str, value: &Option<String>, default: &str| -> Result<PathBuf, ConfigError> {
        let v = trimmed(value).unwrap_or(default);
        if !v.starts_with('/') {
            return Err(invalid(variable, v, "an absolute path"));
        }
        Ok(PathBuf::from(v))
    };
    let proc_path = path("PROC_PATH", &raw.proc_path, "/proc")?;
    let sys_path = path("SYS_PATH", &raw.sys_path, "/sys")?;
    let pve_path = path("PVE_PATH", &raw.pve_path, "/etc/pve")?;
    let cgroup_path = match trimmed(&raw.cgroup_path) {
        None => None,
        Some(_) => Some(path("CGROUP_PATH", &raw.cgroup_path, "")?),
    };
    let web_config_file = match trimmed(&raw.web_config_file) {
        None => None,
        Some(_) => Some(path("WEB_CONFIG_FILE", &raw.web_config_file, "")?),
    };

    let label_like = |variable: &str, value: &Option<String>| -> Result<Option<String>, ConfigError> {
        match trimmed(value) {
            None => Ok(None),
            Some(v) if v.chars().any(char::is_control) => {
                Err(invalid(variable, v, "a string without control characters"))
            }
            Some(v) => Ok(Some(v.to_owned())),
        }
    };
    let instance_id = label_like("INSTANCE_ID", &raw.instance_id)?;
    let container_id = label_like("CONTAINER_ID", &raw.container_id)?;

    Ok(Config {
        export_format,
        prometheus_file,
        otel,
        collection_interval,
        metrics_port,
        listen_address,
        enabled_collectors,
        log_level,
        log_format,
        instance_id,
        container_id,
        platform,
        proc_path,
        sys_path,
        cgroup_path,
        pve_path,
        ebpf,
        web_config_file,
    })
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["cpu", "memory", "filesystem", "process"];

    fn raw(pairs: &[(&str, &str)]) -> RawConfig {
        let vars = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        envy::from_iter(vars).unwrap()
    }

    fn error(pairs: &[(&str, &str)]) -> ConfigError {
        validate(&raw(pairs), NAMES).unwrap_err()
    }

    #[test]
    fn defaults() {
        let c = validate(&RawConfig::default(), NAMES).unwrap();
        assert_eq!(c.export_format.as_str(), "prometheus");
        assert_eq!(c.collection_interval, Duration::from_secs(30));
        assert_eq!(c.metrics_port, 9100);
        assert_eq!(c.listen_address.to_string(), "0.0.0.0");
        assert_eq!(c.log_level, "info");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.platform, PlatformChoice::Auto);
        assert_eq!(c.ebpf, EbpfMode::Auto);
        assert_eq!(c.proc_path, PathBuf::from("/proc"));
        assert_eq!(c.cgroup_path, None);
        assert_eq!(c.enabled_collectors, None);
        assert_eq!(c.otel.service_name, "metrics-exporter");
        assert!(c.otel.insecure);
    }

    #[test]
    fn every_variable_accepts_its_documented_values() {
        let c = validate(
            &raw(&[
                ("EXPORT_FORMAT", "Prometheus"),
                ("COLLECTION_INTERVAL", "15"),
                ("METRICS_PORT", "9200"),
                ("LISTEN_ADDRESS", "[::1]"),
                ("ENABLED_COLLECTORS", "memory, disk,processes,memory"),
                ("LOG_LEVEL", "WARNING"),
                ("LOG_FORMAT", "TEXT"),
                ("PLATFORM", "LXC"),
                ("EBPF", "off"),
                ("CGROUP_PATH", "/tmp/cg"),
                ("OTEL_INSECURE", "false"),
                ("INSTANCE_ID", "web:101"),
            ]),
            NAMES,
        )
        .unwrap();
        assert_eq!(c.collection_interval, Duration::from_secs(15));
        assert_eq!(c.metrics_port, 9200);
        assert_eq!(c.listen_address.to_string(), "::1");
        assert_eq!(c.enabled_collectors.unwrap(), ["memory", "filesystem", "process"]);
        assert_eq!(c.log_level, "warn");
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.platform, PlatformChoice::Lxc);
        assert_eq!(c.ebpf, EbpfMode::Off);
        assert_eq!(c.cgroup_path, Some(PathBuf::from("/tmp/cg")));
        assert!(!c.otel.insecure);
        assert_eq!(c.instance_id.as_deref(), Some("web:101"));
    }

    #[test]
    fn each_invalid_value_names_variable_value_and_accepted_values() {
        let cases: &[(&str, &str, &str)] = &[
            ("COLLECTION_INTERVAL", "0", "1 to 3600"),
            ("COLLECTION_INTERVAL", "3601", "1 to 3600"),
            ("COLLECTION_INTERVAL", "30s", "1 to 3600"),
            ("METRICS_PORT", "0", "1 to 65535"),
            ("METRICS_PORT", "70000", "1 to 65535"),
            ("LISTEN_ADDRESS", "localhost", "IPv4 or IPv6"),
            ("LOG_LEVEL", "verbose", "warning"),
            ("LOG_FORMAT", "xml", "json or text"),
            ("PLATFORM", "docker", "auto, proxmox, lxc or host"),
            ("EBPF", "maybe", "auto, on or off"),
            ("PROC_PATH", "proc", "absolute path"),
            ("OTEL_INSECURE", "perhaps", "true or false"),
            ("ENABLED_COLLECTORS", "memory,gpu", "cpu, memory, filesystem, process"),
            ("EXPORT_FORMAT", "graphite", "prometheus"),
            ("INSTANCE_ID", "a\nb", "control characters"),
            ("WEB_CONFIG_FILE", "web.yml", "absolute path"),
        ];
        for (variable, value, accepted) in cases {
            let e = error(&[(variable, value)]);
            assert_eq!(&e.variable, variable);
            assert_eq!(&e.value, value);
            assert!(e.accepted.contains(accepted), "{variable}: {}", e.accepted);
            let line = e.to_string();
            assert!(!line.contains('\n') || value.contains('\n'), "one line: {line}");
            assert!(line.starts_with(&format!("invalid {variable}=")), "{line}");
        }
    }

    #[test]
    fn otlp_is_rejected_clearly_until_it_exists() {
        if !OTLP_AVAILABLE {
            let e = error(&[("EXPORT_FORMAT", "otlp")]);
            assert!(e.to_string().contains("otlp is not available"), "{e}");
        }
    }

    #[test]
    fn variables_table_lists_every_raw_field() {
        // Every field of RawConfig is documented once: the table drives --help and README.
        let names: Vec<_> = VARIABLES.iter().map(|v| v.0).collect();
        for field in [
            "EXPORT_FORMAT",
            "PROMETHEUS_FILE",
            "OTEL_ENDPOINT",
            "OTEL_SERVICE_NAME",
            "OTEL_SERVICE_VERSION",
            "OTEL_INSECURE",
            "COLLECTION_INTERVAL",
            "METRICS_PORT",
            "LISTEN_ADDRESS",
            "ENABLED_COLLECTORS",
            "LOG_LEVEL",
            "LOG_FORMAT",
            "INSTANCE_ID",
            "SERVICE_INSTANCE_ID",
            "CONTAINER_ID",
            "PLATFORM",
            "PROC_PATH",
            "SYS_PATH",
            "CGROUP_PATH",
            "PVE_PATH",
            "EBPF",
            "WEB_CONFIG_FILE",
        ] {
            assert_eq!(names.iter().filter(|n| **n == field).count(), 1, "{field}");
        }
    }
}
