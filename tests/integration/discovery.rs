//! DNS discovery: the replicas of a `discovery = "dns"` service follow what
//! a DNS server on loopback answers. Backends listen on one port on several
//! loopback addresses (127.0.0.x all reach the host on Linux); the test
//! awaits the resolver's rounds as counted by the DNS server, never a timer.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::dns_server::DnsServer;
use crate::harness::{client, config, Gateway};

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const C: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// One replica: its hit count (health checks excluded) and, on `/api/slow`,
/// an answer held until `release` is notified (after notifying `entered`).
struct Replica {
    hits: Arc<AtomicUsize>,
    entered: Arc<Notify>,
    release: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Replica {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct ReplicaState {
    name: Arc<str>,
    hits: Arc<AtomicUsize>,
    entered: Arc<Notify>,
    release: Arc<Notify>,
    holds: bool,
}

async fn answer(State(state): State<ReplicaState>, request: Request) -> String {
    state.hits.fetch_add(1, Ordering::SeqCst);
    if request.uri().path() == "/slow" && state.holds {
        state.entered.notify_one();
        state.release.notified().await;
    }
    let host = request.headers().get(http::header::HOST).and_then(|host| host.to_str().ok()).unwrap_or("");
    format!("{} {host}", state.name)
}

fn replica(listener: TcpListener, name: &str, holds: bool) -> Replica {
    let state = ReplicaState {
        name: Arc::from(name),
        hits: Arc::default(),
        entered: Arc::default(),
        release: Arc::default(),
        holds,
    };
    let router = Router::new().route("/health/", get(|| async { "ok" })).fallback(answer).with_state(state.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.expect("replica serves");
    });
    Replica { hits: state.hits, entered: state.entered, release: state.release, task }
}

/// Listeners on one port on 127.0.0.1, .2 and .3.
async fn listeners() -> (u16, [TcpListener; 3]) {
    for _ in 0..20 {
        let first = TcpListener::bind((A, 0)).await.expect("bind");
        let port = first.local_addr().expect("addr").port();
        let (Ok(second), Ok(third)) = (
            TcpListener::bind(SocketAddr::from((B, port))).await,
            TcpListener::bind(SocketAddr::from((C, port))).await,
        ) else {
            continue;
        };
        return (port, [first, second, third]);
    }
    panic!("no port free on 127.0.0.1, .2 and .3");
}

fn dns_service(port: u16, dns: &DnsServer) -> String {
    config(&format!(
        "[services.api]\ndiscovery = \"dns\"\ndns_refresh = \"50ms\"\ndns_server = \"{}\"\n\
         endpoints = [\"http://replicas.test:{port}\"]\nhealth_check = {{ enabled = false }}\n\n\
         [[routes]]\nprefix = \"/api/\"\nservice = \"api\"\n",
        dns.addr
    ))
}

async fn get_ok(gateway: &Gateway, path: &str) -> String {
    let response = client().get(gateway.url(path)).send().await.expect("response");
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.text().await.expect("body")
}

#[tokio::test]
async fn replicas_follow_dns_and_removed_ones_drain() {
    let (port, [first, second, third]) = listeners().await;
    let (a, b, c) = (replica(first, "a", false), replica(second, "b", true), replica(third, "c", false));
    let dns = DnsServer::start(&[A, B]).await;
    let gateway = Gateway::start(&dns_service(port, &dns)).await;
    dns.applied().await;

    for _ in 0..10 {
        let body = get_ok(&gateway, "/api/x").await;
        assert!(body.ends_with(&format!(" replicas.test:{port}")), "the name stays in Host: {body}");
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (5, 5, 0), "both addresses take traffic");

    // Two concurrent slow requests: round robin sends one of them to b,
    // which holds it.
    let slow = || {
        let url = gateway.url("/api/slow");
        tokio::spawn(async move { client().get(url).send().await.expect("response").text().await.expect("body") })
    };
    let in_flight = [slow(), slow()];
    b.entered.notified().await;

    dns.answer(&[A, C]);
    dns.applied().await;
    let b_before = b.hits();
    for _ in 0..10 {
        get_ok(&gateway, "/api/x").await;
    }
    assert_eq!(b.hits(), b_before, "a removed address gets no new request");
    assert!(c.hits() >= 4, "the added address takes traffic: {}", c.hits());

    b.release.notify_one();
    let mut answers = Vec::new();
    for request in in_flight {
        answers.push(request.await.expect("request task"));
    }
    assert!(answers.iter().any(|body| body.starts_with("b ")), "b's in-flight request finished: {answers:?}");

    // The resolver fails: the last good set keeps serving.
    dns.fail();
    dns.applied().await;
    let (a_before, c_before) = (a.hits(), c.hits());
    for _ in 0..10 {
        get_ok(&gateway, "/api/x").await;
    }
    assert_eq!(a.hits() + c.hits(), a_before + c_before + 10);
    assert!(a.hits() > a_before && c.hits() > c_before, "both kept addresses still serve");
    let metrics = get_ok(&gateway, "/metrics").await;
    let failures = metrics
        .lines()
        .find(|line| line.starts_with("portico_upstream_dns_failures_total{service=\"api\"}"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok());
    assert!(failures.is_some_and(|count| count >= 1.0), "failures are counted: {failures:?}");
}
