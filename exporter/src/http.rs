//! The HTTP side: a plain routing function ([`route`]) that tests call without a socket, and
//! [`serve`], which runs it on hyper 1 with the [`Limits`] below (first-byte and header read
//! timeouts, a header size limit, a request body limit, a bound on requests served at once)
//! and graceful shutdown. With `WEB_CONFIG_FILE` ([`serve_with`] and [`crate::tls::WebLayer`])
//! connections are TLS and requests need basic auth; the router itself does not change.
//!
//! Endpoints: `GET /` (landing page), `GET /metrics` (the latest snapshot, pre-encoded;
//! OpenMetrics when the scraper asks for it, gzip when it accepts it), `GET /health`,
//! `GET /status`, `GET /collectors`, `POST /collect`. HEAD works wherever GET does.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::encode::prometheus::{OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::service::{App, COLLECT_REQUEST_MIN_SPACING, CollectAnswer, Freshness, Published};

pub type Body = Full<Bytes>;

/// Limits of the server. README "Endpoints" documents each with the status it answers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A connection that sends no byte within this time is closed (no response: there is no
    /// request to answer). It holds no buffer and no request slot while it waits.
    pub first_byte_timeout: Duration,
    /// A client must send its complete request head within this time of its first byte (and a
    /// keep-alive connection its next head within this time of the previous response);
    /// hyper's `header_read_timeout`, which closes the connection without a response.
    pub header_read_timeout: Duration,
    /// Largest request head accepted: larger heads are answered 431 and the connection closed
    /// (hyper's `max_header_size`).
    pub max_header_bytes: usize,
    /// Largest request body accepted (no endpoint takes one): a larger Content-Length is
    /// answered 413 without reading the body, a chunked body is read up to this size only;
    /// the connection is closed either way.
    pub max_body_bytes: usize,
    /// A request body must arrive within this time, else 408 and the connection is closed.
    pub body_read_timeout: Duration,
    /// Requests routed at once; further ones wait for a slot. Idle connections and POST
    /// /collect waiting for a collection hold none.
    pub max_requests_in_progress: usize,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            first_byte_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024,
            body_read_timeout: Duration::from_secs(10),
            max_requests_in_progress: 64,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut text = serde_json::to_vec_pretty(value).unwrap_or_default();
    text.push(b'\n');
    respond(status, "application/json", text)
}

fn error_text(status: StatusCode, message: &str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

/// Routes one request. The body of the request is never read (no endpoint takes one).
pub async fn route<B>(request: Request<B>, app: &App) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path();
    let allowed: &'static str = match path {
        "/" | "/metrics" | "/health" | "/status" | "/collectors" => "GET, HEAD",
        "/collect" => "POST",
        _ => return error_text(StatusCode::NOT_FOUND, "not found; see / for the endpoints"),
    };
    let is_get = method == Method::GET || method == Method::HEAD;
    let method_ok = if allowed == "POST" {
        method == Method::POST
    } else {
        is_get
    };
    if !method_ok {
        let mut response = error_text(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method not allowed; allowed: {allowed}"),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allowed));
        return response;
    }
    let mut response = match path {
        "/" => landing(app),
        "/metrics" => metrics(&request, app.latest()),
        "/health" => health(app),
        "/status" => json(StatusCode::OK, &status(app)),
        "/collectors" => json(StatusCode::OK, &collectors(app)),
        _ => match app.collect_now(wants_to_wait(&request)).await {
            Ok(answer) => collect_response(&answer),
            Err(e) => error_text(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        },
    };
    if method == Method::HEAD {
        // Same headers as GET (Content-Length included), no body.
        let length = response.body().size_hint_exact();
        *response.body_mut() = Full::new(Bytes::new());
        if let Some(length) = length {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
    }
    response
}

/// `POST /collect?wait`: the client would rather wait (at most
/// [`COLLECT_REQUEST_MIN_SPACING`]) for a new collection than get the latest one.
fn wants_to_wait<B>(request: &Request<B>) -> bool {
    request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| matches!(p, "wait" | "wait=1" | "wait=true")))
}

trait ExactSize {
    fn size_hint_exact(&self) -> Option<u64>;
}

impl ExactSize for Body {
    fn size_hint_exact(&self) -> Option<u64> {
        hyper::body::Body::size_hint(self).exact()
    }
}

fn wants(request_header: Option<&HeaderValue>, token: &str) -> bool {
    request_header
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',').any(|part| {
                let mut pieces = part.split(';');
                let name = pieces.next().unwrap_or("").trim();
                let refused = pieces.any(|p| {
                    let p = p.trim();
                    p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
                });
                name.eq_ignore_ascii_case(token) && !refused
            })
        })
        .unwrap_or(false)
}

fn metrics<B>(request: &Request<B>, latest: Option<Arc<Published>>) -> Response<Body> {
    let Some(published) = latest else {
        return error_text(StatusCode::SERVICE_UNAVAILABLE, "no collection has finished yet");
    };
    let openmetrics = wants(request.headers().get(header::ACCEPT), "application/openmetrics-text");
    let gzip = wants(request.headers().get(header::ACCEPT_ENCODING), "gzip");
    let (content_type, body) = match (openmetrics, gzip) {
        (false, false) => (TEXT_CONTENT_TYPE, published.text()),
        (false, true) => (TEXT_CONTENT_TYPE, published.text_gzip()),
        (true, false) => (OPENMETRICS_CONTENT_TYPE, published.openmetrics()),
        (true, true) => (OPENMETRICS_CONTENT_TYPE, published.openmetrics_gzip()),
    };
    let mut response = respond(StatusCode::OK, content_type, body);
    if gzip {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
    response
}

/// The seed's /health fields; 503 when the last successful collection is older than twice
/// the interval (or none has succeeded yet).
pub fn health_value(app: &App) -> (StatusCode, serde_json::Value) {
    let stats = app.stats();
    let interval = app.config.collection_interval;
    let ago = stats.last_success.map(|t| t.elapsed());
    let fresh = ago.is_some_and(|a| a <= interval * 2);
    let exporter_healthy = app.exporter_healthy();
    let body = serde_json::json!({
        "status": if fresh { "healthy" } else { "unhealthy" },
        "last_collection_seconds_ago": ago.map(|a| a.as_secs_f64()),
        "collection_interval": interval.as_secs(),
        "total_collections": stats.total_collections,
        "collection_errors": stats.collection_errors,
        "export_format": app.config.export_format.as_str(),
        "exporter_healthy": exporter_healthy,
    });
    (
        if fresh {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body,
    )
}

fn health(app: &App) -> Response<Body> {
    let (status, body) = health_value(app);
    json(status, &body)
}

fn status(app: &App) -> serde_json::Value {
    let stats = app.stats();
    let (_, health) = health_value(app);
    let collectors: Vec<serde_json::Value> = app
        .enabled
        .iter()
        .map(|name| {
            let outcome = stats.last_outcomes.iter().find(|o| o.name == *name);
            let notes = app
                .notes
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, n)| n.clone())
                .unwrap_or_default();
            serde_json::json!({
                "name": name,
                "last_duration_seconds": outcome.map(|o| o.duration_seconds),
                "last_success": outcome.map(|o| o.success),
                "last_error": outcome.and_then(|o| o.error.clone()),
                "timed_out": outcome.map(|o| o.timed_out),
                "series": outcome.map(|o| o.series),
                "notes": notes,
            })
        })
        .collect();
    let components: serde_json::Map<String, serde_json::Value> = app
        .components
        .iter()
        .map(|c| {
            (
                c.name().to_owned(),
                serde_json::json!({ "healthy": c.healthy(), "state": c.status() }),
            )
        })
        .collect();
    serde_json::json!({
        "service": {
            "name": "metrics-exporter",
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_seconds": app.started.elapsed().as_secs_f64(),
        },
        "platform": {
            "detected": app.detection.platform,
            "forced": app.detection.forced,
            "evidence": app.detection.evidence,
            "identity": *app.identity,
            "identity_sources": app.identity_sources,
        },
        "collection": {
            "interval_seconds": app.config.collection_interval.as_secs(),
            "total_collections": stats.total_collections,
            "collection_errors": stats.collection_errors,
            "last_duration_seconds": stats.last_duration_seconds,
            "health": health,
        },
        "collectors": collectors,
        "exporter": {
            "format": app.config.export_format.as_str(),
            "healthy": app.exporter_healthy(),
            "components": components,
        },
        "config": app.config,
    })
}

fn collectors(app: &App) -> serde_json::Value {
    let list: Vec<serde_json::Value> = app
        .catalogue
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name,
                "description": c.description,
                "enabled": app.enabled.contains(&c.name),
                "default_on": c.platforms.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "platform": app.detection.platform, "collectors": list })
}

/// The JSON answer of POST /collect: the collection's sequence, duration, series and outcomes,
/// whether it is `fresh` (started for this request or joined in flight) and, when not, why and
/// when to ask again (also as a `Retry-After` header, in whole seconds).
fn collect_response(answer: &CollectAnswer) -> Response<Body> {
    let c = &answer.published.collection;
    let (fresh, reason, retry_after) = match answer.freshness {
        Freshness::Started => (true, "started for this request".to_owned(), None),
        Freshness::Joined => (true, "joined the collection in flight".to_owned(), None),
        Freshness::RateLimited { since, retry_after } => (
            false,
            format!(
                "rate limited: a collection started {:.3} s ago, at most one per {} s is started by requests; this is the latest one",
                since.as_secs_f64(),
                COLLECT_REQUEST_MIN_SPACING.as_secs_f64()
            ),
            Some(retry_after),
        ),
    };
    let body = serde_json::json!({
        "sequence": c.snapshot.sequence,
        "duration_seconds": c.duration.as_secs_f64(),
        "series": c.snapshot.series_count(),
        "fresh": fresh,
        "reason": reason,
        "retry_after_seconds": retry_after.map(|d| d.as_secs_f64()),
        "collectors": c.outcomes,
    });
    let mut response = json(StatusCode::OK, &body);
    if let Some(retry_after) = retry_after {
        // Retry-After counts whole seconds (RFC 9110): round up so a retry is not limited again.
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn landing(app: &App) -> Response<Body> {
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>metrics-exporter</title></head>\n<body>\n\
         <h1>metrics-exporter {version}</h1>\n<p>Platform: {platform}; host: {host}</p>\n<ul>\n\
         <li><a href=\"/metrics\">/metrics</a>: Prometheus text</li>\n<li><a href=\"/health\">/health</a></li>\n\
         <li><a href=\"/status\">/status</a></li>\n<li><a href=\"/collectors\">/collectors</a></li>\n\
         <li>POST /collect: collect now</li>\n</ul>\n</body></html>\n",
        version = env!("CARGO_PKG_VERSION"),
        platform = app.detection.platform.as_str(),
        host = escape(&app.identity.host_name),
    );
    respond(StatusCode::OK, "text/html; charset=utf-8", page)
}

/// A refusal: `status` with a one-line reason, and the connection closed after it (the
/// rest of what the client sends is not read).
fn refuse_and_close(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = error_text(status, message);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Reads and discards a request body of at most `limits.max_body_bytes` (no endpoint takes a
/// body). A larger declared Content-Length is refused without reading a byte of it; a chunked
/// body is read only up to the limit; a body slower than `limits.body_read_timeout` is cut.
async fn discard_small_body<B>(body: B, limits: &Limits) -> Result<(), Response<Body>>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    let too_large = || {
        refuse_and_close(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "request body larger than {} bytes; no endpoint takes a body",
                limits.max_body_bytes
            ),
        )
    };
    if body.size_hint().lower() > limits.max_body_bytes as u64 {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, limits.max_body_bytes);
    match tokio::time::timeout(limits.body_read_timeout, limited.collect()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(refuse_and_close(
            StatusCode::BAD_REQUEST,
            &format!("unreadable request body: {e}"),
        )),
        Err(_) => Err(refuse_and_close(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "request body not received within {} s",
                limits.body_read_timeout.as_secs_f64()
            ),
        )),
    }
}

/// One request on a connection: the body bounded, then the router, holding one of the
/// `slots` (requests routed at once). POST /collect holds none: while it waits for the
/// collection loop it costs nothing, and the loop's rate rule bounds the work it causes.
///
/// With a web config, the request must pass its basic auth first (401 otherwise), and every
/// response carries the config's extra headers.
async fn handle<B>(
    request: Request<B>,
    app: &App,
    slots: &Semaphore,
    limits: &Limits,
    web: Option<&crate::tls::WebLayer>,
) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let active = web.map(|w| w.current());
    let mut response = async {
        let (parts, body) = request.into_parts();
        if let Err(refusal) = discard_small_body(body, limits).await {
            return refusal;
        }
        if let (Some(web), Some(active)) = (web, &active)
            && !web.authorized(active, &parts.headers).await
        {
            let mut refusal = error_text(StatusCode::UNAUTHORIZED, "unauthorized");
            refusal.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"metrics-exporter\", charset=\"UTF-8\""),
            );
            return refusal;
        }
        let request = Request::from_parts(parts, ());
        let _slot = if request.uri().path() == "/collect" {
            None
        } else {
            Some(slots.acquire().await.expect("the slot semaphore is never closed"))
        };
        route(request, app).await
    }
    .await;
    if let Some(active) = &active {
        for (name, value) in &active.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
    response
}

/// Serves one connection with hyper, watched by the graceful shutdown.
#[allow(clippy::too_many_arguments)]
async fn serve_connection<S>(
    stream: S,
    peer: std::net::SocketAddr,
    app: Arc<App>,
    slots: Arc<Semaphore>,
    limits: Limits,
    web: Option<Arc<crate::tls::WebLayer>>,
    builder: hyper::server::conn::http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let app = Arc::clone(&app);
        let slots = Arc::clone(&slots);
        let web = web.clone();
        async move { Ok::<_, Infallible>(handle(request, &app, &slots, &limits, web.as_deref()).await) }
    });
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Serves until `shutdown` turns true, then stops accepting, lets requests in flight finish
/// (bounded by `limits.shutdown_grace`) and returns.
///
/// Accepting never waits for a slot: each connection gets a task that first waits, with no
/// buffer, for the client's first byte (`limits.first_byte_timeout`), and only then is handed
/// to hyper. So a thousand idle connections cost a thousand small tasks and sockets and are
/// closed after the timeout, and a scrape connecting among them is served at once.
pub async fn serve(listener: TcpListener, app: Arc<App>, limits: Limits, shutdown: watch::Receiver<bool>) {
    serve_with(listener, app, limits, None, shutdown).await;
}

/// [`serve`] with `WEB_CONFIG_FILE` in force: when it configures TLS, each connection is a TLS
/// handshake (bounded by `limits.header_read_timeout`) after its first byte, with the
/// configuration in force at that moment; a plain HTTP request on the port gets a 400 saying
/// so and is closed. Basic auth and headers apply per request (`handle`).
pub async fn serve_with(
    listener: TcpListener,
    app: Arc<App>,
    limits: Limits,
    web: Option<Arc<crate::tls::WebLayer>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_requests_in_progress));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Some(limits.header_read_timeout))
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = crate::service::stopped(&mut shutdown) => break,
        };
        // A response is written as head + body in a few large writes; with Nagle the last
        // partial segment of a body waits for the client's ACK of the previous ones.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let app = Arc::clone(&app);
        let slots = Arc::clone(&slots);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let mut stop = shutdown.clone();
        let web = web.clone();
        let task = async move {
            // peek, not readable(): tokio may report a fresh socket readable before any
            // byte came (measured: all of 1,000 idle connections), which would hand each to
            // hyper and its 8 KiB read buffer.
            let mut first = [0u8; 1];
            let first_byte = tokio::select! {
                peeked = tokio::time::timeout(limits.first_byte_timeout, stream.peek(&mut first)) => peeked,
                _ = crate::service::stopped(&mut stop) => return,
            };
            match first_byte {
                Ok(Ok(0)) => return, // closed by the client before sending anything
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "connection failed before its first byte");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "no byte within the first-byte timeout; closed");
                    return;
                }
            }
            let acceptor = web
                .as_ref()
                .filter(|w| w.tls())
                .and_then(|w| w.current().acceptor.clone());
            let Some(acceptor) = acceptor else {
                // Boxed: the connection's state (some KB) is allocated only now, not in every
                // task that waits for a first byte.
                Box::pin(serve_connection(
                    stream, peer, app, slots, limits, web, builder, watcher,
                ))
                .await;
                return;
            };
            if first[0] != crate::tls::TLS_HANDSHAKE_RECORD {
                use tokio::io::AsyncWriteExt;
                let mut stream = stream;
                if first[0].is_ascii_uppercase() {
                    let _ = stream.write_all(crate::tls::PLAIN_HTTP_ON_TLS_PORT).await;
                }
                let _ = stream.shutdown().await;
                tracing::debug!(%peer, "not a TLS handshake on the TLS port; closed");
                return;
            }
            let handshake = tokio::select! {
                done = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)) => done,
                _ = crate::service::stopped(&mut stop) => return,
            };
            match handshake {
                Ok(Ok(tls)) => {
                    Box::pin(serve_connection(tls, peer, app, slots, limits, web, builder, watcher)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake not completed within the header timeout; closed"),
            }
        };
        tokio::spawn(task);
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the shutdown grace period; closing them");
    }
}
