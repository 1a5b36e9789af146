//! The TLS and basic-auth layer of the HTTP server, driven by `WEB_CONFIG_FILE`
//! ([`crate::web_config`]).
//!
//! [`WebLayer`] holds the last good configuration and re-reads it when the file, or a
//! certificate, key or CA file it names, changes: checked (one `stat` per file) on every new
//! connection and every request, so a new certificate or a new password takes effect without a
//! restart, as in exporter-toolkit (which re-reads the file per request and the certificate per
//! handshake). A file that no longer loads leaves the last good configuration in force and is
//! reported once, by one error line and in /status. Whether the port speaks TLS is fixed at start.
//!
//! Basic auth follows exporter-toolkit: every request needs a user of `basic_auth_users` and
//! its password, checked against the bcrypt hash (50–100 ms at cost 10, on a blocking thread,
//! one at a time so a stream of wrong passwords costs at most one core). A successful check is
//! remembered per user as an HMAC of the password under a key made at start, keyed by the hash
//! it was checked against: the same password is then accepted by a constant-time comparison,
//! a different one (or the same after the hash changed) goes to bcrypt again. Failures are
//! never remembered, so a wrong password can never turn into a cached success.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::web_config::{self, Secret, WebConfig, WebConfigError};

/// A client-certificate verifier that asks for (or demands) a certificate without checking who
/// issued it: exporter-toolkit's `RequestClientCert` and `RequireAnyClientCert`. The client
/// must still prove it holds the certificate's key (the handshake signature is verified).
#[derive(Debug)]
pub struct AnyClientCert {
    mandatory: bool,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl AnyClientCert {
    pub fn new(mandatory: bool, algorithms: rustls::crypto::WebPkiSupportedAlgorithms) -> Self {
        AnyClientCert { mandatory, algorithms }
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// One configuration in force: what a connection and its requests are served with.
pub struct Active {
    pub config: WebConfig,
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    files: Vec<PathBuf>,
}

impl std::fmt::Debug for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Active")
            .field("config", &self.config)
            .field("tls", &self.acceptor.is_some())
            .finish_non_exhaustive()
    }
}

impl Active {
    fn new(loaded: web_config::Loaded) -> Active {
        let headers = loaded
            .config
            .headers
            .iter()
            // parse checked both; a pair that still fails is left out rather than sent broken.
            .filter_map(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect();
        Active {
            config: loaded.config,
            acceptor: loaded.tls.map(tokio_rustls::TlsAcceptor::from),
            headers,
            files: loaded.files,
        }
    }
}

/// What identifies a file's content without reading it.
type Stamp = Vec<Option<(u64, u64, u64, i64, i64, i64, i64)>>;

fn stamp(files: &[PathBuf]) -> Stamp {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f).ok().map(|m| {
                (
                    m.dev(),
                    m.ino(),
                    m.size(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec(),
                )
            })
        })
        .collect()
}

struct State {
    active: Arc<Active>,
    stamp: Stamp,
    /// The stamp of a version that failed to load, so it is tried (and reported) once.
    failed: Option<Stamp>,
    last_error: Option<String>,
    reloads: u64,
}

/// A successful check of (user, password) against `hash`.
struct Remembered {
    hash: Secret,
    tag: ring::hmac::Tag,
}

/// `WEB_CONFIG_FILE` in force, reloaded on change; see the module comment.
pub struct WebLayer {
    path: PathBuf,
    tls: bool,
    state: Mutex<State>,
    remembered: Mutex<HashMap<String, Remembered>>,
    remember_key: ring::hmac::Key,
    /// bcrypt runs one at a time.
    bcrypt_turn: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for WebLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebLayer")
            .field("path", &self.path)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl WebLayer {
    /// Loads the file at start; an error here stops the start (exit 2).
    pub fn load(path: &Path) -> Result<WebLayer, WebConfigError> {
        let before = stamp(&[path.to_path_buf()]);
        let loaded = web_config::load(path)?;
        let mut current = before;
        current.extend(stamp(&loaded.files[1..]));
        let active = Active::new(loaded);
        let rng = ring::rand::SystemRandom::new();
        let remember_key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).map_err(|_| WebConfigError {
            file: path.to_path_buf(),
            key: "basic_auth_users".into(),
            problem: "no random bytes for the key of the password cache".into(),
        })?;
        Ok(WebLayer {
            path: path.to_path_buf(),
            tls: active.acceptor.is_some(),
            state: Mutex::new(State {
                active: Arc::new(active),
                stamp: current,
                failed: None,
                last_error: None,
                reloads: 0,
            }),
            remembered: Mutex::new(HashMap::new()),
            remember_key,
            bcrypt_turn: tokio::sync::Mutex::new(()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the port speaks TLS (fixed at start).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The configuration in force, reloaded first if one of its files changed.
    pub fn current(&self) -> Arc<Active> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&state.active.files);
        if now == state.stamp || state.failed.as_ref() == Some(&now) {
            return Arc::clone(&state.active);
        }
        match web_config::load(&self.path).and_then(|loaded| {
            if loaded.tls.is_some() != self.tls {
                return Err(WebConfigError {
                    file: self.path.clone(),
                    key: "tls_server_config".into(),
                    problem: format!(
                        "TLS was {} at start; turning it {} needs a restart",
                        if self.tls { "on" } else { "off" },
                        if self.tls { "off" } else { "on" }
                    ),
                });
            }
            Ok(loaded)
        }) {
            Ok(loaded) => {
                let mut next = stamp(&loaded.files[..1]);
                next.extend(stamp(&loaded.files[1..]));
                let active = Arc::new(Active::new(loaded));
                self.remembered
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|user, _| active.config.users.contains_key(user));
                state.active = Arc::clone(&active);
                state.stamp = next;
                state.failed = None;
                state.last_error = None;
                state.reloads += 1;
                tracing::info!(file = %self.path.display(), users = active.config.users.len(), "WEB_CONFIG_FILE reloaded");
                active
            }
            Err(e) => {
                tracing::error!(error = %e, "WEB_CONFIG_FILE changed but does not load; the previous configuration stays in force");
                state.failed = Some(now);
                state.last_error = Some(e.to_string());
                Arc::clone(&state.active)
            }
        }
    }

    /// Whether the request's `Authorization` names a user of `active` and the right password
    /// (always true when the configuration has no users).
    pub async fn authorized(&self, active: &Active, headers: &HeaderMap) -> bool {
        let users = &active.config.users;
        if users.is_empty() {
            return true;
        }
        let Some((user, password)) = basic_credentials(headers) else {
            return false;
        };
        let known = users.get(&user);
        if let Some(hash) = known {
            let remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = remembered.get(&user)
                && r.hash == *hash
                && ring::hmac::verify(&self.remember_key, password.as_bytes(), r.tag.as_ref()).is_ok()
            {
                return true;
            }
        }
        // An unknown user costs a bcrypt as well, so timing does not tell which users exist.
        let hash = known.map(|h| h.expose().to_owned());
        let matches = {
            let _turn = self.bcrypt_turn.lock().await;
            let password = password.clone();
            // The decoy is made (once) on the blocking thread too: making it costs a bcrypt.
            tokio::task::spawn_blocking(move || {
                let against = match &hash {
                    Some(hash) => hash.as_str(),
                    None => decoy_hash(),
                };
                bcrypt::verify(password.as_bytes(), against).unwrap_or(false)
            })
            .await
            .unwrap_or(false)
        };
        match known {
            Some(hash) if matches => {
                let tag = ring::hmac::sign(&self.remember_key, password.as_bytes());
                self.remembered.lock().unwrap_or_else(|p| p.into_inner()).insert(
                    user,
                    Remembered {
                        hash: hash.clone(),
                        tag,
                    },
                );
                true
            }
            _ => false,
        }
    }

    /// For /status: the file, whether TLS is on, the users' names and the reload state; no
    /// hash, key or password.
    pub fn status(&self) -> serde_json::Value {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut value = web_config::summary(&self.path, &state.active.config);
        value["reloads"] = state.reloads.into();
        value["last_reload_error"] = state.last_error.clone().into();
        value
    }
}

impl crate::service::Component for WebLayer {
    fn name(&self) -> &'static str {
        "web_config"
    }
    fn healthy(&self) -> Option<bool> {
        // A file that fails to reload leaves the last good one serving: reported, not unhealthy.
        None
    }
    fn status(&self) -> serde_json::Value {
        WebLayer::status(self)
    }
}

/// A hash of a random password, checked against for unknown users; cost 10 like the hashes
/// exporter-toolkit's documentation makes.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let mut random = [0u8; 16];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
        bcrypt::hash(random, 10).unwrap_or_default()
    })
}

/// The (user, password) of an `Authorization: Basic` header (RFC 7617).
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let value = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The answer to a plain HTTP request on the TLS port (its first byte is not a TLS handshake
/// record), before the connection is closed.
pub const PLAIN_HTTP_ON_TLS_PORT: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// The first byte of every TLS connection: a handshake record (RFC 8446 section 5.1).
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            hyper::header::AUTHORIZATION,
            HeaderValue::from_str(authorization).unwrap(),
        );
        h
    }

    #[test]
    fn basic_credentials_follow_rfc_7617() {
        // "alice:open:sesame": the password may contain ':'.
        assert_eq!(
            basic_credentials(&headers("Basic YWxpY2U6b3BlbjpzZXNhbWU=")),
            Some(("alice".into(), "open:sesame".into()))
        );
        assert_eq!(
            basic_credentials(&headers("basic YWxpY2U6b3BlbjpzZXNhbWU=")),
            Some(("alice".into(), "open:sesame".into()))
        );
        assert_eq!(basic_credentials(&headers("Bearer abc")), None);
        assert_eq!(basic_credentials(&headers("Basic !!!")), None);
        // "alice" without ':'.
        assert_eq!(basic_credentials(&headers("Basic YWxpY2U=")), None);
        assert_eq!(basic_credentials(&HeaderMap::new()), None);
    }

    fn layer(dir: &Path, users: &[(&str, &str)]) -> WebLayer {
        let file = dir.join("web.yml");
        let mut text = String::from("basic_auth_users:\n");
        for (user, password) in users {
            text.push_str(&format!("  {user}: '{}'\n", bcrypt::hash(password, 4).unwrap()));
        }
        std::fs::write(&file, text).unwrap();
        WebLayer::load(&file).unwrap()
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        use base64::Engine;
        headers(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        ))
    }

    #[tokio::test]
    async fn only_successes_are_remembered_and_a_wrong_password_never_passes() {
        let dir = tempfile::tempdir().unwrap();
        let web = layer(dir.path(), &[("alice", "right")]);
        let active = web.current();
        assert!(!web.authorized(&active, &basic("alice", "wrong")).await);
        assert!(web.remembered.lock().unwrap().is_empty(), "a failure is not remembered");
        assert!(web.authorized(&active, &basic("alice", "right")).await);
        assert_eq!(web.remembered.lock().unwrap().len(), 1);
        // With a success remembered, a wrong password (also one that shares a prefix) fails.
        assert!(!web.authorized(&active, &basic("alice", "wrong")).await);
        assert!(!web.authorized(&active, &basic("alice", "righ")).await);
        assert!(!web.authorized(&active, &basic("alice", "right ")).await);
        assert!(!web.authorized(&active, &basic("bob", "right")).await);
        assert!(!web.authorized(&active, &HeaderMap::new()).await);
        assert!(web.authorized(&active, &basic("alice", "right")).await);
    }

    #[tokio::test]
    async fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let web = layer(dir.path(), &[("alice", "old")]);
        assert!(web.authorized(&web.current(), &basic("alice", "old")).await);
        // New password: the remembered success of the old one no longer counts.
        std::fs::write(
            dir.path().join("web.yml"),
            format!("basic_auth_users:\n  alice: '{}'\n", bcrypt::hash("new", 4).unwrap()),
        )
        .unwrap();
        let active = web.current();
        assert!(!web.authorized(&active, &basic("alice", "old")).await);
        assert!(web.authorized(&active, &basic("alice", "new")).await);
        assert_eq!(web.status()["reloads"], 1);
        // A broken file: the last good configuration stays, the error is reported.
        std::fs::write(
            dir.path().join("web.yml"),
            "basic_auth_users:\n  alice: plain-password\n",
        )
        .unwrap();
        let active = web.current();
        assert!(web.authorized(&active, &basic("alice", "new")).await);
        let status = web.status();
        let error = status["last_reload_error"].as_str().unwrap();
        assert!(error.contains("basic_auth_users.alice"), "{error}");
        assert!(!status.to_string().contains("plain-password"), "{status}");
        // Turning TLS on needs a restart.
        std::fs::write(
            dir.path().join("web.yml"),
            "tls_server_config:\n  cert_file: a\n  key_file: b\n",
        )
        .unwrap();
        web.current();
        assert_eq!(web.status()["reloads"], 1);
    }
}
