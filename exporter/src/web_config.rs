//! `WEB_CONFIG_FILE`: TLS and basic authentication in the YAML format of Prometheus'
//! exporter-toolkit (its docs/web-configuration.md), so a file written for node_exporter works
//! here unchanged, or fails with one line naming the file and the key.
//!
//! [`parse`] turns the file's text into a [`WebConfig`] (pure, tested on text); [`load`] reads the
//! file and then the certificate, key and CA files it names, and builds the rustls server
//! configuration ([`Loaded`]). Relative paths are relative to the file's directory, as in
//! exporter-toolkit.
//!
//! What is supported and what is refused (refused keys stop the start rather than being
//! ignored, so a file never promises a protection it does not get):
//! - `tls_server_config`: `cert_file`/`cert`, `key_file`/`key`, `client_auth_type` (the five Go
//!   names, and the legacy `RequireClientCert`), `client_ca_file`/`client_ca`, `min_version` and
//!   `max_version` (TLS12, TLS13: rustls implements no older version), and
//!   `prefer_server_cipher_suites`. Refused: `cipher_suites` and `curve_preferences` (rustls's
//!   own set is used: AEAD suites with forward secrecy only, X25519, P-256, P-384),
//!   `client_allowed_sans`.
//! - `http_server_config`: `headers` (the five headers exporter-toolkit allows, with its
//!   accepted values) and `http2` (accepted; the server speaks HTTP/1.1 only).
//! - `basic_auth_users`: user name to bcrypt hash; each hash is checked to be one at load.
//! - Refused: `rate_limit` (the server has its own limits, README "Endpoints").
//!
//! The YAML is first read into a generic tree and then walked here, rather than derived with
//! serde, so every error names its key and never echoes a value that may be a secret (a
//! password hash or an inline key).
//!
//! YAML crate: serde-saphyr (maintained, pure Rust, duplicate keys are an error by default);
//! serde_yaml is archived and serde_yml is unmaintained.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

/// One invalid key (or an unreadable file) of the web configuration, displayed as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid WEB_CONFIG_FILE={file:?}: {key}: {problem}")]
pub struct WebConfigError {
    pub file: PathBuf,
    /// The key as a dotted path (`tls_server_config.min_version`), or `(file)` for the whole file.
    pub key: String,
    /// What is wrong; it never contains a secret's value.
    pub problem: String,
}

/// A value that must never be printed (a bcrypt hash, an inline private key).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// Where a PEM text comes from: a file (path resolved against the config's directory) or the
/// config itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(Secret),
}

/// exporter-toolkit's `client_auth_type`: Go's `tls.ClientAuthType` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ClientAuth {
    NoClientCert,
    /// Ask for a certificate; accept none or any (not verified).
    RequestClientCert,
    /// Demand a certificate; accept any (not verified against a CA).
    RequireAnyClientCert,
    /// Ask for a certificate; if one is given it must chain to the client CA.
    VerifyClientCertIfGiven,
    /// Demand a certificate that chains to the client CA.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    const NAMES: &'static str =
        "NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert";

    fn parse(name: &str) -> Option<ClientAuth> {
        Some(match name {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            // exporter-toolkit keeps the old name for compatibility.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            _ => return None,
        })
    }

    fn verifies(self) -> bool {
        matches!(
            self,
            ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum TlsVersion {
    TLS12,
    TLS13,
}

impl TlsVersion {
    fn parse(name: &str) -> Result<TlsVersion, String> {
        match name {
            "TLS12" => Ok(TlsVersion::TLS12),
            "TLS13" => Ok(TlsVersion::TLS13),
            "TLS10" | "TLS11" => Err(format!(
                "{name:?} is not supported: this server (rustls) implements TLS12 and TLS13 only"
            )),
            _ => Err(format!("{name:?} is not a TLS version; accepted: TLS12, TLS13")),
        }
    }
}

/// `tls_server_config`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: Pem,
    pub key: Pem,
    pub client_auth: ClientAuth,
    pub client_ca: Option<Pem>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    pub prefer_server_cipher_suites: bool,
}

/// The file, validated (nothing it names has been read yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// `None`: plain HTTP (basic auth and headers may still apply), as exporter-toolkit does
    /// when `tls_server_config` sets nothing.
    pub tls: Option<TlsSettings>,
    /// User name to bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, Secret>,
    /// Extra response headers, sorted by name (distinct names: their order does not matter).
    pub headers: Vec<(String, String)>,
    pub http2: bool,
}

/// exporter-toolkit's `extraHTTPHeaders`: the only headers a web config may set, with the
/// accepted values where the header is an enumeration.
const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Keys of exporter-toolkit's format this server refuses, with why.
const REFUSED: &[(&str, &str)] = &[
    (
        "tls_server_config.cipher_suites",
        "not supported: rustls's own cipher suites are used (AEAD with forward secrecy only); remove the key",
    ),
    (
        "tls_server_config.curve_preferences",
        "not supported: rustls's own key exchange groups are used (X25519, P-256, P-384); remove the key",
    ),
    (
        "tls_server_config.client_allowed_sans",
        "not supported: use client_auth_type RequireAndVerifyClientCert with a client CA that signs only allowed clients",
    ),
    (
        "rate_limit",
        "not supported: the server has its own limits (README \"Endpoints\"); remove the key",
    ),
];

struct Walker<'a> {
    file: &'a Path,
}

impl Walker<'_> {
    fn error(&self, key: &str, problem: impl Into<String>) -> WebConfigError {
        WebConfigError {
            file: self.file.to_path_buf(),
            key: key.to_owned(),
            problem: problem.into(),
        }
    }

    /// The mapping at `key`, with every key checked against `known` (and [`REFUSED`]).
    fn mapping<'v>(
        &self,
        key: &str,
        value: &'v Value,
        known: &[&str],
    ) -> Result<Option<&'v serde_json::Map<String, Value>>, WebConfigError> {
        let map = match value {
            Value::Null => return Ok(None),
            Value::Object(map) => map,
            // The document itself (key "") is the whole file.
            _ => return Err(self.error(if key.is_empty() { "(file)" } else { key }, "must be a mapping")),
        };
        for name in map.keys() {
            // An empty key (`? ""`, found by fuzzing) is shown quoted, so the error names it.
            let shown = if name.is_empty() { "\"\"" } else { name.as_str() };
            let path = if key.is_empty() {
                shown.to_owned()
            } else {
                format!("{key}.{shown}")
            };
            if let Some((_, why)) = REFUSED.iter().find(|(k, _)| *k == path) {
                return Err(self.error(&path, *why));
            }
            if !known.contains(&name.as_str()) {
                return Err(self.error(&path, format!("unknown key; accepted here: {}", known.join(", "))));
            }
        }
        Ok(Some(map))
    }

    /// A string value; `None` when absent, null or empty (Go's zero value). `secret`: the value
    /// is never quoted in an error.
    fn string(&self, key: &str, value: Option<&Value>) -> Result<Option<String>, WebConfigError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.error(key, "must be a string")),
        }
    }

    fn boolean(&self, key: &str, value: Option<&Value>, default: bool) -> Result<bool, WebConfigError> {
        match value {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.error(key, "must be true or false")),
        }
    }

    fn path(&self, value: String) -> PathBuf {
        let path = PathBuf::from(value);
        match self.file.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path,
        }
    }

    /// `<inline_key>` (PEM text) or `<file_key>` (a path); both set is an error.
    fn pem(
        &self,
        map: &serde_json::Map<String, Value>,
        inline_key: &str,
        file_key: &str,
    ) -> Result<Option<Pem>, WebConfigError> {
        let inline = self.string(&format!("tls_server_config.{inline_key}"), map.get(inline_key))?;
        let file = self.string(&format!("tls_server_config.{file_key}"), map.get(file_key))?;
        match (inline, file) {
            (Some(_), Some(_)) => Err(self.error(
                &format!("tls_server_config.{file_key}"),
                format!("set {inline_key} or {file_key}, not both"),
            )),
            (Some(text), None) => Ok(Some(Pem::Inline(Secret(text)))),
            (None, Some(path)) => Ok(Some(Pem::File(self.path(path)))),
            (None, None) => Ok(None),
        }
    }

    fn tls(&self, value: &Value) -> Result<Option<TlsSettings>, WebConfigError> {
        const KEYS: &[&str] = &[
            "cert",
            "key",
            "client_ca",
            "cert_file",
            "key_file",
            "client_auth_type",
            "client_ca_file",
            "client_allowed_sans",
            "min_version",
            "max_version",
            "cipher_suites",
            "prefer_server_cipher_suites",
            "curve_preferences",
        ];
        let Some(map) = self.mapping("tls_server_config", value, KEYS)? else {
            return Ok(None);
        };
        let cert = self.pem(map, "cert", "cert_file")?;
        let key = self.pem(map, "key", "key_file")?;
        let client_ca = self.pem(map, "client_ca", "client_ca_file")?;
        let auth_name = self.string("tls_server_config.client_auth_type", map.get("client_auth_type"))?;
        // exporter-toolkit's IsEnabled: any of these set means TLS is wanted.
        if cert.is_none() && key.is_none() && client_ca.is_none() && auth_name.is_none() {
            return Ok(None);
        }
        let cert = cert.ok_or_else(|| self.error("tls_server_config.cert_file", "missing: set cert_file (or cert)"))?;
        let key = key.ok_or_else(|| self.error("tls_server_config.key_file", "missing: set key_file (or key)"))?;
        let client_auth = match &auth_name {
            None => ClientAuth::NoClientCert,
            Some(name) => ClientAuth::parse(name).ok_or_else(|| {
                self.error(
                    "tls_server_config.client_auth_type",
                    format!("{name:?} is not a client auth type; accepted: {}", ClientAuth::NAMES),
                )
            })?,
        };
        if client_ca.is_some() && client_auth == ClientAuth::NoClientCert {
            return Err(self.error(
                "tls_server_config.client_ca_file",
                "a client CA is set but client_auth_type is NoClientCert; set client_auth_type (RequireAndVerifyClientCert)",
            ));
        }
        if client_ca.is_none() && client_auth.verifies() {
            return Err(self.error(
                "tls_server_config.client_ca_file",
                format!(
                    "missing: client_auth_type {client_auth:?} verifies client certificates against client_ca_file (or client_ca)"
                ),
            ));
        }
        let version = |name: &str, default: TlsVersion| -> Result<TlsVersion, WebConfigError> {
            let key = format!("tls_server_config.{name}");
            match self.string(&key, map.get(name))? {
                None => Ok(default),
                Some(v) => TlsVersion::parse(&v).map_err(|problem| self.error(&key, problem)),
            }
        };
        let min_version = version("min_version", TlsVersion::TLS12)?;
        let max_version = version("max_version", TlsVersion::TLS13)?;
        if min_version > max_version {
            return Err(self.error(
                "tls_server_config.min_version",
                format!("{min_version:?} is above max_version {max_version:?}"),
            ));
        }
        let prefer_server_cipher_suites = self.boolean(
            "tls_server_config.prefer_server_cipher_suites",
            map.get("prefer_server_cipher_suites"),
            true,
        )?;
        Ok(Some(TlsSettings {
            cert,
            key,
            client_auth,
            client_ca,
            min_version,
            max_version,
            prefer_server_cipher_suites,
        }))
    }

    fn http(&self, value: &Value) -> Result<(Vec<(String, String)>, bool), WebConfigError> {
        let Some(map) = self.mapping("http_server_config", value, &["http2", "headers"])? else {
            return Ok((Vec::new(), true));
        };
        let http2 = self.boolean("http_server_config.http2", map.get("http2"), true)?;
        let mut headers = Vec::new();
        let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(n, _)| *n).collect();
        let Some(given) = map.get("headers") else {
            return Ok((headers, http2));
        };
        let Some(given) = self.mapping("http_server_config.headers", given, &names)? else {
            return Ok((headers, http2));
        };
        for (name, value) in given {
            let key = format!("http_server_config.headers.{name}");
            let Some(value) = self.string(&key, Some(value))? else {
                continue; // blank: unset, as exporter-toolkit documents
            };
            let accepted = ALLOWED_HEADERS
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .unwrap_or_default();
            if !accepted.is_empty() && !accepted.contains(&value.as_str()) {
                return Err(self.error(
                    &key,
                    format!("{value:?} is not accepted; accepted: {}", accepted.join(", ")),
                ));
            }
            if hyper::header::HeaderValue::from_str(&value).is_err() {
                return Err(self.error(&key, "not a valid header value (control characters?)"));
            }
            headers.push((name.clone(), value));
        }
        Ok((headers, http2))
    }

    fn users(&self, value: &Value) -> Result<BTreeMap<String, Secret>, WebConfigError> {
        let map = match value {
            Value::Null => return Ok(BTreeMap::new()),
            Value::Object(map) => map,
            _ => return Err(self.error("basic_auth_users", "must be a mapping of user name to bcrypt hash")),
        };
        let mut users = BTreeMap::new();
        for (user, hash) in map {
            // The user name is not a secret and locates the error; the hash never appears.
            let key = format!("basic_auth_users.{user}");
            let Value::String(hash) = hash else {
                return Err(self.error(&key, "must be a bcrypt hash (a string)"));
            };
            if user.contains(':') {
                return Err(self.error(
                    &key,
                    "a user name cannot contain ':' (basic auth splits at the first ':')",
                ));
            }
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(self.error(
                    &key,
                    "not a bcrypt hash (make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n')",
                ));
            }
            users.insert(user.clone(), Secret(hash.clone()));
        }
        Ok(users)
    }
}

/// Parses the text of the file named `file` (used for error messages and to resolve relative
/// paths). Pure: nothing the file names is read.
pub fn parse(file: &Path, text: &str) -> Result<WebConfig, WebConfigError> {
    let walker = Walker { file };
    let mut options = serde_saphyr::options::Options::default();
    // A snippet of the file would quote its lines, which may hold a hash or a key.
    options.with_snippet = false;
    let tree: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            let message = e.to_string();
            let message = first_line(&message);
            // The message names the place itself, else it is added.
            let at = match e.location() {
                Some(l) if !message.contains("line") => format!(" at line {} column {}", l.line(), l.column()),
                _ => String::new(),
            };
            walker.error("(file)", format!("not valid YAML{at}: {message}"))
        })?
    };
    const TOP: &[&str] = &[
        "tls_server_config",
        "http_server_config",
        "basic_auth_users",
        "rate_limit",
    ];
    let Some(top) = walker.mapping("", &tree, TOP)? else {
        return Ok(WebConfig {
            tls: None,
            users: BTreeMap::new(),
            headers: Vec::new(),
            http2: true,
        });
    };
    let tls = match top.get("tls_server_config") {
        Some(v) => walker.tls(v)?,
        None => None,
    };
    let (headers, http2) = match top.get("http_server_config") {
        Some(v) => walker.http(v)?,
        None => (Vec::new(), true),
    };
    let users = match top.get("basic_auth_users") {
        Some(v) => walker.users(v)?,
        None => BTreeMap::new(),
    };
    Ok(WebConfig {
        tls,
        users,
        headers,
        http2,
    })
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// The file, parsed, and its TLS settings built into a rustls configuration.
#[derive(Debug)]
pub struct Loaded {
    pub config: WebConfig,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The files this configuration was built from (the web config first), to notice a change.
    pub files: Vec<PathBuf>,
}

/// Reads `file` and everything it names; every error names the file and the key.
pub fn load(file: &Path) -> Result<Loaded, WebConfigError> {
    let walker = Walker { file };
    let text = std::fs::read_to_string(file).map_err(|e| walker.error("(file)", format!("cannot read it: {e}")))?;
    let config = parse(file, &text)?;
    let mut files = vec![file.to_path_buf()];
    let tls = match &config.tls {
        None => None,
        Some(settings) => {
            for pem in [Some(&settings.cert), Some(&settings.key), settings.client_ca.as_ref()]
                .into_iter()
                .flatten()
            {
                if let Pem::File(path) = pem {
                    files.push(path.clone());
                }
            }
            Some(Arc::new(build_tls(&walker, settings)?))
        }
    };
    Ok(Loaded { config, tls, files })
}

fn read_pem(walker: &Walker<'_>, pem: &Pem, file_key: &str) -> Result<Vec<u8>, WebConfigError> {
    match pem {
        Pem::Inline(text) => Ok(text.expose().as_bytes().to_vec()),
        Pem::File(path) => std::fs::read(path).map_err(|e| {
            walker.error(
                &format!("tls_server_config.{file_key}"),
                format!("cannot read {}: {e}", path.display()),
            )
        }),
    }
}

fn key_of(pem: &Pem, inline_key: &str, file_key: &str) -> String {
    match pem {
        Pem::Inline(_) => format!("tls_server_config.{inline_key}"),
        Pem::File(_) => format!("tls_server_config.{file_key}"),
    }
}

fn where_(pem: &Pem) -> String {
    match pem {
        Pem::Inline(_) => "the inline text".to_owned(),
        Pem::File(path) => path.display().to_string(),
    }
}

fn certificates(
    walker: &Walker<'_>,
    pem: &Pem,
    inline_key: &str,
    file_key: &str,
) -> Result<Vec<CertificateDer<'static>>, WebConfigError> {
    let bytes = read_pem(walker, pem, file_key)?;
    let key = key_of(pem, inline_key, file_key);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| walker.error(&key, format!("{} is not readable PEM: {e}", where_(pem))))?;
    if certs.is_empty() {
        return Err(walker.error(&key, format!("no PEM certificate in {}", where_(pem))));
    }
    Ok(certs)
}

/// The rustls server configuration of `settings`; `walker` names the file in errors.
fn build_tls(walker: &Walker<'_>, settings: &TlsSettings) -> Result<rustls::ServerConfig, WebConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates(walker, &settings.cert, "cert", "cert_file")?;
    let key_bytes = read_pem(walker, &settings.key, "key_file")?;
    let key_key = key_of(&settings.key, "key", "key_file");
    // The PEM error is not quoted: it could carry part of the key's text.
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|_| {
        walker.error(
            &key_key,
            format!(
                "no PEM private key (PKCS#8, PKCS#1 or SEC1) in {}",
                where_(&settings.key)
            ),
        )
    })?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::TLS12, &rustls::version::TLS12),
        (TlsVersion::TLS13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (settings.min_version..=settings.max_version).contains(v))
    .map(|(_, p)| p)
    .collect();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| walker.error("tls_server_config.min_version", e.to_string()))?;
    let verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>> = match settings.client_auth {
        ClientAuth::NoClientCert => None,
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
            Some(Arc::new(crate::tls::AnyClientCert::new(
                settings.client_auth == ClientAuth::RequireAnyClientCert,
                provider.signature_verification_algorithms,
            )))
        }
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let ca = settings
                .client_ca
                .as_ref()
                .expect("parse demands a client CA for verifying modes");
            let ca_key = key_of(ca, "client_ca", "client_ca_file");
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(walker, ca, "client_ca", "client_ca_file")? {
                roots
                    .add(cert)
                    .map_err(|e| walker.error(&ca_key, format!("unusable CA certificate in {}: {e}", where_(ca))))?;
            }
            let mut verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            if settings.client_auth == ClientAuth::VerifyClientCertIfGiven {
                verifier = verifier.allow_unauthenticated();
            }
            Some(
                verifier
                    .build()
                    .map_err(|e| walker.error(&ca_key, format!("unusable client CA: {e}")))?,
            )
        }
    };
    let builder = match verifier {
        None => builder.with_no_client_auth(),
        Some(v) => builder.with_client_cert_verifier(v),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        walker.error(
            &key_key,
            format!(
                "the key does not fit the certificate of {}: {e}",
                where_(&settings.cert)
            ),
        )
    })?;
    config.ignore_client_order = settings.prefer_server_cipher_suites;
    // HTTP/1.1 only (see the module comment on http2).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// What `--check-config` and /status show of a web config: no hash, no key, no password.
pub fn summary(file: &Path, config: &WebConfig) -> Value {
    let pem = |p: Option<&Pem>| match p {
        None => Value::Null,
        Some(Pem::File(path)) => Value::String(path.display().to_string()),
        Some(Pem::Inline(_)) => Value::String("(inline)".into()),
    };
    serde_json::json!({
        "file": file,
        "tls": config.tls.as_ref().map(|t| serde_json::json!({
            "cert": pem(Some(&t.cert)),
            "key": pem(Some(&t.key)),
            "client_auth_type": t.client_auth,
            "client_ca": pem(t.client_ca.as_ref()),
            "min_version": t.min_version,
            "max_version": t.max_version,
            "prefer_server_cipher_suites": t.prefer_server_cipher_suites,
        })),
        "basic_auth_users": config.users.keys().collect::<Vec<_>>(),
        "headers": config.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        // The file may ask for HTTP/2; this server speaks HTTP/1.1 only.
        "http2_requested": config.http2,
        "http2_served": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2b$10$URDo1QUmjQm3A2S14J81g./YZCtQADBVGrhZ4ba8qRc7yGQ.r/Nva";

    fn parse_text(text: &str) -> Result<WebConfig, WebConfigError> {
        parse(Path::new("/etc/metrics-exporter/web.yml"), text)
    }

    fn error(text: &str) -> WebConfigError {
        parse_text(text).unwrap_err()
    }

    #[test]
    fn a_full_file_parses_with_paths_relative_to_its_directory() {
        let c = parse_text(&format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: /keys/server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\n  prefer_server_cipher_suites: false\nhttp_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n    X-XSS-Protection: ''\nbasic_auth_users:\n  prometheus: '{HASH}'\n"
        ))
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert, Pem::File("/etc/metrics-exporter/server.crt".into()));
        assert_eq!(tls.key, Pem::File("/keys/server.key".into()));
        assert_eq!(tls.client_ca, Some(Pem::File("/etc/metrics-exporter/ca.crt".into())));
        assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(
            (tls.min_version, tls.max_version),
            (TlsVersion::TLS13, TlsVersion::TLS13)
        );
        assert!(!tls.prefer_server_cipher_suites);
        assert_eq!(
            c.headers,
            [
                ("Strict-Transport-Security".to_owned(), "max-age=31536000".to_owned()),
                ("X-Frame-Options".to_owned(), "deny".to_owned())
            ]
        );
        assert!(!c.http2);
        assert_eq!(c.users["prometheus"].expose(), HASH);
    }

    #[test]
    fn defaults_are_exporter_toolkits() {
        let c = parse_text("tls_server_config:\n  cert_file: a\n  key_file: b\n").unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.client_auth, ClientAuth::NoClientCert);
        assert_eq!(
            (tls.min_version, tls.max_version),
            (TlsVersion::TLS12, TlsVersion::TLS13)
        );
        assert!(tls.prefer_server_cipher_suites);
        assert!(c.http2);
        // No TLS key set (or an empty file): plain HTTP.
        assert_eq!(
            parse_text("basic_auth_users:\n  u: '$2b$10$URDo1QUmjQm3A2S14J81g./YZCtQADBVGrhZ4ba8qRc7yGQ.r/Nva'\n")
                .unwrap()
                .tls,
            None
        );
        assert_eq!(parse_text("").unwrap().tls, None);
        assert_eq!(parse_text("tls_server_config:\n").unwrap().tls, None);
        assert_eq!(
            parse_text("tls_server_config:\n  min_version: TLS13\n").unwrap().tls,
            None
        );
    }

    #[test]
    fn each_invalid_key_is_named_with_the_file() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "tls_server_config:\n  cert_file: a\n",
                "tls_server_config.key_file",
                "missing",
            ),
            (
                "tls_server_config:\n  key_file: a\n",
                "tls_server_config.cert_file",
                "missing",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Sometimes\n",
                "tls_server_config.client_auth_type",
                "RequireAndVerifyClientCert",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: c\n",
                "tls_server_config.client_ca_file",
                "NoClientCert",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
                "tls_server_config.client_ca_file",
                "missing",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS11\n",
                "tls_server_config.min_version",
                "TLS12 and TLS13 only",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  max_version: SSL3\n",
                "tls_server_config.max_version",
                "not a TLS version",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
                "tls_server_config.min_version",
                "above max_version",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  cert: b\n  key_file: c\n",
                "tls_server_config.cert_file",
                "not both",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
                "tls_server_config.cipher_suites",
                "not supported",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [X25519]\n",
                "tls_server_config.curve_preferences",
                "not supported",
            ),
            (
                "tls_server_config:\n  client_allowed_sans: [a]\n",
                "tls_server_config.client_allowed_sans",
                "not supported",
            ),
            (
                "tls_server_config:\n  certfile: a\n",
                "tls_server_config.certfile",
                "unknown key",
            ),
            (
                "rate_limit:\n  interval: 1s\n  burst: 2\n",
                "rate_limit",
                "not supported",
            ),
            ("web:\n  x: 1\n", "web", "unknown key"),
            (
                "http_server_config:\n  headers:\n    Server: x\n",
                "http_server_config.headers.Server",
                "unknown key",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "http_server_config.headers.X-Frame-Options",
                "deny, sameorigin",
            ),
            (
                "http_server_config:\n  headers:\n    X-Content-Type-Options: sniff\n",
                "http_server_config.headers.X-Content-Type-Options",
                "nosniff",
            ),
            (
                "http_server_config:\n  http2: maybe\n",
                "http_server_config.http2",
                "true or false",
            ),
            ("basic_auth_users: [a]\n", "basic_auth_users", "mapping"),
            (
                "basic_auth_users:\n  alice: hunter2\n",
                "basic_auth_users.alice",
                "not a bcrypt hash",
            ),
            (
                "basic_auth_users:\n  alice: 12\n",
                "basic_auth_users.alice",
                "bcrypt hash",
            ),
            ("tls_server_config: [a]\n", "tls_server_config", "mapping"),
            (
                "tls_server_config:\n  cert_file: [a]\n",
                "tls_server_config.cert_file",
                "string",
            ),
            ("tls_server_config: {\n", "(file)", "not valid YAML"),
            // Found by fuzzing (web_config): a document that is not a mapping named the empty key
            // (`web.yml": : must be a mapping`).
            ("- tls_server_config\n", "(file)", "mapping"),
            ("just text\n", "(file)", "mapping"),
            ("? \"\"\n", "\"\"", "unknown key"),
            ("basic_auth_users:\n  a: x\n  a: y\n", "(file)", "not valid YAML"),
        ];
        for (text, key, problem) in cases {
            let e = error(text);
            assert_eq!(&e.key, key, "{text:?}: {e}");
            assert!(e.problem.contains(problem), "{text:?}: {e}");
            let line = e.to_string();
            assert!(
                line.starts_with("invalid WEB_CONFIG_FILE=\"/etc/metrics-exporter/web.yml\": "),
                "{line}"
            );
            assert!(!line.contains('\n'), "one line: {line}");
        }
    }

    #[test]
    fn no_error_quotes_a_secret() {
        // A hash that is not one, a password in its place, an inline key of the wrong type, a
        // syntax error next to a hash: none of the texts appears in the error.
        for (text, secret) in [
            ("basic_auth_users:\n  alice: s3cr3t-password\n", "s3cr3t-password"),
            ("basic_auth_users:\n  alice: [s3cr3t-password]\n", "s3cr3t-password"),
            ("basic_auth_users:\n  alice: '$2y$10$SECRETSECRET'\n", "SECRETSECRET"),
            ("basic_auth_users: s3cr3t-password\n", "s3cr3t-password"),
            ("tls_server_config:\n  key: [PRIVATEKEYTEXT]\n", "PRIVATEKEYTEXT"),
            (
                "basic_auth_users:\n  alice: '$2b$10$URDo1QUmjQm3A2S14J81g./YZCtQADBVGrhZ4ba8qRc7yGQ.r/Nva'\n  bob: [\n",
                "URDo1QUmjQm3A2S14J81g",
            ),
        ] {
            let e = error(text).to_string();
            assert!(!e.contains(secret), "{e}");
        }
        // Debug of a parsed config does not show the hash either.
        let c = parse_text(&format!("basic_auth_users:\n  alice: '{HASH}'\n")).unwrap();
        assert!(!format!("{c:?}").contains("URDo1QUm"));
        let summary = summary(Path::new("/w.yml"), &c).to_string();
        assert!(summary.contains("alice") && !summary.contains("URDo1QUm"), "{summary}");
    }

    #[test]
    fn the_readme_example_parses_and_its_hash_is_bcrypt() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## TLS and authentication").expect("README section")..];
        let start = section.find("```yaml\n").unwrap() + "```yaml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let c = parse_text(example).unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(tls.cert, Pem::File("/etc/metrics-exporter/server.crt".into()));
        assert_eq!(c.headers.len(), 3);
        // The example's hash is of the password "scrape-me".
        assert!(bcrypt::verify("scrape-me", c.users["prometheus"].expose()).unwrap());
    }

    #[test]
    fn files_that_cannot_be_read_name_the_key_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("web.yml");
        std::fs::write(
            &file,
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
        )
        .unwrap();
        let e = load(&file).unwrap_err();
        assert_eq!(e.key, "tls_server_config.cert_file");
        assert!(
            e.problem
                .contains(&dir.path().join("missing.crt").display().to_string()),
            "{e}"
        );
        std::fs::write(dir.path().join("missing.crt"), "not a certificate\n").unwrap();
        let e = load(&file).unwrap_err();
        assert_eq!(e.key, "tls_server_config.cert_file");
        assert!(e.problem.contains("no PEM certificate"), "{e}");
        let e = load(&dir.path().join("absent.yml")).unwrap_err();
        assert_eq!(e.key, "(file)");
    }
}
