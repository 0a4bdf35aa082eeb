//! Two gateway replicas sharing one real `redis-server`, measured: one
//! client's combined admitted rate stays within 5 % of its policy's rate
//! under concurrent load on both (measured after the burst is spent); the public cache tier answers one replica from
//! the other's fill; with Redis killed both keep serving by #8's rules
//! (fail open to each replica's own limiter and memory cache, without
//! waiting for Redis per request) and share again once it is back. The
//! admitted rate and the recovery time are printed.

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::cache::stored_in_redis;
use crate::graphql::{token, SECRET};
use crate::harness::{client, eventually, Gateway, Stub};
use crate::redis_server::{redis_up, RedisServer};

/// The client's policy on `/limited/`: high enough that two seconds of it
/// are a hundred and more decisions, low enough that the test's load on a
/// debug build exceeds it several times over.
const PER_SECOND: f64 = 80.0;
const BURST: f64 = 10.0;
/// Load before the measured window: the burst is spent and every worker's
/// connection is open, so the window measures the policy's rate alone.
const WARM_UP: Duration = Duration::from_millis(300);
/// The measured window.
const WINDOW: Duration = Duration::from_secs(2);
/// Concurrent callers per replica.
const WORKERS_PER_REPLICA: usize = 4;
/// Long, so that a request that waited for a dead Redis is unmistakable.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

fn replica_config(redis_url: &str, limited: &Stub, cached: &Stub) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_timeout = \"5s\"\n\n\
         [services.limited]\nendpoints = [\"{limited}\"]\nhealth_check = {{ enabled = false }}\n\n\
         [services.cached]\nendpoints = [\"{cached}\"]\nhealth_check = {{ enabled = false }}\n\n\
         [auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\n\n\
         [rate_limiting]\nbackend = \"redis\"\nredis_url = \"{redis_url}\"\nredis_timeout = \"{timeout}ms\"\n\n\
         [rate_limits.client]\nper_second = {PER_SECOND}\nburst = {BURST}\n\n\
         [rate_limits.strict]\nper_second = 0.05\nburst = 2\n\n\
         [cache]\nredis_url = \"{redis_url}\"\nredis_timeout = \"{timeout}ms\"\n\n\
         [[routes]]\nprefix = \"/limited/\"\nservice = \"limited\"\nrate_limit = \"client\"\n\n\
         [[routes]]\nprefix = \"/strict/\"\nservice = \"limited\"\nrate_limit = \"strict\"\n\n\
         [[routes]]\nprefix = \"/pub/\"\nservice = \"cached\"\ncache = {{ ttl = \"60s\", scope = \"public\" }}\n",
        limited = limited.url(),
        cached = cached.url(),
        timeout = REDIS_TIMEOUT.as_millis(),
    )
}

/// Replicas behind one name see the same Host, which is part of the cache key.
const HOST: &str = "portico.test";

/// A GET with the replicas' shared Host; `bearer` names the caller (the
/// cache's requests go without, as a public page's would).
async fn get(client: &reqwest::Client, gateway: &Gateway, path: &str, bearer: Option<&str>) -> reqwest::Response {
    let mut request = client.get(gateway.url(path)).header("host", HOST);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    request.send().await.expect("an answer")
}

fn x_cache(response: &reqwest::Response) -> &str {
    response.headers().get("x-cache").and_then(|value| value.to_str().ok()).unwrap_or("none")
}

async fn scrape(gateway: &Gateway) -> String {
    client().get(gateway.url("/metrics")).send().await.expect("metrics").text().await.expect("text")
}

/// Both Redis users of both replicas are connected.
async fn all_up(replicas: [&Gateway; 2]) -> bool {
    for gateway in replicas {
        let metrics = scrape(gateway).await;
        if redis_up(&metrics, "ratelimit") != Some(1) || redis_up(&metrics, "cache") != Some(1) {
            return false;
        }
    }
    true
}

/// One caller's load on both replicas at once: [`WARM_UP`], then
/// [`WINDOW`]. Returns when each admitted answer of the window arrived
/// (sorted) and how many were refused.
async fn load_both(replicas: [&Gateway; 2], bearer: &str) -> (Vec<Instant>, u64) {
    let window_start = Instant::now() + WARM_UP;
    let window_end = window_start + WINDOW;
    let workers = replicas.iter().flat_map(|gateway| {
        (0..WORKERS_PER_REPLICA).map(move |_| async move {
            let client = client();
            let (mut admitted, mut refused) = (Vec::new(), 0_u64);
            while Instant::now() < window_end {
                let status = get(&client, gateway, "/limited/x/", Some(bearer)).await.status();
                assert!(matches!(status, StatusCode::OK | StatusCode::TOO_MANY_REQUESTS), "answered {status}");
                let answered = Instant::now();
                if answered >= window_start {
                    match status {
                        StatusCode::OK => admitted.push(answered),
                        _ => refused += 1,
                    }
                }
            }
            (admitted, refused)
        })
    });
    let (mut admitted, mut refused) = (Vec::new(), 0);
    for (times, refusals) in futures_util::future::join_all(workers).await {
        admitted.extend(times);
        refused += refusals;
    }
    admitted.sort_unstable();
    (admitted, refused)
}

#[tokio::test]
async fn two_replicas_share_one_budget_and_one_cache_through_redis_and_recover_from_its_loss() {
    let mut redis = RedisServer::start();
    let limited = Stub::echo("limited").await;
    let cached = Stub::echo("cached").await;
    let toml = replica_config(&redis.url, &limited, &cached);
    let (first, second) = (Gateway::start(&toml).await, Gateway::start(&toml).await);
    eventually(Duration::from_secs(10), || all_up([&first, &second])).await;

    // (a) One client, both replicas, concurrent load: together they admit
    // what the policy allows over the run (its burst plus its rate), once.
    let bearer = token("one-client", "");
    let (admitted, refused) = load_both([&first, &second], &bearer).await;
    // The rate between the window's first and last admitted answers: a
    // pause of the test itself (a busy machine) loses no tokens between
    // them (up to the burst, they are admitted after it), and none is lost
    // to a pause at the window's end.
    let (Some(first_admitted), Some(last_admitted)) = (admitted.first(), admitted.last()) else {
        panic!("nothing admitted in the window ({refused} refused)");
    };
    let span = last_admitted.duration_since(*first_admitted).as_secs_f64();
    let rate = (admitted.len() - 1) as f64 / span;
    let off = (rate - PER_SECOND) / PER_SECOND;
    println!(
        "replicas: one client on two replicas, {} requests answered in the window after the burst: {} admitted \
         over {span:.2} s = {rate:.1}/s, the policy allows {PER_SECOND}/s: {:+.1} %",
        admitted.len() as u64 + refused,
        admitted.len(),
        off * 100.0
    );
    assert!(refused > 0, "the load ({} requests) never exceeded the policy", admitted.len());
    assert!(off.abs() <= 0.05, "admitted {rate:.1}/s, the policy allows {PER_SECOND}/s: {:+.1} %", off * 100.0);

    // (b) The public tier: the second replica answers from the first's fill.
    let plain = client();
    let filled = get(&plain, &first, "/pub/shared", None).await;
    assert_eq!((filled.status(), x_cache(&filled)), (StatusCode::OK, "MISS"));
    stored_in_redis(&redis, "/pub/shared").await;
    let shared = get(&plain, &second, "/pub/shared", None).await;
    assert_eq!((shared.status(), x_cache(&shared)), (StatusCode::OK, "HIT"), "answered from the first's fill");
    assert_eq!(cached.hits(), 1, "one backend call for both replicas");

    // (c) Redis dies. Both keep serving: rate limits fall back to each
    // replica's own limiter (fail open), the cache to memory, and only a
    // request already on its way to Redis when it died waits for it.
    redis.kill();
    let outage_caller = token("during-outage", "");
    for (name, gateway) in [("first", &first), ("second", &second)] {
        let mut waited = 0;
        let strict = client();
        let mut admitted = 0;
        for round in 0..10 {
            let started = Instant::now();
            let path = format!("/pub/outage-{name}-{round}");
            let cache_answer = get(&strict, gateway, &path, None).await;
            assert_eq!((cache_answer.status(), x_cache(&cache_answer)), (StatusCode::OK, "MISS"), "{name}");
            let again = get(&strict, gateway, &path, None).await;
            assert_eq!(x_cache(&again), "HIT", "{name}: memory still serves");
            let limited_answer = get(&strict, gateway, "/strict/x/", Some(&outage_caller)).await.status();
            assert!(matches!(limited_answer, StatusCode::OK | StatusCode::TOO_MANY_REQUESTS), "{limited_answer}");
            admitted += usize::from(limited_answer == StatusCode::OK);
            waited += usize::from(started.elapsed() >= REDIS_TIMEOUT);
        }
        assert_eq!(admitted, 2, "{name}: its own limiter still limits (burst 2), no longer shared");
        assert!(waited <= 1, "{name}: {waited} of 10 rounds waited the redis_timeout for a dead Redis");
    }

    // Redis returns on the same port, empty: both replicas find it by
    // themselves and share again.
    redis.restart();
    let restarted = Instant::now();
    eventually(Duration::from_secs(20), || all_up([&first, &second])).await;
    let recovery = restarted.elapsed();
    println!("replicas: both replicas used Redis again {recovery:?} after it restarted");
    let after = token("after-restart", "");
    let strict = client();
    for _ in 0..2 {
        assert_eq!(get(&strict, &first, "/strict/x/", Some(&after)).await.status(), StatusCode::OK);
    }
    assert_eq!(
        get(&strict, &second, "/strict/x/", Some(&after)).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "one budget for both again"
    );
    let before = cached.hits();
    assert_eq!(x_cache(&get(&strict, &first, "/pub/after", None).await), "MISS");
    stored_in_redis(&redis, "/pub/after").await;
    assert_eq!(x_cache(&get(&strict, &second, "/pub/after", None).await), "HIT", "one cache for both again");
    assert_eq!(cached.hits(), before + 1);
}
