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

/// Echo stubs for `student-api` and `payment` behind one gateway: a path
/// that escapes its route would show up as a hit on the other service.
async fn student_and_payment() -> (Stub, Stub, Gateway) {
    let student = Stub::echo("student").await;
    let payment = Stub::echo("payment").await;
    let toml = format!("{}{}", service("student-api", &[student.url()], ""), service("payment", &[payment.url()], ""));
    let gateway = Gateway::start(&config(&toml)).await;
    (student, payment, gateway)
}

async fn assert_invalid_path(gateway: &Gateway, path: &str) {
    let answer = raw_get(gateway.addr, path).await;
    assert_eq!(status_of(&answer), 400, "{path}: {answer}");
    assert!(answer.contains(r#""code":"invalid_path""#), "{path}: {answer}");
}

#[tokio::test]
async fn paths_cannot_escape_the_matched_service() {
    let (student, payment, gateway) = student_and_payment().await;
    for hostile in [
        "/student-api/..%2fpayment/checkout/",
        "/student-api/%2e%2e/%2e%2e/etc/passwd",
        "/student-api/../../etc/passwd",
        "/student-api/..%5cpayment/",
        "/student-api/..\\payment/",
        "/student-api/%2F..%2Fpayment/",
        "/student-api/x%00/",
    ] {
        assert_invalid_path(&gateway, hostile).await;
    }
    assert_eq!(student.hits() + payment.hits(), 0, "no backend is reached");
}

#[tokio::test]
async fn dot_segments_are_refused_not_resolved() {
    let (student, payment, gateway) = student_and_payment().await;
    for hostile in [
        "/student-api/../payment/x",
        "/student-api/%2e%2e/payment/x",
        "/student-api/.%2e/payment/x",
        "/student-api/echo/../../payment/x",
        "/student-api/%2E%2E/payment/x",
        "/student-api/./users/1/",
        "/student-api/users/1/%2e",
    ] {
        assert_invalid_path(&gateway, hostile).await;
    }
    assert_eq!(student.hits() + payment.hits(), 0, "no backend is reached");

    // Dots inside a segment are ordinary characters.
    let answer = raw_get(gateway.addr, "/student-api/files/report..v2.json").await;
    assert!(answer.contains(r#""path":"/files/report..v2.json""#), "{answer}");
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

#[tokio::test]
async fn a_client_request_id_is_kept_only_when_short_and_plain() {
    let api = Stub::echo("api").await;
    let gateway = Gateway::start(&config(&service("api", &[api.url()], ""))).await;

    let longest = "r".repeat(128);
    let too_long = "r".repeat(5000);
    let cases: [(&[u8], bool); 7] = [
        (b"req-123", true),
        (longest.as_bytes(), true),
        (too_long.as_bytes(), false),
        (b"\"quoted\"", false),
        (b"back\\slash", false),
        (b"tab\there", false),
        ("caf\u{e9}".as_bytes(), false),
    ];
    for (sent, kept) in cases {
        let value = http::HeaderValue::from_bytes(sent).expect("a header value");
        let response = client().get(gateway.url("/api/x/")).header("x-request-id", value).send().await;
        let response = response.expect("response");
        let answered = response.headers()["x-request-id"].to_str().expect("visible ASCII").to_owned();
        let seen = json_of(response).await;
        let label = String::from_utf8_lossy(sent).chars().take(20).collect::<String>();
        assert_eq!(seen["headers"]["x-request-id"], answered.as_str(), "{label}: backend and client see one id");
        if kept {
            assert!(answered.as_bytes() == sent, "{label}: a fit id is kept, got {answered}");
        } else {
            assert!(answered.as_bytes() != sent, "{label}: an unfit id reached the backend");
            assert!(uuid_shaped(&answered), "{label}: replaced by a generated id, got {answered}");
        }
    }
}

fn uuid_shaped(text: &str) -> bool {
    text.len() == 36
        && text.chars().enumerate().all(|(index, c)| match index {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[tokio::test]
async fn backend_software_headers_are_hidden_unless_the_route_says_otherwise() {
    let app = Stub::serve(axum::Router::new().fallback(|| async {
        ([("server", "gunicorn/20.1"), ("x-powered-by", "Django/4.2"), ("x-custom", "kept")], "ok")
    }))
    .await;
    let toml = format!(
        "{}{}hide_response_headers = []\n{}hide_response_headers = [\"X-Custom\"]\n",
        service("default", &[app.url()], ""),
        service("open", &[app.url()], ""),
        service("custom", &[app.url()], ""),
    );
    let gateway = Gateway::start(&config(&toml)).await;

    let headers_of = |path: &'static str| {
        let url = gateway.url(path);
        async move {
            let response = client().get(url).send().await.expect("response");
            assert_eq!(response.status(), StatusCode::OK);
            response.headers().clone()
        }
    };
    let hidden = headers_of("/default/x").await;
    assert!(hidden.get("server").is_none() && hidden.get("x-powered-by").is_none(), "{hidden:?}");
    assert_eq!(hidden["x-custom"], "kept");
    let open = headers_of("/open/x").await;
    assert_eq!(open["server"], "gunicorn/20.1");
    assert_eq!(open["x-powered-by"], "Django/4.2");
    let custom = headers_of("/custom/x").await;
    assert!(custom.get("x-custom").is_none(), "{custom:?}");
    assert_eq!(custom["server"], "gunicorn/20.1", "a list of its own replaces the default");
}
