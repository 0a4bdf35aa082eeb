//! REST endpoints from stored GraphQL operations (`[[operations]]`) against
//! the contract's stub backends: variables from path and query, typed; the
//! answer's `data`; errors as statuses; the route's layers (auth, cache);
//! the OpenAPI document.

use http::StatusCode;
use serde_json::{json, Value};

use crate::graphql::{backends, token, Backends, Behaviour, DASHBOARD};
use crate::harness::{client, Gateway};

const LESSONS: &str =
    "query Lessons($level: String, $first: Int = 10) { lessons(level: $level, first: $first) { id title } }";
const PAYMENT: &str = "query Payment($id: ID!) { payment(id: $id) { amount currency } }";
const CHECKOUT: &str = "mutation Checkout($input: CheckoutInput!, $idempotencyKey: String!) { \
    checkout(input: $input, idempotencyKey: $idempotencyKey) { id amount status } }";

/// Stub backends and a gateway serving the four operations above, with
/// documents in a temporary folder.
struct Setup {
    gateway: Gateway,
    backends: Backends,
    _documents: tempfile::TempDir,
}

async fn setup(behaviour: Behaviour, extra: &str) -> Setup {
    let documents = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let path = documents.path().join(name);
        std::fs::write(&path, text).expect("write document");
        path.display().to_string()
    };
    let (dashboard, lessons, payment, checkout) = (
        write("dashboard.graphql", DASHBOARD),
        write("lessons.graphql", LESSONS),
        write("payment.graphql", PAYMENT),
        write("checkout.graphql", CHECKOUT),
    );
    let backends = backends(behaviour, "").await;
    let toml = format!(
        "{}\n[[operations]]\nmethod = \"GET\"\npath = \"/bff/dashboard/{{id}}\"\ndocument = \"{dashboard}\"\nauth = \"required\"\n\
         [[operations]]\nmethod = \"GET\"\npath = \"/bff/lessons\"\ndocument = \"{lessons}\"\n\
         cache = {{ ttl = \"30s\", scope = \"public\" }}\n\
         [[operations]]\nmethod = \"GET\"\npath = \"/bff/payments/{{id}}\"\ndocument = \"{payment}\"\n\
         [[operations]]\nmethod = \"POST\"\npath = \"/bff/checkout\"\ndocument = \"{checkout}\"\nauth = \"required\"\n\
         idempotency_key = {{ header = \"Idempotency-Key\", variable = \"idempotencyKey\" }}\n\
         [openapi]\npath = \"/openapi.json\"\n{extra}",
        backends.toml
    );
    let gateway = Gateway::start(&toml).await;
    Setup { gateway, backends, _documents: documents }
}

async fn get(gateway: &Gateway, path: &str, bearer: Option<&str>) -> (StatusCode, http::HeaderMap, Value) {
    let mut request = client().get(gateway.url(path));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("response");
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.expect("JSON body"))
}

#[tokio::test]
async fn the_dashboard_endpoint_answers_the_operations_data_with_the_id_from_the_path() {
    let setup = setup(Behaviour::default(), "").await;
    let (status, headers, body) = get(&setup.gateway, "/bff/dashboard/1", Some(&token("1", "payments:read"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    assert!(body.get("data").is_none() && body.get("errors").is_none(), "the data itself: {body}");
    assert_eq!(body["student"]["fullName"], "Ada Lovelace");
    assert_eq!(body["student"]["readingSessions"][0]["lesson"], json!({"title": "Lesson 7", "level": "A2"}));
    assert_eq!(body["student"]["payments"], json!([{"amount": "49.00", "currency": "USD", "status": "succeeded"}]));
    assert!(setup.backends.calls.list().contains(&"GET /users/1/".to_owned()));
}

#[tokio::test]
async fn query_parameters_are_typed_by_the_variables_and_bad_ones_are_a_400_naming_them() {
    let setup = setup(Behaviour::default(), "").await;
    let (status, _, body) = get(&setup.gateway, "/bff/lessons?level=A2&first=2", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["lessons"].is_array(), "{body}");
    assert!(
        setup.backends.calls.list().iter().any(|call| call.contains("level=A2") && call.contains("page_size=2")),
        "{:?}",
        setup.backends.calls.list()
    );

    let (status, _, body) = get(&setup.gateway, "/bff/lessons?first=two", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_parameter");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("`first`") && message.contains("Int"), "{message}");

    let (status, _, body) = get(&setup.gateway, "/bff/lessons?first=3000000000", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "over 32 bits: {body}");

    let (status, _, body) = get(&setup.gateway, "/bff/lessons?colour=red", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "unknown_parameter", "{body}");
}

#[tokio::test]
async fn auth_is_the_routes_policy_and_a_missing_scope_is_a_403() {
    let setup = setup(Behaviour::default(), "").await;
    let (status, headers, body) = get(&setup.gateway, "/bff/dashboard/1", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(headers.contains_key("www-authenticate"));

    let (status, _, body) = get(&setup.gateway, "/bff/payments/5", Some(&token("1", ""))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "operation_failed");
    assert_eq!(body["error"]["errors"][0]["extensions"]["code"], "FORBIDDEN", "{body}");
    assert_eq!(body["error"]["errors"][0]["path"], json!(["payment"]));
    assert!(setup.backends.calls.list().is_empty(), "no call without the scope");
}

#[tokio::test]
async fn backend_failures_are_502_and_504_and_partial_data_is_a_200_with_errors() {
    let behaviour = Behaviour::default();
    let setup = setup(behaviour.clone(), "").await;
    let student = token("1", "payments:read");

    behaviour.fail("/payments/", StatusCode::INTERNAL_SERVER_ERROR);
    let (status, headers, body) = get(&setup.gateway, "/bff/dashboard/1", Some(&student)).await;
    assert_eq!(status, StatusCode::OK, "partial: {body}");
    assert_eq!(body["student"]["fullName"], "Ada Lovelace");
    assert_eq!(body["student"]["payments"], Value::Null);
    assert_eq!(body["errors"][0]["extensions"]["code"], "UPSTREAM_ERROR", "{body}");
    assert_eq!(body["errors"][0]["path"], json!(["student", "payments"]));
    assert_eq!(headers["cache-control"], "no-store");

    behaviour.fail("/users/", StatusCode::BAD_GATEWAY);
    let (status, _, body) = get(&setup.gateway, "/bff/dashboard/1", Some(&student)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["errors"][0]["extensions"]["code"], "UPSTREAM_ERROR");
    assert!(body["error"]["request_id"].is_string());

    // The stub never answers: the service's 500ms request timeout.
    behaviour.fail("/users/", StatusCode::REQUEST_TIMEOUT);
    let (status, _, body) = get(&setup.gateway, "/bff/dashboard/1", Some(&student)).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"]["errors"][0]["extensions"]["code"], "UPSTREAM_TIMEOUT");
}

#[tokio::test]
async fn a_cacheable_operation_is_served_from_the_cache_the_second_time() {
    let setup = setup(Behaviour::default(), "").await;
    let (status, first, body) = get(&setup.gateway, "/bff/lessons?level=B1", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(first["cache-control"], "max-age=60, public", "the operation's @cacheControl");
    assert_eq!(first["x-cache"], "MISS");
    let (status, second, again) = get(&setup.gateway, "/bff/lessons?level=B1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["x-cache"], "HIT");
    assert_eq!(again, body);
}

#[tokio::test]
async fn a_mutation_takes_its_variables_from_the_body_and_its_key_from_a_header() {
    let setup = setup(Behaviour::default(), "").await;
    let url = setup.gateway.url("/bff/checkout");
    let input = json!({"input": {"studentId": "1", "amount": "49.00", "currency": "USD"}});
    let response = client()
        .post(&url)
        .bearer_auth(token("1", ""))
        .header("idempotency-key", "order-7")
        .json(&input)
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["checkout"]["status"], "key=order-7;user=1", "{body}");

    let response = client().post(&url).bearer_auth(token("1", "")).json(&input).send().await.expect("response");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("JSON");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| m.to_ascii_lowercase().contains("header idempotency-key")),
        "{body}"
    );

    let response = client()
        .post(&url)
        .bearer_auth(token("1", ""))
        .header("idempotency-key", "order-8")
        .header("content-type", "text/plain")
        .body(input.to_string())
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "a form-like body is refused (CSRF)");

    let response = client().get(&url).bearer_auth(token("1", "")).send().await.expect("response");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
}

#[tokio::test]
async fn the_openapi_document_describes_parameters_and_answers() {
    let setup = setup(Behaviour::default(), "").await;
    let (status, _, document) = get(&setup.gateway, "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0");
    let dashboard = &document["paths"]["/bff/dashboard/{id}"]["get"];
    assert_eq!(dashboard["operationId"], "Dashboard");
    assert_eq!(
        dashboard["parameters"][0],
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}})
    );
    let data = &dashboard["responses"]["200"]["content"]["application/json"]["schema"];
    let student = &data["properties"]["student"];
    assert_eq!(student["type"], json!(["object", "null"]), "student is nullable: {student}");
    assert_eq!(student["properties"]["fullName"]["type"], "string", "non-null: no null type");
    let lessons = &document["paths"]["/bff/lessons"]["get"]["parameters"];
    assert_eq!(lessons[1]["name"], "first");
    assert_eq!(lessons[1]["schema"]["type"], json!(["integer", "null"]));
    assert_eq!(lessons[1]["schema"]["format"], "int32");
    let checkout = &document["paths"]["/bff/checkout"]["post"];
    assert_eq!(
        checkout["requestBody"]["content"]["application/json"]["schema"]["properties"]["input"],
        json!({"$ref": "#/components/schemas/CheckoutInput"})
    );
    assert_eq!(
        document["components"]["schemas"]["CheckoutInput"]["required"],
        json!(["studentId", "amount", "currency"])
    );
}

/// The services' venv Python (`cargo xtask setup`), or `PORTICO_PYTHON`.
fn python() -> std::path::PathBuf {
    std::env::var_os("PORTICO_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("services/.venv/bin/python"))
}

/// Runs openapi-spec-validator (services/requirements-test.txt) on `document`.
fn validate(document: &[u8]) -> std::process::Output {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), document).expect("write document");
    std::process::Command::new(python())
        .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
        .arg(file.path())
        .output()
        .expect("the services' Python runs (cargo xtask setup, or PORTICO_PYTHON)")
}

#[test]
fn the_demo_openapi_document_passes_a_maintained_validator_which_refuses_a_broken_one() {
    let config = portico::Config::embedded_default().expect("the demo configuration loads");
    let document = portico::app::openapi_document(&config);
    let checked = validate(&document);
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let mut broken: Value = serde_json::from_slice(&document).expect("JSON");
    broken["paths"]["/bff/dashboard/{id}"]["get"]["parameters"][0]["in"] = json!("cookie-jar");
    let refused = validate(&serde_json::to_vec(&broken).expect("JSON"));
    assert!(!refused.status.success(), "a parameter in no valid location must be refused");
}
