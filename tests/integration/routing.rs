//! Routing, prefix stripping, header rules, path safety.

use http::StatusCode;

use crate::harness::{client, config, json_of, raw_get, service, status_of, Gateway, Stub};

#[tokio::test]
async fn method_query_and_body_reach_the_service_with_the_prefix_stripped() {
    let payment = Stub::echo("payment").await;
    let gateway = Gateway::start(&config(&service("payment", &[payment.url()], ""))).await;

    let response = client()
        .post(gateway.url("/payment/checkout/?page=2&x=a%20b"))
        .header("content-type", "application/json")
        .body(r#"{"amount":"49.00"}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let seen = json_of(response).await;
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/checkout/");
    assert_eq!(seen["query"], "page=2&x=a%20b");
    assert_eq!(seen["body"], r#"{"amount":"49.00"}"#);
    assert_eq!(seen["headers"]["content-type"], "application/json");
}

#[tokio::test]
async fn the_longest_prefix_wins_and_strip_prefix_can_be_turned_off() {
    let general = Stub::echo("general").await;
    let special = Stub::echo("special").await;
    let toml = format!(
        "{}{}[[routes]]\nprefix = \"/general/special/\"\nservice = \"special\"\nstrip_prefix = false\n",
        service("general", &[general.url()], ""),
        service("special", &[special.url()], ""),
    );
    let gateway = Gateway::start(&config(&toml)).await;

    let seen = json_of(client().get(gateway.url("/general/special/x")).send().await.expect("request")).await;
    assert_eq!(seen["replica"], "special");
    assert_eq!(seen["path"], "/general/special/x");
    let seen = json_of(client().get(gateway.url("/general/specialty")).send().await.expect("request")).await;
    assert_eq!(seen["replica"], "general", "prefixes match whole segments");
    assert_eq!(seen["path"], "/specialty");
}

#[tokio::test]
async fn unknown_paths_are_404_json_and_a_missing_trailing_slash_redirects() {
    let payment = Stub::echo("payment").await;
    let gateway = Gateway::start(&config(&service("payment", &[payment.url()], ""))).await;

    let response =
        client().get(gateway.url("/nowhere/")).header("x-request-id", "req-123").send().await.expect("request");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()["x-request-id"], "req-123");
    let body = json_of(response).await;
    assert_eq!(body["error"]["code"], "route_not_found");
    assert_eq!(body["error"]["request_id"], "req-123");

    let response = client().get(gateway.url("/payment?x=1")).send().await.expect("request");
    assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(response.headers()["location"], "/payment/?x=1");
    assert_eq!(payment.hits(), 0);
}

#[tokio::test]
async fn methods_outside_the_route_list_are_405_with_allow() {
    let payment = Stub::echo("payment").await;
    let gateway = Gateway::start(&config(&format!(
        "{}methods = [\"GET\", \"POST\"]\n",
        service("payment", &[payment.url()], "")
    )))
    .await;

    let response = client().delete(gateway.url("/payment/payments/1/")).send().await.expect("request");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "GET, POST");
    assert_eq!(json_of(response).await["error"]["code"], "method_not_allowed");
    assert_eq!(payment.hits(), 0);
}

#[tokio::test]
async fn forwarding_headers_are_set_and_identity_and_hop_by_hop_headers_are_stripped() {
    let api = Stub::echo("api").await;
    let gateway = Gateway::start(&config(&service("api", &[api.url()], ""))).await;

    let response = client()
        .get(gateway.url("/api/users/1/"))
        .header("x-user-id", "1")
        .header("x-forwarded-for", "203.0.113.7")
        .header("connection", "x-private-hop")
        .header("x-private-hop", "secret")
        .header("accept", "application/json")
        .send()
        .await
        .expect("request");
    let generated_id = response.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    assert!(generated_id.len() >= 32, "a request id is generated: {generated_id}");
    let seen = json_of(response).await;
    let headers = &seen["headers"];
    assert!(headers.get("x-user-id").is_none(), "clients cannot claim an identity");
    assert!(headers.get("x-private-hop").is_none(), "headers named in Connection are hop-by-hop");
    assert_eq!(headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(headers["x-real-ip"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], gateway.addr.to_string());
    assert_eq!(headers["host"], api.addr.to_string());
    assert_eq!(headers["accept"], "application/json");
    assert_eq!(headers["x-request-id"], generated_id.as_str(), "the backend sees the same request id");
}

#[tokio::test]
async fn paths_cannot_escape_the_matched_service() {
    let student = Stub::echo("student").await;
    let payment = Stub::echo("payment").await;
    let toml = format!("{}{}", service("student-api", &[student.url()], ""), service("payment", &[payment.url()], ""));
    let gateway = Gateway::start(&config(&toml)).await;

    for hostile in [
        "/student-api/..%2fpayment/checkout/",
        "/student-api/%2e%2e/%2e%2e/etc/passwd",
        "/student-api/../../etc/passwd",
        "/student-api/..%5cpayment/",
        "/student-api/..\\payment/",
        "/student-api/%2F..%2Fpayment/",
        "/student-api/x%00/",
    ] {
        let answer = raw_get(gateway.addr, hostile).await;
        assert_eq!(status_of(&answer), 400, "{hostile}: {answer}");
        assert!(answer.contains("invalid_path"), "{hostile}: {answer}");
    }
    assert_eq!(student.hits() + payment.hits(), 0);

    // Dot segments are resolved before routing, so the service that is
    // called is the one the resolved path names, and it sees a clean path.
    let answer = raw_get(gateway.addr, "/student-api/%2e%2e/payment/x/").await;
    assert!(answer.contains(r#""replica":"payment""#) && answer.contains(r#""path":"/x/""#), "{answer}");
    let answer = raw_get(gateway.addr, "/student-api/a/./../users/1/").await;
    assert!(answer.contains(r#""replica":"student""#) && answer.contains(r#""path":"/users/1/""#), "{answer}");
    assert_eq!(payment.hits(), 1);
}

#[tokio::test]
async fn health_and_readiness_endpoints_answer() {
    let api = Stub::echo("api").await;
    let gateway = Gateway::start(&config(&service("api", &[api.url()], ""))).await;
    let response = client().get(gateway.url("/healthz")).send().await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let response = client().get(gateway.url("/readyz")).send().await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await["status"], "ready");
}
