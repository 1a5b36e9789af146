//! WEB_CONFIG_FILE end to end (issue 14): the binary serving TLS and basic auth in
//! exporter-toolkit's format, proven with curl and with a real Prometheus scraping it, on
//! loopback only. Certificates are made per test by the `openssl` CLI in a temp dir (a CA, a
//! server certificate for 127.0.0.1, a client certificate from the CA and one from nobody).
//!
//! Each test checks as well that the passwords, hashes and key material it used appear nowhere
//! in the exporter's logs, /status or --check-config.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::prometheus::Prometheus;
use common::{Exporter, OnlyEnv, binary, fixture_env, require_command};

const USER: &str = "prometheus";
const PASSWORD: &str = "correct-horse-battery";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and localhost signed by it, a client certificate
/// signed by it, and a self-signed client certificate that no CA vouches for.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let ca: Vec<&str> = ["req", "-x509"]
            .into_iter()
            .chain(ec)
            .chain([
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=web-tls-test-ca",
            ])
            .collect();
        openssl(d, &ca);
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        Pki::issue(d, "server", "/CN=localhost", "server.ext");
        Pki::issue(d, "client", "/CN=scraper", "client.ext");
        let rogue: Vec<&str> = ["req", "-x509"]
            .into_iter()
            .chain(ec)
            .chain([
                "-keyout",
                "rogue.key",
                "-out",
                "rogue.crt",
                "-days",
                "2",
                "-subj",
                "/CN=rogue",
            ])
            .collect();
        openssl(d, &rogue);
        Pki { dir }
    }

    fn issue(d: &Path, name: &str, subject: &str, ext: &str) {
        let (key, csr, crt) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"));
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                subject,
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                ext,
            ],
        );
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The text of every private key: none may appear in logs, /status or --check-config.
    fn key_texts(&self) -> Vec<String> {
        ["ca.key", "server.key", "client.key"]
            .iter()
            .map(|k| {
                let text = std::fs::read_to_string(self.path(k)).unwrap();
                // The base64 body's first line is enough to recognise a leak.
                text.lines().nth(1).unwrap().to_owned()
            })
            .collect()
    }
}

fn hash(password: &str) -> String {
    bcrypt::hash(password, 6).unwrap()
}

/// A web config in `pki`'s directory (so relative paths work as in exporter-toolkit).
fn write_config(pki: &Pki, text: &str) -> PathBuf {
    let file = pki.path("web.yml");
    // Write then rename: the exporter never reads half a file.
    let tmp = pki.path("web.yml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    file
}

fn tls_config(extra_tls: &str, users: &[(&str, &str)]) -> String {
    let mut text = format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra_tls}");
    text.push_str("http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n");
    if !users.is_empty() {
        text.push_str("basic_auth_users:\n");
        for (user, hash) in users {
            text.push_str(&format!("  {user}: '{hash}'\n"));
        }
    }
    text
}

/// What curl saw: its exit status, the HTTP status (0: none), the response head and body, and
/// its stderr.
#[derive(Debug)]
struct Curl {
    exit: i32,
    status: u16,
    head: String,
    body: String,
    stderr: String,
}

fn curl(pki: &Pki, url: &str, extra: &[&str]) -> Curl {
    let head = tempfile::NamedTempFile::new().unwrap();
    let out: Output = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(pki.path("ca.crt"))
        .arg("-D")
        .arg(head.path())
        .args(["-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    Curl {
        exit: out.status.code().unwrap_or(-1),
        status: code.trim().parse().unwrap_or(0),
        head: std::fs::read_to_string(head.path()).unwrap_or_default(),
        body: body.to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn env_with(file: &Path) -> Vec<(String, String)> {
    let mut env = fixture_env("proxmox-host", "proxmox");
    env.push(("COLLECTION_INTERVAL".into(), "1".into()));
    env.push(("LOG_LEVEL".into(), "info".into()));
    env.push(("WEB_CONFIG_FILE".into(), file.display().to_string()));
    env
}

/// Starts the exporter with `file`, ready when `ready_args` fetch /metrics with 200 over TLS.
fn start(pki: &Pki, file: &Path, ready_args: &[&str]) -> Exporter {
    let args: Vec<String> = ready_args.iter().map(|s| s.to_string()).collect();
    Exporter::start_ready(Command::new(binary()), &env_with(file), |address| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(pki, &format!("https://{address}/metrics"), &args).status == 200
    })
}

fn available() -> bool {
    require_command("curl") && require_command("openssl")
}

/// None of `secrets` is in `text` (named `what` in the failure).
fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what} contains a secret ({} chars)",
            secret.len()
        );
    }
}

fn check_config(file: &Path) -> Output {
    Command::new(binary())
        .arg("--check-config")
        .only_env(&env_with(file))
        .output()
        .unwrap()
}

#[test]
fn basic_auth_over_tls_with_curl() {
    if !available() {
        return;
    }
    let pki = Pki::new();
    let hashed = hash(PASSWORD);
    let file = write_config(&pki, &tls_config("", &[(USER, &hashed)]));
    let right = format!("{USER}:{PASSWORD}");
    let mut exporter = start(&pki, &file, &["-u", &right]);
    let url = |path: &str| format!("https://{}{path}", exporter.address);

    let ok = curl(&pki, &url("/metrics"), &["-u", &right]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.body.contains("metrics_exporter_"), "samples in the body");
    assert!(
        ok.head.to_ascii_lowercase().contains("x-frame-options: deny"),
        "{}",
        ok.head
    );
    assert!(
        ok.head.to_ascii_lowercase().contains("x-content-type-options: nosniff"),
        "{}",
        ok.head
    );

    let wrong = curl(&pki, &url("/metrics"), &["-u", &format!("{USER}:not-the-password")]);
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert!(
        wrong.head.contains("WWW-Authenticate: Basic") || wrong.head.contains("www-authenticate: Basic"),
        "{}",
        wrong.head
    );
    assert!(!wrong.body.contains("metrics_exporter_"));
    // The configured headers are on refusals too, as exporter-toolkit sends them.
    assert!(
        wrong.head.to_ascii_lowercase().contains("x-frame-options: deny"),
        "{}",
        wrong.head
    );

    let unknown = curl(&pki, &url("/metrics"), &["-u", &format!("someone:{PASSWORD}")]);
    assert_eq!(unknown.status, 401, "{unknown:?}");
    let none = curl(&pki, &url("/metrics"), &[]);
    assert_eq!(none.status, 401, "{none:?}");
    assert!(
        none.head.to_ascii_lowercase().contains("www-authenticate: basic"),
        "{}",
        none.head
    );
    // Every endpoint is behind the password, /health and /status included.
    for path in ["/", "/health", "/status", "/collectors"] {
        assert_eq!(curl(&pki, &url(path), &[]).status, 401, "{path}");
    }
    assert_eq!(curl(&pki, &url("/collect"), &["-X", "POST"]).status, 401);

    // Plain HTTP to the TLS port: a clear 400 and the connection closed; TLS still served.
    let plain = curl(&pki, &format!("http://{}/metrics", exporter.address), &["-u", &right]);
    assert_eq!(plain.status, 400, "{plain:?}");
    assert!(plain.body.contains("HTTP request to an HTTPS server"), "{plain:?}");
    // Bytes that are neither TLS nor HTTP: closed without an answer.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(exporter.address).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"\x00\x01garbage").unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        assert!(buf.is_empty(), "{buf:?}");
    }
    assert_eq!(curl(&pki, &url("/metrics"), &["-u", &right]).status, 200);

    // No secret in /status, --check-config or the logs.
    let mut secrets = vec![PASSWORD.to_owned(), hashed.clone(), hashed[7..].to_owned()];
    secrets.extend(pki.key_texts());
    let status = curl(&pki, &url("/status"), &["-u", &right]);
    assert_eq!(status.status, 200);
    assert!(status.body.contains("\"web_config\""), "{}", status.body);
    assert!(status.body.contains(USER), "the user's name is shown: {}", status.body);
    assert_no_secret("/status", &status.body, &secrets);
    let report = check_config(&file);
    assert!(report.status.success(), "{report:?}");
    let report_text = String::from_utf8_lossy(&report.stdout);
    assert!(
        report_text.contains("RequestClientCert") || report_text.contains("NoClientCert"),
        "{report_text}"
    );
    assert_no_secret("--check-config", &report_text, &secrets);
    assert_no_secret(
        "--check-config stderr",
        &String::from_utf8_lossy(&report.stderr),
        &secrets,
    );
    assert!(exporter.terminate().success());
    let logs = exporter.stderr();
    assert!(logs.contains("metrics-exporter started"), "{logs}");
    assert_no_secret("the logs", &logs, &secrets);
}

#[test]
fn client_certificates_required_verified_and_missing() {
    if !available() {
        return;
    }
    let pki = Pki::new();
    let file = write_config(
        &pki,
        &tls_config(
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
            &[],
        ),
    );
    let (cert, key) = (pki.path("client.crt"), pki.path("client.key"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let exporter = start(&pki, &file, &["--cert", cert, "--key", key]);
    let url = format!("https://{}/metrics", exporter.address);

    let given = curl(&pki, &url, &["--cert", cert, "--key", key]);
    assert_eq!(given.status, 200, "{given:?}");
    let missing = curl(&pki, &url, &[]);
    assert_eq!(missing.status, 0, "no HTTP answer without a certificate: {missing:?}");
    assert_ne!(missing.exit, 0, "{missing:?}");
    let (rogue_cert, rogue_key) = (pki.path("rogue.crt"), pki.path("rogue.key"));
    let rogue = curl(
        &pki,
        &url,
        &[
            "--cert",
            rogue_cert.to_str().unwrap(),
            "--key",
            rogue_key.to_str().unwrap(),
        ],
    );
    assert_eq!(
        rogue.status, 0,
        "a certificate from no trusted CA is refused: {rogue:?}"
    );
    assert_ne!(rogue.exit, 0);
    // The server keeps serving.
    assert_eq!(curl(&pki, &url, &["--cert", cert, "--key", key]).status, 200);
}

#[test]
fn min_version_tls13_refuses_a_tls12_client() {
    if !available() {
        return;
    }
    let pki = Pki::new();
    let file = write_config(&pki, &tls_config("  min_version: TLS13\n", &[]));
    let exporter = start(&pki, &file, &[]);
    let url = format!("https://{}/metrics", exporter.address);
    let tls12 = curl(&pki, &url, &["--tlsv1.2", "--tls-max", "1.2"]);
    assert_eq!(tls12.status, 0, "{tls12:?}");
    assert_ne!(tls12.exit, 0, "{tls12:?}");
    assert_eq!(curl(&pki, &url, &["--tlsv1.3"]).status, 200);

    // And the default (TLS12 to TLS13) serves a TLS 1.2 client.
    let pki2 = Pki::new();
    let file2 = write_config(&pki2, &tls_config("", &[]));
    let exporter2 = start(&pki2, &file2, &[]);
    let url2 = format!("https://{}/metrics", exporter2.address);
    assert_eq!(curl(&pki2, &url2, &["--tlsv1.2", "--tls-max", "1.2"]).status, 200);
}

#[test]
fn a_changed_file_takes_effect_without_restart_and_a_broken_one_keeps_the_last_good() {
    if !available() {
        return;
    }
    let pki = Pki::new();
    let old_hash = hash("old-password");
    let file = write_config(&pki, &tls_config("", &[(USER, &old_hash)]));
    let old = format!("{USER}:old-password");
    let new = format!("{USER}:new-password");
    let mut exporter = start(&pki, &file, &["-u", &old]);
    let url = format!("https://{}/metrics", exporter.address);
    assert_eq!(curl(&pki, &url, &["-u", &old]).status, 200);

    // New password: the old one (remembered as a success) is refused, the new one accepted.
    let new_hash = hash("new-password");
    write_config(&pki, &tls_config("", &[(USER, &new_hash)]));
    assert_eq!(curl(&pki, &url, &["-u", &old]).status, 401);
    assert_eq!(curl(&pki, &url, &["-u", &new]).status, 200);

    // A new server certificate is served to the next connection.
    Pki::issue(pki.dir.path(), "server2", "/CN=rotated-certificate", "server.ext");
    std::fs::copy(pki.path("server2.key"), pki.path("server.key.new")).unwrap();
    std::fs::copy(pki.path("server2.crt"), pki.path("server.crt.new")).unwrap();
    std::fs::rename(pki.path("server.key.new"), pki.path("server.key")).unwrap();
    std::fs::rename(pki.path("server.crt.new"), pki.path("server.crt")).unwrap();
    let rotated = curl(&pki, &url, &["-u", &new, "-v"]);
    assert_eq!(rotated.status, 200, "{rotated:?}");
    assert!(rotated.stderr.contains("CN=rotated-certificate"), "{}", rotated.stderr);

    // A broken file: one error naming the key, the last good configuration still in force.
    write_config(&pki, &tls_config("  min_version: TLS10\n", &[(USER, &new_hash)]));
    for _ in 0..3 {
        assert_eq!(curl(&pki, &url, &["-u", &new]).status, 200);
    }
    assert_eq!(curl(&pki, &url, &["-u", &old]).status, 401);
    let status = curl(&pki, &format!("https://{}/status", exporter.address), &["-u", &new]);
    let status: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    let web = &status["exporter"]["components"]["web_config"]["state"];
    assert!(
        web["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("tls_server_config.min_version")),
        "{web}"
    );
    assert_eq!(
        web["reloads"], 2,
        "the password change and the certificate rotation: {web}"
    );
    assert!(exporter.terminate().success());
    let logs = exporter.stderr();
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains("does not load")).collect();
    assert_eq!(errors.len(), 1, "one error line for one broken version: {logs}");
    assert!(errors[0].contains("tls_server_config.min_version"), "{}", errors[0]);
    assert!(logs.contains("WEB_CONFIG_FILE reloaded"), "{logs}");
    let mut secrets = vec!["old-password".to_owned(), "new-password".to_owned(), old_hash, new_hash];
    secrets.extend(pki.key_texts());
    assert_no_secret("the logs", &logs, &secrets);
}

#[test]
fn an_invalid_file_stops_the_start_with_exit_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yml");
    let cases: &[(&str, &str)] = &[
        (
            "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  min_version: TLS11\n",
            "tls_server_config.min_version",
        ),
        (
            "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n",
            "tls_server_config.cert_file",
        ),
        (
            "basic_auth_users:\n  alice: hunter2-plain-text\n",
            "basic_auth_users.alice",
        ),
        (
            "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            "tls_server_config.cipher_suites",
        ),
        (
            "http_server_config:\n  headers:\n    Server: x\n",
            "http_server_config.headers.Server",
        ),
    ];
    for (text, key) in cases {
        std::fs::write(&file, text).unwrap();
        for args in [&[][..], &["--check-config"][..]] {
            let mut env = fixture_env("proxmox-host", "proxmox");
            env.push(("WEB_CONFIG_FILE".into(), file.display().to_string()));
            env.push(("LISTEN_ADDRESS".into(), "127.0.0.1".into()));
            env.push(("METRICS_PORT".into(), common::free_port().to_string()));
            let started = Instant::now();
            let out = Command::new(binary()).args(args).only_env(&env).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?} {text:?}: {stderr}");
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 1, "one line: {stderr}");
            assert!(
                lines[0].contains(&file.display().to_string()) && lines[0].contains(key),
                "{stderr}"
            );
            assert!(!stderr.contains("hunter2-plain-text"), "{stderr}");
            assert!(started.elapsed() < Duration::from_secs(30));
        }
    }
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth() {
    if !available() || !require_command("prometheus") {
        return;
    }
    let pki = Pki::new();
    let hashed = hash(PASSWORD);
    let file = write_config(&pki, &tls_config("", &[(USER, &hashed)]));
    let right = format!("{USER}:{PASSWORD}");
    let exporter = start(&pki, &file, &["-u", &right]);
    let ca = pki.path("ca.crt");
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: metrics-exporter\n    scheme: https\n    basic_auth:\n      username: {USER}\n      password_file: password\n    tls_config:\n      ca_file: {}\n    static_configs:\n      - targets: ['{}']\n",
        ca.display(),
        exporter.address
    );
    let prometheus = Prometheus::start(&config, exporter.address.to_string(), |dir| {
        std::fs::write(dir.join("password"), PASSWORD).unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = prometheus.query("up{job=\"metrics-exporter\"}").unwrap_or_default();
        let samples = prometheus
            .query("count({job=\"metrics-exporter\",__name__=~\"metrics_exporter_.+\"})")
            .unwrap_or_default();
        if up.first().and_then(|s| s["value"][1].as_str()) == Some("1")
            && samples
                .first()
                .and_then(|s| s["value"][1].as_str())
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n > 0)
        {
            break;
        }
        if Instant::now() > deadline {
            let targets = guest_rig::http::get(prometheus.address, "/api/v1/targets")
                .unwrap()
                .json();
            panic!("target not up with samples within 30 s: up={up:?} targets={targets}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // The same Prometheus with a wrong password sees the target down (401).
    let wrong_config = config.replace("password_file: password", "password: wrong");
    let wrong = Prometheus::start(&wrong_config, exporter.address.to_string(), |_| {});
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let up = wrong.query("up{job=\"metrics-exporter\"}").unwrap_or_default();
        if up.first().and_then(|s| s["value"][1].as_str()) == Some("0") {
            let targets = guest_rig::http::get(wrong.address, "/api/v1/targets").unwrap().json();
            assert!(targets.to_string().contains("401"), "{targets}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the wrong password was not refused within 30 s: {up:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn basic_auth_without_tls_keeps_plain_http() {
    if !available() {
        return;
    }
    let pki = Pki::new();
    let hashed = hash(PASSWORD);
    let file = write_config(&pki, &format!("basic_auth_users:\n  {USER}: '{hashed}'\n"));
    let right = format!("{USER}:{PASSWORD}");
    // Ready: /metrics answers 200 with the password (a 401 comes before the first collection).
    let exporter = Exporter::start_ready(Command::new(binary()), &env_with(&file), |address| {
        curl(&pki, &format!("http://{address}/metrics"), &["-u", &right]).status == 200
    });
    let url = format!("http://{}/metrics", exporter.address);
    let ok = curl(&pki, &url, &["-u", &right]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.body.contains("metrics_exporter_"));
    assert_eq!(curl(&pki, &url, &["-u", &format!("{USER}:wrong")]).status, 401);
    assert_eq!(curl(&pki, &url, &[]).status, 401);
    // No TLS on this port.
    assert_eq!(
        curl(&pki, &format!("https://{}/metrics", exporter.address), &["-u", &right]).status,
        0
    );
}
