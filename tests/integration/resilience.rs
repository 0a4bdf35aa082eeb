//! Passive ejection and recovery, active health checks, retries and the
//! retry budget, client-side timeouts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::stream;
use http::StatusCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::harness::{
    client, closed_port, config, config_requiring_healthy_endpoints, config_with_server, eventually, json_of,
    raw_exchange, service, status_of, Gateway, Stub,
};

/// A stub whose answers switch between 200 and `failure` at the test's command.
async fn switchable(failure: StatusCode) -> (Stub, Arc<AtomicBool>) {
    let failing = Arc::new(AtomicBool::new(true));
    let router = Router::new()
        .fallback(move |State(failing): State<Arc<AtomicBool>>, request: Request| async move {
            let status = if failing.load(Ordering::SeqCst) { failure } else { StatusCode::OK };
            let _ = axum::body::to_bytes(request.into_body(), usize::MAX).await;
            (status, "switchable").into_response()
        })
        .with_state(Arc::clone(&failing));
    (Stub::serve(router).await, failing)
}

async fn get(gateway: &Gateway, path: &str) -> Response<()> {
    let response = client().get(gateway.url(path)).send().await.expect("response");
    let mut answer = Response::new(());
    *answer.status_mut() = response.status();
    answer
}

#[tokio::test]
async fn a_failing_replica_is_ejected_then_taken_back_after_the_back_off() {
    let (flaky, failing) = switchable(StatusCode::INTERNAL_SERVER_ERROR).await;
    let steady = Stub::echo("steady").await;
    let extra = "health_check = { enabled = false }\nretry = { attempts = 0 }\n\
                 passive_health = { consecutive_failures = 3, base_ejection = \"3s\" }";
    let gateway = Gateway::start(&config(&service("api", &[flaky.url(), steady.url()], extra))).await;

    // Round robin alternates, so six requests give the flaky replica three failures.
    for _ in 0..6 {
        get(&gateway, "/api/x/").await;
    }
    assert_eq!(flaky.hits(), 3);
    for _ in 0..10 {
        assert_eq!(get(&gateway, "/api/x/").await.status(), StatusCode::OK, "only the steady replica answers");
    }
    assert_eq!(flaky.hits(), 3, "the ejected replica gets no traffic");

    failing.store(false, Ordering::SeqCst);
    // The ejection is long enough that the ten requests above never outlast
    // it, even on a loaded machine.
    eventually(Duration::from_secs(15), || async {
        get(&gateway, "/api/x/").await;
        flaky.hits() > 3
    })
    .await;
}

#[tokio::test]
async fn active_health_checks_take_a_replica_out_and_back() {
    let (checked, failing) = switchable(StatusCode::SERVICE_UNAVAILABLE).await;
    let steady = Stub::echo("steady").await;
    let extra = "retry = { attempts = 0 }\n\
                 health_check = { interval = \"50ms\", unhealthy_threshold = 1, healthy_threshold = 1 }";
    let toml = config(&format!(
        "{}{}",
        service("api", &[checked.url(), steady.url()], extra),
        service("other", &[steady.url()], "health_check = { enabled = false }")
    ));
    let gateway = Gateway::start(&toml).await;

    // Wait for the checker to act, then every request goes to the steady replica.
    let checked_hits_before = checked.hits();
    eventually(Duration::from_secs(5), || async {
        let before = steady.hits();
        get(&gateway, "/api/x/").await;
        get(&gateway, "/api/x/").await;
        steady.hits() == before + 2
    })
    .await;
    let frozen = checked.hits();
    for _ in 0..10 {
        get(&gateway, "/api/x/").await;
    }
    assert_eq!(checked.hits(), frozen, "a replica failing checks gets no traffic");
    assert!(frozen <= checked_hits_before + 2);

    failing.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(5), || async {
        get(&gateway, "/api/x/").await;
        checked.hits() > frozen
    })
    .await;
}

#[tokio::test]
async fn readiness_reports_a_service_whose_replicas_all_fail_checks() {
    let (checked, failing) = switchable(StatusCode::SERVICE_UNAVAILABLE).await;
    let extra = "health_check = { interval = \"50ms\", unhealthy_threshold = 1 }";
    let gateway = Gateway::start(&config_requiring_healthy_endpoints(&service("api", &[checked.url()], extra))).await;
    eventually(Duration::from_secs(5), || async {
        client().get(gateway.url("/readyz")).send().await.expect("response").status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let response = client().get(gateway.url("/api/x/")).send().await.expect("response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    failing.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(5), || async {
        client().get(gateway.url("/readyz")).send().await.expect("response").status() == StatusCode::OK
    })
    .await;
}

#[tokio::test]
async fn idempotent_requests_answered_503_are_retried_on_another_replica() {
    let (unavailable, _) = switchable(StatusCode::SERVICE_UNAVAILABLE).await;
    let steady = Stub::echo("steady").await;
    let extra = "health_check = { enabled = false }\npassive_health = { enabled = false }";
    let gateway = Gateway::start(&config(&service("api", &[unavailable.url(), steady.url()], extra))).await;

    for _ in 0..4 {
        let response = client().get(gateway.url("/api/x/")).send().await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
    }
    // Round robin starts each request on the failing replica (the retry
    // advances the turn), and every 503 is retried on the steady one.
    assert_eq!(unavailable.hits(), 4);
    assert_eq!(steady.hits(), 4);
}

#[tokio::test]
async fn a_post_is_retried_only_when_the_connection_failed() {
    let dead = closed_port().await;
    let (unavailable, _) = switchable(StatusCode::SERVICE_UNAVAILABLE).await;
    let steady = Stub::echo("steady").await;
    let extra = "health_check = { enabled = false }\npassive_health = { enabled = false }";
    let toml = format!(
        "{}{}",
        service("dead", &[format!("http://{dead}"), steady.url()], extra),
        service("busy", &[unavailable.url(), steady.url()], extra),
    );
    let gateway = Gateway::start(&config(&toml)).await;

    // Connect failures: nothing was sent, so the POST and its body go to the
    // other replica intact.
    for index in 0..2 {
        let response = client()
            .post(gateway.url("/dead/checkout/"))
            .body(format!("order-{index}"))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(json_of(response).await["body"], format!("order-{index}"));
    }

    // A 503 to a POST came from a replica that saw the request: not retried.
    // Round robin sends the first request of a service to its first replica.
    let before = steady.hits();
    let response = client().post(gateway.url("/busy/checkout/")).body("order").send().await.expect("response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(unavailable.hits(), 1);
    assert_eq!(steady.hits(), before, "the 503 POST was not retried");
}

#[tokio::test]
async fn a_streamed_body_is_not_replayed() {
    let (unavailable, _) = switchable(StatusCode::SERVICE_UNAVAILABLE).await;
    let extra = "health_check = { enabled = false }\npassive_health = { enabled = false }";
    let steady = Stub::echo("steady").await;
    let gateway = Gateway::start(&config(&service("api", &[unavailable.url(), steady.url()], extra))).await;

    // PUT is idempotent, but once its streamed body went to the first
    // replica there is nothing left to send to a second one.
    let chunks: Vec<Result<&'static str, std::io::Error>> = vec![Ok("part one, "), Ok("part two")];
    let response = client()
        .put(gateway.url("/api/doc/"))
        .body(reqwest::Body::wrap_stream(stream::iter(chunks)))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(unavailable.hits(), 1);
    assert_eq!(steady.hits(), 0, "the streamed PUT answered 503 was not sent again");

    // The same PUT with a body of known length that the backend consumed is
    // not replayed either; a bodiless GET is.
    let response = client().get(gateway.url("/api/doc/")).send().await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_retry_budget_caps_retries() {
    let (unavailable, _) = switchable(StatusCode::SERVICE_UNAVAILABLE).await;
    let (also_unavailable, _) = switchable(StatusCode::SERVICE_UNAVAILABLE).await;
    let extra = "health_check = { enabled = false }\npassive_health = { enabled = false }\n\
                 retry = { attempts = 1, budget_percent = 0, min_per_second = 0 }";
    let gateway = Gateway::start(&config(&service("api", &[unavailable.url(), also_unavailable.url()], extra))).await;
    for _ in 0..20 {
        assert_eq!(get(&gateway, "/api/x/").await.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(unavailable.hits() + also_unavailable.hits(), 20, "an empty budget allows no retry at all");

    let extra = "health_check = { enabled = false }\npassive_health = { enabled = false }\n\
                 retry = { attempts = 1, budget_percent = 20, min_per_second = 0 }";
    let (first, _) = switchable(StatusCode::SERVICE_UNAVAILABLE).await;
    let (second, _) = switchable(StatusCode::SERVICE_UNAVAILABLE).await;
    let gateway = Gateway::start(&config(&service("api", &[first.url(), second.url()], extra))).await;
    for _ in 0..50 {
        get(&gateway, "/api/x/").await;
    }
    let retries = first.hits() + second.hits() - 50;
    assert!((5..=10).contains(&retries), "20 % of 50 requests allows about 10 retries, got {retries}");
}

#[tokio::test]
async fn a_client_stalling_mid_body_gets_408() {
    let backend = Stub::echo("api").await;
    let toml = config_with_server("body_read_timeout = \"200ms\"", &service("api", &[backend.url()], ""));
    let gateway = Gateway::start(&toml).await;

    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<&'static str, std::io::Error>>(1);
    sender.send(Ok("the beginning")).await.expect("send");
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        client()
            .post(gateway.url("/api/upload/"))
            .body(reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(receiver)))
            .send(),
    )
    .await
    .expect("the gateway answers instead of waiting forever")
    .expect("response");
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(json_of(response).await["error"]["code"], "body_timeout");
    drop(sender);
}

/// A backend that is not an HTTP server: it reads each request whole, then
/// closes the first `hang_ups` connections without a word and answers
/// `200 ok` on later ones. Returns its URL, the request heads it read, and
/// the task that serves it.
async fn hangs_up_first(hang_ups: usize) -> (String, Arc<std::sync::Mutex<Vec<String>>>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    let heads: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&heads);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0_u8; 1024];
                // Read the head, then a body of `Content-Length` or chunks up to the last one.
                let complete = |request: &[u8]| {
                    let Some(end) = request.windows(4).position(|window| window == b"\r\n\r\n") else {
                        return false;
                    };
                    let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                    let body = &request[end + 4..];
                    if head.contains("transfer-encoding: chunked") {
                        return body.ends_with(b"0\r\n\r\n");
                    }
                    let length = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .and_then(|value| value.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    body.len() >= length
                };
                while !complete(&request) {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                let count = {
                    let mut seen = seen.lock().expect("lock");
                    seen.push(String::from_utf8_lossy(&request).into_owned());
                    seen.len()
                };
                if count > hang_ups {
                    let _ =
                        stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    });
    (url, heads, task)
}

fn no_checks() -> &'static str {
    "health_check = { enabled = false }\npassive_health = { enabled = false }"
}

#[tokio::test]
async fn a_get_that_got_no_answer_is_retried() {
    let (url, heads, _backend) = hangs_up_first(1).await;
    let gateway = Gateway::start(&config(&service("api", &[url], no_checks()))).await;

    let response = client().get(gateway.url("/api/x/")).send().await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("text"), "ok");
    assert_eq!(heads.lock().expect("lock").len(), 2, "the request was read, dropped unanswered, then sent again");
}

#[tokio::test]
async fn a_post_that_got_no_answer_is_not_retried() {
    let (url, heads, _backend) = hangs_up_first(1).await;
    let gateway = Gateway::start(&config(&service("api", &[url], no_checks()))).await;

    let response = client().post(gateway.url("/api/x/")).body("order").send().await.expect("response");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(json_of(response).await["error"]["code"], "bad_upstream_response");
    assert_eq!(heads.lock().expect("lock").len(), 1, "the backend may have acted on the POST: never sent twice");
}

/// `method` with no body, framed as `framing` (a header line or nothing).
fn bodiless(method: &str, framing: &str) -> String {
    format!("{method} /api/doc/ HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n{framing}\r\n")
}

#[tokio::test]
async fn bodiless_deletes_and_puts_that_got_no_answer_are_retried_whatever_their_framing() {
    for method in ["DELETE", "PUT"] {
        for framing in ["", "Content-Length: 0\r\n"] {
            let (url, heads, _backend) = hangs_up_first(1).await;
            let gateway = Gateway::start(&config(&service("api", &[url], no_checks()))).await;
            let answer = raw_exchange(gateway.addr, bodiless(method, framing).as_bytes()).await;
            assert_eq!(status_of(&answer), 200, "{method} with {framing:?}: {answer}");
            assert_eq!(heads.lock().expect("lock").len(), 2, "{method} with {framing:?}");
        }
    }
}

#[tokio::test]
async fn bodiless_deletes_and_puts_answered_503_are_retried_whatever_their_framing() {
    for method in ["DELETE", "PUT"] {
        for framing in ["", "Content-Length: 0\r\n"] {
            let (unavailable, _) = switchable(StatusCode::SERVICE_UNAVAILABLE).await;
            let steady = Stub::echo("steady").await;
            let gateway =
                Gateway::start(&config(&service("api", &[unavailable.url(), steady.url()], no_checks()))).await;
            let answer = raw_exchange(gateway.addr, bodiless(method, framing).as_bytes()).await;
            assert_eq!(status_of(&answer), 200, "{method} with {framing:?}: {answer}");
            assert_eq!((unavailable.hits(), steady.hits()), (1, 1), "{method} with {framing:?}");
        }
    }
}

#[tokio::test]
async fn a_refused_connection_is_502_before_and_after_the_replica_is_ejected() {
    let dead = closed_port().await;
    let extra = "health_check = { enabled = false }\npassive_health = { consecutive_failures = 3 }";
    let gateway =
        Gateway::start(&config_requiring_healthy_endpoints(&service("api", &[format!("http://{dead}")], extra))).await;

    // The first failures are the backend's, not an empty pool's; once the
    // replica is ejected, the gateway still tries it rather than refuse.
    for attempt in 0..6 {
        let response = client().get(gateway.url("/api/x/")).send().await.expect("response");
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "request {attempt}");
        assert_eq!(json_of(response).await["error"]["code"], "upstream_unreachable", "request {attempt}");
    }
    assert_eq!(
        client().get(gateway.url("/readyz")).send().await.expect("response").status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "readiness still reports the service down"
    );
}

/// A keep-alive backend that counts the connections it accepts; with
/// `close_after_answer` it hangs up after each answer, without saying so.
async fn counting_backend(close_after_answer: bool) -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buffer = [0_u8; 1024];
                loop {
                    // Every request of the test has a head and no body.
                    while let Some(end) = pending.windows(4).position(|window| window == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        if stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.is_err()
                            || close_after_answer
                        {
                            return;
                        }
                    }
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => pending.extend_from_slice(&buffer[..read]),
                    }
                }
            });
        }
    });
    (addr, accepted, task)
}

#[tokio::test]
async fn backend_connections_are_kept_alive_and_one_the_backend_closed_is_not_reused() {
    let (addr, accepted, _backend) = counting_backend(false).await;
    let gateway = Gateway::start(&config(&service("api", &[format!("http://{addr}")], no_checks()))).await;
    for request in 0..5 {
        let response = client().get(gateway.url("/api/x/")).send().await.expect("response");
        assert_eq!(response.status(), StatusCode::OK, "request {request}");
        assert_eq!(response.text().await.expect("body"), "ok", "request {request}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection serves one request after the other");

    // A POST may not be repeated once sent, so a connection the backend
    // has closed must be noticed before the request goes out on it.
    let (addr, accepted, _backend) = counting_backend(true).await;
    let gateway = Gateway::start(&config(&service("api", &[format!("http://{addr}")], no_checks()))).await;
    for request in 0..5 {
        let response = client().post(gateway.url("/api/x/")).send().await.expect("response");
        assert_eq!(response.status(), StatusCode::OK, "request {request}");
        assert_eq!(response.text().await.expect("body"), "ok", "request {request}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5, "a new connection for each request");
}
