//! OTLP push configuration: the seed's variables, the standard `OTEL_EXPORTER_OTLP_*` ones, and
//! which wins.
//!
//! [`OtlpRaw`] holds the variables exactly as found (all strings); [`validate`] is pure and
//! turns them into an [`OtlpConfig`] or one [`ConfigError`] that names the variable, the value
//! and what is accepted (header values are never echoed: see [`redacted`]).
//!
//! # Precedence (also in the README table through `config::VARIABLES`)
//! - Endpoint: `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` > `OTEL_EXPORTER_OTLP_ENDPOINT` >
//!   `OTEL_ENDPOINT` > `localhost:4317`. The standard variables win because they are what
//!   collectors, operators and Proxmox VE's own OTLP documentation speak, and the
//!   signal-specific one is more specific than the generic one (the OpenTelemetry spec's rule).
//!   The seed's `OTEL_ENDPOINT` keeps working where nothing else is set.
//! - Transport security: a scheme decides (`http://` plaintext, `https://` TLS with the
//!   system's trust store). Without a scheme, `OTEL_INSECURE` decides (default `true`, the
//!   seed's default). A scheme that contradicts an explicitly set `OTEL_INSECURE` is an error
//!   rather than a silent choice.
//! - Resource: the dedicated variables (`OTEL_SERVICE_NAME`, `OTEL_SERVICE_VERSION`,
//!   `SERVICE_INSTANCE_ID`) > the same key in `OTEL_RESOURCE_ATTRIBUTES` > the default
//!   (`metrics-exporter`, this build's version, the snapshot's `instance`). This is the
//!   spec's rule for `OTEL_SERVICE_NAME`, applied to the other two for consistency.
//!   `OTEL_RESOURCE_ATTRIBUTES` also overrides the detected `host.name`; a guest's own
//!   `container.id` / `container.name` are never overridden (they identify the guest).

use std::fmt;
use std::time::Duration;

use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};

use crate::config::ConfigError;

/// The default collector when no endpoint variable is set (the seed's default).
pub const DEFAULT_ENDPOINT: &str = "localhost:4317";
/// The OTLP spec's default export timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`), in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Batches waiting for delivery beyond the one being sent. Each batch is a full cumulative
/// snapshot, so a newer batch supersedes an older one: a short queue loses only resolution.
pub const DEFAULT_QUEUE_CAPACITY: usize = 8;

/// The variables exactly as found in the environment.
#[derive(Default, Clone, serde::Deserialize)]
pub struct OtlpRaw {
    pub otel_endpoint: Option<String>,
    pub otel_insecure: Option<String>,
    pub otel_service_name: Option<String>,
    pub otel_service_version: Option<String>,
    pub service_instance_id: Option<String>,
    pub otel_exporter_otlp_endpoint: Option<String>,
    pub otel_exporter_otlp_metrics_endpoint: Option<String>,
    pub otel_exporter_otlp_headers: Option<String>,
    pub otel_exporter_otlp_timeout: Option<String>,
    pub otel_exporter_otlp_compression: Option<String>,
    pub otel_resource_attributes: Option<String>,
}

/// Hand-written so that header values (credentials) never reach a log through `{:?}`.
impl fmt::Debug for OtlpRaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpRaw")
            .field("otel_endpoint", &self.otel_endpoint)
            .field("otel_insecure", &self.otel_insecure)
            .field("otel_service_name", &self.otel_service_name)
            .field("otel_service_version", &self.otel_service_version)
            .field("service_instance_id", &self.service_instance_id)
            .field("otel_exporter_otlp_endpoint", &self.otel_exporter_otlp_endpoint)
            .field(
                "otel_exporter_otlp_metrics_endpoint",
                &self.otel_exporter_otlp_metrics_endpoint,
            )
            .field(
                "otel_exporter_otlp_headers",
                &self.otel_exporter_otlp_headers.as_ref().map(|_| "<redacted>"),
            )
            .field("otel_exporter_otlp_timeout", &self.otel_exporter_otlp_timeout)
            .field("otel_exporter_otlp_compression", &self.otel_exporter_otlp_compression)
            .field("otel_resource_attributes", &self.otel_resource_attributes)
            .finish()
    }
}

impl OtlpRaw {
    /// Reads the process environment (only the variables above; others are ignored).
    pub fn from_env() -> Result<Self, ConfigError> {
        envy::from_env::<OtlpRaw>().map_err(|e| ConfigError {
            variable: "(environment)".into(),
            value: String::new(),
            // envy names the variable whose value is not Unicode; it never prints values.
            accepted: e.to_string(),
        })
    }
}

/// Reads and validates in one step: what `main` calls when `EXPORT_FORMAT` includes otlp.
pub fn from_env() -> Result<OtlpConfig, ConfigError> {
    validate(&OtlpRaw::from_env()?)
}

/// Which variable the endpoint came from, for /status and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum EndpointSource {
    #[serde(rename = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")]
    MetricsEndpoint,
    #[serde(rename = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    Endpoint,
    #[serde(rename = "OTEL_ENDPOINT")]
    SeedEndpoint,
    #[serde(rename = "default")]
    Default,
}

impl EndpointSource {
    pub fn variable(self) -> &'static str {
        match self {
            EndpointSource::MetricsEndpoint => "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            EndpointSource::Endpoint => "OTEL_EXPORTER_OTLP_ENDPOINT",
            EndpointSource::SeedEndpoint => "OTEL_ENDPOINT",
            EndpointSource::Default => "default",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
}

/// gRPC metadata sent with every export. Values are credentials (API keys, bearer tokens):
/// `Debug` and `Serialize` show the header names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(AsciiMetadataKey, AsciiMetadataValue)>);

impl Headers {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// Adds every header to a request's metadata. The values are marked sensitive so that
    /// HTTP/2 never puts them in its compression table (HPACK "never indexed").
    pub fn apply(&self, metadata: &mut MetadataMap) {
        for (key, value) in &self.0 {
            metadata.insert(key.clone(), value.clone());
        }
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.names().map(|n| (n, "<redacted>"))).finish()
    }
}

impl serde::Serialize for Headers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.names().map(|n| (n, "<redacted>")))
    }
}

/// The validated OTLP settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OtlpConfig {
    /// `http://host:port` or `https://host:port`: the scheme says plaintext or TLS.
    pub endpoint: String,
    pub endpoint_source: EndpointSource,
    /// TLS with the system's trust store; `false` is plaintext h2c.
    pub tls: bool,
    pub headers: Headers,
    #[serde(serialize_with = "serialize_millis")]
    pub timeout: Duration,
    pub compression: Compression,
    pub service_name: String,
    pub service_version: String,
    /// `None`: the snapshot's `Identity::instance` (INSTANCE_ID or `host_name:container_id`).
    pub service_instance_id: Option<String>,
    /// Extra resource attributes from `OTEL_RESOURCE_ATTRIBUTES`, in the order given, with
    /// the keys handled above removed.
    pub resource_attributes: Vec<(String, String)>,
    /// Not from the environment (a tuning constant); tests shorten it.
    pub queue_capacity: usize,
    /// First retry delay; doubles per failed attempt up to `backoff_max`.
    #[serde(serialize_with = "serialize_millis")]
    pub backoff_initial: Duration,
    #[serde(serialize_with = "serialize_millis")]
    pub backoff_max: Duration,
}

fn serialize_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
}

fn invalid(variable: &str, value: &str, accepted: impl Into<String>) -> ConfigError {
    ConfigError {
        variable: variable.into(),
        value: value.into(),
        accepted: accepted.into(),
    }
}

/// What a [`ConfigError`] shows instead of a header value.
pub fn redacted() -> String {
    "<redacted>".to_owned()
}

fn trimmed(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Validates the raw variables. Pure: reads nothing but its argument.
pub fn validate(raw: &OtlpRaw) -> Result<OtlpConfig, ConfigError> {
    let explicit_insecure = match trimmed(&raw.otel_insecure) {
        None => None,
        Some(v) => Some(match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(invalid("OTEL_INSECURE", v, "true or false")),
        }),
    };

    let (source, given) = [
        (
            EndpointSource::MetricsEndpoint,
            &raw.otel_exporter_otlp_metrics_endpoint,
        ),
        (EndpointSource::Endpoint, &raw.otel_exporter_otlp_endpoint),
        (EndpointSource::SeedEndpoint, &raw.otel_endpoint),
    ]
    .into_iter()
    .find_map(|(source, value)| trimmed(value).map(|v| (source, v)))
    .unwrap_or((EndpointSource::Default, DEFAULT_ENDPOINT));
    let (endpoint, tls) = parse_endpoint(source.variable(), given, explicit_insecure)?;

    let headers = match trimmed(&raw.otel_exporter_otlp_headers) {
        None => Headers::default(),
        Some(v) => parse_headers(v)?,
    };

    let timeout = match trimmed(&raw.otel_exporter_otlp_timeout) {
        None => Duration::from_millis(DEFAULT_TIMEOUT_MS),
        Some(v) => match v.parse::<u64>() {
            Ok(ms @ 1..=600_000) => Duration::from_millis(ms),
            _ => {
                return Err(invalid(
                    "OTEL_EXPORTER_OTLP_TIMEOUT",
                    v,
                    "an integer number of milliseconds from 1 to 600000",
                ));
            }
        },
    };

    let compression = match trimmed(&raw.otel_exporter_otlp_compression)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("none") => Compression::None,
        Some("gzip") => Compression::Gzip,
        Some(_) => {
            return Err(invalid(
                "OTEL_EXPORTER_OTLP_COMPRESSION",
                trimmed(&raw.otel_exporter_otlp_compression).unwrap_or_default(),
                "gzip or none",
            ));
        }
    };

    let mut resource_attributes = match trimmed(&raw.otel_resource_attributes) {
        None => Vec::new(),
        Some(v) => parse_resource_attributes(v)?,
    };
    // Takes a key out of the resource attributes, so each key appears once in the resource.
    let mut take = |key: &str| -> Option<String> {
        let found = resource_attributes.iter().rposition(|(k, _)| k == key)?;
        let value = resource_attributes.remove(found).1;
        resource_attributes.retain(|(k, _)| k != key);
        Some(value)
    };
    let from_attributes_name = take("service.name");
    let from_attributes_version = take("service.version");
    let from_attributes_instance = take("service.instance.id");

    let text = |variable: &str, value: &Option<String>| -> Result<Option<String>, ConfigError> {
        match trimmed(value) {
            None => Ok(None),
            Some(v) if v.chars().any(char::is_control) => {
                Err(invalid(variable, v, "a string without control characters"))
            }
            Some(v) => Ok(Some(v.to_owned())),
        }
    };
    let service_name = text("OTEL_SERVICE_NAME", &raw.otel_service_name)?
        .or(from_attributes_name)
        .unwrap_or_else(|| "metrics-exporter".to_owned());
    let service_version = text("OTEL_SERVICE_VERSION", &raw.otel_service_version)?
        .or(from_attributes_version)
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
    let service_instance_id = text("SERVICE_INSTANCE_ID", &raw.service_instance_id)?.or(from_attributes_instance);

    Ok(OtlpConfig {
        endpoint,
        endpoint_source: source,
        tls,
        headers,
        timeout,
        compression,
        service_name,
        service_version,
        service_instance_id,
        resource_attributes,
        queue_capacity: DEFAULT_QUEUE_CAPACITY,
        backoff_initial: Duration::from_millis(500),
        backoff_max: Duration::from_secs(30),
    })
}

/// `host:port`, `[v6]:port`, `host` (port 4317) or the same with `http://` / `https://`.
/// Returns the normalized URI and whether TLS is used.
fn parse_endpoint(variable: &str, value: &str, explicit_insecure: Option<bool>) -> Result<(String, bool), ConfigError> {
    const ACCEPTED: &str = "host:port, [ipv6]:port, or http:// / https:// followed by host[:port] \
        (OTLP/gRPC: no path, no user:password@; credentials go in OTEL_EXPORTER_OTLP_HEADERS)";
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, value),
    };
    let tls = match (scheme.as_deref(), explicit_insecure) {
        (Some("http"), Some(false)) | (Some("https"), Some(true)) => {
            return Err(invalid(
                variable,
                value,
                "a scheme that agrees with OTEL_INSECURE (http:// is insecure, https:// is TLS), \
                 or no scheme so that OTEL_INSECURE decides",
            ));
        }
        (Some("http"), _) => false,
        (Some("https"), _) => true,
        (Some(_), _) => return Err(invalid(variable, value, ACCEPTED)),
        (None, insecure) => !insecure.unwrap_or(true),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) || authority.chars().any(char::is_whitespace) {
        return Err(invalid(variable, value, ACCEPTED));
    }
    // Split off the port: an IPv6 literal is bracketed, so its colons are not a port.
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| invalid(variable, value, ACCEPTED))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid(variable, value, ACCEPTED));
        }
        match after {
            "" => (format!("[{host}]"), None),
            p => (
                format!("[{host}]"),
                Some(p.strip_prefix(':').ok_or_else(|| invalid(variable, value, ACCEPTED))?),
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(invalid(variable, value, ACCEPTED));
            }
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (authority.to_owned(), None),
        }
    };
    let valid_host = !host.is_empty()
        && (host.starts_with('[')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'));
    if !valid_host {
        return Err(invalid(variable, value, ACCEPTED));
    }
    let port: u16 = match port {
        // The seed documents host:port; a bare host means the OTLP/gRPC port, or the
        // scheme's port where a scheme was given (as a URI would).
        None => match scheme.as_deref() {
            Some("https") => 443,
            Some("http") => 80,
            _ => 4317,
        },
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(invalid(variable, value, ACCEPTED)),
        },
    };
    let uri = format!("{}://{host}:{port}", if tls { "https" } else { "http" });
    // Last word to the URI parser tonic itself uses, so anything accepted here connects.
    uri.parse::<tonic::codegen::http::Uri>()
        .map_err(|_| invalid(variable, value, ACCEPTED))?;
    Ok((uri, tls))
}

/// W3C-baggage-like `key=value,key2=value2` with percent-encoded values (the OTLP spec's format
/// of `OTEL_EXPORTER_OTLP_HEADERS`). Values are never put in an error.
fn parse_headers(value: &str) -> Result<Headers, ConfigError> {
    const VARIABLE: &str = "OTEL_EXPORTER_OTLP_HEADERS";
    const ACCEPTED: &str = "comma-separated key=value pairs; keys are gRPC metadata names \
        (letters, digits, - _ .; not grpc-*, not *-bin), values printable ASCII, percent-encoded where needed";
    let mut headers = Vec::new();
    for (index, pair) in value
        .split(',')
        .map(str::trim)
        .enumerate()
        .filter(|(_, p)| !p.is_empty())
    {
        // The message says which pair is wrong without echoing any value.
        let at = |what: &str| {
            invalid(
                VARIABLE,
                &redacted(),
                format!("{ACCEPTED} (pair {}: {what})", index + 1),
            )
        };
        let (key, raw_value) = pair.split_once('=').ok_or_else(|| at("no '='"))?;
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() || key.starts_with("grpc-") || key.ends_with("-bin") {
            return Err(at("reserved or empty key"));
        }
        let key = AsciiMetadataKey::from_bytes(key.as_bytes()).map_err(|_| at("invalid key"))?;
        let decoded = percent_decode(raw_value.trim()).ok_or_else(|| at("invalid percent-encoding"))?;
        let mut value =
            AsciiMetadataValue::try_from(decoded.as_str()).map_err(|_| at("value is not printable ASCII"))?;
        value.set_sensitive(true);
        headers.push((key, value));
    }
    Ok(Headers(headers))
}

/// `key=value,...` with percent-encoded values, as in the OpenTelemetry resource SDK spec.
fn parse_resource_attributes(value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    const VARIABLE: &str = "OTEL_RESOURCE_ATTRIBUTES";
    const ACCEPTED: &str = "comma-separated key=value pairs with a non-empty key and percent-encoded values";
    let mut attributes = Vec::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, raw_value) = pair.split_once('=').ok_or_else(|| invalid(VARIABLE, value, ACCEPTED))?;
        let key = key.trim();
        let decoded = percent_decode(raw_value.trim()).ok_or_else(|| invalid(VARIABLE, value, ACCEPTED))?;
        if key.is_empty()
            || key.chars().any(|c| c.is_control() || c.is_whitespace())
            || decoded.chars().any(char::is_control)
        {
            return Err(invalid(VARIABLE, value, ACCEPTED));
        }
        attributes.push((key.to_owned(), decoded));
    }
    Ok(attributes)
}

/// Decodes `%XX` escapes; `None` on a truncated escape, non-hex digits or non-UTF-8 bytes.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> OtlpRaw {
        envy::from_iter(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    fn ok(pairs: &[(&str, &str)]) -> OtlpConfig {
        validate(&raw(pairs)).unwrap()
    }

    fn err(pairs: &[(&str, &str)]) -> ConfigError {
        validate(&raw(pairs)).unwrap_err()
    }

    #[test]
    fn every_variable_read_here_is_in_the_documented_table() {
        let documented: Vec<_> = crate::config::VARIABLES.iter().map(|v| v.0).collect();
        for variable in [
            "OTEL_ENDPOINT",
            "OTEL_INSECURE",
            "OTEL_SERVICE_NAME",
            "OTEL_SERVICE_VERSION",
            "SERVICE_INSTANCE_ID",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            "OTEL_RESOURCE_ATTRIBUTES",
        ] {
            assert_eq!(documented.iter().filter(|d| **d == variable).count(), 1, "{variable}");
            // And envy maps it to a field: a set value must change the result or fail.
            let set = raw(&[(variable, "\u{1}")]);
            assert!(format!("{set:?}").contains("Some"), "{variable} is read");
        }
    }

    #[test]
    fn export_format_accepts_otlp_now_that_it_exists() {
        for (given, expected) in [("otlp", "otlp"), ("prometheus,otlp", "prometheus,otlp")] {
            let raw: crate::config::RawConfig =
                envy::from_iter([("EXPORT_FORMAT".to_owned(), given.to_owned())]).unwrap();
            let config = crate::config::validate(&raw, &[]).unwrap();
            assert_eq!(config.export_format.as_str(), expected);
        }
    }

    #[test]
    fn defaults_follow_the_seed() {
        let c = ok(&[]);
        assert_eq!(c.endpoint, "http://localhost:4317");
        assert_eq!(c.endpoint_source, EndpointSource::Default);
        assert!(!c.tls);
        assert!(c.headers.is_empty());
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.compression, Compression::None);
        assert_eq!(c.service_name, "metrics-exporter");
        assert_eq!(c.service_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(c.service_instance_id, None);
    }

    #[test]
    fn seed_endpoint_forms() {
        let cases = [
            ("collector:4317", "http://collector:4317", false),
            ("collector", "http://collector:4317", false),
            ("10.0.0.5:4317", "http://10.0.0.5:4317", false),
            ("[::1]:4317", "http://[::1]:4317", false),
            ("[::1]", "http://[::1]:4317", false),
            ("http://collector:4317/", "http://collector:4317", false),
            ("HTTPS://otel.example.org", "https://otel.example.org:443", true),
        ];
        for (given, expected, tls) in cases {
            let c = ok(&[("OTEL_ENDPOINT", given)]);
            assert_eq!((c.endpoint.as_str(), c.tls), (expected, tls), "{given}");
            assert_eq!(c.endpoint_source, EndpointSource::SeedEndpoint);
        }
        let c = ok(&[("OTEL_ENDPOINT", "collector:4317"), ("OTEL_INSECURE", "false")]);
        assert_eq!((c.endpoint.as_str(), c.tls), ("https://collector:4317", true));
    }

    #[test]
    fn standard_variables_win_over_the_seed_and_the_metrics_one_wins_over_both() {
        let c = ok(&[
            ("OTEL_ENDPOINT", "seed:1"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:2"),
        ]);
        assert_eq!(
            (c.endpoint.as_str(), c.endpoint_source),
            ("http://generic:2", EndpointSource::Endpoint)
        );
        let c = ok(&[
            ("OTEL_ENDPOINT", "seed:1"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:2"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "https://metrics:3"),
        ]);
        assert_eq!(
            (c.endpoint.as_str(), c.endpoint_source),
            ("https://metrics:3", EndpointSource::MetricsEndpoint)
        );
    }

    #[test]
    fn invalid_endpoints_name_the_variable_that_supplied_them() {
        for (variable, value) in [
            ("OTEL_ENDPOINT", "collector:notaport"),
            ("OTEL_ENDPOINT", "collector:0"),
            ("OTEL_ENDPOINT", "collector:70000"),
            ("OTEL_ENDPOINT", "grpc://collector:4317"),
            ("OTEL_ENDPOINT", "::1:4317"),
            ("OTEL_ENDPOINT", "user:secret@collector:4317"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/v1/metrics"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://bad host:4317"),
        ] {
            let e = err(&[(variable, value)]);
            assert_eq!(e.variable, variable, "{value}");
            assert_eq!(e.value, value);
            assert!(e.to_string().starts_with(&format!("invalid {variable}=")), "{e}");
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn a_scheme_contradicting_an_explicit_otel_insecure_is_an_error() {
        let e = err(&[("OTEL_ENDPOINT", "https://c:4317"), ("OTEL_INSECURE", "true")]);
        assert_eq!(e.variable, "OTEL_ENDPOINT");
        assert!(e.accepted.contains("OTEL_INSECURE"));
        let e = err(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_INSECURE", "false"),
        ]);
        assert_eq!(e.variable, "OTEL_EXPORTER_OTLP_ENDPOINT");
        // Unset OTEL_INSECURE defers to the scheme.
        assert!(ok(&[("OTEL_ENDPOINT", "https://c:4317")]).tls);
    }

    #[test]
    fn headers_are_parsed_decoded_and_never_shown() {
        let c = ok(&[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization=Bearer%20s3cr3t, x-scope-orgid=tenant1",
        )]);
        let names: Vec<_> = c.headers.names().collect();
        assert_eq!(names, ["authorization", "x-scope-orgid"]);
        let mut map = MetadataMap::new();
        c.headers.apply(&mut map);
        assert_eq!(map.get("authorization").unwrap().to_str().unwrap(), "Bearer s3cr3t");
        let debug = format!("{c:?}");
        let json = serde_json::to_string(&c).unwrap();
        for shown in [&debug, &json] {
            assert!(!shown.contains("s3cr3t") && !shown.contains("tenant1"), "{shown}");
            assert!(shown.contains("authorization"), "{shown}");
        }
        let raw_debug = format!("{:?}", raw(&[("OTEL_EXPORTER_OTLP_HEADERS", "a=s3cr3t")]));
        assert!(!raw_debug.contains("s3cr3t"), "{raw_debug}");
    }

    #[test]
    fn invalid_headers_name_the_variable_but_not_the_value() {
        for value in [
            "novalue",
            "=s3cr3t",
            "grpc-timeout=1",
            "key-bin=s3cr3t",
            "a=s3cr3t%zz",
            "a=s3cr3t%0a",
            "bad key=s3cr3t",
        ] {
            let e = err(&[("OTEL_EXPORTER_OTLP_HEADERS", value)]);
            assert_eq!(e.variable, "OTEL_EXPORTER_OTLP_HEADERS", "{value}");
            assert!(!e.to_string().contains("s3cr3t"), "{e}");
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn timeout_and_compression() {
        let c = ok(&[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "GZIP"),
        ]);
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.compression, Compression::Gzip);
        for (variable, value, accepted) in [
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "0", "milliseconds"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "milliseconds"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd", "gzip or none"),
            ("OTEL_INSECURE", "maybe", "true or false"),
            ("OTEL_SERVICE_NAME", "a\nb", "control"),
        ] {
            let e = err(&[(variable, value)]);
            assert_eq!((e.variable.as_str(), e.value.as_str()), (variable, value));
            assert!(e.accepted.contains(accepted), "{e}");
        }
    }

    #[test]
    fn resource_attributes_and_their_precedence() {
        let c = ok(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=prod,service.name=from-attrs,service.version=9,service.instance.id=i-1,site=a%2Cb",
        )]);
        assert_eq!(c.service_name, "from-attrs");
        assert_eq!(c.service_version, "9");
        assert_eq!(c.service_instance_id.as_deref(), Some("i-1"));
        assert_eq!(
            c.resource_attributes,
            [
                ("deployment.environment.name".to_owned(), "prod".to_owned()),
                ("site".to_owned(), "a,b".to_owned())
            ]
        );
        let c = ok(&[
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-attrs,service.instance.id=i-1",
            ),
            ("OTEL_SERVICE_NAME", "dedicated"),
            ("SERVICE_INSTANCE_ID", "i-2"),
        ]);
        assert_eq!(c.service_name, "dedicated");
        assert_eq!(c.service_instance_id.as_deref(), Some("i-2"));
        let e = err(&[("OTEL_RESOURCE_ATTRIBUTES", "novalue")]);
        assert_eq!(e.variable, "OTEL_RESOURCE_ATTRIBUTES");
    }
}
