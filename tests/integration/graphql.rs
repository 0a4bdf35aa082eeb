//! The GraphQL front door against stub backends serving the contract's
//! shapes: connectors, batching, concurrency, deduplication, errors and
//! partial data, limits, persisted queries, GraphQL over HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::harness::{client, Gateway, Stub};

/// Calls received by the stubs, as `METHOD /path?query`, in arrival order.
#[derive(Clone, Default)]
pub(crate) struct Calls(Arc<Mutex<Vec<String>>>);

impl Calls {
    pub(crate) fn list(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }
    fn record(&self, request: &Request) {
        let uri = request.uri();
        let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
        self.0.lock().expect("lock").push(format!("{} {target}", request.method()));
    }
}

/// How the stubs misbehave, keyed by path prefix.
#[derive(Clone, Default)]
pub(crate) struct Behaviour {
    status: Arc<Mutex<HashMap<&'static str, StatusCode>>>,
    /// Both list endpoints under a student wait here for each other, so the
    /// test only passes if the gateway calls them concurrently.
    rendezvous: Option<Arc<Barrier>>,
    /// Every answer sets a cookie, varies and echoes its language (answers
    /// with cookies are not cached, so only where a test asks).
    answer_headers: bool,
}

impl Behaviour {
    pub(crate) fn fail(&self, prefix: &'static str, status: StatusCode) {
        self.status.lock().expect("lock").insert(prefix, status);
    }
    fn failure_for(&self, path: &str) -> Option<StatusCode> {
        self.status
            .lock()
            .expect("lock")
            .iter()
            .find(|(prefix, _)| path.starts_with(*prefix))
            .map(|(_, status)| *status)
    }
}

#[derive(Clone)]
struct StubState {
    calls: Calls,
    behaviour: Behaviour,
}

fn user(id: u64) -> Value {
    let names = ["", "Ada Lovelace", "Alan Turing", "Grace Hopper"];
    // User 4's record lacks a name the schema declares non-null.
    let name = if id == 4 { Value::Null } else { json!(names.get(id as usize).copied().unwrap_or("Someone")) };
    json!({"id": id, "username": format!("user{id}"), "email": format!("user{id}@example.com"),
           "full_name": name, "grade": 5, "created_at": "2026-01-02T03:04:05Z"})
}

fn lesson(id: u64) -> Value {
    json!({"id": id, "title": format!("Lesson {id}"), "level": "A2", "word_count": 100 * id, "duration_seconds": 60 * id})
}

fn page(results: Vec<Value>) -> Value {
    json!({"count": results.len(), "next": null, "previous": null, "results": results})
}

fn ids(query: &HashMap<String, String>) -> Vec<u64> {
    query.get("ids").map(|ids| ids.split(',').filter_map(|id| id.parse().ok()).collect()).unwrap_or_default()
}

async fn guard(State(state): State<StubState>, request: Request, next: axum::middleware::Next) -> Response {
    if request.uri().path() == "/health/" {
        return next.run(request).await;
    }
    state.calls.record(&request);
    if let Some(status) = state.behaviour.failure_for(request.uri().path()) {
        if status == StatusCode::REQUEST_TIMEOUT {
            std::future::pending::<()>().await;
        }
        return (status, Json(json!({"detail": "stub failure"}))).into_response();
    }
    if !state.behaviour.answer_headers {
        return next.run(request).await;
    }
    // A cookie per endpoint (with the comma of an Expires), a Vary, and
    // the language the call asked for.
    let language = request.headers().get("accept-language").cloned();
    let service = request.uri().path().split('/').nth(1).unwrap_or("").to_owned();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let cookie = format!("seen-{service}=1; Path=/; Expires=Wed, 21 Oct 2026 07:28:00 GMT");
    headers.append("set-cookie", cookie.parse().expect("a header value"));
    headers.append("vary", format!("Accept-Language, X-{service}").parse().expect("a header value"));
    headers.insert("x-seen-language", language.unwrap_or(http::HeaderValue::from_static("none")));
    response
}

async fn rendezvous(behaviour: &Behaviour) -> Result<(), Response> {
    if let Some(barrier) = &behaviour.rendezvous {
        if tokio::time::timeout(Duration::from_secs(5), barrier.wait()).await.is_err() {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, "the sibling call never came").into_response());
        }
    }
    Ok(())
}

fn student_api(state: StubState) -> Router {
    Router::new()
        .route("/health/", get(|| async { "ok" }))
        .route(
            "/users/{id}/",
            get(|Path(id): Path<String>| async move {
                match id.parse::<u64>() {
                    Ok(id @ 1..=4) => Json(user(id)).into_response(),
                    _ => (StatusCode::NOT_FOUND, Json(json!({"detail": "Not found."}))).into_response(),
                }
            }),
        )
        .route(
            "/users/",
            get(|Query(query): Query<HashMap<String, String>>| async move {
                Json(page(ids(&query).into_iter().map(user).collect()))
            }),
        )
        .route(
            "/register/",
            post(|Json(body): Json<Value>| async move {
                if body.get("email").and_then(Value::as_str).is_some_and(|email| email.contains('@')) {
                    (
                        StatusCode::CREATED,
                        Json(json!({"id": 9, "username": body["username"], "email": body["email"],
                        "full_name": body["full_name"], "grade": body["grade"], "created_at": "2026-03-01T00:00:00Z"})),
                    )
                        .into_response()
                } else {
                    (StatusCode::BAD_REQUEST, Json(json!({"email": ["Enter a valid email address."]}))).into_response()
                }
            }),
        )
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

fn live_reading(state: StubState) -> Router {
    Router::new()
        .route("/health/", get(|| async { "ok" }))
        .route(
            "/sessions/",
            get(|State(state): State<StubState>, Query(query): Query<HashMap<String, String>>| async move {
                if let Err(response) = rendezvous(&state.behaviour).await {
                    return response;
                }
                let student: u64 = query.get("student_id").and_then(|id| id.parse().ok()).unwrap_or(0);
                if student == 99 {
                    return raw_json(ODD_SESSIONS);
                }
                if student == 98 {
                    return raw_json(MIXED_SESSIONS);
                }
                // Student 1 read lessons 7, 3, 4 and 3 again; student 2
                // lessons 17, 13, 14, 13; and so on.
                let offset = student.saturating_sub(1) * 10;
                let sessions: Vec<Value> = [(10, 7), (11, 3), (12, 4), (13, 3)]
                    .iter()
                    .map(|(id, lesson)| (id, lesson + offset))
                    .map(|(id, lesson)| {
                        json!({"id": id, "student_id": student, "lesson_id": lesson,
                        "started_at": "2026-02-01T10:00:00Z", "words_per_minute": 112.5, "accuracy": 0.97})
                    })
                    .collect();
                Json(page(sessions)).into_response()
            }),
        )
        .route(
            "/lesson/",
            get(|Query(query): Query<HashMap<String, String>>| async move {
                Json(page(ids(&query).into_iter().map(lesson).collect()))
            }),
        )
        .route(
            "/lesson/{id}/",
            get(|Path(id): Path<u64>| async move {
                match id {
                    99 => raw_json(ODD_LESSON),
                    98 => raw_json(EDGE_LESSON),
                    id => Json(lesson(id)).into_response(),
                }
            }),
        )
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// An answer of JSON text written by hand, so that its escapes and number
/// forms are exactly what a backend might send.
fn raw_json(text: &'static str) -> Response {
    ([(http::header::CONTENT_TYPE, "application/json")], text).into_response()
}

fn payment(state: StubState) -> Router {
    Router::new()
        .route("/health/", get(|| async { "ok" }))
        .route(
            "/payments/",
            get(|State(state): State<StubState>, Query(query): Query<HashMap<String, String>>| async move {
                if let Err(response) = rendezvous(&state.behaviour).await {
                    return response;
                }
                let student: u64 = query.get("student_id").and_then(|id| id.parse().ok()).unwrap_or(0);
                Json(page(vec![json!({"id": 5, "student_id": student, "amount": "49.00", "currency": "USD",
                    "status": "succeeded", "created_at": "2026-02-03T12:00:00Z"})]))
                .into_response()
            }),
        )
        .route(
            "/checkout/",
            post(|headers: http::HeaderMap, Json(body): Json<Value>| async move {
                let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let user = headers.get("x-user-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                (StatusCode::CREATED, Json(json!({"id": 77, "student_id": body["student_id"], "amount": body["amount"],
                    "currency": body["currency"], "status": format!("key={key};user={user}"), "created_at": "2026-02-03T12:00:00Z"})))
            }),
        )
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

pub(crate) struct Backends {
    pub(crate) calls: Calls,
    #[allow(dead_code)]
    behaviour: Behaviour,
    stubs: Vec<(&'static str, Stub)>,
    graphql: String,
    /// A `headers` table for every service.
    service_headers: Option<String>,
    pub(crate) toml: String,
}

impl Backends {
    /// The gateway configuration, with `replace` pointing one service elsewhere.
    fn config(&self, replace: Option<(&str, &str)>) -> String {
        let mut toml = String::from("[server]\nlisten = \"127.0.0.1:0\"\n\n");
        for (name, stub) in &self.stubs {
            let url = match replace {
                Some((service, url)) if service == *name => url.to_owned(),
                _ => stub.url(),
            };
            toml.push_str(&format!(
                "[services.{name}]\nendpoints = [\"{url}\"]\nrequest_timeout = \"500ms\"\nhealth_check = {{ enabled = false }}\n\
                 passive_health = {{ enabled = false }}\nretry = {{ attempts = 0 }}\n"
            ));
            if let Some(table) = &self.service_headers {
                toml.push_str(&format!("headers = {table}\n"));
            }
            toml.push('\n');
        }
        toml.push_str(&format!("[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\n\n"));
        toml.push_str(&format!("[graphql]\nenabled = true\n{}\n", self.graphql));
        toml
    }
}

/// The HS256 secret of the test gateways.
pub(crate) const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

/// A token for `sub` with the given space-separated scopes.
pub(crate) fn token(sub: &str, scopes: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 600;
    let claims = json!({"sub": sub, "exp": exp, "scope": scopes});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("signing works")
}

pub(crate) async fn backends(behaviour: Behaviour, graphql: &str) -> Backends {
    let calls = Calls::default();
    let state = StubState { calls: calls.clone(), behaviour: behaviour.clone() };
    let stubs = vec![
        ("student_api", Stub::serve(student_api(state.clone())).await),
        ("live_reading", Stub::serve(live_reading(state.clone())).await),
        ("payment", Stub::serve(payment(state)).await),
    ];
    let mut backends =
        Backends { calls, behaviour, stubs, graphql: graphql.to_owned(), service_headers: None, toml: String::new() };
    backends.toml = backends.config(None);
    backends
}

/// Posts an operation as student 1 with the `payments:read` scope.
async fn send_graphql(gateway: &Gateway, body: Value) -> reqwest::Response {
    client()
        .post(gateway.url("/graphql"))
        .bearer_auth(token("1", "payments:read"))
        .json(&body)
        .send()
        .await
        .expect("response")
}

/// Posts an operation as student 1 with the `payments:read` scope.
async fn post_graphql(gateway: &Gateway, body: Value) -> (StatusCode, Value) {
    let response = send_graphql(gateway, body).await;
    let status = response.status();
    (status, response.json().await.expect("JSON"))
}

pub(crate) const DASHBOARD: &str = "query Dashboard($id: ID!) { student(id: $id) { fullName \
    readingSessions { wordsPerMinute accuracy lesson { title level } } payments { amount currency status } } }";

#[tokio::test]
async fn dashboard_takes_four_calls_with_the_student_calls_concurrent() {
    let behaviour = Behaviour { rendezvous: Some(Arc::new(Barrier::new(2))), ..Behaviour::default() };
    let backends = backends(behaviour, "").await;
    let gateway = Gateway::start(&backends.toml).await;

    let (status, body) = post_graphql(&gateway, json!({"query": DASHBOARD, "variables": {"id": "1"}})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("errors").is_none(), "{body}");
    let student = &body["data"]["student"];
    assert_eq!(student["fullName"], "Ada Lovelace");
    assert_eq!(student["readingSessions"].as_array().expect("sessions").len(), 4);
    assert_eq!(student["readingSessions"][0]["lesson"], json!({"title": "Lesson 7", "level": "A2"}));
    assert_eq!(student["readingSessions"][1]["lesson"]["title"], "Lesson 3");
    assert_eq!(student["payments"], json!([{"amount": "49.00", "currency": "USD", "status": "succeeded"}]));

    let mut calls = backends.calls.list();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert_eq!(calls[0], "GET /users/1/");
    calls[1..3].sort();
    assert_eq!(calls[1], "GET /payments/?student_id=1&page_size=50");
    assert_eq!(calls[2], "GET /sessions/?student_id=1&page_size=50");
    assert_eq!(calls[3], "GET /lesson/?ids=3%2C4%2C7&page_size=3", "one batched call, sorted and deduplicated keys");
}

#[tokio::test]
async fn skipped_fields_make_no_backend_call() {
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;
    let query = "query ($withPayments: Boolean!) { student(id: 1) { fullName \
        payments @include(if: $withPayments) { amount } readingSessions @skip(if: true) { id } } }";
    let (_, body) = post_graphql(&gateway, json!({"query": query, "variables": {"withPayments": false}})).await;
    assert_eq!(body["data"]["student"], json!({"fullName": "Ada Lovelace"}), "{body}");
    assert_eq!(backends.calls.list(), vec!["GET /users/1/"], "no call is started for a skipped field");
}

#[tokio::test]
async fn batches_are_split_at_the_maximum_batch_size() {
    let backends = backends(Behaviour::default(), "max_batch_size = 2").await;
    let gateway = Gateway::start(&backends.toml).await;
    let (_, body) =
        post_graphql(&gateway, json!({"query": "{ readingSessions(studentId: 1) { lesson { id } } }"})).await;
    assert!(body.get("errors").is_none(), "{body}");
    let lesson_calls: Vec<String> =
        backends.calls.list().into_iter().filter(|call| call.starts_with("GET /lesson/")).collect();
    assert_eq!(lesson_calls, vec!["GET /lesson/?ids=3%2C4&page_size=2", "GET /lesson/?ids=7&page_size=1"]);
}

#[tokio::test]
async fn identical_calls_within_one_operation_are_made_once() {
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;
    let query = "{ a: student(id: 1) { fullName } b: student(id: 1) { username } c: student(id: 2) { id } }";
    let (_, body) = post_graphql(&gateway, json!({"query": query})).await;
    assert_eq!(body["data"]["a"]["fullName"], "Ada Lovelace");
    assert_eq!(body["data"]["b"]["username"], "user1");
    assert_eq!(body["data"]["c"]["id"], "2", "IDs are strings even when the backend sends numbers");
    assert_eq!(backends.calls.list(), vec!["GET /users/1/", "GET /users/2/"]);
}

#[tokio::test]
async fn a_failing_service_nulls_its_fields_and_the_rest_still_answers() {
    let backends = backends(Behaviour::default(), "").await;
    backends.behaviour.fail("/payments/", StatusCode::INTERNAL_SERVER_ERROR);
    backends.behaviour.fail("/lesson/", StatusCode::REQUEST_TIMEOUT);
    let gateway = Gateway::start(&backends.toml).await;

    let (status, body) = post_graphql(&gateway, json!({"query": DASHBOARD, "variables": {"id": "1"}})).await;
    assert_eq!(status, StatusCode::OK);
    let student = &body["data"]["student"];
    assert_eq!(student["fullName"], "Ada Lovelace");
    assert_eq!(student["payments"], Value::Null);
    assert_eq!(student["readingSessions"][0]["wordsPerMinute"], 112.5);
    assert_eq!(student["readingSessions"][0]["lesson"], Value::Null);
    let errors = body["errors"].as_array().expect("errors");
    let by_code = |code: &str| errors.iter().filter(|error| error["extensions"]["code"] == code).collect::<Vec<_>>();
    let upstream = by_code("UPSTREAM_ERROR");
    assert_eq!(upstream.len(), 1, "{errors:?}");
    assert_eq!(upstream[0]["extensions"]["service"], "payment");
    assert_eq!(upstream[0]["extensions"]["status"], 500);
    assert_eq!(upstream[0]["path"], json!(["student", "payments"]), "{body}");
    assert!(!by_code("UPSTREAM_TIMEOUT").is_empty(), "{errors:?}");
    let text = body.to_string();
    assert!(!text.contains("127.0.0.1"), "no internal address in answers: {text}");
}

#[tokio::test]
async fn an_unreachable_service_is_upstream_unavailable_and_a_404_is_null() {
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;
    let (_, body) =
        post_graphql(&gateway, json!({"query": "{ missing: student(id: 404) { id } ada: student(id: 1) { id } }"}))
            .await;
    assert_eq!(body["data"]["missing"], Value::Null);
    assert_eq!(body["data"]["ada"]["id"], "1");
    assert!(body.get("errors").is_none(), "a 404 on a nullable field is not an error: {body}");

    let dead = crate::harness::closed_port().await;
    let gateway = Gateway::start(&backends.config(Some(("payment", &format!("http://{dead}"))))).await;
    let (_, body) = post_graphql(&gateway, json!({"query": "{ payments(studentId: 1) { id } lessons { id } }"})).await;
    assert_eq!(body["data"]["payments"], Value::Null);
    assert_eq!(body["data"]["lessons"].as_array().map(Vec::len), Some(0), "live_reading still answers");
    assert_eq!(body["errors"][0]["extensions"]["code"], "UPSTREAM_UNAVAILABLE");
    assert_eq!(body["errors"][0]["extensions"]["service"], "payment");
}

#[tokio::test]
async fn mutations_send_snake_case_bodies_and_headers_and_report_field_errors() {
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;

    let checkout = "mutation { checkout(input: {studentId: 1, amount: \"49.00\", currency: \"USD\"}, idempotencyKey: \"k-1\") { id amount status } }";
    let (_, body) = post_graphql(&gateway, json!({"query": checkout})).await;
    assert_eq!(body["data"]["checkout"]["amount"], "49.00", "{body}");
    assert_eq!(body["data"]["checkout"]["status"], "key=k-1;user=1", "the key and the caller reached the service");
    assert!(backends.calls.list().contains(&"POST /checkout/".to_owned()));

    let register = "mutation { register(input: {username: \"x\", email: \"bad\", fullName: \"X\", grade: 3, password: \"longpassword\"}) { id } }";
    let (status, body) = post_graphql(&gateway, json!({"query": register})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"], json!({"register": null}));
    let error = &body["errors"][0];
    assert_eq!(error["path"], json!(["register"]), "the error names its field");
    assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(error["extensions"]["fieldErrors"]["email"][0], "Enter a valid email address.");
    assert_eq!(error["extensions"]["service"], "student_api");
}

#[tokio::test]
async fn hostile_arguments_are_percent_encoded_into_one_segment() {
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;
    let (_, body) = post_graphql(
        &gateway,
        json!({"query": "{ student(id: \"1/../../admin?x=1#y\") { id } lessons(level: \"A1&page_size=500\") { id } }"}),
    )
    .await;
    assert_eq!(body["data"]["student"], Value::Null);
    // The two calls run concurrently, to two services: in either order.
    let mut calls = backends.calls.list();
    calls.sort();
    assert_eq!(
        calls,
        vec!["GET /lesson/?level=A1%26page_size%3D500&page_size=50", "GET /users/1%2F..%2F..%2Fadmin%3Fx%3D1%23y/"]
    );

    let long = "9".repeat(600);
    let (_, body) = post_graphql(&gateway, json!({"query": format!("{{ student(id: \"{long}\") {{ id }} }}")})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(backends.calls.list().len(), 2, "an over-long value never reaches a backend");
}

#[tokio::test]
async fn abusive_documents_are_refused_before_any_backend_call() {
    let limits = "max_depth = 3\nmax_aliases = 2\nmax_root_fields = 3\nmax_cost = 100\nmax_tokens = 200\nmax_document_size = \"2KiB\"\nmax_body_size = \"4KiB\"";
    let backends = backends(Behaviour::default(), limits).await;
    let gateway = Gateway::start(&backends.toml).await;
    let cases = [
        ("{ student(id: 1) { readingSessions { lesson { title } } } }", "QUERY_LIMIT_EXCEEDED", "nested 4 levels"),
        (
            "{ a: lesson(id: 1) { id } b: lesson(id: 2) { id } c: lesson(id: 3) { id } }",
            "QUERY_LIMIT_EXCEEDED",
            "aliases",
        ),
        (
            "{ lesson(id: 1) { id } l2: lesson(id: 2) { id } students { id } payments(studentId: 1) { id } }",
            "QUERY_LIMIT_EXCEEDED",
            "root fields",
        ),
        ("{ students(first: 500) { readingSessions(first: 500) { id } } }", "COST_LIMIT_EXCEEDED", "costs"),
    ];
    for (query, code, message) in cases {
        let (status, body) = post_graphql(&gateway, json!({"query": query})).await;
        assert_eq!(status, StatusCode::OK, "application/json answers are 200: {body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], code, "{query}: {body}");
        assert!(body["errors"][0]["message"].as_str().expect("message").contains(message), "{body}");
    }
    let many_tokens = format!("{{ lesson(id: 1) {{ {} }} }}", "id ".repeat(300));
    let (_, body) = post_graphql(&gateway, json!({"query": many_tokens})).await;
    assert!(body["errors"][0]["message"].as_str().expect("message").contains("tokens"), "{body}");
    let huge = format!("{{ lesson(id: 1) {{ id }} }} #{}", "x".repeat(3000));
    let (_, body) = post_graphql(&gateway, json!({"query": huge})).await;
    assert!(body["errors"][0]["message"].as_str().expect("message").contains("bytes"), "{body}");
    let response = client()
        .post(gateway.url("/graphql"))
        .json(&json!({"query": "x".repeat(5000)}))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(backends.calls.list().is_empty(), "{:?}", backends.calls.list());
}

#[tokio::test]
async fn graphql_over_http_status_codes_and_media_types() {
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;

    let response = client()
        .get(gateway.url("/graphql?query=%7B%20lesson(id%3A%201)%20%7B%20title%20%7D%20%7D"))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.json::<Value>().await.expect("JSON")["data"]["lesson"]["title"], "Lesson 1");

    let response = client()
        .get(gateway.url("/graphql?query=mutation%20%7B%20startReadingSession(lessonId%3A%201)%20%7B%20id%20%7D%20%7D"))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "mutations need POST");

    let response = client()
        .post(gateway.url("/graphql"))
        .header("accept", "application/graphql-response+json")
        .json(&json!({"query": "{ lesson(id: 1) { nope } }"}))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "validation errors are 400 with the GraphQL media type");
    assert_eq!(response.headers()["content-type"], "application/graphql-response+json");
    let body: Value = response.json().await.expect("JSON");
    assert!(body.get("data").is_none(), "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED");

    let (status, body) = post_graphql(&gateway, json!({"query": "{ lesson(id: 1) { nope } }"})).await;
    assert_eq!(status, StatusCode::OK, "and 200 with application/json");
    assert!(body["errors"].is_array());

    let (status, body) = post_graphql(&gateway, json!({"query": "{ lesson(id: 1) { title "})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["errors"][0]["extensions"]["code"], "GRAPHQL_PARSE_FAILED");

    let response = client()
        .post(gateway.url("/graphql"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("a JSON error");
    assert!(body["errors"][0]["message"].is_string());
    assert!(backends.calls.list().len() == 1, "only the GET query called a backend: {:?}", backends.calls.list());
}

#[tokio::test]
async fn automatic_persisted_queries_follow_the_apollo_protocol() {
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;
    let query = "{ lesson(id: 2) { title } }";
    let hash = {
        use sha2::Digest;
        sha2::Sha256::digest(query.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect::<String>()
    };
    let extensions = json!({"persistedQuery": {"version": 1, "sha256Hash": hash}});

    let (_, body) = post_graphql(&gateway, json!({"extensions": extensions})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND");
    let (_, body) = post_graphql(&gateway, json!({"query": query, "extensions": extensions})).await;
    assert_eq!(body["data"]["lesson"]["title"], "Lesson 2");
    let (_, body) = post_graphql(&gateway, json!({"extensions": extensions})).await;
    assert_eq!(body["data"]["lesson"]["title"], "Lesson 2", "the hash alone now runs the query");
    let (status, body) =
        post_graphql(&gateway, json!({"query": "{ lesson(id: 3) { id } }", "extensions": extensions})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["errors"][0]["message"].as_str().expect("message").contains("does not match"));
}

#[tokio::test]
async fn trusted_documents_mode_runs_only_listed_documents() {
    let query = "{ lesson(id: 4) { title } }";
    let hash = {
        use sha2::Digest;
        sha2::Sha256::digest(query.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect::<String>()
    };
    let manifest = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(manifest.path(), json!({ hash.clone(): query }).to_string()).expect("write manifest");
    let backends = backends(Behaviour::default(), &format!("trusted_documents = {:?}", manifest.path())).await;
    let gateway = Gateway::start(&backends.toml).await;

    let (_, body) =
        post_graphql(&gateway, json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}})).await;
    assert_eq!(body["data"]["lesson"]["title"], "Lesson 4");
    let (_, body) = post_graphql(&gateway, json!({"query": query})).await;
    assert_eq!(body["data"]["lesson"]["title"], "Lesson 4", "the listed text itself is accepted too");
    let (status, body) = post_graphql(&gateway, json!({"query": "{ lesson(id: 5) { title } }"})).await;
    assert_eq!(status, StatusCode::OK, "a refused document is still a well-formed request");
    assert_eq!(body["errors"][0]["extensions"]["code"], "QUERY_NOT_IN_SAFELIST");
    let listed_hash = json!({"persistedQuery": {"version": 1, "sha256Hash": hash}});
    let (status, body) =
        post_graphql(&gateway, json!({"query": "{ lesson(id: 6) { title } }", "extensions": listed_hash})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a listed hash with another text is refused: {body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "TRUSTED_DOCUMENT_MISMATCH");
    assert!(body.get("data").is_none(), "{body}");
    let (_, body) = post_graphql(&gateway, json!({"query": query, "extensions": listed_hash})).await;
    assert_eq!(body["data"]["lesson"]["title"], "Lesson 4", "the hash with its own text runs");
    assert_eq!(backends.calls.list(), vec!["GET /lesson/4/"], "later answers are cached (Lesson is PUBLIC)");
}

#[tokio::test]
async fn introspection_can_be_turned_off_and_the_playground_is_served() {
    let backends = backends(Behaviour::default(), "introspection = false").await;
    let gateway = Gateway::start(&backends.toml).await;
    let (_, body) = post_graphql(&gateway, json!({"query": "{ __schema { types { name } } }"})).await;
    assert!(body["errors"].is_array(), "{body}");
    assert!(body["data"].is_null() || body["data"]["__schema"].is_null(), "{body}");

    let page = client().get(gateway.url("/graphql")).header("accept", "text/html").send().await.expect("response");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("html");
    assert!(html.contains("/graphql/assets/graphiql.min.js"), "assets come from the gateway, not a CDN");
    assert!(!html.contains("unpkg") && !html.contains("cdn"), "{html}");
}

/// `levels` fragments, each spreading the next twice through `spread`
/// (which wraps `...F<n>`); the last selects `leaf`. 30 levels are 2^30
/// fields once expanded, in about 1 KB.
fn fan_out(levels: usize, spread: impl Fn(&str) -> String, leaf: &str) -> String {
    let mut query = String::from("query Q($v: Boolean!) { student(id: 1) { ...F0 } }\n");
    for level in 0..levels {
        let next = format!("F{}", level + 1);
        query.push_str(&format!("fragment F{level} on Student {{ {} {} }}\n", spread(&next), spread(&next)));
    }
    query.push_str(&format!("fragment F{levels} on Student {{ {leaf} }}\n"));
    query
}

// Several workers: should a check ever spin on a document again, the test's
// own timeout still fires and fails it rather than hanging with the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragment_fan_outs_are_refused_at_once_without_a_backend_call() {
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;
    let documents = [
        ("spreads", fan_out(30, |next| format!("...{next}"), "fullName")),
        ("aliases", fan_out(30, |next| format!("...{next}"), "name: fullName other: username")),
        ("inline fragments", fan_out(30, |next| format!("... on Student {{ ...{next} }}"), "fullName")),
        ("@include", fan_out(30, |next| format!("...{next} @include(if: $v)"), "fullName")),
    ];
    for (variant, query) in documents {
        assert!(query.len() < 3_000, "{variant}: {} bytes", query.len());
        let started = std::time::Instant::now();
        let request = post_graphql(&gateway, json!({"query": query, "variables": {"v": true}}));
        let (status, body) = tokio::time::timeout(Duration::from_secs(20), request)
            .await
            .unwrap_or_else(|_| panic!("{variant}: no answer within 20 s"));
        eprintln!("{variant}: refused in {:?}", started.elapsed());
        assert_eq!(status, StatusCode::OK, "{variant}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "QUERY_LIMIT_EXCEEDED", "{variant}: {body}");
        let message = body["errors"][0]["message"].as_str().expect("message");
        assert!(message.contains("fields once its fragments are expanded; the limit is 2000"), "{variant}: {message}");
        assert!(body.get("data").is_none(), "{variant}: {body}");
    }
    assert!(backends.calls.list().is_empty(), "{:?}", backends.calls.list());

    // Within the limit, the same shape runs: 2^10 copies of one field.
    let (_, body) = post_graphql(
        &gateway,
        json!({"query": fan_out(10, |next| format!("...{next} @include(if: $v)"), "fullName"), "variables": {"v": true}}),
    )
    .await;
    assert_eq!(body["data"]["student"]["fullName"], "Ada Lovelace", "{body}");
}

/// A backend that reads a request and never answers; it reports when the
/// gateway closes the connection.
async fn silent_backend() -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (closed, closures) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut buffer = [0_u8; 4096];
                while !matches!(stream.read(&mut buffer).await, Ok(0) | Err(_)) {}
                let _ = closed.send(());
            });
        }
    });
    (url, closures)
}

#[tokio::test]
async fn an_operation_past_its_deadline_is_a_coded_504_and_its_calls_are_dropped() {
    let backends = backends(Behaviour::default(), "operation_timeout = \"300ms\"").await;
    let (silent, mut closures) = silent_backend().await;
    // The backend's own timeout is far away: only the operation's deadline can end this.
    let toml = backends
        .config(Some(("student_api", &silent)))
        .replace("request_timeout = \"500ms\"", "request_timeout = \"60s\"");
    let gateway = Gateway::start(&toml).await;

    let started = std::time::Instant::now();
    let request = client()
        .post(gateway.url("/graphql"))
        .header("accept", "application/graphql-response+json")
        .json(&json!({"query": "{ student(id: 1) { fullName } lessons { id } }"}))
        .send();
    let response = tokio::time::timeout(Duration::from_secs(20), request).await.expect("an answer").expect("response");
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(response.headers()["content-type"], "application/graphql-response+json");
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["errors"][0]["extensions"]["code"], "OPERATION_TIMEOUT", "{body}");
    assert!(body.get("data").is_none(), "{body}");
    assert!(elapsed >= Duration::from_millis(300), "answered after {elapsed:?}");
    tokio::time::timeout(Duration::from_secs(10), closures.recv())
        .await
        .expect("the call to the silent backend is dropped, closing its connection");

    let (status, body) = post_graphql(&gateway, json!({"query": "{ student(id: 2) { fullName } }"})).await;
    assert_eq!(
        status,
        StatusCode::GATEWAY_TIMEOUT,
        "a gateway failure keeps its status under application/json: {body}"
    );
    assert_eq!(body["errors"][0]["extensions"]["code"], "OPERATION_TIMEOUT");
}

#[tokio::test]
async fn posts_without_a_json_content_type_are_refused_and_run_nothing() {
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;
    let body = json!({"query": "mutation { startReadingSession(lessonId: 1) { id } }"}).to_string();
    for content_type in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/xml"),
        Some("application/graphql"),
        None,
    ] {
        let mut request = client().post(gateway.url("/graphql")).body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("response");
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{content_type:?}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let answer: Value = response.json().await.expect("a JSON error");
        assert_eq!(answer["errors"][0]["extensions"]["code"], "UNSUPPORTED_MEDIA_TYPE", "{content_type:?}: {answer}");
    }
    assert!(backends.calls.list().is_empty(), "nothing ran: {:?}", backends.calls.list());

    let response = client()
        .post(gateway.url("/graphql"))
        .header("content-type", "Application/JSON; charset=utf-8")
        .body(json!({"query": "{ lesson(id: 1) { title } }"}).to_string())
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.expect("JSON")["data"]["lesson"]["title"], "Lesson 1");
}

/// What graphql-js's `getIntrospectionQuery()` returns, byte for byte (the
/// default options; GraphiQL and codegen tools send it).
const INTROSPECTION_QUERY: &str = include_str!("../fixtures/introspection-query.graphql");

#[tokio::test]
async fn the_standard_introspection_query_returns_the_schema_at_the_default_limits() {
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;
    let (status, body) =
        post_graphql(&gateway, json!({"query": INTROSPECTION_QUERY, "operationName": "IntrospectionQuery"})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("errors").is_none(), "{body}");
    let types = body["data"]["__schema"]["types"].as_array().expect("types");
    let student = types.iter().find(|ty| ty["name"] == "Student").expect("Student is listed");
    assert!(student["fields"].as_array().expect("fields").iter().any(|field| field["name"] == "readingSessions"));
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query");

    let deeper = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }";
    let (_, body) = post_graphql(&gateway, json!({"query": deeper})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "QUERY_LIMIT_EXCEEDED", "{body}");
    assert!(body["errors"][0]["message"].as_str().expect("message").contains("introspection"), "{body}");
    assert!(backends.calls.list().is_empty());
}

/// Posts an operation and returns the answer's text, whose key order the
/// parsed JSON would lose.
async fn post_graphql_text(gateway: &Gateway, body: Value) -> String {
    send_graphql(gateway, body).await.text().await.expect("text")
}

#[tokio::test]
async fn fields_come_back_in_the_order_the_operation_selected_them() {
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;
    let query = "{ student(id: 1) { username z: id ... on Student { fullName a: email } grade } }";
    let text = post_graphql_text(&gateway, json!({"query": query})).await;
    assert_eq!(
        text,
        r#"{"data":{"student":{"username":"user1","z":"1","fullName":"Ada Lovelace","a":"user1@example.com","grade":5}}}"#
    );
}

#[tokio::test]
async fn a_null_non_null_field_nulls_its_nearest_nullable_ancestor_with_the_error_at_its_path() {
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;
    let query =
        "{ student(id: 4) { id fullName } ok: student(id: 1) { fullName } students(ids: [1, 4]) { id fullName } }";
    let (status, body) = post_graphql(&gateway, json!({"query": query})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["student"], Value::Null, "Student.fullName is String!: the student is null: {body}");
    assert_eq!(body["data"]["ok"], json!({"fullName": "Ada Lovelace"}), "the rest still answers");
    assert_eq!(body["data"]["students"], Value::Null, "[Student!]: one failing item nulls the list: {body}");
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 2, "{body}");
    assert_eq!(errors[0]["path"], json!(["student", "fullName"]));
    assert_eq!(errors[0]["extensions"]["code"], "UPSTREAM_ERROR");
    assert!(errors[0]["locations"][0]["line"].is_u64(), "{body}");
    assert_eq!(errors[1]["path"], json!(["students", 1, "fullName"]));
}

#[tokio::test]
async fn batches_gather_the_keys_of_every_parent_across_nested_lists() {
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;
    let query = "{ students(ids: [1, 2]) { id readingSessions { lesson { title } } } }";
    let (_, body) = post_graphql(&gateway, json!({"query": query})).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"]["students"][1]["readingSessions"][0]["lesson"]["title"], "Lesson 17");
    assert_eq!(body["data"]["students"][0]["readingSessions"][3]["lesson"]["title"], "Lesson 3");
    let mut calls = backends.calls.list();
    calls[1..3].sort();
    assert_eq!(
        calls,
        vec![
            "GET /users/?ids=1%2C2&page_size=50",
            "GET /sessions/?student_id=1&page_size=50",
            "GET /sessions/?student_id=2&page_size=50",
            "GET /lesson/?ids=3%2C4%2C7%2C13%2C14%2C17&page_size=6",
        ],
        "one lesson call for the sessions of both students"
    );
}

/// Backend answers with escapes, numbers out of `Int`'s range or in
/// exponent form, and integers for `Float` fields (see `raw_json`).
const ODD_LESSON: &str = r#"{"id": 99, "title": "Caf\u00e9 \"quoted\"\n\ud83d\ude00 é", "level": "A2", "word_count": 3000000000, "duration_seconds": 60}"#;
const EDGE_LESSON: &str =
    r#"{"id": 98, "title": "Edge", "level": "B1", "word_count": -2147483648, "duration_seconds": 2147483647}"#;
const ODD_SESSIONS: &str = r#"{"count": 2, "next": null, "previous": null, "results": [
    {"id": 18446744073709551615, "student_id": 99, "lesson_id": 98, "started_at": "2026-02-01T10:00:00Z", "words_per_minute": 1e3, "accuracy": -0.5},
    {"id": "s-2", "student_id": 99, "lesson_id": 98, "started_at": "2026-02-01T10:00:00Z", "words_per_minute": 97, "accuracy": 0}]}"#;

#[tokio::test]
async fn backend_scalars_are_copied_as_written_when_they_fit_their_type_and_are_field_errors_when_not() {
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;
    let query = "{ odd: lesson(id: 99) { title wordCount } edge: lesson(id: 98) { title wordCount durationSeconds } \
                 readingSessions(studentId: 99) { id wordsPerMinute accuracy lesson { level } } }";
    let text = post_graphql_text(&gateway, json!({"query": query})).await;
    // Escapes, numbers in exponent form, integers for Float fields: the
    // backend's text, which is valid JSON of the same value.
    assert!(text.contains(r#""edge":{"title":"Edge","wordCount":-2147483648,"durationSeconds":2147483647}"#), "{text}");
    assert!(
        text.contains(r#"{"id":"18446744073709551615","wordsPerMinute":1e3,"accuracy":-0.5,"lesson":{"level":"A2"}}"#),
        "{text}"
    );
    assert!(text.contains(r#"{"id":"s-2","wordsPerMinute":97,"accuracy":0,"lesson":{"level":"A2"}}"#), "{text}");
    let body: Value = serde_json::from_str(&text).expect("the answer is JSON");
    // Int is 32-bit: 3,000,000,000 is a field error, and Int! nulls the lesson.
    assert_eq!(body["data"]["odd"], Value::Null, "{body}");
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["path"], json!(["odd", "wordCount"]));
    assert_eq!(errors[0]["extensions"]["code"], "UPSTREAM_ERROR");
    let query = "{ lesson(id: 99) { title } }";
    let text = post_graphql_text(&gateway, json!({"query": query})).await;
    assert_eq!(text, r#"{"data":{"lesson":{"title":"Caf\u00e9 \"quoted\"\n\ud83d\ude00 é"}}}"#);
    let body: Value = serde_json::from_str(&text).expect("the answer is JSON");
    assert_eq!(body["data"]["lesson"]["title"], "Café \"quoted\"\n😀 é");
}

/// Sessions whose keys come in different orders (one escaped, one the
/// shape does not read), the last with a string for a `Float!`.
const MIXED_SESSIONS: &str = r#"{"count": 3, "next": null, "previous": null, "results": [
    {"id": 1, "student_id": 98, "lesson_id": 98, "started_at": "t0", "words_per_minute": 100, "accuracy": 0.5},
    {"accuracy": 0.25, "extra": {"id": [1]}, "started_at": "t1", "words_per_minute": 101.5, "i\u0064": 2, "student_id": 98},
    {"id": 3, "student_id": 98, "lesson_id": 98, "started_at": "t2", "words_per_minute": 102, "accuracy": "high"}]}"#;

#[tokio::test]
async fn list_items_are_read_whatever_their_key_order_and_a_mismatched_scalar_is_an_error_at_its_path() {
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;
    let query = "{ readingSessions(studentId: 98) { id startedAt wordsPerMinute } }";
    let text = post_graphql_text(&gateway, json!({"query": query})).await;
    assert_eq!(
        text,
        r#"{"data":{"readingSessions":[{"id":"1","startedAt":"t0","wordsPerMinute":100},{"id":"2","startedAt":"t1","wordsPerMinute":101.5},{"id":"3","startedAt":"t2","wordsPerMinute":102}]}}"#
    );
    // [ReadingSession!]: the session whose accuracy is no Float nulls the list.
    let query = "{ readingSessions(studentId: 98) { id accuracy } }";
    let (status, body) = post_graphql(&gateway, json!({"query": query})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["readingSessions"], Value::Null, "{body}");
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["path"], json!(["readingSessions", 2, "accuracy"]));
    assert_eq!(errors[0]["message"], "the backend value for accuracy is not a valid Float");
    assert_eq!(errors[0]["extensions"]["code"], "UPSTREAM_ERROR");
}

async fn plan_counts(gateway: &Gateway) -> (u64, u64) {
    let text = client().get(gateway.url("/metrics")).send().await.expect("scrape").text().await.expect("text");
    let count = |result: &str| {
        let prefix = format!("portico_graphql_plans_total{{result=\"{result}\"}} ");
        text.lines().find_map(|line| line.strip_prefix(&prefix)).map_or(0, |n| n.parse().expect("a count"))
    };
    (count("compiled"), count("reused"))
}

#[tokio::test]
async fn a_document_is_planned_once_and_variables_flip_skip_and_include_without_a_new_plan() {
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;
    let query = "query ($payments: Boolean!, $noName: Boolean!) { student(id: 1) { \
        fullName @skip(if: $noName) payments @include(if: $payments) { amount } ... @include(if: $noName) { id } } }";
    let run = |payments: bool, no_name: bool| {
        post_graphql_text(&gateway, json!({"query": query, "variables": {"payments": payments, "noName": no_name}}))
    };
    assert_eq!(
        run(true, false).await,
        r#"{"data":{"student":{"fullName":"Ada Lovelace","payments":[{"amount":"49.00"}]}}}"#
    );
    assert_eq!(backends.calls.list().len(), 2);
    assert_eq!(run(false, true).await, r#"{"data":{"student":{"id":"1"}}}"#);
    assert_eq!(backends.calls.list().len(), 3, "no payments call when they are not included");
    assert_eq!(plan_counts(&gateway).await, (1, 1), "validated and planned once, then reused");

    // Bad variables are refused per request, though the plan is cached.
    let (status, body) =
        post_graphql(&gateway, json!({"query": query, "variables": {"payments": "yes", "noName": false}})).await;
    assert_eq!(status, StatusCode::OK, "application/json answers a well-formed request with 200");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{body}");
    assert!(body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("$payments")), "{body}");
    assert!(body.get("data").is_none());
    assert_eq!(backends.calls.list().len(), 3, "no call for refused variables");
}

#[tokio::test]
async fn the_graphql_over_http_audit_finds_no_must_failures() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = root.join("target").join("graphql-http-npm").join("node_modules");
    assert!(
        modules.join("graphql-http").is_dir(),
        "the audit suite is missing: `cargo xtask setup` installs it into {}",
        modules.display()
    );
    let backends = backends(Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;
    let output = tokio::process::Command::new("node")
        .arg(root.join("tests").join("fixtures").join("graphql-http-audit.cjs"))
        .arg(gateway.url("/graphql"))
        .env("NODE_PATH", &modules)
        .output()
        .await
        .expect("node runs");
    assert!(output.status.success(), "the audit ran: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("the audit's JSON report");
    assert!(report["total"].as_u64().is_some_and(|total| total > 30), "{report}");
    assert_eq!(report["errors"], json!([]), "MUST requirements of GraphQL over HTTP that fail: {report:#}");
}

#[tokio::test]
async fn header_rules_carry_client_headers_to_the_calls_and_backend_cookies_back_as_separate_lines() {
    let mut backends = backends(Behaviour { answer_headers: true, ..Behaviour::default() }, "").await;
    backends.service_headers = Some(
        r#"{ request = [{ name = "accept-language", default = "en" }], response = ["set-cookie", "vary", "x-seen-language"] }"#
            .to_owned(),
    );
    backends.toml = backends.config(None);
    let gateway = Gateway::start(&backends.toml).await;
    let query = "{ student(id: 1) { fullName readingSessions { id } } }";
    let response = client()
        .post(gateway.url("/graphql"))
        .header("accept-language", "de-CH")
        .header("x-not-listed", "1")
        .json(&json!({"query": query}))
        .send()
        .await
        .expect("response");
    let headers = response.headers().clone();
    let body: Value = response.json().await.expect("JSON");
    assert!(body.get("errors").is_none(), "{body}");
    let cookies: Vec<&str> = headers.get_all("set-cookie").iter().map(|v| v.to_str().expect("text")).collect();
    assert_eq!(
        cookies,
        [
            "seen-users=1; Path=/; Expires=Wed, 21 Oct 2026 07:28:00 GMT",
            "seen-sessions=1; Path=/; Expires=Wed, 21 Oct 2026 07:28:00 GMT"
        ],
        "one line per call, in the order the calls started, never joined"
    );
    assert_eq!(headers["vary"], "accept-language, x-users, x-sessions", "the union of the calls' Vary");
    assert_eq!(headers["x-seen-language"], "de-CH", "the client's header reached the calls");
    assert_eq!(headers["cache-control"], "no-store", "Cache-Control stays the fields' own");

    // Without the client's header the service's default goes.
    let response = client().post(gateway.url("/graphql")).json(&json!({"query": query})).send().await.expect("answer");
    assert_eq!(response.headers()["x-seen-language"], "en");
}
