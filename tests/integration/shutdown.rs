//! Graceful shutdown: stop accepting, finish what is in flight, and exit by
//! the shutdown timeout whatever is still running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Router;
use http::StatusCode;
use tokio::sync::Notify;

use crate::harness::{client, config, service, Gateway, Stub};
use crate::process::Process;

#[tokio::test]
async fn in_flight_requests_finish_while_new_connections_are_refused() {
    let release = Arc::new(Notify::new());
    let backend = Stub::serve(
        Router::new()
            .fallback(|State(release): State<Arc<Notify>>| async move {
                release.notified().await;
                "finished"
            })
            .with_state(Arc::clone(&release)),
    )
    .await;
    let mut gateway =
        Gateway::start(&config(&service("api", &[backend.url()], "health_check = { enabled = false }"))).await;

    let url = gateway.url("/api/slow/");
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    crate::harness::eventually(Duration::from_secs(5), || {
        let arrived = backend.hits() == 1;
        async move { arrived }
    })
    .await;

    gateway.begin_shutdown();
    crate::harness::eventually(Duration::from_secs(5), || {
        let addr = gateway.addr;
        async move { tokio::net::TcpStream::connect(addr).await.is_err() }
    })
    .await;

    release.notify_waiters();
    let response = in_flight.await.expect("task").expect("the in-flight request is answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("body"), "finished");
    tokio::time::timeout(Duration::from_secs(10), gateway.stopped()).await.expect("serve returns after draining");
}

/// A GraphQL document that inlines to 2^30 fields: before the per-request
/// work was bounded, it kept a core busy for minutes, the worst kind of
/// request a drain can wait for.
fn fan_out_document() -> serde_json::Value {
    let mut query = String::from("{ student(id: 1) { ...F0 } }");
    for level in 0..30 {
        query.push_str(&format!(" fragment F{level} on Student {{ ...F{next} ...F{next} }}", next = level + 1));
    }
    query.push_str(" fragment F30 on Student { fullName }");
    serde_json::json!({ "query": query })
}

/// Services that accept requests and never answer, behind a REST route and
/// the GraphQL endpoint.
fn silent_services(silent: &Stub) -> String {
    let mut toml = String::new();
    for name in ["student_api", "live_reading", "payment"] {
        toml.push_str(&format!(
            "[services.{name}]\nendpoints = [\"{}\"]\nhealth_check = {{ enabled = false }}\n\n",
            silent.url()
        ));
    }
    toml.push_str(&format!(
        "{}[graphql]\nenabled = true\n",
        service("api", &[silent.url()], "health_check = { enabled = false }")
    ));
    toml
}

async fn requests_in_flight(process: &Process) -> usize {
    let Ok(response) = client().get(process.url("/metrics")).send().await else { return 0 };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("portico_http_requests_in_flight "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_process_exits_by_the_shutdown_timeout_whatever_requests_are_doing() {
    let silent = Stub::serve(Router::new().fallback(std::future::pending::<()>)).await;
    let mut process = Process::start_with_server("shutdown_timeout = \"1s\"", &silent_services(&silent)).await;

    let rest = tokio::spawn(client().get(process.url("/api/never/")).send());
    let graphql = tokio::spawn(client().post(process.url("/graphql")).json(&fan_out_document()).send());
    crate::harness::eventually(Duration::from_secs(10), || {
        let arrived = silent.hits() == 1;
        let graphql_done = graphql.is_finished();
        let process = &process;
        async move { arrived && (graphql_done || requests_in_flight(process).await >= 3) }
    })
    .await;

    let signalled = Instant::now();
    process.signal("TERM");
    let exited = process.exited_within(Duration::from_secs(1) + EXIT_MARGIN).await;
    let took = signalled.elapsed();
    assert!(exited.is_some(), "still running {took:?} after SIGTERM with shutdown_timeout = 1s");
    assert!(took >= Duration::from_millis(900), "the drain waited for the stuck request first: {took:?}");
    assert!(rest.await.expect("task").is_err(), "the unanswerable request is cut off, not answered");
}

/// The shutdown timeout, plus the watchdog's margin for the last logs, plus
/// slack for a loaded machine.
const EXIT_MARGIN: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let silent = Stub::serve(Router::new().fallback(std::future::pending::<()>)).await;
    let mut process = Process::start_with_server(
        "shutdown_timeout = \"60s\"",
        &service("api", &[silent.url()], "health_check = { enabled = false }"),
    )
    .await;
    let _in_flight = tokio::spawn(client().get(process.url("/api/never/")).send());
    crate::harness::eventually(Duration::from_secs(10), || {
        let arrived = silent.hits() == 1;
        async move { arrived }
    })
    .await;

    process.signal("TERM");
    crate::harness::eventually(Duration::from_secs(10), || {
        let draining = process.logs().iter().any(|line| line.contains("draining in-flight requests"));
        async move { draining }
    })
    .await;
    assert!(process.exited_within(Duration::ZERO).await.is_none(), "the first signal drains, it does not exit");

    let signalled = Instant::now();
    process.signal("TERM");
    let exited = process.exited_within(Duration::from_secs(3)).await;
    assert!(exited.is_some(), "still running {:?} after a second SIGTERM", signalled.elapsed());
    assert_eq!(exited.and_then(|status| status.code()), Some(143), "128 + SIGTERM, as a shell reports it");
}
