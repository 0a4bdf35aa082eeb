//! Load-balancing strategies spread real traffic as configured.

use std::sync::Arc;

use axum::extract::State;
use axum::Router;
use tokio::sync::Notify;

use crate::harness::{client, config, service, Gateway, Stub};

async fn replicas(count: usize) -> Vec<Stub> {
    let mut stubs = Vec::new();
    for index in 0..count {
        stubs.push(Stub::echo(&format!("replica-{index}")).await);
    }
    stubs
}

async fn send_many(gateway: &Gateway, count: usize) {
    for _ in 0..count {
        let response = client().get(gateway.url("/api/x/")).send().await.expect("response");
        assert!(response.status().is_success());
    }
}

#[tokio::test]
async fn round_robin_spreads_requests_evenly() {
    let stubs = replicas(3).await;
    let urls: Vec<String> = stubs.iter().map(Stub::url).collect();
    let gateway = Gateway::start(&config(&service("api", &urls, "health_check = { enabled = false }"))).await;
    send_many(&gateway, 90).await;
    assert_eq!(stubs.iter().map(Stub::hits).collect::<Vec<_>>(), vec![30, 30, 30]);
}

#[tokio::test]
async fn weighted_follows_the_weights() {
    let stubs = replicas(2).await;
    let toml = format!(
        "[services.api]\nload_balancing = \"weighted\"\nhealth_check = {{ enabled = false }}\n\
         endpoints = [{{ url = \"{}\", weight = 3 }}, {{ url = \"{}\", weight = 1 }}]\n\
         [[routes]]\nprefix = \"/api/\"\nservice = \"api\"\n",
        stubs[0].url(),
        stubs[1].url()
    );
    let gateway = Gateway::start(&config(&toml)).await;
    send_many(&gateway, 80).await;
    assert_eq!(stubs.iter().map(Stub::hits).collect::<Vec<_>>(), vec![60, 20]);
}

#[tokio::test]
async fn least_requests_avoids_the_busy_replica() {
    // The busy replica holds every request until released, so its
    // in-flight count stays above the other's, which answers at once.
    let release = Arc::new(Notify::new());
    let busy = Stub::serve(
        Router::new()
            .fallback(|State(release): State<Arc<Notify>>| async move {
                release.notified().await;
                "slow"
            })
            .with_state(Arc::clone(&release)),
    )
    .await;
    let idle = Stub::echo("idle").await;
    let extra = "load_balancing = \"least_requests\"\nhealth_check = { enabled = false }";
    let gateway = Gateway::start(&config(&service("api", &[busy.url(), idle.url()], extra))).await;

    let mut held = Vec::new();
    while busy.hits() < 1 {
        let url = gateway.url("/api/x/");
        held.push(tokio::spawn(async move { client().get(url).send().await }));
        tokio::task::yield_now().await;
        if held.len() > 200 {
            panic!("the busy replica never received a request");
        }
        // Wait for the spawned request to land somewhere before sending more.
        crate::harness::eventually(std::time::Duration::from_secs(5), || {
            let landed = busy.hits() + idle.hits() >= held.len();
            async move { landed }
        })
        .await;
    }
    let before = busy.hits();
    send_many(&gateway, 40).await;
    assert_eq!(busy.hits(), before, "with a request in flight on one replica, P2C picks the idle one");
    release.notify_waiters();
    for request in held {
        let _ = request.await;
    }
}
