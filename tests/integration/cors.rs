//! CORS: preflights answered by the gateway (no backend call, no credential
//! check, no rate-limit charge), allowed origins echoed with credentials,
//! refusals readable cross-origin, and nothing for origins not listed.

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use http::StatusCode;

use crate::graphql::{backends, token, Behaviour, SECRET};
use crate::harness::{client, config, json_of, service, Gateway, Stub};

const FRONTEND: &str = "http://localhost:3000";

fn cors_section(graphql: bool) -> String {
    let graphql = if graphql { "graphql = \"frontend\"\n" } else { "" };
    format!(
        "[cors]\n{graphql}\n[cors.policies.frontend]\nallowed_origins = [\"{FRONTEND}\", \"https://*.example.com\"]\n\
         allow_credentials = true\nmax_age = \"5m\"\nexposed_headers = [\"etag\"]\n\n"
    )
}

/// A backend that answers with its own, permissive CORS headers.
async fn permissive_backend() -> Stub {
    Stub::serve(Router::new().fallback(get(|| async {
        ([("access-control-allow-origin", "*"), ("access-control-allow-credentials", "true")], "hello").into_response()
    })))
    .await
}

/// `/api/` needs a token and allows one request per client; `/open/` has no
/// CORS policy.
async fn gateway(backend: &Stub) -> Gateway {
    let auth = format!("[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\n\n");
    let limits = "[rate_limits.one]\nper_second = 1\nburst = 1\n\n";
    let api = service("api", &[backend.url()], "health_check = { enabled = false }");
    let open = "[[routes]]\nprefix = \"/open/\"\nservice = \"api\"\n";
    let toml = format!(
        "{auth}{limits}{}{api}auth = \"required\"\nrate_limit = \"one\"\ncors = \"frontend\"\n\n{open}",
        cors_section(false)
    );
    Gateway::start(&config(&toml)).await
}

async fn preflight(gateway: &Gateway, path: &str, origin: &str) -> reqwest::Response {
    client()
        .request(http::Method::OPTIONS, gateway.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .expect("preflight answer")
}

fn cors_headers(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn a_preflight_is_answered_without_backend_credentials_or_rate_limit() {
    let backend = permissive_backend().await;
    let gateway = gateway(&backend).await;

    for _ in 0..3 {
        let answer = preflight(&gateway, "/api/things/", FRONTEND).await;
        assert_eq!(answer.status(), StatusCode::OK);
        let headers = answer.headers();
        assert_eq!(headers["access-control-allow-origin"], FRONTEND);
        assert_eq!(headers["access-control-allow-credentials"], "true");
        assert_eq!(headers["access-control-allow-methods"], "GET,HEAD,POST");
        assert_eq!(headers["access-control-allow-headers"], "authorization,content-type,x-request-id");
        assert_eq!(headers["access-control-max-age"], "300");
    }
    assert_eq!(backend.hits(), 0, "preflights never reach the backend");

    // The one-request budget is still whole after three preflights.
    let call = client()
        .get(gateway.url("/api/things/"))
        .header("origin", FRONTEND)
        .bearer_auth(token("7", ""))
        .send()
        .await
        .expect("answer");
    assert_eq!(call.status(), StatusCode::OK);
    assert_eq!(call.headers()["access-control-allow-origin"], FRONTEND);
    assert_eq!(call.headers()["access-control-allow-credentials"], "true");
    let exposed = call.headers()["access-control-expose-headers"].to_str().expect("ascii").to_owned();
    for name in ["etag", "ratelimit", "ratelimit-policy", "retry-after", "x-request-id"] {
        assert!(exposed.split(',').any(|exposed| exposed == name), "{name} not in {exposed}");
    }
    assert!(call.headers().get_all("vary").iter().any(|vary| vary.to_str().unwrap_or("").contains("origin")));
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn refusals_carry_cors_headers_so_the_front_end_can_read_them() {
    let backend = permissive_backend().await;
    let gateway = gateway(&backend).await;

    let unauthenticated =
        client().get(gateway.url("/api/things/")).header("origin", FRONTEND).send().await.expect("answer");
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unauthenticated.headers()["access-control-allow-origin"], FRONTEND);
    assert!(unauthenticated.headers().contains_key("www-authenticate"));
    assert_eq!(json_of(unauthenticated).await["error"]["code"], "unauthenticated");

    let send = || {
        client()
            .get(gateway.url("/api/things/"))
            .header("origin", "https://app.example.com")
            .bearer_auth(token("8", ""))
            .send()
    };
    assert_eq!(send().await.expect("first").status(), StatusCode::OK);
    let limited = send().await.expect("second");
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["access-control-allow-origin"], "https://app.example.com");
    assert!(limited.headers().contains_key("retry-after"));
    assert!(limited.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn an_origin_not_listed_gets_no_cors_headers_not_even_the_backends() {
    let backend = permissive_backend().await;
    let gateway = gateway(&backend).await;

    for origin in ["http://evil.test", "https://example.com", "https://app.example.com.evil.test"] {
        let answer = preflight(&gateway, "/api/things/", origin).await;
        assert_eq!(cors_headers(&answer), Vec::<String>::new(), "{origin}");
        let call = client()
            .get(gateway.url("/api/things/"))
            .header("origin", origin)
            .bearer_auth(token("9", ""))
            .send()
            .await
            .expect("answer");
        assert_eq!(cors_headers(&call), Vec::<String>::new(), "{origin}");
    }
    assert_eq!(backend.hits(), 1, "only the one real call within the budget reached the backend");

    // Without a policy the route leaves CORS to the service, as before.
    let open = client().get(gateway.url("/open/x")).header("origin", "http://evil.test").send().await.expect("answer");
    assert_eq!(open.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn the_graphql_endpoint_has_its_own_policy() {
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&format!("{}\n{}", backends.toml, cors_section(true))).await;

    let answer = preflight(&gateway, "/graphql", FRONTEND).await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()["access-control-allow-origin"], FRONTEND);
    assert_eq!(answer.headers()["access-control-allow-credentials"], "true");

    let query = client()
        .post(gateway.url("/graphql"))
        .header("origin", FRONTEND)
        .json(&serde_json::json!({"query": "{ __typename }"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(query.status(), StatusCode::OK);
    assert_eq!(query.headers()["access-control-allow-origin"], FRONTEND);
    assert_eq!(json_of(query).await["data"]["__typename"], "Query");
}
