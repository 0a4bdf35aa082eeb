//! Readiness that tells the truth: `/readyz` names the services without a
//! healthy endpoint (503 only with `require_healthy_endpoints`), turns 503
//! `draining` as soon as shutdown starts while routes are still served for
//! `drain_delay`, and `/healthz` stays 200 throughout.

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{json, Value};

use crate::harness::{client, closed_port, config_with_server, eventually, service, Gateway, Stub};
use crate::process::Process;

async fn readyz(url: String) -> (StatusCode, Value) {
    let response = client().get(url).send().await.expect("readyz answers");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

/// Polls `/readyz` until its answer satisfies `wanted` (failing after 5 s)
/// and returns that answer.
async fn readyz_until(url: String, wanted: impl Fn(StatusCode, &Value) -> bool) -> (StatusCode, Value) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = readyz(url.clone()).await;
        if wanted(status, &body) {
            return (status, body);
        }
        assert!(Instant::now() < deadline, "/readyz still answers {status} {body} after 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A service on a port nothing listens on, checked every 50 ms, beside a
/// healthy one.
async fn one_dead_service(server: &str) -> (Gateway, Stub) {
    let dead = closed_port().await;
    let healthy = Stub::echo("healthy").await;
    let checks = "health_check = { interval = \"50ms\", unhealthy_threshold = 1 }";
    let body =
        [service("dead", &[format!("http://{dead}")], checks), service("healthy", &[healthy.url()], checks)].concat();
    (Gateway::start(&config_with_server(server, &body)).await, healthy)
}

#[tokio::test]
async fn a_service_without_a_healthy_endpoint_is_named_and_is_503_only_when_required() {
    let (required, _a) = one_dead_service("readiness = { require_healthy_endpoints = true }").await;
    let (reported, _b) = one_dead_service("").await;

    let (_, body) = readyz_until(required.url("/readyz"), |status, _| status == StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["status"], "unready", "{body}");
    assert_eq!(body["services"], json!(["dead"]), "{body}");
    assert!(body["reason"].as_str().is_some_and(|reason| reason.contains("dead")), "{body}");

    // Not required (the default): still ready, and the body says which
    // service has no healthy endpoint.
    let answer = readyz_until(reported.url("/readyz"), |_, body| body["services"] == json!(["dead"])).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(answer.1["status"], "ready", "{}", answer.1);

    for gateway in [&required, &reported] {
        let health = client().get(gateway.url("/healthz")).send().await.expect("healthz");
        assert_eq!(health.status(), StatusCode::OK, "liveness does not depend on backends");
        let routed = client().get(gateway.url("/healthy/x/")).send().await.expect("route");
        assert_eq!(routed.status(), StatusCode::OK, "the healthy service is served either way");
    }
}

/// The drain delay of the tests below: long enough to see a request
/// served during it on a busy machine.
const DRAIN_DELAY: Duration = Duration::from_secs(2);

#[tokio::test]
async fn on_shutdown_readyz_turns_draining_at_once_while_routes_are_served_until_the_listener_closes() {
    let api = Stub::echo("api").await;
    let server = format!("readiness = {{ drain_delay = \"{}ms\" }}", DRAIN_DELAY.as_millis());
    let mut gateway = Gateway::start(&config_with_server(&server, &service("api", &[api.url()], ""))).await;
    let before = client().get(gateway.url("/api/x/")).send().await.expect("served");
    assert!(before.headers().get("connection").is_none(), "keep-alive until the drain");
    let (status, body) = readyz(gateway.url("/readyz")).await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!("ready")), "{body}");

    let shutdown_started = Instant::now();
    gateway.begin_shutdown();
    let answer = readyz_until(gateway.url("/readyz"), |status, _| status == StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(answer.1["status"], "draining", "{}", answer.1);
    assert!(answer.1["reason"].as_str().is_some_and(|reason| reason.contains("draining")), "{}", answer.1);

    // Still accepting and serving (new connections: reqwest's pool is per
    // client, and `client()` makes a new one), and still alive.
    let routed = client().get(gateway.url("/api/x/")).send().await.expect("served while draining");
    assert_eq!(routed.status(), StatusCode::OK);
    assert_eq!(routed.headers()["connection"], "close", "a keep-alive client is sent to reconnect elsewhere");
    let health = client().get(gateway.url("/healthz")).send().await.expect("healthz while draining");
    assert_eq!(health.status(), StatusCode::OK);
    assert!(shutdown_started.elapsed() < DRAIN_DELAY, "the checks above took longer than the drain delay");

    // Then the listener closes, not before the drain delay, and serve returns.
    eventually(Duration::from_secs(10), || {
        let addr = gateway.addr;
        async move { tokio::net::TcpStream::connect(addr).await.is_err() }
    })
    .await;
    let closed_after = shutdown_started.elapsed();
    assert!(closed_after >= DRAIN_DELAY, "the listener closed {closed_after:?} after shutdown started");
    tokio::time::timeout(Duration::from_secs(10), gateway.stopped()).await.expect("serve returns after draining");
    println!("readyz 503 at once; listener closed {closed_after:?} after shutdown started");
}

#[tokio::test]
async fn the_process_drains_then_exits_by_drain_delay_plus_shutdown_timeout_whatever_is_in_flight() {
    let silent = Stub::serve(axum::Router::new().fallback(std::future::pending::<()>)).await;
    let server = "shutdown_timeout = \"1s\"\nreadiness = { drain_delay = \"1s\" }";
    let mut process =
        Process::start_with_server(server, &service("api", &[silent.url()], "health_check = { enabled = false }"))
            .await;
    let stuck = tokio::spawn(client().get(process.url("/api/never/")).send());
    eventually(Duration::from_secs(10), || {
        let arrived = silent.hits() == 1;
        async move { arrived }
    })
    .await;

    let signalled = Instant::now();
    process.signal("TERM");
    readyz_until(process.url("/readyz"), |_, body| body["status"] == "draining").await;
    // Drain delay + shutdown timeout, plus the watchdog's margin and slack
    // for a loaded machine.
    let exited = process.exited_within(Duration::from_secs(2 + 3)).await;
    let took = signalled.elapsed();
    assert!(exited.is_some(), "still running {took:?} after SIGTERM with drain_delay + shutdown_timeout = 2s");
    assert!(took >= Duration::from_millis(1900), "the drain delay and the drain both passed first: {took:?}");
    assert!(stuck.await.expect("task").is_err(), "the unanswerable request is cut off, not answered");
}
