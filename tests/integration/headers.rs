//! Header rules on REST routes: client headers renamed, defaulted or held
//! back, gateway headers from claims and the route, identity headers the
//! gateway's alone, and a service's cookies reaching the client intact.

use axum::response::IntoResponse;
use axum::Router;
use http::StatusCode;

use crate::graphql::{token, SECRET};
use crate::harness::{client, config, json_of, Gateway, Stub};

fn gateway_config(backend: &Stub, route_headers: &str) -> String {
    format!(
        "[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\n\n\
         [services.api]\nendpoints = [\"{}\"]\nhealth_check = {{ enabled = false }}\n\
         headers = {{ add = {{ \"x-gateway\" = \"portico\" }}, request = [{{ name = \"accept-language\", default = \"en\" }}] }}\n\n\
         [[routes]]\nprefix = \"/api/\"\nservice = \"api\"\nauth = \"optional\"\nheaders = {route_headers}\n",
        backend.url()
    )
}

#[tokio::test]
async fn rules_rename_default_add_and_hold_back_client_headers() {
    let backend = Stub::echo("api").await;
    let route = r#"{ only_listed = true, request = [{ name = "x-client-version", rename = "x-app-version" }, { name = "x-feature-*" }], add = { "x-tenant" = "{claim:sub}", "x-route" = "{route}" } }"#;
    let gateway = Gateway::start(&config(&gateway_config(&backend, route))).await;

    let answer = client()
        .post(gateway.url("/api/things/"))
        .bearer_auth(token("42", ""))
        .header("x-client-version", "3.1")
        .header("x-feature-dark", "on")
        .header("x-tenant", "forged")
        .header("x-secret-debug", "1")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), StatusCode::OK);
    let seen = json_of(answer).await;
    let headers = &seen["headers"];
    assert_eq!(headers["x-app-version"], "3.1");
    assert!(headers.get("x-client-version").is_none(), "renamed, not copied");
    assert_eq!(headers["x-feature-dark"], "on");
    assert_eq!(headers["accept-language"], "en", "the service's default");
    assert_eq!(headers["x-gateway"], "portico");
    assert_eq!(headers["x-tenant"], "42", "from the verified claim, not the client");
    assert_eq!(headers["x-route"], "/api/");
    assert_eq!(headers["x-user-id"], "42");
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.get("x-secret-debug").is_none(), "only listed headers pass");
    assert_eq!(seen["body"], "{}");

    // Anonymous: the claim's header is not set, whatever the client sent.
    let anonymous = client()
        .get(gateway.url("/api/things/"))
        .header("x-tenant", "forged")
        .header("accept-language", "de")
        .send()
        .await
        .expect("answer");
    let seen = json_of(anonymous).await;
    assert!(seen["headers"].get("x-tenant").is_none());
    assert_eq!(seen["headers"]["accept-language"], "de");
}

#[tokio::test]
async fn rules_that_would_forge_identity_or_forwarding_headers_are_refused() {
    let backend = Stub::echo("api").await;
    let route =
        r#"{ request = [{ name = "x-forged", rename = "x-user-id" }], add = { "x-forwarded-for" = "1.2.3.4" } }"#;
    let toml = config(&gateway_config(&backend, route));
    let problems = match portico::Config::parse(&toml, "test.toml") {
        Ok(_) => panic!("the configuration must be refused"),
        Err(error) => error.to_string(),
    };
    assert!(problems.contains("routes[0].headers.request[0].rename"), "{problems}");
    assert!(problems.contains("routes[0].headers.add.x-forwarded-for"), "{problems}");
}

#[tokio::test]
async fn a_services_cookies_reach_the_rest_client_as_separate_lines() {
    let backend = Stub::serve(Router::new().fallback(|| async {
        (
            axum::response::AppendHeaders([
                ("set-cookie", "csrftoken=abc; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/"),
                ("set-cookie", "sessionid=s1; HttpOnly; Path=/"),
                ("etag", "\"v1\""),
                ("last-modified", "Wed, 21 Oct 2026 07:28:00 GMT"),
            ]),
            "ok",
        )
            .into_response()
    }))
    .await;
    let gateway = Gateway::start(&config(&gateway_config(&backend, "{}"))).await;
    let answer = client().get(gateway.url("/api/login/")).send().await.expect("answer");
    let cookies: Vec<&str> =
        answer.headers().get_all("set-cookie").iter().map(|value| value.to_str().expect("ascii")).collect();
    assert_eq!(
        cookies,
        ["csrftoken=abc; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/", "sessionid=s1; HttpOnly; Path=/"]
    );
    assert_eq!(answer.headers()["etag"], "\"v1\"");
    assert_eq!(answer.headers()["last-modified"], "Wed, 21 Oct 2026 07:28:00 GMT");
}
