//! Rate limiting through the gateway: GCRA bursts, 429 answers and IETF
//! headers, client keys, trusted proxies, tiers, GraphQL cost budgets, and
//! one budget shared by two gateways through a real Redis.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use crate::graphql::{token, SECRET};
use crate::harness::{client, config, eventually, json_of, service, Gateway, Stub};
use crate::redis_server::{redis_short_circuited, redis_up, RedisServer};

fn auth() -> String {
    format!("[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\n\n")
}

async fn limited_gateway(policies: &str, route_extra: &str, backend: &Stub) -> Gateway {
    let route = service("api", &[backend.url()], "");
    Gateway::start(&config(&format!("{}{policies}\n{route}{route_extra}\n", auth()))).await
}

async fn get(gateway: &Gateway, headers: &[(&str, String)]) -> reqwest::Response {
    let mut request = client().get(gateway.url("/api/x/"));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.expect("response")
}

async fn admitted(gateway: &Gateway, attempts: usize, headers: &[(&str, String)]) -> usize {
    let mut allowed = 0;
    for _ in 0..attempts {
        let status = get(gateway, headers).await.status();
        assert!(status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS, "{status}");
        allowed += usize::from(status == StatusCode::OK);
    }
    allowed
}

#[tokio::test]
async fn a_burst_is_admitted_then_429_with_headers_then_the_steady_rate() {
    let backend = Stub::echo("api").await;
    let policies = "[rate_limits.strict]\nper_second = 2\nburst = 3\n";
    let gateway = limited_gateway(policies, "rate_limit = \"strict\"", &backend).await;

    let first = get(&gateway, &[]).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["ratelimit-policy"], "\"strict\";q=3;w=2");
    assert_eq!(first.headers()["ratelimit"], "\"strict\";r=2;t=1");
    assert_eq!(admitted(&gateway, 2, &[]).await, 2);

    let refused = get(&gateway, &[]).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(refused.headers()["ratelimit"].to_str().expect("ascii").contains("r=0"));
    assert_eq!(json_of(refused).await["error"]["code"], "rate_limited");
    assert_eq!(backend.hits(), 3);
    let metrics = client().get(gateway.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let counted = |decision: &str| {
        metrics
            .lines()
            .find(|line| {
                line.starts_with("portico_rate_limit_decisions_total{")
                    && line.contains("policy=\"strict\"")
                    && line.contains(&format!("decision=\"{decision}\""))
            })
            .and_then(|line| line.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(counted("allowed").as_deref(), Some("3"), "{metrics}");
    assert_eq!(counted("limited").as_deref(), Some("1"), "{metrics}");

    // GCRA refills one request per 500 ms: the next one passes within a second.
    eventually(Duration::from_secs(3), || async { get(&gateway, &[]).await.status() == StatusCode::OK }).await;
    assert_eq!(get(&gateway, &[]).await.status(), StatusCode::TOO_MANY_REQUESTS, "only one was refilled");
}

#[tokio::test]
async fn clients_are_keyed_by_subject_then_api_key_then_address() {
    let backend = Stub::echo("api").await;
    let key_hash = {
        use sha2::Digest;
        sha2::Sha256::digest(b"machine-key").iter().map(|byte| format!("{byte:02x}")).collect::<String>()
    };
    let policies = format!(
        "[rate_limits.default]\nper_second = 0.1\nburst = 2\n\n[[auth.api_keys]]\nname = \"reporting\"\nsha256 = \"{key_hash}\"\n"
    );
    let gateway = limited_gateway(&policies, "", &backend).await;
    let alice = [("authorization", format!("Bearer {}", token("alice", "")))];
    let bob = [("authorization", format!("Bearer {}", token("bob", "")))];
    let machine = [("x-api-key", "machine-key".to_owned())];
    assert_eq!(admitted(&gateway, 4, &alice).await, 2, "the gateway-wide default applies");
    assert_eq!(admitted(&gateway, 4, &bob).await, 2, "another subject has its own budget");
    assert_eq!(admitted(&gateway, 4, &machine).await, 2, "an API client has its own budget");
    assert_eq!(admitted(&gateway, 4, &[]).await, 2, "anonymous callers are keyed by address");
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let backend = Stub::echo("api").await;
    let policies = "[rate_limits.default]\nper_second = 0.1\nburst = 1\n";
    let spoofing = limited_gateway(policies, "", &backend).await;
    let mut allowed = 0;
    for index in 0..5 {
        let status = get(&spoofing, &[("x-forwarded-for", format!("198.51.100.{index}"))]).await.status();
        allowed += usize::from(status == StatusCode::OK);
    }
    assert_eq!(allowed, 1, "a client cannot dodge its limit with a made-up X-Forwarded-For");

    let behind_proxy =
        limited_gateway(&format!("{policies}\n[rate_limiting]\ntrusted_proxies = [\"127.0.0.0/8\"]\n"), "", &backend)
            .await;
    let mut allowed = 0;
    for index in 0..5 {
        let status = get(&behind_proxy, &[("x-forwarded-for", format!("198.51.100.{index}"))]).await.status();
        allowed += usize::from(status == StatusCode::OK);
    }
    assert_eq!(allowed, 5, "behind a trusted proxy, each forwarded client has its own budget");
    assert_eq!(
        get(&behind_proxy, &[("x-forwarded-for", "198.51.100.0".to_owned())]).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn tiers_and_opting_out() {
    let backend = Stub::echo("api").await;
    let policies = "[rate_limits.default]\nper_second = 0.1\nburst = 1\ntiers = { claim = \"plan\", limits = { pro = { per_second = 0.1, burst = 5 } } }\n";
    let gateway = limited_gateway(policies, "", &backend).await;
    let pro = {
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 600;
        let claims = json!({"sub": "carol", "exp": exp, "plan": "pro"});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("token")
    };
    assert_eq!(admitted(&gateway, 8, &[("authorization", format!("Bearer {pro}"))]).await, 5);
    assert_eq!(admitted(&gateway, 3, &[("authorization", format!("Bearer {}", token("dave", "")))]).await, 1);

    let unlimited = limited_gateway(policies, "rate_limit = \"none\"", &backend).await;
    assert_eq!(admitted(&unlimited, 6, &[]).await, 6);
}

#[tokio::test]
async fn graphql_operations_are_charged_their_cost() {
    let backends = crate::graphql::backends(crate::graphql::Behaviour::default(), "rate_limit = \"graphql\"").await;
    let toml = format!(
        "{}\n[rate_limits.graphql]\nper_second = 100\nburst = 100\ncost_per_second = 1\ncost_burst = 30\n",
        backends.toml
    );
    let gateway = Gateway::start(&toml).await;
    let send = |query: &'static str| {
        let url = gateway.url("/graphql");
        async move { client().post(url).json(&json!({"query": query})).send().await.expect("response") }
    };
    // Each lesson field costs 1 (it calls a backend); lessons(first: 20) is 1 + 20.
    let cheap = "{ lesson(id: 1) { title } }";
    let costly = "{ lessons(first: 20) { title } }";
    assert_eq!(send(costly).await.status(), StatusCode::OK);
    let refused = send(costly).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS, "21 + 21 is over the budget of 30");
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.expect("JSON");
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    assert_eq!(send(cheap).await.status(), StatusCode::OK, "a small operation still fits");
}

fn redis_policies(url: &str, extra: &str) -> String {
    format!("[rate_limiting]\nbackend = \"redis\"\nredis_url = \"{url}\"\nredis_timeout = \"200ms\"\n{extra}\n\n[rate_limits.default]\nper_second = 0.05\nburst = 4\n")
}

#[tokio::test]
async fn two_gateways_share_one_budget_through_redis_and_survive_its_loss() {
    let mut redis = RedisServer::start();
    let backend = Stub::echo("api").await;
    let first = limited_gateway(&redis_policies(&redis.url, ""), "", &backend).await;
    let second = limited_gateway(&redis_policies(&redis.url, ""), "", &backend).await;
    let caller = [("authorization", format!("Bearer {}", token("shared", "")))];
    let mut allowed = 0;
    for _ in 0..4 {
        allowed += admitted(&first, 1, &caller).await;
        allowed += admitted(&second, 1, &caller).await;
    }
    assert_eq!(allowed, 4, "together the two replicas admit the burst, not twice it");

    // Redis dies: requests keep being answered, by each replica's own limiter.
    redis.kill();
    let during_outage = [("authorization", format!("Bearer {}", token("outage", "")))];
    assert_eq!(admitted(&first, 6, &during_outage).await, 4, "the local limiter still limits");
    assert_eq!(admitted(&second, 1, &during_outage).await, 1, "but no longer shared");

    // Redis is back: the replicas share budgets again, by themselves. Each
    // probe uses a new client, so earlier probes do not count against it.
    redis.restart();
    let probe = std::sync::atomic::AtomicUsize::new(0);
    eventually(Duration::from_secs(10), || {
        let round = probe.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let caller = [("authorization", format!("Bearer {}", token(&format!("after-{round}"), "")))];
        let (first, second) = (&first, &second);
        async move {
            admitted(first, 4, &caller).await == 4
                && get(second, &caller).await.status() == StatusCode::TOO_MANY_REQUESTS
        }
    })
    .await;
}

#[tokio::test]
async fn fail_closed_refuses_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let backend = Stub::echo("api").await;
    let gateway = limited_gateway(&slow_redis_policies(&redis.url, "fail_closed = true"), SHARED, &backend).await;
    assert_eq!(get(&gateway, &[]).await.status(), StatusCode::OK);
    redis.kill();
    let response = get(&gateway, &[]).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json_of(response).await["error"]["code"], "rate_limiter_unavailable");

    // Refusals come at memory speed too, not after a wait for Redis.
    let waited = timed_requests(&gateway, 1, 20, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(waited <= 1, "{waited} of 20 refusals waited the whole redis_timeout");
    redis.restart();
    eventually(Duration::from_secs(20), || async { redis_up(&scrape(&gateway).await, "ratelimit") == Some(1) }).await;
    assert_eq!(get(&gateway, &[]).await.status(), StatusCode::OK, "the first successful probe closes the circuit");
}

const SHARED: &str = "rate_limit = \"shared\"";

/// The rate limiter's Redis timeout in [`slow_redis_policies`]: long, so
/// that a request that waited for Redis cannot be mistaken for one that
/// did not.
const LONG_REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// Like [`redis_policies`], but for the route only (`rate_limit =
/// "shared"`), so that scraping `/metrics` is never refused.
fn slow_redis_policies(url: &str, extra: &str) -> String {
    format!("[rate_limiting]\nbackend = \"redis\"\nredis_url = \"{url}\"\nredis_timeout = \"500ms\"\n{extra}\n\n[rate_limits.shared]\nper_second = 0.05\nburst = 4\n")
}

async fn scrape(gateway: &Gateway) -> String {
    client().get(gateway.url("/metrics")).send().await.expect("metrics").text().await.expect("text")
}

/// Sends `per_worker` requests from each of `workers` concurrent callers
/// (each one after the other) and counts those that took at least
/// [`LONG_REDIS_TIMEOUT`]; every answer must have `status` (or be a 429).
async fn timed_requests(gateway: &Gateway, workers: usize, per_worker: usize, status: StatusCode) -> usize {
    let worker = |_| async move {
        let mut waited = 0;
        for _ in 0..per_worker {
            let started = tokio::time::Instant::now();
            let answered = get(gateway, &[]).await.status();
            assert!(answered == status || answered == StatusCode::TOO_MANY_REQUESTS, "{answered}");
            waited += usize::from(started.elapsed() >= LONG_REDIS_TIMEOUT);
        }
        waited
    };
    futures_util::future::join_all((0..workers).map(worker)).await.into_iter().sum()
}

#[tokio::test]
async fn a_dead_redis_is_not_asked_per_request_and_is_shared_again_once_back() {
    let mut redis = RedisServer::start();
    let backend = Stub::echo("api").await;
    let first = limited_gateway(&slow_redis_policies(&redis.url, ""), SHARED, &backend).await;
    let second = limited_gateway(&slow_redis_policies(&redis.url, ""), SHARED, &backend).await;
    for gateway in [&first, &second] {
        assert_eq!(get(gateway, &[]).await.status(), StatusCode::OK, "connected to Redis");
        assert_eq!(redis_up(&scrape(gateway).await, "ratelimit"), Some(1));
    }

    // Redis crashes. Only requests already on their way to it when it
    // failed may wait for it (four callers: at most four, plus slack);
    // the others are decided by the local limiter at once.
    redis.kill();
    let waited = timed_requests(&first, 4, 50, StatusCode::OK).await;
    assert!(waited <= 6, "{waited} of 200 requests waited the whole redis_timeout for a dead Redis");
    let metrics = scrape(&first).await;
    assert_eq!(redis_up(&metrics, "ratelimit"), Some(0), "{metrics}");
    assert!(redis_short_circuited(&metrics, "ratelimit").is_some_and(|calls| calls >= 190), "{metrics}");
    // The other replica learns of the outage from its own first request.
    assert!(timed_requests(&second, 1, 5, StatusCode::OK).await <= 1);
    assert_eq!(redis_up(&scrape(&second).await, "ratelimit"), Some(0));

    // Redis is back: a background probe finds it, and the two replicas
    // share one budget again.
    redis.restart();
    for gateway in [&first, &second] {
        eventually(Duration::from_secs(20), || async { redis_up(&scrape(gateway).await, "ratelimit") == Some(1) })
            .await;
    }
    let caller = [("authorization", format!("Bearer {}", token("after-restart", "")))];
    assert_eq!(admitted(&first, 4, &caller).await, 4);
    assert_eq!(get(&second, &caller).await.status(), StatusCode::TOO_MANY_REQUESTS, "one budget for both again");
}

#[tokio::test]
async fn operational_endpoints_are_outside_the_client_layers() {
    let backend = Stub::echo("api").await;
    // Every client route needs a token and the gateway-wide budget is one
    // request; probes and scrapes must still answer, uncharged.
    let policies = "[rate_limits.default]\nper_second = 0.1\nburst = 1\n";
    let gateway = limited_gateway(policies, "auth = \"required\"", &backend).await;
    for _ in 0..3 {
        for path in ["/healthz", "/readyz", "/metrics"] {
            let response = client().get(gateway.url(path)).send().await.expect("response");
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert!(response.headers().get("ratelimit").is_none(), "{path} is not charged");
        }
    }
    let bearer = format!("Bearer {}", token("1", ""));
    let first = get(&gateway, &[("authorization", bearer.clone())]).await;
    assert_eq!(first.status(), StatusCode::OK, "the probes did not spend the caller's budget");
    assert!(first.headers().get("ratelimit").is_some());
    assert_eq!(get(&gateway, &[("authorization", bearer)]).await.status(), StatusCode::TOO_MANY_REQUESTS);
    let refused = client().post(gateway.url("/healthz")).send().await.expect("response");
    assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(refused.headers()["allow"], "GET, HEAD");
}

#[tokio::test]
async fn behind_a_trusted_proxy_backends_see_the_client_as_x_real_ip() {
    let backend = Stub::echo("api").await;
    let trusting = "[rate_limiting]\ntrusted_proxies = [\"127.0.0.0/8\"]\n";
    let gateway = limited_gateway(trusting, "", &backend).await;
    let seen = json_of(get(&gateway, &[("x-forwarded-for", "198.51.100.7".to_owned())]).await).await;
    assert_eq!(seen["headers"]["x-real-ip"], "198.51.100.7", "the same client the rate limit keys on");
    assert_eq!(seen["headers"]["x-forwarded-for"], "198.51.100.7, 127.0.0.1", "the chain gains the peer");
}
