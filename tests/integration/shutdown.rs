//! Graceful shutdown: stop accepting, finish what is in flight.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Router;
use http::StatusCode;
use tokio::sync::Notify;

use crate::harness::{client, config, service, Gateway, Stub};

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
