//! A real Prometheus (Debian's `prometheus`) on a loopback port, with the caller's config and
//! its own storage in a temp dir; killed and its directory removed on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guest_rig::http;
use serde_json::Value as Json;

pub struct Prometheus {
    pub child: Child,
    pub address: SocketAddr,
    /// The `instance` label of the scraped target.
    pub instance: String,
    pub dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus with `config` (the text of prometheus.yml; relative paths in it are
    /// relative to [`Prometheus::dir`], which `prepare` may fill first) and waits until it is
    /// ready (30 s at most).
    pub fn start(config: &str, instance: String, prepare: impl FnOnce(&std::path::Path)) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = super::free_port();
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .expect("start prometheus");
        let mut prometheus = Prometheus {
            child,
            address,
            instance,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                let log = std::fs::read_to_string(prometheus.dir.path().join("stderr")).unwrap_or_default();
                panic!("prometheus exited with {status}: {log}");
            }
            if http::get(address, "/-/ready").is_ok_and(|r| r.status == 200) {
                return prometheus;
            }
            assert!(Instant::now() < deadline, "prometheus was not ready within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The instant vector `expr` evaluates to now, or Prometheus's error.
    pub fn query(&self, expr: &str) -> Result<Vec<Json>, String> {
        let path = format!("/api/v1/query?query={}", url_encode(expr));
        let response = http::get(self.address, &path).map_err(|e| e.to_string())?;
        let body = response.json();
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
