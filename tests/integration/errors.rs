//! Every gateway-made error status, and backends that misbehave.

use std::time::Duration;

use axum::Router;
use futures_util::StreamExt;
use http::StatusCode;

use crate::harness::{
    client, closed_port, config, config_requiring_healthy_endpoints, config_with_server, json_of, raw_backend, service,
    Gateway, Stub,
};

fn no_retries_no_checks() -> &'static str {
    "health_check = { enabled = false }\nretry = { attempts = 0 }"
}

#[tokio::test]
async fn an_unreachable_backend_is_502_and_the_address_is_not_revealed() {
    let port = closed_port().await;
    let gateway =
        Gateway::start(&config(&service("payment", &[format!("http://{port}")], no_retries_no_checks()))).await;

    let response = client().get(gateway.url("/payment/payments/")).send().await.expect("response");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let text = response.text().await.expect("text");
    let body: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    assert!(body["error"]["request_id"].is_string());
    assert!(!text.contains("127.0.0.1") && !text.contains(&port.port().to_string()), "{text}");
}

#[tokio::test]
async fn once_every_endpoint_is_ejected_it_is_still_tried_and_readiness_says_so() {
    let port = closed_port().await;
    let extra =
        format!("{}\npassive_health = {{ consecutive_failures = 1, base_ejection = \"60s\" }}", no_retries_no_checks());
    let gateway =
        Gateway::start(&config_requiring_healthy_endpoints(&service("payment", &[format!("http://{port}")], &extra)))
            .await;

    let first = client().get(gateway.url("/payment/x/")).send().await.expect("response");
    assert_eq!(first.status(), StatusCode::BAD_GATEWAY);
    // Ejected, but the only replica: the gateway tries it rather than refuse.
    let second = client().get(gateway.url("/payment/x/")).send().await.expect("response");
    assert_eq!(second.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(json_of(second).await["error"]["code"], "upstream_unreachable");
    let ready = client().get(gateway.url("/readyz")).send().await.expect("response");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json_of(ready).await["services"], serde_json::json!(["payment"]));
}

#[tokio::test]
async fn a_backend_that_never_answers_is_504_after_the_request_timeout() {
    let silent = Stub::serve(Router::new().fallback(std::future::pending::<()>)).await;
    let extra = format!("{}\nrequest_timeout = \"300ms\"", no_retries_no_checks());
    let gateway = Gateway::start(&config(&service("slow", &[silent.url()], &extra))).await;

    let response = tokio::time::timeout(Duration::from_secs(10), client().get(gateway.url("/slow/x/")).send())
        .await
        .expect("the client is not left hanging")
        .expect("response");
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json_of(response).await["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn a_backend_answering_garbage_is_502() {
    let (addr, _backend) = raw_backend(b"this is not http\r\n\r\n", false).await;
    let gateway =
        Gateway::start(&config(&service("broken", &[format!("http://{addr}")], no_retries_no_checks()))).await;

    let response = client().get(gateway.url("/broken/x/")).send().await.expect("response");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(json_of(response).await["error"]["code"], "bad_upstream_response");
}

#[tokio::test]
async fn a_backend_hanging_up_mid_answer_aborts_the_client_stream() {
    let (addr, _backend) =
        raw_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\ncontent-type: text/plain\r\n\r\nonly ten b", false)
            .await;
    let gateway =
        Gateway::start(&config(&service("broken", &[format!("http://{addr}")], no_retries_no_checks()))).await;

    let response = client().get(gateway.url("/broken/x/")).send().await.expect("response head");
    assert_eq!(response.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(10), response.bytes()).await.expect("no hang");
    assert!(body.is_err(), "a truncated answer must not look complete");
}

#[tokio::test]
async fn a_backend_stalling_mid_answer_is_cut_off_after_the_request_timeout() {
    let (addr, _backend) = raw_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nstarted...", true).await;
    let extra = format!("{}\nrequest_timeout = \"300ms\"", no_retries_no_checks());
    let gateway = Gateway::start(&config(&service("stall", &[format!("http://{addr}")], &extra))).await;

    let response = client().get(gateway.url("/stall/x/")).send().await.expect("response head");
    let mut stream = response.bytes_stream();
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = stream.next().await {
            chunk?;
        }
        Ok::<(), reqwest::Error>(())
    })
    .await
    .expect("the stalled stream is aborted, not left hanging");
    assert!(outcome.is_err());
}

/// A backend that answers `status` after `delay`.
async fn slow_backend(delay: Duration, status: StatusCode) -> Stub {
    Stub::serve(Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        (status, "late")
    }))
    .await
}

#[tokio::test]
async fn a_rest_request_past_the_gateway_deadline_is_504_and_a_route_can_allow_longer() {
    // Slower than the gateway's deadline, well within the service's timeout.
    let backend = slow_backend(Duration::from_secs(2), StatusCode::OK).await;
    let toml = format!(
        "{}{}timeout = \"10s\"\n",
        service("slow", &[backend.url()], no_retries_no_checks()),
        service("patient", &[backend.url()], no_retries_no_checks()),
    );
    let gateway = Gateway::start(&config_with_server("request_timeout = \"300ms\"", &toml)).await;

    let started = std::time::Instant::now();
    let response = client().get(gateway.url("/slow/x/")).header("x-request-id", "deadline-1").send().await;
    let response = response.expect("response");
    assert!(started.elapsed() < Duration::from_millis(1500), "answered at the deadline: {:?}", started.elapsed());
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let body = json_of(response).await;
    assert_eq!(body["error"]["code"], "deadline_exceeded", "{body}");
    assert_eq!(body["error"]["request_id"], "deadline-1", "{body}");

    let response = client().get(gateway.url("/patient/x/")).send().await.expect("response");
    assert_eq!(response.status(), StatusCode::OK, "the route's own timeout replaces the server's");
    assert_eq!(response.text().await.expect("body"), "late");
}

#[tokio::test]
async fn the_deadline_covers_every_retry_together() {
    // Each attempt fits the service's timeout; two of them do not fit the deadline.
    let first = slow_backend(Duration::from_secs(1), StatusCode::SERVICE_UNAVAILABLE).await;
    let second = slow_backend(Duration::from_secs(1), StatusCode::SERVICE_UNAVAILABLE).await;
    let extra = "health_check = { enabled = false }\nrequest_timeout = \"5s\"\nretry = { attempts = 1 }";
    let toml = service("busy", &[first.url(), second.url()], extra);
    let gateway = Gateway::start(&config_with_server("request_timeout = \"1500ms\"", &toml)).await;

    // Without the deadline, the answer would be the second attempt's 503.
    let response = client().get(gateway.url("/busy/x/")).send().await.expect("response");
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json_of(response).await["error"]["code"], "deadline_exceeded");
    assert_eq!(first.hits() + second.hits(), 2, "the retry had started when the deadline passed");
}
