//! Observability: Prometheus metrics after each kind of request, W3C trace
//! context to backends, and span export that never holds up requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Path;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt as _;
use serde_json::{json, Value};

use crate::graphql::{backends, Behaviour, DASHBOARD};
use crate::harness::{client, closed_port, config, json_of, service, Gateway, Stub};
use crate::process::Process;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_ID}-01")
}

async fn scrape(gateway: &Gateway) -> String {
    let response = client().get(gateway.url("/metrics")).send().await.expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    response.text().await.expect("text")
}

fn assert_has(text: &str, expected: &str) {
    assert!(text.contains(expected), "missing `{expected}` in\n{text}");
}

#[tokio::test]
async fn a_rest_request_is_counted_by_route_prefix_and_upstream_endpoint() {
    let stub = Stub::echo("a").await;
    let gateway = Gateway::start(&config(&service("users", &[stub.url()], ""))).await;

    let response = client().get(gateway.url("/users/42/profile?x=1")).send().await.expect("response");
    assert_eq!(response.status(), 200);
    let text = scrape(&gateway).await;

    assert_has(&text, r#"portico_http_requests_total{route="/users/",method="GET",operation="",status="200"} 1"#);
    assert_has(
        &text,
        r#"portico_http_request_duration_seconds_count{route="/users/",method="GET",operation="",status_class="2xx"} 1"#,
    );
    let endpoint = stub.addr;
    assert_has(
        &text,
        &format!(r#"portico_upstream_requests_total{{service="users",endpoint="{endpoint}",outcome="2xx"}} 1"#),
    );
    assert_has(
        &text,
        &format!(r#"portico_upstream_request_duration_seconds_count{{service="users",endpoint="{endpoint}"}} 1"#),
    );
    assert_has(&text, &format!(r#"portico_upstream_endpoint_up{{service="users",endpoint="{endpoint}"}} 1"#));
    // The scrape itself is in flight while the answer is encoded.
    assert_has(&text, "portico_http_requests_in_flight 1");
    // The response cache reports at every scrape (nothing cached on this route).
    assert_has(&text, r#"portico_cache_hits_total{cache="responses"} 0"#);
    assert!(!text.contains("/users/42"), "raw paths must never become labels:\n{text}");
}

#[tokio::test]
async fn an_unmatched_path_is_one_label_whatever_the_path() {
    let stub = Stub::echo("a").await;
    let gateway = Gateway::start(&config(&service("users", &[stub.url()], ""))).await;
    for path in ["/nope/1", "/nope/2", "/other"] {
        let response = client().get(gateway.url(path)).send().await.expect("response");
        assert_eq!(response.status(), 404);
    }
    let text = scrape(&gateway).await;
    assert_has(&text, r#"portico_http_requests_total{route="unmatched",method="GET",operation="",status="404"} 3"#);
    assert!(!text.contains("/nope"), "{text}");
}

#[tokio::test]
async fn upstream_failures_count_connect_errors_retries_and_ejections() {
    let live = Stub::echo("live").await;
    let dead = format!("http://{}", closed_port().await);
    let extra = "load_balancing = \"round_robin\"\nhealth_check = { enabled = false }\n\
                 retry = { attempts = 1 }\npassive_health = { consecutive_failures = 1, base_ejection = \"60s\" }";
    let gateway = Gateway::start(&config(&service("flaky", &[dead.clone(), live.url()], extra))).await;

    for _ in 0..2 {
        let response = client().get(gateway.url("/flaky/x")).send().await.expect("response");
        assert_eq!(response.status(), 200, "the retry reaches the live replica");
    }
    let text = scrape(&gateway).await;
    let dead_endpoint = dead.trim_start_matches("http://");
    assert_has(
        &text,
        &format!(
            r#"portico_upstream_requests_total{{service="flaky",endpoint="{dead_endpoint}",outcome="connect_error"}} 1"#
        ),
    );
    assert_has(&text, r#"portico_upstream_retries_total{service="flaky"} 1"#);
    assert_has(&text, &format!(r#"portico_upstream_ejections_total{{service="flaky",endpoint="{dead_endpoint}"}} 1"#));
    assert_has(&text, &format!(r#"portico_upstream_endpoint_ejected{{service="flaky",endpoint="{dead_endpoint}"}} 1"#));
    assert_has(&text, &format!(r#"portico_upstream_endpoint_up{{service="flaky",endpoint="{dead_endpoint}"}} 0"#));

    // With no replica left, the client gets a 502 and that status is counted.
    let only_dead = Gateway::start(&config(&service("down", &[dead], "retry = { attempts = 0 }"))).await;
    let response = client().get(only_dead.url("/down/x")).send().await.expect("response");
    assert_eq!(response.status(), 502);
    let text = scrape(&only_dead).await;
    assert_has(&text, r#"portico_http_requests_total{route="/down/",method="GET",operation="",status="502"} 1"#);
}

#[tokio::test]
async fn a_graphql_request_is_counted_by_operation_name_and_error_code() {
    let mut backends = backends(Behaviour::default(), "").await;
    // Point payment at a closed port: its field fails, the rest answers.
    let dead = format!("http://{}", closed_port().await);
    let payment_table = backends.toml.find("[services.payment]").expect("payment service");
    let start = payment_table + backends.toml[payment_table..].find("endpoints = [\"").expect("endpoints") + 14;
    let end = start + backends.toml[start..].find('"').expect("closing quote");
    backends.toml.replace_range(start..end, &dead);
    let gateway = Gateway::start(&backends.toml).await;

    let token = crate::graphql::token("1", "payments:read");
    let response = client()
        .post(gateway.url("/graphql"))
        .bearer_auth(&token)
        .json(&json!({"query": DASHBOARD, "variables": {"id": "1"}}))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    let body = json_of(response).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "UPSTREAM_UNAVAILABLE", "{body}");

    // Client-chosen names beyond the cap, or odd text, never become labels.
    let anonymous = json!({"query": "{ student(id: 1) { fullName } }"});
    let response = client().post(gateway.url("/graphql")).json(&anonymous).send().await.expect("response");
    assert_eq!(response.status(), 200);

    let text = scrape(&gateway).await;
    assert_has(
        &text,
        r#"portico_http_requests_total{route="/graphql",method="POST",operation="Dashboard",status="200"} 1"#,
    );
    assert_has(
        &text,
        r#"portico_http_requests_total{route="/graphql",method="POST",operation="anonymous",status="200"} 1"#,
    );
    assert_has(&text, r#"portico_graphql_errors_total{code="UPSTREAM_UNAVAILABLE"} 1"#);
    for service in ["student_api", "live_reading"] {
        assert!(
            text.lines()
                .any(|line| line.starts_with(&format!(r#"portico_upstream_requests_total{{service="{service}","#))
                    && line.contains(r#"outcome="2xx"}"#)),
            "{service} calls missing:\n{text}"
        );
    }
    assert_has(&text, "outcome=\"connect_error\"");
}

#[tokio::test]
async fn scraping_the_main_listener_is_refused_to_peers_outside_the_allow_list() {
    let stub = Stub::echo("a").await;
    let toml = format!(
        "{}\n[telemetry.metrics]\nallowed_peers = [\"10.0.0.0/8\"]\n",
        config(&service("users", &[stub.url()], ""))
    );
    let gateway = Gateway::start(&toml).await;
    let response = client().get(gateway.url("/metrics")).send().await.expect("response");
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn metrics_can_move_to_an_admin_listener() {
    let stub = Stub::echo("a").await;
    let admin = closed_port().await;
    let toml = format!(
        "{}\n[telemetry.metrics]\nlisten = \"{admin}\"\npath = \"/internal/metrics\"\n",
        config(&service("users", &[stub.url()], ""))
    );
    let gateway = Gateway::start(&toml).await;
    let response = client().get(gateway.url("/users/1")).send().await.expect("response");
    assert_eq!(response.status(), 200);

    let mut scraped = None;
    for _ in 0..50 {
        if let Ok(response) = client().get(format!("http://{admin}/internal/metrics")).send().await {
            scraped = Some(response.text().await.expect("text"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = scraped.expect("the admin listener answers");
    assert_has(&text, r#"portico_http_requests_total{route="/users/",method="GET",operation="",status="200"} 1"#);
    // The main listener no longer serves it: the path falls through to the proxy.
    let response = client().get(gateway.url("/internal/metrics")).send().await.expect("response");
    assert_eq!(response.status(), 404);
}

/// The `traceparent` and `tracestate` the echo stub received.
async fn forwarded_trace(gateway: &Gateway, headers: &[(&str, &str)]) -> (String, Option<String>) {
    let mut request = client().get(gateway.url("/users/1"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = json_of(request.send().await.expect("response")).await;
    let received = &body["headers"];
    (
        received["traceparent"].as_str().expect("a traceparent reaches the backend").to_owned(),
        received["tracestate"].as_str().map(str::to_owned),
    )
}

fn parts(traceparent: &str) -> Vec<String> {
    let parts: Vec<String> = traceparent.split('-').map(str::to_owned).collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[1].len(), 32, "{traceparent}");
    assert_eq!(parts[2].len(), 16, "{traceparent}");
    parts
}

#[tokio::test]
async fn a_trusted_callers_trace_reaches_the_backend_with_a_new_parent() {
    let stub = Stub::echo("a").await;
    let toml = format!(
        "[telemetry]\ntrusted_trace_peers = [\"127.0.0.1/32\"]\n\n{}",
        config(&service("users", &[stub.url()], ""))
    );
    let gateway = Gateway::start(&toml).await;

    let sent = traceparent();
    let (received, state) =
        forwarded_trace(&gateway, &[("traceparent", sent.as_str()), ("tracestate", "vendor=opaque")]).await;
    let received = parts(&received);
    assert_eq!(received[1], TRACE_ID, "same trace");
    assert_ne!(received[2], PARENT_ID, "the gateway's span is the backend's parent");
    assert_eq!(received[3], "01", "the caller's sampling decision is kept");
    assert_eq!(state.as_deref(), Some("vendor=opaque"));
}

#[tokio::test]
async fn an_untrusted_callers_trace_is_replaced_and_a_missing_one_started() {
    let stub = Stub::echo("a").await;
    // Only some other network is trusted; the test client is not in it.
    let toml = format!(
        "[telemetry]\ntrusted_trace_peers = [\"10.0.0.0/8\"]\n\n{}",
        config(&service("users", &[stub.url()], ""))
    );
    let gateway = Gateway::start(&toml).await;

    let sent = traceparent();
    let (received, state) =
        forwarded_trace(&gateway, &[("traceparent", sent.as_str()), ("tracestate", "vendor=forged")]).await;
    let received = parts(&received);
    assert_ne!(received[1], TRACE_ID, "a new trace");
    assert_eq!(state, None, "an untrusted tracestate is dropped");

    let (started, _) = forwarded_trace(&gateway, &[]).await;
    let started = parts(&started);
    assert_ne!(started[1], "0".repeat(32));
    assert_ne!(started[1], received[1], "each request starts its own trace");
}

#[tokio::test]
async fn graphql_backend_calls_carry_the_operations_trace() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = Arc::clone(&seen);
    let student_api = Router::new().route(
        "/users/{id}/",
        get(move |Path(id): Path<u64>, headers: http::HeaderMap| {
            let record = Arc::clone(&record);
            async move {
                let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                record.lock().expect("lock").push(traceparent);
                Json(json!({"id": id, "username": "ada", "email": "ada@example.com", "full_name": "Ada Lovelace",
                            "grade": 5, "created_at": "2026-01-02T03:04:05Z"}))
            }
        }),
    );
    let stub = Stub::serve(student_api).await;
    let mut toml =
        String::from("[server]\nlisten = \"127.0.0.1:0\"\n\n[telemetry]\ntrusted_trace_peers = [\"127.0.0.1\"]\n\n");
    for name in ["student_api", "live_reading", "payment"] {
        toml.push_str(&format!(
            "[services.{name}]\nendpoints = [\"{}\"]\nhealth_check = {{ enabled = false }}\n\n",
            stub.url()
        ));
    }
    toml.push_str("[graphql]\nenabled = true\n");
    let gateway = Gateway::start(&toml).await;

    let response = client()
        .post(gateway.url("/graphql"))
        .header("traceparent", traceparent())
        .json(&json!({"query": "{ a: student(id: 1) { fullName } b: student(id: 2) { fullName } }"}))
        .send()
        .await
        .expect("response");
    let body = json_of(response).await;
    assert_eq!(body["data"]["a"]["fullName"], "Ada Lovelace", "{body}");

    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let first = parts(&seen[0]);
    let second = parts(&seen[1]);
    assert_eq!((first[1].as_str(), second[1].as_str()), (TRACE_ID, TRACE_ID), "{seen:?}");
    assert_ne!(first[2], second[2], "each backend call is its own span");
    assert!(first[2] != PARENT_ID && second[2] != PARENT_ID, "{seen:?}");
}

/// A collector that accepts connections and never answers: the worst case
/// for an exporter, worse than a refused connection.
async fn silent_collector() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn an_unreachable_collector_never_slows_or_fails_requests() {
    let stub = Stub::echo("a").await;
    let (collector, _collector_task) = silent_collector().await;
    let refused = closed_port().await;
    for endpoint in [collector, refused] {
        let process = Process::start(&format!(
            "[telemetry.otlp]\nendpoint = \"http://{endpoint}\"\ntimeout = \"10s\"\nmax_queue_size = 64\n\n{}",
            service("users", &[stub.url()], "")
        ))
        .await;
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        // More spans than the queue holds, so dropping is exercised too.
        for _ in 0..300 {
            let one = Instant::now();
            let response = client().get(process.url("/users/1")).send().await.expect("response");
            assert_eq!(response.status(), 200);
            slowest = slowest.max(one.elapsed());
        }
        // A request that waited for the collector would take its 10 s
        // timeout; the bounds leave room for a loaded machine, not for that.
        assert!(slowest < Duration::from_secs(3), "slowest request took {slowest:?} with collector {endpoint}");
        assert!(started.elapsed() < Duration::from_secs(30), "300 requests took {:?}", started.elapsed());
    }
}

#[tokio::test]
async fn spans_are_exported_and_every_log_line_carries_the_trace_id() {
    let stub = Stub::echo("a").await;
    let exports: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let sink = Arc::clone(&exports);
    let collector = Stub::serve(Router::new().route(
        "/v1/traces",
        post(move |headers: http::HeaderMap, body: Bytes| {
            let sink = Arc::clone(&sink);
            async move {
                let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                sink.lock().expect("lock").push((content_type, body));
                ""
            }
        }),
    ))
    .await;
    let process = Process::start(&format!(
        "trusted_trace_peers = [\"127.0.0.1\"]\n\n[telemetry.otlp]\nendpoint = \"{}\"\n\n{}",
        collector.url(),
        service("users", &[stub.url()], "")
    ))
    .await;

    let response =
        client().get(process.url("/users/1")).header("traceparent", traceparent()).send().await.expect("response");
    let body = json_of(response).await;
    let forwarded = body["headers"]["traceparent"].as_str().expect("traceparent").to_owned();
    let backend_span = parts(&forwarded)[2].clone();

    let trace_id = hex(TRACE_ID);
    let span_id = hex(&backend_span);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = exports.lock().expect("lock").iter().any(|(content_type, body)| {
            content_type == "application/x-protobuf" && contains(body, &trace_id) && contains(body, &span_id)
        });
        if found {
            break;
        }
        assert!(Instant::now() < deadline, "no export with the trace id and the backend call's span id");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let logs = process.logs();
    let access: Vec<HashMap<String, Value>> = logs
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|line: &HashMap<String, Value>| {
            line.get("target").and_then(Value::as_str) == Some("portico::access")
                && line.get("path").and_then(Value::as_str) == Some("/users/1")
        })
        .collect();
    assert_eq!(access.len(), 1, "one access log line for the traced request in {logs:?}");
    for line in &access {
        assert_eq!(line["trace_id"], TRACE_ID, "{line:?}");
        assert_eq!(line["span"]["trace_id"], TRACE_ID, "the request span carries it: {line:?}");
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|index| u8::from_str_radix(&text[index..index + 2], 16).expect("hex")).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// The access-log lines of `path`, waiting up to ten seconds for `count`.
async fn access_lines(process: &Process, path: &str, count: usize) -> Vec<HashMap<String, Value>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<HashMap<String, Value>> = process
            .logs()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .filter(|line: &HashMap<String, Value>| {
                line.get("target").and_then(Value::as_str) == Some("portico::access")
                    && line.get("path").and_then(Value::as_str) == Some(path)
            })
            .collect();
        if lines.len() >= count || Instant::now() >= deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_access_log_says_complete_exactly_when_the_body_was_sent_whole() {
    let (release_tx, release_rx) = tokio::sync::watch::channel(());
    let app = Router::new()
        .route("/sized", get(|| async { "x".repeat(100_000) }))
        .route(
            "/chunked",
            get(|| async {
                let chunks = (0..5).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 10_000])));
                axum::body::Body::from_stream(futures_util::stream::iter(chunks))
            }),
        )
        .route(
            "/stalls",
            get(move || {
                let mut release = release_rx.clone();
                async move {
                    let first = futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("first")) });
                    let rest = futures_util::stream::once(async move {
                        let _ = release.changed().await;
                        Ok::<_, std::io::Error>(Bytes::from("rest"))
                    });
                    axum::body::Body::from_stream(first.chain(rest))
                }
            }),
        );
    let stub = Stub::serve(app).await;
    let process = Process::start(&service("files", &[stub.url()], "request_timeout = \"5s\"")).await;

    for (path, length) in [("/files/sized", 100_000), ("/files/chunked", 50_000)] {
        for _ in 0..5 {
            let response = client().get(process.url(path)).send().await.expect("response");
            assert_eq!(response.bytes().await.expect("whole body").len(), length);
        }
        let lines = access_lines(&process, path, 5).await;
        assert_eq!(lines.len(), 5, "{path}: {lines:?}");
        for line in &lines {
            assert_eq!(line["complete"], true, "{path}: a fully delivered answer is complete: {line:?}");
            assert_eq!(line["bytes_out"], length, "{line:?}");
        }
    }

    // A client that hangs up after the first chunk did not get the answer.
    let response = client().get(process.url("/files/stalls")).send().await.expect("response");
    let mut body = response.bytes_stream();
    assert_eq!(body.next().await.expect("a first chunk").expect("data"), "first");
    drop(body);
    let lines = access_lines(&process, "/files/stalls", 1).await;
    drop(release_tx);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["complete"], false, "{:?}", lines[0]);
}

#[tokio::test]
async fn a_failed_backend_call_is_logged_with_the_endpoint_and_the_connection_error() {
    let dead = closed_port().await;
    let process =
        Process::start(&service("down", &[format!("http://{dead}")], "health_check = { enabled = false }")).await;
    let response = client().get(process.url("/down/x")).send().await.expect("response");
    assert_eq!(response.status(), 502);
    assert!(!response.text().await.expect("text").contains(&dead.to_string()), "clients never see the address");

    let field = |line: &HashMap<String, Value>, name: &str| line.get(name).and_then(Value::as_str).map(str::to_owned);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (access, failure) = loop {
        let lines: Vec<HashMap<String, Value>> =
            process.logs().iter().filter_map(|line| serde_json::from_str(line).ok()).collect();
        let access = lines.iter().find(|line| {
            field(line, "target").as_deref() == Some("portico::access")
                && field(line, "path").as_deref() == Some("/down/x")
        });
        let failure = lines.iter().find(|line| field(line, "message").as_deref() == Some("request failed"));
        if let (Some(access), Some(failure)) = (access, failure) {
            break (access.clone(), failure.clone());
        }
        assert!(Instant::now() < deadline, "no access log line and failure line in {:?}", process.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(access["status"], 502, "{access:?}");
    assert_eq!(access["endpoint"], dead.to_string(), "{access:?}");
    let error = field(&failure, "error").unwrap_or_default();
    assert!(error.contains("onnection refused"), "the log names the connection error: {failure:?}");
}

#[tokio::test]
async fn the_access_log_names_the_caller_by_the_rate_limit_key() {
    let stub = Stub::echo("users").await;
    let key_hash = {
        use sha2::Digest;
        sha2::Sha256::digest(b"machine-key").iter().map(|byte| format!("{byte:02x}")).collect::<String>()
    };
    let process = Process::start(&format!(
        "[[auth.api_keys]]\nname = \"reporting\"\nsha256 = \"{key_hash}\"\n\n{}",
        service("users", &[stub.url()], "")
    ))
    .await;
    let anonymous = client().get(process.url("/users/anonymous")).send().await.expect("response");
    assert_eq!(anonymous.status(), 200);
    let machine =
        client().get(process.url("/users/machine")).header("x-api-key", "machine-key").send().await.expect("response");
    assert_eq!(machine.status(), 200);

    let anonymous = access_lines(&process, "/users/anonymous", 1).await;
    assert_eq!(anonymous.first().map(|line| &line["client"]), Some(&json!("ip:127.0.0.1")), "{anonymous:?}");
    let machine = access_lines(&process, "/users/machine", 1).await;
    assert_eq!(machine.first().map(|line| &line["client"]), Some(&json!("key:reporting")), "{machine:?}");
}
