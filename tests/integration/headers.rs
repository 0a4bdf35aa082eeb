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

/// A backend that answers which language and tenant a call carried, with a
/// cookie named after the path it was called on.
async fn language_stub() -> Stub {
    Stub::serve(Router::new().fallback(|request: axum::extract::Request| async move {
        let header = |name: &str| request.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_owned);
        let path = request.uri().path().trim_matches('/').to_owned();
        (
            axum::response::AppendHeaders([
                ("set-cookie", format!("from-{path}=1; Path=/")),
                ("content-language", "de".to_owned()),
            ]),
            axum::Json(serde_json::json!({"language": header("accept-language"), "tenant": header("x-tenant")})),
        )
            .into_response()
    }))
    .await
}

const FIELD_RULES_SCHEMA: &str = r#"
type Query {
  plain: Seen @rest(service: "api", path: "/plain/")
  localized: Seen @rest(service: "api", path: "/localized/", headerRules: "locale")
}
type Seen { language: String tenant: String }
"#;

fn field_rules_config(backend: &Stub, schema: &std::path::Path, rules: &str) -> String {
    config(&format!(
        "[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\n\n\
         [services.api]\nendpoints = [\"{}\"]\nhealth_check = {{ enabled = false }}\n\
         headers = {{ add = {{ \"x-gateway\" = \"portico\" }} }}\n\n\
         [graphql]\nenabled = true\nschema = [{:?}]\n\n\
         [graphql.header_rules.locale]\n{rules}\n",
        backend.url(),
        schema.display().to_string(),
    ))
}

#[tokio::test]
async fn a_rest_fields_own_header_rules_apply_to_its_calls_only() {
    let backend = language_stub().await;
    let schema = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(schema.path(), FIELD_RULES_SCHEMA).expect("schema written");
    let rules = r#"request = [{ name = "accept-language", default = "en" }]
add = { "x-tenant" = "{claim:sub}" }
response = ["set-cookie"]"#;
    let gateway = Gateway::start(&field_rules_config(&backend, schema.path(), rules)).await;

    let answer = client()
        .post(gateway.url("/graphql"))
        .bearer_auth(token("42", ""))
        .header("accept-language", "de-CH")
        .json(&serde_json::json!({"query": "{ plain { language tenant } localized { language tenant } }"}))
        .send()
        .await
        .expect("answer");
    let cookies: Vec<String> =
        answer.headers().get_all("set-cookie").iter().map(|value| value.to_str().expect("ascii").to_owned()).collect();
    assert!(answer.headers().get("content-language").is_none(), "only the listed answer headers come back");
    let body = json_of(answer).await;
    assert_eq!(
        body["data"],
        serde_json::json!({"plain": {"language": null, "tenant": null}, "localized": {"language": "de-CH", "tenant": "42"}}),
        "the field's rules apply to its own call, not to the service's other fields"
    );
    assert_eq!(cookies, ["from-localized=1; Path=/"], "only the field whose rules allow it passes its cookie");

    let anonymous = client()
        .post(gateway.url("/graphql"))
        .json(&serde_json::json!({"query": "{ localized { language tenant } }"}))
        .send()
        .await
        .expect("answer");
    let body = json_of(anonymous).await;
    assert_eq!(body["data"]["localized"], serde_json::json!({"language": "en", "tenant": null}));
}

/// A cached field keys its answers on what the header rules send, so one
/// caller's language is never served to another.
#[tokio::test]
async fn a_cached_fields_answers_are_kept_apart_by_the_headers_its_rules_send() {
    // Without the stub's cookie: an answer that sets one is never cached.
    let backend = Stub::serve(Router::new().fallback(|request: axum::extract::Request| async move {
        let language = request.headers().get("accept-language").and_then(|value| value.to_str().ok());
        axum::Json(serde_json::json!({"language": language, "tenant": null}))
    }))
    .await;
    let schema = tempfile::NamedTempFile::new().expect("temp file");
    let cached = FIELD_RULES_SCHEMA
        .replace("headerRules: \"locale\")", "headerRules: \"locale\") @cacheControl(maxAge: 60, scope: PUBLIC)");
    assert_ne!(cached, FIELD_RULES_SCHEMA);
    std::fs::write(schema.path(), cached).expect("schema written");
    let rules = r#"request = [{ name = "accept-language", default = "en" }]"#;
    let gateway = Gateway::start(&field_rules_config(&backend, schema.path(), rules)).await;

    let mut languages = Vec::new();
    for language in ["de", "fr", "de"] {
        let answer = client()
            .post(gateway.url("/graphql"))
            .header("accept-language", language)
            .json(&serde_json::json!({"query": "{ localized { language } }"}))
            .send()
            .await
            .expect("answer");
        languages.push(json_of(answer).await["data"]["localized"]["language"].clone());
    }
    assert_eq!(languages, ["de", "fr", "de"], "each caller reads its own language");
    assert_eq!(backend.hits(), 2, "the second German call is the cached answer");
}

#[tokio::test]
async fn field_header_rules_are_checked_when_the_configuration_loads() {
    let backend = language_stub().await;
    let schema = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(schema.path(), FIELD_RULES_SCHEMA.replace("\"locale\"", "\"locales\"")).expect("schema written");
    let toml = field_rules_config(&backend, schema.path(), r#"add = { "x-user-id" = "{claim:sub}" }"#);
    let problems = match portico::Config::parse(&toml, "test.toml") {
        Ok(_) => panic!("the configuration must be refused"),
        Err(error) => error.to_string(),
    };
    assert!(problems.contains("graphql.header_rules.locale.add.x-user-id"), "{problems}");
    assert!(
        problems.contains("@rest on Query.localized: unknown header rules \"locales\" (known: locale)"),
        "{problems}"
    );
    assert!(problems.contains(":4:"), "the problem names the line of the field: {problems}");
}
