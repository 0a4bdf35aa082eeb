//! The response cache against a stub backend whose answers carry a counter
//! (`n`), the caller it saw (`user`) and whatever caching headers the
//! request's query asks for: hits and misses, HTTP caching rules, per-caller
//! isolation (REST and GraphQL), coalescing, the byte bound, stale answers,
//! purges, and the Redis tier shared by two gateways.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde_json::{json, Value};

use crate::graphql::{token, SECRET};
use crate::harness::{client, eventually, Gateway, Stub};
use crate::redis_server::{redis_short_circuited, redis_up, RedisServer};

/// The admin key of the test gateways, and its SHA-256.
const ADMIN_KEY: &str = "let-me-purge";

/// How the stub misbehaves: `0` answers, `1` hangs, any other value is the
/// status it answers with.
#[derive(Clone, Default)]
struct Backend {
    served: Arc<AtomicUsize>,
    failure: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
}

impl Backend {
    fn fail_with(&self, status: u16) {
        self.failure.store(status, Ordering::SeqCst);
    }
}

/// Answers any path; the query picks the answer's caching headers.
async fn answer(
    State(backend): State<Backend>,
    uri: http::Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let n = backend.served.fetch_add(1, Ordering::SeqCst) + 1;
    match backend.failure.load(Ordering::SeqCst) {
        0 => {}
        1 => std::future::pending::<()>().await,
        status => return (StatusCode::from_u16(status).expect("status"), "backend trouble").into_response(),
    }
    let delay = backend.delay_ms.load(Ordering::SeqCst);
    if let Some(delay) = query.get("delay").and_then(|delay| delay.parse().ok()).or((delay > 0).then_some(delay)) {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let status = query.get("status").and_then(|status| status.parse().ok()).unwrap_or(200);
    let mut response = match query.get("size").and_then(|size| size.parse::<usize>().ok()) {
        Some(size) if query.contains_key("chunked") => {
            let chunks = (0..size.div_ceil(1024)).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 1024]));
            Response::new(Body::from_stream(futures_util::stream::iter(chunks)))
        }
        Some(size) => Response::new(Body::from(vec![b'x'; size])),
        None => Json(json!({
            "path": uri.path(),
            "n": n,
            "user": header("x-user-id"),
            "language": header("accept-language"),
        }))
        .into_response(),
    };
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    for (param, name) in [
        ("cc", "cache-control"),
        ("expires", "expires"),
        ("vary", "vary"),
        ("cookie", "set-cookie"),
        ("etag", "etag"),
        ("modified", "last-modified"),
    ] {
        if let Some(value) = query.get(param) {
            response.headers_mut().insert(name, value.parse().expect("header value"));
        }
    }
    response
}

/// The GraphQL side of the stub: the caller's profile, lessons, payments.
fn graphql_routes() -> Router<Backend> {
    Router::new()
        .route(
            "/profile/",
            get(|State(backend): State<Backend>, headers: HeaderMap| async move {
                let n = backend.served.fetch_add(1, Ordering::SeqCst) + 1;
                let user = headers.get("x-user-id").and_then(|v| v.to_str().ok()).unwrap_or("anonymous").to_owned();
                Json(json!({"id": user, "full_name": format!("User {user}"), "n": n}))
            }),
        )
        .route(
            "/lesson/{id}/",
            get(|State(backend): State<Backend>, Path(id): Path<String>| async move {
                backend.served.fetch_add(1, Ordering::SeqCst);
                let mut response = Json(json!({"id": id, "title": format!("Lesson {id}")})).into_response();
                if id == "fresh" {
                    response.headers_mut().insert("cache-control", "no-store".parse().expect("value"));
                }
                response
            }),
        )
        .route(
            "/payments/",
            get(|State(backend): State<Backend>| async move {
                let n = backend.served.fetch_add(1, Ordering::SeqCst) + 1;
                Json(json!({"results": [{"id": n, "amount": "49.00", "status": "succeeded"}]}))
            }),
        )
        .route(
            "/checkout/",
            post(|State(backend): State<Backend>| async move {
                backend.served.fetch_add(1, Ordering::SeqCst);
                (StatusCode::CREATED, Json(json!({"id": 77, "amount": "49.00", "status": "succeeded"})))
            }),
        )
}

async fn backend() -> (Backend, Stub) {
    let backend = Backend::default();
    let router =
        graphql_routes().route("/health/", get(|| async { "ok" })).fallback(answer).with_state(backend.clone());
    (backend, Stub::serve(router).await)
}

const ROUTES: &str = r#"
[[routes]]
prefix = "/pub/"
service = "svc"
cache = { ttl = "30s", scope = "public" }

[[routes]]
prefix = "/priv/"
service = "svc"
cache = { ttl = "30s" }

[[routes]]
prefix = "/brief/"
service = "svc"
cache = { ttl = "400ms", scope = "public" }

[[routes]]
prefix = "/stale/"
service = "svc"
cache = { ttl = "300ms", scope = "public", stale_while_revalidate = "30s" }

[[routes]]
prefix = "/fallback/"
service = "svc"
cache = { ttl = "300ms", scope = "public", stale_if_error = "30s" }

[[routes]]
prefix = "/negative/"
service = "svc"
cache = { ttl = "30s", scope = "public", negative_ttl = "30s" }

[[routes]]
prefix = "/stubborn/"
service = "svc"
cache = { ttl = "30s", scope = "public", honor_client_no_cache = false }

[[routes]]
prefix = "/catalogue/lesson/"
upstream_prefix = "/lesson/"
service = "svc"
cache = { ttl = "30s", scope = "public" }

[[routes]]
prefix = "/plain/"
service = "svc"
"#;

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A gateway in front of `stub` with [`ROUTES`] and extra `[cache]` lines.
fn config(stub: &Stub, cache: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n\
         [services.svc]\nendpoints = [\"{}\"]\nrequest_timeout = \"500ms\"\nhealth_check = {{ enabled = false }}\n\
         passive_health = {{ enabled = false }}\nretry = {{ attempts = 0 }}\n\n\
         [auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\n\n\
         [cache]\nadmin_key_sha256 = \"{}\"\n{cache}\n{ROUTES}",
        stub.url(),
        sha256_hex(ADMIN_KEY),
    )
}

/// One GET, with optional bearer token and extra headers.
async fn fetch(gateway: &Gateway, path: &str, bearer: Option<&str>, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().get(gateway.url(path));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("response")
}

fn x_cache(response: &reqwest::Response) -> String {
    response.headers().get("x-cache").and_then(|value| value.to_str().ok()).unwrap_or("none").to_owned()
}

/// `X-Cache` and the JSON body of a GET.
async fn get_json(gateway: &Gateway, path: &str, bearer: Option<&str>) -> (String, Value) {
    let response = fetch(gateway, path, bearer, &[]).await;
    let label = x_cache(&response);
    (label, response.json().await.expect("JSON"))
}

async fn label_of(gateway: &Gateway, path: &str) -> String {
    x_cache(&fetch(gateway, path, None, &[]).await)
}

async fn admin(gateway: &Gateway, method: reqwest::Method, query: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = client().request(method, gateway.url(&format!("/admin/cache{query}")));
    if let Some(key) = key {
        request = request.header("x-admin-key", key);
    }
    request.send().await.expect("response")
}

async fn stats(gateway: &Gateway) -> Value {
    admin(gateway, reqwest::Method::GET, "", Some(ADMIN_KEY)).await.json().await.expect("stats JSON")
}

#[tokio::test]
async fn a_repeated_get_is_a_hit_with_age_and_no_second_backend_call() {
    let (_, stub) = backend().await;
    let gateway = Gateway::start(&config(&stub, "")).await;

    let first = fetch(&gateway, "/pub/item", None, &[]).await;
    assert_eq!(x_cache(&first), "MISS");
    assert!(first.headers().get("age").is_none(), "a fresh answer has no Age");
    let first: Value = first.json().await.expect("JSON");
    let second = fetch(&gateway, "/pub/item", None, &[]).await;
    assert_eq!(x_cache(&second), "HIT");
    assert_eq!(second.headers()["age"], "0");
    assert!(second.headers().get("x-request-id").is_some(), "request ids stay per request");
    assert_eq!(second.json::<Value>().await.expect("JSON"), first);
    assert_eq!(stub.hits(), 1);

    assert_eq!(label_of(&gateway, "/pub/item?page=2").await, "MISS", "the query is part of the key");
    assert_eq!(label_of(&gateway, "/plain/item").await, "none", "routes without a cache are untouched");
    let head = client().head(gateway.url("/pub/item")).send().await.expect("response");
    assert_eq!(x_cache(&head), "HIT", "HEAD is answered from the stored GET");
    assert_eq!(stub.hits(), 3);
}

#[tokio::test]
async fn answers_expire_after_the_route_ttl() {
    let (_, stub) = backend().await;
    let gateway = Gateway::start(&config(&stub, "")).await;
    assert_eq!(label_of(&gateway, "/brief/item").await, "MISS");
    assert_eq!(label_of(&gateway, "/brief/item").await, "HIT");
    eventually(Duration::from_secs(5), || async { label_of(&gateway, "/brief/item").await == "MISS" }).await;
    assert_eq!(stub.hits(), 2);
}

#[tokio::test]
async fn no_store_private_no_cache_set_cookie_and_odd_statuses_are_not_stored() {
    let (_, stub) = backend().await;
    let gateway = Gateway::start(&config(&stub, "")).await;
    for path in [
        "/pub/a?cc=no-store",
        "/pub/b?cc=private,max-age%3D60",
        "/pub/c?cc=no-cache",
        "/pub/d?cookie=session%3D1",
        "/pub/e?status=500",
        "/pub/f?status=201",
        "/pub/g?status=302",
        "/pub/h?status=404",
        "/pub/i?expires=0",
        "/pub/j?vary=*",
        "/pub/k?cc=max-age%3D0",
    ] {
        let before = stub.hits();
        assert_eq!(label_of(&gateway, path).await, "MISS", "{path}");
        assert_eq!(label_of(&gateway, path).await, "MISS", "{path} must not be stored");
        assert_eq!(stub.hits(), before + 2, "{path}");
    }
    for (path, status) in [("/pub/l?status=203", 203), ("/pub/m?status=204", 204), ("/pub/n?status=301", 301)] {
        assert_eq!(label_of(&gateway, path).await, "MISS");
        let again = fetch(&gateway, path, None, &[]).await;
        assert_eq!((x_cache(&again), again.status().as_u16()), ("HIT".to_owned(), status), "{path}");
    }
}

#[tokio::test]
async fn a_404_is_cached_only_where_a_negative_ttl_is_set() {
    let (_, stub) = backend().await;
    let gateway = Gateway::start(&config(&stub, "")).await;
    assert_eq!(label_of(&gateway, "/negative/gone?status=404").await, "MISS");
    let again = fetch(&gateway, "/negative/gone?status=404", None, &[]).await;
    assert_eq!((again.status(), x_cache(&again)), (StatusCode::NOT_FOUND, "HIT".to_owned()));
    assert_eq!(label_of(&gateway, "/negative/broken?status=500").await, "MISS");
    assert_eq!(label_of(&gateway, "/negative/broken?status=500").await, "MISS", "5xx never");
}

#[tokio::test]
async fn max_age_s_maxage_and_expires_shorten_but_never_extend_the_ttl() {
    let (_, stub) = backend().await;
    let gateway = Gateway::start(&config(&stub, "")).await;
    let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3));
    let expires = format!("/pub/expires?expires={}", soon.replace(' ', "%20").replace(',', "%2C"));
    for path in ["/pub/max-age?cc=max-age%3D1", "/pub/s-maxage?cc=max-age%3D600,s-maxage%3D1", expires.as_str()] {
        assert_eq!(label_of(&gateway, path).await, "MISS", "{path}");
        assert_eq!(label_of(&gateway, path).await, "HIT", "{path}");
        eventually(Duration::from_secs(8), || async { label_of(&gateway, path).await == "MISS" }).await;
    }
    // The route's 400ms is the ceiling over the answer's hour.
    assert_eq!(label_of(&gateway, "/brief/long?cc=max-age%3D3600").await, "MISS");
    eventually(Duration::from_secs(5), || async {
        label_of(&gateway, "/brief/long?cc=max-age%3D3600").await == "MISS"
    })
    .await;
    let long = fetch(&gateway, "/pub/long?cc=max-age%3D3600", None, &[]).await;
    assert_eq!(long.headers()["cache-control"], "max-age=3600", "the backend's headers pass through");
}

#[tokio::test]
async fn vary_headers_are_part_of_the_key() {
    let (_, stub) = backend().await;
    let gateway = Gateway::start(&config(&stub, "")).await;
    let path = "/pub/greeting?vary=Accept-Language";
    let english = fetch(&gateway, path, None, &[("accept-language", "en")]).await;
    assert_eq!(x_cache(&english), "MISS");
    let french = fetch(&gateway, path, None, &[("accept-language", "fr")]).await;
    assert_eq!(x_cache(&french), "MISS", "another language is another answer");
    assert_eq!(french.json::<Value>().await.expect("JSON")["language"], "fr");
    let english = fetch(&gateway, path, None, &[("accept-language", "en")]).await;
    assert_eq!(x_cache(&english), "HIT");
    assert_eq!(english.json::<Value>().await.expect("JSON")["language"], "en");
    assert_eq!(x_cache(&fetch(&gateway, path, None, &[]).await), "MISS", "no header is a value of its own");
    assert_eq!(stub.hits(), 3);
}

#[tokio::test]
async fn client_directives_revalidate_or_bypass_unless_the_route_says_otherwise() {
    let (_, stub) = backend().await;
    let gateway = Gateway::start(&config(&stub, "")).await;
    assert_eq!(label_of(&gateway, "/pub/item").await, "MISS");
    let revalidated = fetch(&gateway, "/pub/item", None, &[("cache-control", "no-cache")]).await;
    assert_eq!(x_cache(&revalidated), "MISS", "no-cache fetches a new answer");
    assert_eq!(revalidated.json::<Value>().await.expect("JSON")["n"], 2);
    let (label, body) = get_json(&gateway, "/pub/item", None).await;
    assert_eq!((label.as_str(), body["n"].as_u64()), ("HIT", Some(2)), "and stores it");
    let bypassed = fetch(&gateway, "/pub/item", None, &[("cache-control", "no-store")]).await;
    assert_eq!(x_cache(&bypassed), "BYPASS");
    let posted = client().post(gateway.url("/pub/item")).body("x").send().await.expect("response");
    assert_eq!(x_cache(&posted), "BYPASS");
    assert_eq!(label_of(&gateway, "/pub/item").await, "MISS", "a successful POST invalidates the URI");

    assert_eq!(label_of(&gateway, "/stubborn/item").await, "MISS");
    let kept = fetch(&gateway, "/stubborn/item", None, &[("cache-control", "no-cache")]).await;
    assert_eq!(x_cache(&kept), "HIT", "honor_client_no_cache = false");

    let tagged = "/pub/tagged?etag=%22v1%22";
    assert_eq!(label_of(&gateway, tagged).await, "MISS");
    let not_modified = fetch(&gateway, tagged, None, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((not_modified.status(), x_cache(&not_modified)), (StatusCode::NOT_MODIFIED, "HIT".to_owned()));
}

#[tokio::test]
async fn stored_answers_answer_if_modified_since_with_304_and_if_none_match_takes_precedence() {
    let (_, stub) = backend().await;
    let gateway = Gateway::start(&config(&stub, "")).await;
    let modified = "/pub/dated?modified=Wed,%2021%20Oct%202026%2007:28:00%20GMT&cc=max-age%3D60";
    assert_eq!(label_of(&gateway, modified).await, "MISS");

    let not_modified = fetch(&gateway, modified, None, &[("if-modified-since", "Wed, 21 Oct 2026 07:28:00 GMT")]).await;
    assert_eq!((not_modified.status(), x_cache(&not_modified)), (StatusCode::NOT_MODIFIED, "HIT".to_owned()));
    let headers = not_modified.headers();
    assert_eq!(headers["cache-control"], "max-age=60", "a 304 repeats Cache-Control");
    assert_eq!(headers["last-modified"], "Wed, 21 Oct 2026 07:28:00 GMT", "and, without an ETag, Last-Modified");
    assert!(headers.get("content-type").is_none(), "but no other representation metadata");
    assert!(headers.contains_key("age"));

    let later = fetch(&gateway, modified, None, &[("if-modified-since", "Thu, 22 Oct 2026 07:28:00 GMT")]).await;
    assert_eq!(later.status(), StatusCode::NOT_MODIFIED);
    let older = fetch(&gateway, modified, None, &[("if-modified-since", "Tue, 20 Oct 2026 07:28:00 GMT")]).await;
    assert_eq!((older.status(), x_cache(&older)), (StatusCode::OK, "HIT".to_owned()), "changed since: the answer");
    let invalid = fetch(&gateway, modified, None, &[("if-modified-since", "yesterday")]).await;
    assert_eq!(invalid.status(), StatusCode::OK, "an invalid date is ignored");

    // If-None-Match decides alone when both are sent (RFC 9110 13.1.3).
    let tagged = "/pub/both?etag=%22v2%22&modified=Wed,%2021%20Oct%202026%2007:28:00%20GMT";
    assert_eq!(label_of(&gateway, tagged).await, "MISS");
    let other_tag = fetch(
        &gateway,
        tagged,
        None,
        &[("if-none-match", "\"v1\""), ("if-modified-since", "Thu, 22 Oct 2026 07:28:00 GMT")],
    )
    .await;
    assert_eq!(other_tag.status(), StatusCode::OK, "another ETag: the answer, whatever the date says");
    let same_tag = fetch(
        &gateway,
        tagged,
        None,
        &[("if-none-match", "W/\"v2\""), ("if-modified-since", "Tue, 20 Oct 2026 07:28:00 GMT")],
    )
    .await;
    assert_eq!(same_tag.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(same_tag.headers()["etag"], "\"v2\"");
    assert!(same_tag.headers().get("last-modified").is_none(), "with an ETag, the ETag is what revalidates");

    assert_eq!(stub.hits(), 2, "every conditional request above was answered from the cache");

    // An error is never "not modified".
    let missing = "/pub/gone?status=404&cc=max-age%3D60";
    assert_eq!(label_of(&gateway, missing).await, "MISS");
    let gone = fetch(&gateway, missing, None, &[("if-modified-since", "Thu, 22 Oct 2026 07:28:00 GMT")]).await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn private_answers_never_cross_callers() {
    let (_, stub) = backend().await;
    let gateway = Gateway::start(&config(&stub, "")).await;
    let alice = token("alice", "");
    let bob = token("bob", "");
    let callers: [(Option<&str>, Value); 3] =
        [(Some(&alice), json!("alice")), (Some(&bob), json!("bob")), (None, Value::Null)];
    for round in 0..3 {
        for (bearer, expected) in &callers {
            let (label, body) = get_json(&gateway, "/priv/profile", *bearer).await;
            assert_eq!(&body["user"], expected, "round {round}: an answer crossed callers ({label})");
            assert_eq!(label, if round == 0 { "MISS" } else { "HIT" }, "round {round}, caller {expected}");
        }
    }
    assert_eq!(stub.hits(), 3, "one entry per caller");

    // A public route shares one answer, whoever asks first.
    let (_, first) = get_json(&gateway, "/pub/catalogue", Some(&alice)).await;
    let (label, second) = get_json(&gateway, "/pub/catalogue", Some(&bob)).await;
    assert_eq!((label.as_str(), &second["n"]), ("HIT", &first["n"]));
}

#[tokio::test]
async fn a_hundred_concurrent_misses_make_one_backend_call() {
    let (_, stub) = backend().await;
    // The slow answer keeps the fill in flight while the others arrive; the
    // upstream timeout is far beyond it, so a loaded machine cannot turn the
    // one backend call into a timeout.
    let patient = config(&stub, "").replace("request_timeout = \"500ms\"", "request_timeout = \"20s\"");
    let gateway = Arc::new(Gateway::start(&patient).await);
    let requests = (0..100).map(|_| {
        let gateway = Arc::clone(&gateway);
        tokio::spawn(async move { get_json(&gateway, "/pub/cold?delay=1000", None).await })
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut labels = HashMap::new();
    for answer in answers {
        let (label, body) = answer.expect("task");
        assert_eq!(body["n"], 1, "everyone got the one answer");
        *labels.entry(label).or_insert(0) += 1;
    }
    assert_eq!(stub.hits(), 1, "exactly one upstream request");
    assert_eq!(labels.get("MISS"), Some(&1), "{labels:?}");
    assert_eq!(labels.get("HIT"), Some(&99), "{labels:?}");
}

#[tokio::test]
async fn the_byte_bound_holds_under_a_flood_of_large_answers() {
    let (_, stub) = backend().await;
    let gateway = Gateway::start(&config(&stub, "max_size = \"64KiB\"\nmax_entry_size = \"16KiB\"")).await;
    for index in 0..150 {
        let response = fetch(&gateway, &format!("/pub/large-{index}?size=10000"), None, &[]).await;
        assert_eq!(response.bytes().await.expect("body").len(), 10_000);
    }
    let stats = stats(&gateway).await;
    let bytes = stats["bytes"].as_u64().expect("bytes");
    assert!(bytes <= 64 * 1024, "{bytes} bytes held: {stats}");
    assert!(stats["entries"].as_u64().expect("entries") < 150, "{stats}");
    assert!(stats["evictions"].as_u64().expect("evictions") > 0, "{stats}");

    // Larger than an entry may be: streamed through, never stored.
    for (path, length) in [("/pub/huge?size=40000", 40_000), ("/pub/huge-chunked?size=40960&chunked=1", 40_960)] {
        for _ in 0..2 {
            let response = fetch(&gateway, path, None, &[]).await;
            assert_eq!(x_cache(&response), "MISS", "{path}");
            assert_eq!(response.bytes().await.expect("body").len(), length, "{path} arrives whole");
        }
    }
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once() {
    let (_, stub) = backend().await;
    let gateway = Arc::new(Gateway::start(&config(&stub, "")).await);
    let (label, body) = get_json(&gateway, "/stale/item", None).await;
    assert_eq!((label.as_str(), &body["n"]), ("MISS", &json!(1)));

    // Bursts of concurrent requests until the answer has expired: the burst
    // that finds it stale is answered at once, with one refresh behind it.
    eventually(Duration::from_secs(5), || {
        let gateway = Arc::clone(&gateway);
        async move {
            let burst = (0..20).map(|_| {
                let gateway = Arc::clone(&gateway);
                tokio::spawn(async move { get_json(&gateway, "/stale/item", None).await })
            });
            let answers = futures_util::future::join_all(burst).await;
            let mut stale = false;
            for answer in answers {
                let (label, body) = answer.expect("task");
                if label == "STALE" {
                    assert_eq!(body["n"], 1, "the old answer is served");
                    stale = true;
                }
            }
            stale
        }
    })
    .await;
    eventually(Duration::from_secs(5), || {
        let gateway = Arc::clone(&gateway);
        async move {
            let (label, body) = get_json(&gateway, "/stale/item", None).await;
            label == "HIT" && body["n"] == 2
        }
    })
    .await;
    assert_eq!(stub.hits(), 2, "exactly one background refresh");
}

#[tokio::test]
async fn stale_if_error_covers_5xx_timeouts_and_a_dead_backend() {
    let (backend, stub) = backend().await;
    let gateway = Gateway::start(&config(&stub, "")).await;
    assert_eq!(label_of(&gateway, "/fallback/item").await, "MISS");
    assert_eq!(label_of(&gateway, "/brief/item").await, "MISS");

    backend.fail_with(503);
    eventually(Duration::from_secs(5), || async {
        let (label, body) = get_json(&gateway, "/fallback/item", None).await;
        label == "STALE" && body["n"] == 1
    })
    .await;
    eventually(Duration::from_secs(5), || async {
        let response = fetch(&gateway, "/brief/item", None, &[]).await;
        response.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let response = fetch(&gateway, "/fallback/never-stored", None, &[]).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "nothing stored, nothing to fall back on");

    backend.fail_with(1);
    let (label, body) = get_json(&gateway, "/fallback/item", None).await;
    assert_eq!((label.as_str(), &body["n"]), ("STALE", &json!(1)), "a timeout (504) falls back too");

    drop(stub);
    let (label, body) = get_json(&gateway, "/fallback/item", None).await;
    assert_eq!((label.as_str(), &body["n"]), ("STALE", &json!(1)), "and an unreachable backend (502)");
}

#[tokio::test]
async fn purges_by_prefix_service_or_all_need_the_admin_key() {
    let (_, stub) = backend().await;
    let gateway = Gateway::start(&config(&stub, "")).await;
    let alice = token("alice", "");
    let warm = |path: &'static str| {
        let gateway = &gateway;
        let alice = alice.clone();
        async move {
            fetch(gateway, path, Some(&alice), &[]).await;
            assert_eq!(x_cache(&fetch(gateway, path, Some(&alice), &[]).await), "HIT", "{path}");
        }
    };
    for path in ["/pub/a/1", "/pub/b/1", "/priv/a/1"] {
        warm(path).await;
    }

    let refused = admin(&gateway, reqwest::Method::DELETE, "?prefix=/pub/a/", None).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let refused = admin(&gateway, reqwest::Method::DELETE, "?prefix=/pub/a/", Some("guess")).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let refused = admin(&gateway, reqwest::Method::DELETE, "?prefx=/pub/a/", Some(ADMIN_KEY)).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(x_cache(&fetch(&gateway, "/pub/a/1", Some(&alice), &[]).await), "HIT", "refusals purge nothing");

    let purged = admin(&gateway, reqwest::Method::DELETE, "?prefix=/pub/a/", Some(ADMIN_KEY)).await;
    assert_eq!(purged.status(), StatusCode::OK);
    assert_eq!(purged.json::<Value>().await.expect("JSON")["purged"], 1);
    assert_eq!(x_cache(&fetch(&gateway, "/pub/a/1", Some(&alice), &[]).await), "MISS");
    assert_eq!(x_cache(&fetch(&gateway, "/pub/b/1", Some(&alice), &[]).await), "HIT");

    // By path on the service: /pub/ and /priv/ both strip to /a/...
    let purged = admin(&gateway, reqwest::Method::DELETE, "?service=svc&prefix=/a/", Some(ADMIN_KEY)).await;
    assert_eq!(purged.json::<Value>().await.expect("JSON")["purged"], 2);
    assert_eq!(x_cache(&fetch(&gateway, "/priv/a/1", Some(&alice), &[]).await), "MISS");
    assert_eq!(x_cache(&fetch(&gateway, "/pub/b/1", Some(&alice), &[]).await), "HIT");

    let purged = admin(&gateway, reqwest::Method::DELETE, "?service=svc", Some(ADMIN_KEY)).await;
    assert_eq!(purged.json::<Value>().await.expect("JSON")["purged"], 2, "/pub/b/1 and /priv/a/1 were left");
    warm("/pub/a/1").await;
    admin(&gateway, reqwest::Method::DELETE, "", Some(ADMIN_KEY)).await;
    assert_eq!(x_cache(&fetch(&gateway, "/pub/a/1", Some(&alice), &[]).await), "MISS", "everything");

    let stats = stats(&gateway).await;
    assert!(stats["hits"].as_u64() > Some(0) && stats["misses"].as_u64() > Some(0), "{stats}");
}

#[tokio::test]
async fn an_upstream_prefix_route_reaches_the_service_under_its_own_path() {
    let (_, stub) = backend().await;
    let gateway = Gateway::start(&config(&stub, "")).await;
    let (label, body) = get_json(&gateway, "/catalogue/lesson/5/", None).await;
    assert_eq!((label.as_str(), &body["title"]), ("MISS", &json!("Lesson 5")), "{body}");
    let purged = admin(&gateway, reqwest::Method::DELETE, "?service=svc&prefix=/lesson/", Some(ADMIN_KEY)).await;
    assert_eq!(purged.json::<Value>().await.expect("JSON")["purged"], 1, "named by the service's path");
}

#[tokio::test]
async fn the_redis_tier_is_shared_by_two_gateways_and_only_for_public_answers() {
    let redis = RedisServer::start();
    let (_, stub) = backend().await;
    let toml = config(&stub, &format!("redis_url = \"{}\"", redis.url));
    let first = Gateway::start(&toml).await;
    let second = Gateway::start(&toml).await;
    for gateway in [&first, &second] {
        eventually(Duration::from_secs(10), || async { stats(gateway).await["shared_connected"] == true }).await;
    }

    // Replicas behind one name see the same Host, which is part of the key.
    let host = [("host", "portico.test")];
    assert_eq!(x_cache(&fetch(&first, "/pub/shared", None, &host).await), "MISS");
    let connection = redis::Client::open(redis.url.as_str()).expect("url");
    eventually(Duration::from_secs(5), || {
        let connection = connection.clone();
        async move {
            let Ok(mut connection) = connection.get_multiplexed_async_connection().await else { return false };
            let keys: Vec<String> =
                redis::cmd("KEYS").arg("portico:cache:*").query_async(&mut connection).await.unwrap_or_default();
            !keys.is_empty()
        }
    })
    .await;
    let response = fetch(&second, "/pub/shared", None, &host).await;
    let label = x_cache(&response);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!((label.as_str(), &body["n"]), ("HIT", &json!(1)), "the second gateway found it in Redis");
    assert_eq!(stub.hits(), 1);
    assert_eq!(stats(&second).await["shared_hits"], 1);

    let alice = token("alice", "");
    assert_eq!(x_cache(&fetch(&first, "/priv/mine", Some(&alice), &[]).await), "MISS");
    assert_eq!(x_cache(&fetch(&second, "/priv/mine", Some(&alice), &[]).await), "MISS", "private answers stay local");

    admin(&first, reqwest::Method::DELETE, "?prefix=/pub/", Some(ADMIN_KEY)).await;
    let third = Gateway::start(&toml).await;
    eventually(Duration::from_secs(10), || async { stats(&third).await["shared_connected"] == true }).await;
    eventually(Duration::from_secs(5), || async {
        let mut connection = connection.get_multiplexed_async_connection().await.expect("connection");
        let keys: Vec<String> =
            redis::cmd("KEYS").arg("portico:cache:*").query_async(&mut connection).await.expect("keys");
        keys.is_empty()
    })
    .await;
    assert_eq!(x_cache(&fetch(&third, "/pub/shared", None, &host).await), "MISS", "purged in Redis too");
}

#[tokio::test]
async fn a_redis_that_is_down_costs_hits_not_requests() {
    let dead = crate::harness::closed_port().await;
    let (_, stub) = backend().await;
    let gateway = Gateway::start(&config(&stub, &format!("redis_url = \"redis://{dead}\""))).await;
    assert_eq!(label_of(&gateway, "/pub/item").await, "MISS");
    assert_eq!(label_of(&gateway, "/pub/item").await, "HIT", "memory still serves");
    assert_eq!(stats(&gateway).await["shared_connected"], false);
}

async fn scrape(gateway: &Gateway) -> String {
    client().get(gateway.url("/metrics")).send().await.expect("metrics").text().await.expect("text")
}

/// Waits until the gateway's answer to `path` is in Redis.
pub(crate) async fn stored_in_redis(redis: &RedisServer, path: &str) {
    let connection = redis::Client::open(redis.url.as_str()).expect("url");
    eventually(Duration::from_secs(5), || {
        let connection = connection.clone();
        async move {
            let Ok(mut connection) = connection.get_multiplexed_async_connection().await else { return false };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("portico:cache:*{path}*"))
                .query_async(&mut connection)
                .await
                .unwrap_or_default();
            !keys.is_empty()
        }
    })
    .await;
}

#[tokio::test]
async fn a_dead_redis_tier_is_not_asked_per_request_and_is_shared_again_once_back() {
    // Long, so that a request that waited for Redis is unmistakable.
    let redis_timeout = Duration::from_millis(500);
    let mut redis = RedisServer::start();
    let (_, stub) = backend().await;
    let toml = config(&stub, &format!("redis_url = \"{}\"\nredis_timeout = \"500ms\"", redis.url));
    let first = Gateway::start(&toml).await;
    let second = Gateway::start(&toml).await;
    let host = [("host", "portico.test")];
    for gateway in [&first, &second] {
        eventually(Duration::from_secs(10), || async { stats(gateway).await["shared_connected"] == true }).await;
    }
    assert_eq!(x_cache(&fetch(&first, "/pub/before", None, &host).await), "MISS");
    stored_in_redis(&redis, "/pub/before").await;
    assert_eq!(x_cache(&fetch(&second, "/pub/before", None, &host).await), "HIT", "shared through Redis");
    assert_eq!(redis_up(&scrape(&first).await, "cache"), Some(1));

    // Redis crashes. Every request misses in memory (a new path each time),
    // so each would ask Redis; only those already waiting for it when it
    // failed may wait (four callers: at most four, plus slack).
    redis.kill();
    let worker = |gateway: &'static str, index: usize, rounds: usize| {
        let replica = if gateway == "first" { &first } else { &second };
        async move {
            let mut waited = 0;
            for round in 0..rounds {
                let started = tokio::time::Instant::now();
                let path = format!("/pub/down-{gateway}-{index}-{round}");
                let response = fetch(replica, &path, None, &host).await;
                assert_eq!((response.status(), x_cache(&response)), (StatusCode::OK, "MISS".to_owned()));
                waited += usize::from(started.elapsed() >= redis_timeout);
            }
            waited
        }
    };
    let waited: usize =
        futures_util::future::join_all((0..4).map(|index| worker("first", index, 50))).await.into_iter().sum();
    assert!(waited <= 6, "{waited} of 200 requests waited the whole redis_timeout for a dead Redis");
    let metrics = scrape(&first).await;
    assert_eq!(redis_up(&metrics, "cache"), Some(0), "{metrics}");
    assert!(redis_short_circuited(&metrics, "cache").is_some_and(|calls| calls >= 190), "{metrics}");
    // The other replica learns of the outage from its own first request.
    assert!(worker("second", 0, 5).await <= 1);
    assert_eq!(redis_up(&scrape(&second).await, "cache"), Some(0));

    // Redis is back: a background probe finds it, and answers are shared again.
    redis.restart();
    for gateway in [&first, &second] {
        eventually(Duration::from_secs(20), || async { redis_up(&scrape(gateway).await, "cache") == Some(1) }).await;
    }
    assert_eq!(x_cache(&fetch(&first, "/pub/after", None, &host).await), "MISS");
    stored_in_redis(&redis, "/pub/after").await;
    assert_eq!(x_cache(&fetch(&second, "/pub/after", None, &host).await), "HIT", "shared through Redis again");
}

/// A GraphQL gateway over the stub, with cache hints in its schema.
const SCHEMA: &str = r#"
type Query {
  profile: Student @cacheControl(maxAge: 60, scope: PRIVATE) @rest(service: "student_api", path: "/profile/")
  lesson(id: ID!): Lesson @rest(service: "live_reading", path: "/lesson/{$args.id}/")
  payments: [Payment!] @cacheControl(maxAge: 60) @rest(service: "payment", path: "/payments/", selection: "results")
  uncached: Student @rest(service: "student_api", path: "/profile/")
}

type Mutation {
  checkout: Payment @rest(service: "payment", method: "POST", path: "/checkout/", body: {amount: "49.00"}, invalidates: ["/payments/"])
}

type Lesson @cacheControl(maxAge: 120, scope: PUBLIC) {
  id: ID!
  title: String!
}

type Student {
  id: ID!
  fullName: String!
}

type Payment {
  id: ID!
  status: String!
}
"#;

async fn graphql_gateway(stub: &Stub) -> (Gateway, tempfile::NamedTempFile) {
    let schema = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(schema.path(), SCHEMA).expect("write schema");
    let mut toml = String::from("[server]\nlisten = \"127.0.0.1:0\"\n\n");
    for name in ["student_api", "live_reading", "payment"] {
        toml.push_str(&format!(
            "[services.{name}]\nendpoints = [\"{}\"]\nhealth_check = {{ enabled = false }}\n\n",
            stub.url()
        ));
    }
    toml.push_str(&format!("[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\n\n"));
    toml.push_str(&format!("[graphql]\nenabled = true\nschema = [{:?}]\n", schema.path()));
    (Gateway::start(&toml).await, schema)
}

async fn graphql(gateway: &Gateway, query: &str, bearer: Option<&str>) -> (String, Value) {
    let mut request = client().post(gateway.url("/graphql")).json(&json!({ "query": query }));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("response");
    let cache_control =
        response.headers().get("cache-control").and_then(|value| value.to_str().ok()).unwrap_or("none").to_owned();
    (cache_control, response.json().await.expect("JSON"))
}

#[tokio::test]
async fn graphql_private_fields_never_cross_callers_and_public_ones_are_shared() {
    let (_, stub) = backend().await;
    let (gateway, _schema) = graphql_gateway(&stub).await;
    let alice = token("alice", "");
    let bob = token("bob", "");
    let callers: [(Option<&str>, &str); 3] = [(Some(&alice), "alice"), (Some(&bob), "bob"), (None, "anonymous")];
    for round in 0..3 {
        for (bearer, expected) in &callers {
            let (_, body) = graphql(&gateway, "{ profile { id fullName } }", *bearer).await;
            assert_eq!(body["data"]["profile"]["id"], *expected, "round {round}: an answer crossed callers: {body}");
        }
    }
    assert_eq!(stub.hits(), 3, "one cached backend answer per caller");

    graphql(&gateway, "{ lesson(id: 1) { title } }", Some(&alice)).await;
    let (_, body) = graphql(&gateway, "{ lesson(id: 1) { title } }", Some(&bob)).await;
    assert_eq!(body["data"]["lesson"]["title"], "Lesson 1");
    assert_eq!(stub.hits(), 4, "a PUBLIC type's call is shared");

    graphql(&gateway, "{ uncached { id } }", Some(&alice)).await;
    graphql(&gateway, "{ uncached { id } }", Some(&alice)).await;
    assert_eq!(stub.hits(), 6, "fields without a maxAge are not cached");
    graphql(&gateway, "{ lesson(id: \"fresh\") { title } }", None).await;
    graphql(&gateway, "{ lesson(id: \"fresh\") { title } }", None).await;
    assert_eq!(stub.hits(), 8, "the backend's no-store is honoured");
}

#[tokio::test]
async fn graphql_answers_carry_the_cache_control_of_their_fields() {
    let (_, stub) = backend().await;
    let (gateway, _schema) = graphql_gateway(&stub).await;
    let alice = token("alice", "");
    let cases = [
        ("{ lesson(id: 1) { id title } }", "max-age=120, public"),
        ("{ profile { id } }", "max-age=60, private"),
        ("{ lesson(id: 1) { id } profile { id } }", "max-age=60, private"),
        ("{ payments { id } }", "max-age=60, public"),
        ("{ uncached { id } }", "no-store"),
        ("{ lesson(id: 1) { id } uncached { id } }", "no-store"),
        ("mutation { checkout { id } }", "no-store"),
        ("{ lesson(id: 1) { nope } }", "no-store"),
    ];
    for (query, expected) in cases {
        let (cache_control, body) = graphql(&gateway, query, Some(&alice)).await;
        assert_eq!(cache_control, expected, "{query}: {body}");
    }
}

#[tokio::test]
async fn mutations_purge_the_answers_they_invalidate() {
    let (_, stub) = backend().await;
    let (gateway, _schema) = graphql_gateway(&stub).await;
    let alice = token("alice", "");
    let (_, first) = graphql(&gateway, "{ payments { id } }", Some(&alice)).await;
    let (_, cached) = graphql(&gateway, "{ payments { id } }", Some(&alice)).await;
    assert_eq!(first, cached);
    assert_eq!(stub.hits(), 1);
    let (_, body) = graphql(&gateway, "mutation { checkout { id } }", Some(&alice)).await;
    assert_eq!(body["data"]["checkout"]["id"], "77", "{body}");
    let (_, after) = graphql(&gateway, "{ payments { id } }", Some(&alice)).await;
    assert_eq!(stub.hits(), 3, "the mutation made the cached list stale");
    assert_ne!(after, first);
}
