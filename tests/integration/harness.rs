//! Shared test harness: a gateway started in-process on an ephemeral port,
//! and stub backends that are real HTTP servers on ephemeral ports.

#[path = "../support/gateway.rs"]
mod gateway;
pub use gateway::Gateway;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::IntoResponse;
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A backend stub.
pub struct Stub {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Stub {
    /// Serves `router` on a fresh port; every request is counted.
    pub async fn serve(router: Router) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
        let addr = listener.local_addr().expect("local addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let router = router.layer(axum::middleware::from_fn(move |request: Request, next: axum::middleware::Next| {
            if request.uri().path() != "/health/" {
                counter.fetch_add(1, Ordering::SeqCst);
            }
            next.run(request)
        }));
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("stub serves");
        });
        Stub { addr, hits, task }
    }

    /// A stub answering every request with a JSON description of it,
    /// including `replica: name`.
    pub async fn echo(name: &str) -> Stub {
        Stub::serve(Router::new().fallback(echo).with_state(Arc::from(name))).await
    }

    /// Requests received, not counting health checks.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(State(name): State<Arc<str>>, request: Request) -> impl IntoResponse {
    let (parts, body) = request.into_parts();
    let body: Bytes = body.collect().await.map(|collected| collected.to_bytes()).unwrap_or_default();
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or("<binary>").to_owned()))
        .collect();
    axum::Json(json!({
        "replica": &*name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

/// A port on which nothing listens.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    addr
}

/// A `[services.<name>]` table for the given endpoints, with optional extra
/// lines, plus a route for it at `/<name>/`.
pub fn service(name: &str, endpoints: &[String], extra: &str) -> String {
    let endpoints = endpoints.iter().map(|url| format!("{url:?}")).collect::<Vec<_>>().join(", ");
    format!(
        "[services.{name}]\nendpoints = [{endpoints}]\n{extra}\n\n[[routes]]\nprefix = \"/{name}/\"\nservice = \"{name}\"\n\n"
    )
}

/// A configuration for tests with default server settings.
pub fn config(body: &str) -> String {
    config_with_server("", body)
}

/// A configuration whose `/readyz` is 503 while a service has no healthy
/// endpoint (`[server.readiness] require_healthy_endpoints`).
pub fn config_requiring_healthy_endpoints(body: &str) -> String {
    config_with_server(REQUIRE_HEALTHY_ENDPOINTS, body)
}

/// The `[server]` line of [`config_requiring_healthy_endpoints`].
pub const REQUIRE_HEALTHY_ENDPOINTS: &str = "readiness = { require_healthy_endpoints = true }";

/// A configuration for tests with extra `[server]` lines.
pub fn config_with_server(server: &str, body: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n{server}\n\n{body}")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

pub async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

/// Polls `condition` until it holds, failing after `limit`. For state that
/// changes in the background (health checks, ejection expiry), where there
/// is no event to await.
pub async fn eventually<F, Fut>(limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "condition not met within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends raw bytes on a new connection and returns everything the gateway
/// sends back until it closes the connection (at most 10 seconds).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the gateway did not close the connection; got so far: {}", String::from_utf8_lossy(&answer));
    String::from_utf8_lossy(&answer).into_owned()
}

/// A `GET` of `path` sent byte for byte, so no client library normalises it.
pub async fn raw_get(addr: SocketAddr, path: &str) -> String {
    raw_exchange(addr, format!("GET {path} HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n").as_bytes())
        .await
}

/// The status code of a raw HTTP answer.
pub fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// A backend that is not an HTTP server: it reads a request head, writes
/// `answer` byte for byte, then closes or, with `hold_open`, keeps the
/// connection open without a word more.
pub async fn raw_backend(answer: &'static [u8], hold_open: bool) -> (SocketAddr, JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0_u8; 1024];
                while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                    }
                }
                let _ = stream.write_all(answer).await;
                if hold_open {
                    std::future::pending::<()>().await;
                }
            });
        }
    });
    (addr, task)
}
