//! What a client of the demo does, checked against the seed data of
//! `services/README.md`.

use std::future::Future;
use std::pin::Pin;

use http::StatusCode;
use serde_json::{json, Value};

use crate::django::DjangoServices;
use crate::gateway::Gateway;
use crate::Scenario;

pub const ALL: &[(&str, Scenario)] = &[
    ("a_user_is_read_through_the_student_api_route", |g| Box::pin(a_user_is_read_through_the_student_api_route(g))),
    ("registration_creates_a_user_and_reports_field_errors", |g| {
        Box::pin(registration_creates_a_user_and_reports_field_errors(g))
    }),
    ("lessons_and_batches_come_from_live_reading", |g| Box::pin(lessons_and_batches_come_from_live_reading(g))),
    ("payments_are_listed_and_checkout_needs_an_identity", |g| {
        Box::pin(payments_are_listed_and_checkout_needs_an_identity(g))
    }),
    ("service_errors_pass_through_and_gateway_errors_are_json", |g| {
        Box::pin(service_errors_pass_through_and_gateway_errors_are_json(g))
    }),
    ("the_gateway_is_ready_when_every_service_is", |g| Box::pin(the_gateway_is_ready_when_every_service_is(g))),
    ("graphql_dashboard_combines_the_three_services", |g| Box::pin(graphql_dashboard_combines_the_three_services(g))),
    ("the_rest_dashboard_endpoint_answers_the_stored_operations_data", |g| {
        Box::pin(the_rest_dashboard_endpoint_answers_the_stored_operations_data(g))
    }),
    ("graphql_register_creates_a_student_and_reports_field_errors", |g| {
        Box::pin(graphql_register_creates_a_student_and_reports_field_errors(g))
    }),
    ("graphql_user_mutations_need_a_verified_caller", |g| Box::pin(graphql_user_mutations_need_a_verified_caller(g))),
    ("a_token_lets_a_student_check_out_and_start_reading", |g| {
        Box::pin(a_token_lets_a_student_check_out_and_start_reading(g))
    }),
    ("a_services_cookie_and_the_clients_language_cross_the_graphql_door", |g| {
        Box::pin(a_services_cookie_and_the_clients_language_cross_the_graphql_door(g))
    }),
    ("an_avatar_uploaded_through_graphql_is_served_back_byte_for_byte", |g| {
        Box::pin(an_avatar_uploaded_through_graphql_is_served_back_byte_for_byte(g))
    }),
];

/// The HS256 secret of the end-to-end gateway.
pub const SECRET: &str = "end-to-end-secret-that-is-long-enough";

fn token(sub: &str, scopes: &str) -> String {
    portico::auth::mint_token(
        SECRET,
        sub,
        &scopes.split_whitespace().map(str::to_owned).collect::<Vec<_>>(),
        std::time::Duration::from_secs(600),
        None,
        &[],
    )
    .expect("signing works")
}

async fn graphql(gateway: &Gateway, query: &str, variables: Value) -> Value {
    graphql_as(gateway, query, variables, None).await
}

async fn graphql_as(gateway: &Gateway, query: &str, variables: Value, token: Option<&str>) -> Value {
    let mut request = client().post(gateway.url("/graphql")).json(&json!({"query": query, "variables": variables}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("JSON")
}

const DASHBOARD: &str = "query Dashboard($id: ID!) { student(id: $id) { fullName \
    readingSessions { wordsPerMinute accuracy lesson { title level } } payments { amount currency status } } }";

async fn graphql_dashboard_combines_the_three_services(gateway: &Gateway) {
    let body = graphql_as(gateway, DASHBOARD, json!({"id": "1"}), Some(&token("1", "payments:read"))).await;
    assert!(body.get("errors").is_none(), "{body}");
    let student = &body["data"]["student"];
    assert_eq!(student["fullName"], "Ada Lovelace");
    let sessions = student["readingSessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 3);
    assert_eq!(
        sessions[0],
        json!({"wordsPerMinute": 112.5, "accuracy": 0.97, "lesson": {"title": "The Quick Fox", "level": "A2"}})
    );
    assert!(sessions.iter().all(|session| session["lesson"]["title"].is_string()), "{sessions:?}");
    let amounts: Vec<&str> =
        student["payments"].as_array().expect("payments").iter().filter_map(|p| p["amount"].as_str()).collect();
    assert_eq!(amounts, vec!["49.00", "19.99"]);
}

async fn the_rest_dashboard_endpoint_answers_the_stored_operations_data(gateway: &Gateway) {
    let response = client()
        .get(gateway.url("/bff/dashboard/1"))
        .bearer_auth(token("1", "payments:read"))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    let graphql = graphql_as(gateway, DASHBOARD, json!({"id": "1"}), Some(&token("1", "payments:read"))).await;
    assert_eq!(body, graphql["data"], "the same data as the GraphQL endpoint's");
    assert_eq!(body["student"]["fullName"], "Ada Lovelace");

    let anonymous = client().get(gateway.url("/bff/dashboard/1")).send().await.expect("response");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let missing = client()
        .get(gateway.url("/bff/dashboard/999999"))
        .bearer_auth(token("1", "payments:read"))
        .send()
        .await
        .expect("response");
    assert_eq!(missing.status(), StatusCode::OK, "a nullable student that does not exist is null");
}

async fn graphql_register_creates_a_student_and_reports_field_errors(gateway: &Gateway) {
    let register =
        "mutation Register($input: RegisterInput!) { register(input: $input) { id username fullName grade } }";
    let input = json!({"username": "gql-reader", "email": "gql@example.com", "fullName": "Graph Reader", "grade": 6,
                       "password": "a-long-password"});
    let body = graphql(gateway, register, json!({"input": input})).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"]["register"]["fullName"], "Graph Reader");
    assert_eq!(body["data"]["register"]["grade"], 6);

    let body = graphql(gateway, register, json!({"input": input})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{body}");
    assert!(body["errors"][0]["extensions"]["fieldErrors"]["username"].is_array(), "{body}");
}

async fn graphql_user_mutations_need_a_verified_caller(gateway: &Gateway) {
    let checkout = "mutation { checkout(input: {studentId: 1, amount: \"5.00\", currency: \"USD\"}, idempotencyKey: \"gql-1\") { id } }";
    let body = graphql(gateway, checkout, json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{body}");
    let start = "mutation { startReadingSession(lessonId: 3) { id } }";
    let body = graphql(gateway, start, json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{body}");
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn get_json(gateway: &Gateway, path: &str) -> (StatusCode, Value) {
    let response = client().get(gateway.url(path)).send().await.expect("response");
    let status = response.status();
    (status, response.json().await.expect("JSON"))
}

async fn a_user_is_read_through_the_student_api_route(gateway: &Gateway) {
    let (status, user) = get_json(gateway, "/student-api/users/1/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        user,
        json!({"id": 1, "username": "ada", "email": "ada@example.com", "full_name": "Ada Lovelace", "grade": 5,
               "created_at": "2026-01-02T03:04:05Z"})
    );
    let (_, page) = get_json(gateway, "/student-api/users/?search=hopper").await;
    assert_eq!(page["count"], 1);
    assert_eq!(page["results"][0]["username"], "grace");
}

async fn registration_creates_a_user_and_reports_field_errors(gateway: &Gateway) {
    let new_user = json!({"username": "e2e-reader", "email": "reader@example.com", "full_name": "E2E Reader",
                          "grade": 4, "password": "long-enough-password"});
    let response = client().post(gateway.url("/student-api/register/")).json(&new_user).send().await.expect("response");
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.expect("JSON");
    assert_eq!(created["username"], "e2e-reader");
    assert!(created.get("password").is_none());
    let id = created["id"].as_u64().expect("an id");
    let (status, fetched) = get_json(gateway, &format!("/student-api/users/{id}/")).await;
    assert_eq!(status, StatusCode::OK, "the new user is visible through the gateway");
    assert_eq!(fetched["full_name"], "E2E Reader");

    let invalid = json!({"username": "e2e-reader", "email": "not-an-email", "full_name": "X", "grade": 4,
                         "password": "long-enough-password"});
    let response = client().post(gateway.url("/student-api/register/")).json(&invalid).send().await.expect("response");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let errors: Value = response.json().await.expect("JSON");
    assert!(errors["email"].is_array() && errors["username"].is_array(), "{errors}");
}

async fn lessons_and_batches_come_from_live_reading(gateway: &Gateway) {
    let (status, lesson) = get_json(gateway, "/live-reading/lesson/3/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        lesson,
        json!({"id": 3, "title": "The Quick Fox", "level": "A2", "word_count": 350, "duration_seconds": 600})
    );
    let (_, page) = get_json(gateway, "/live-reading/lesson/?ids=7,3,4").await;
    let mut ids: Vec<u64> =
        page["results"].as_array().expect("results").iter().filter_map(|l| l["id"].as_u64()).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![3, 4, 7]);
    let (_, sessions) = get_json(gateway, "/live-reading/sessions/?student_id=1").await;
    assert_eq!(sessions["count"], 3);
}

async fn payments_are_listed_and_checkout_needs_an_identity(gateway: &Gateway) {
    let (status, page) = get_json(gateway, "/payment/payments/?student_id=1").await;
    assert_eq!(status, StatusCode::OK);
    let amounts: Vec<&str> =
        page["results"].as_array().expect("results").iter().filter_map(|p| p["amount"].as_str()).collect();
    assert_eq!(amounts, vec!["49.00", "19.99"]);

    // A client cannot claim to be user 1: the gateway strips X-User-Id, so
    // the service sees an anonymous checkout.
    let response = client()
        .post(gateway.url("/payment/checkout/"))
        .header("x-user-id", "1")
        .header("idempotency-key", "e2e-1")
        .json(&json!({"student_id": 1, "amount": "10.00", "currency": "USD"}))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["detail"], "Authentication credentials were not provided.");
}

async fn service_errors_pass_through_and_gateway_errors_are_json(gateway: &Gateway) {
    let (status, body) = get_json(gateway, "/student-api/users/999/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"detail": "Not found."}), "the service's own 404 passes through");
    let (status, body) = get_json(gateway, "/no-such-service/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "route_not_found");
}

async fn the_gateway_is_ready_when_every_service_is(gateway: &Gateway) {
    let (status, body) = get_json(gateway, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// One student_api replica stops; reads keep being answered by the other.
pub fn replica_failover<'a>(
    gateway: &'a Gateway,
    services: &'a mut DjangoServices,
) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
    Box::pin(async move {
        assert_eq!(services.addresses_of("student_api").len(), 2);
        services.stop_replica("student_api#0");
        for _ in 0..20 {
            let (status, user) = get_json(gateway, "/student-api/users/2/").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(user["username"], "alan");
        }
    })
}

async fn a_token_lets_a_student_check_out_and_start_reading(gateway: &Gateway) {
    let student = token("2", "");
    let checkout = "mutation Checkout($key: String!) { checkout(input: {studentId: 2, amount: \"12.50\", currency: \"EUR\"}, idempotencyKey: $key) { id amount currency status } }";
    let first = graphql_as(gateway, checkout, json!({"key": "e2e-checkout-1"}), Some(&student)).await;
    assert!(first.get("errors").is_none(), "{first}");
    assert_eq!(first["data"]["checkout"]["amount"], "12.50");
    let again = graphql_as(gateway, checkout, json!({"key": "e2e-checkout-1"}), Some(&student)).await;
    assert_eq!(
        again["data"]["checkout"]["id"], first["data"]["checkout"]["id"],
        "the idempotency key makes the retry safe"
    );

    let start = "mutation { startReadingSession(lessonId: 3) { id studentId lesson { title } } }";
    let body = graphql_as(gateway, start, json!({}), Some(&student)).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(
        body["data"]["startReadingSession"]["studentId"], "2",
        "the token's sub reached the service as X-User-Id"
    );
    assert_eq!(body["data"]["startReadingSession"]["lesson"]["title"], "The Quick Fox");

    let me = graphql_as(gateway, "{ me { username } }", json!({}), Some(&student)).await;
    assert_eq!(me["data"]["me"]["username"], "alan");

    // The REST route accepts the same token; the service sees the verified id.
    let response = client()
        .post(gateway.url("/payment/checkout/"))
        .bearer_auth(&student)
        .header("idempotency-key", "e2e-rest-1")
        .json(&json!({"student_id": 2, "amount": "3.00", "currency": "USD"}))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::CREATED);
}

/// student_api's `/profile/` answers in the caller's `Accept-Language` and
/// sets a `lang` cookie; the service's header rules carry the client's
/// header to the call and the cookie back to the GraphQL client.
async fn a_services_cookie_and_the_clients_language_cross_the_graphql_door(gateway: &Gateway) {
    let query = "{ me { fullName } lessons(first: 1) { title } }";
    let ask = |language: Option<&'static str>| {
        let mut request =
            client().post(gateway.url("/graphql")).bearer_auth(token("1", "")).json(&json!({"query": query}));
        if let Some(language) = language {
            request = request.header("accept-language", language);
        }
        request.send()
    };
    let response = ask(Some("de-CH, en;q=0.5")).await.expect("response");
    let headers = response.headers().clone();
    let body: Value = response.json().await.expect("JSON");
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"]["me"]["fullName"], "Ada Lovelace");
    let cookies: Vec<&str> = headers.get_all("set-cookie").iter().map(|value| value.to_str().expect("text")).collect();
    assert_eq!(cookies.len(), 1, "one line for Django's one cookie: {cookies:?}");
    assert!(cookies[0].starts_with("lang=de; expires="), "{cookies:?}");
    assert!(
        cookies[0].contains("GMT; Max-Age=31536000; Path=/; SameSite=Lax"),
        "whole, with its Expires comma: {cookies:?}"
    );
    assert_eq!(headers["content-language"], "de", "the client's Accept-Language reached the service");
    assert_eq!(headers["vary"], "accept-language");
    assert_eq!(headers["cache-control"], "no-store");

    let response = ask(None).await.expect("response");
    let cookie = response.headers().get("set-cookie").and_then(|value| value.to_str().ok()).unwrap_or("").to_owned();
    assert!(cookie.starts_with("lang=en;"), "no header, the service's default: {cookie}");
}

/// The key the services accept by default, and the e2e gateway signs with.
pub const DEMO_SIGNING_KEY: &str = "portico-demo-signing-key-change-me-0123456789";

/// Straight to a service, past the gateway: identity without the gateway's
/// signature, with a forged one, or with one replayed after a minute is
/// refused; a fresh signature by the shared key and anonymous calls pass.
pub async fn identity_sent_straight_to_a_service_is_refused(services: &DjangoServices) {
    use portico::signing::{IdentitySigner, IdentitySigningConfig, SigningKeyConfig};
    let address = services.addresses_of("student_api")[0];
    let profile = format!("http://{address}/profile/");
    let signer = |secret: &str| {
        let config =
            IdentitySigningConfig { keys: vec![SigningKeyConfig { id: "demo".to_owned(), secret: secret.to_owned() }] };
        IdentitySigner::new(&config).expect("a key")
    };
    let user = http::HeaderName::from_static("x-user-id");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let call = |secret: &'static str, created: u64| {
        let mut headers = http::HeaderMap::new();
        headers.insert(&user, http::HeaderValue::from_static("1"));
        signer(secret).sign_at(&http::Method::GET, "/profile/", &[&user], &mut headers, created);
        client().get(&profile).headers(headers).send()
    };

    let unsigned = client().get(&profile).header("x-user-id", "1").send().await.expect("answer");
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    let body: Value = unsigned.json().await.expect("JSON");
    assert!(body["detail"].as_str().is_some_and(|detail| detail.contains("not signed by the gateway")), "{body}");

    let forged = call("a-key-the-services-do-not-know-0123456789", now).await.expect("answer");
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED, "forged");
    let replayed = call(DEMO_SIGNING_KEY, now - 120).await.expect("answer");
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED, "stale");

    let mut tampered = http::HeaderMap::new();
    tampered.insert(&user, http::HeaderValue::from_static("1"));
    signer(DEMO_SIGNING_KEY).sign_at(&http::Method::GET, "/profile/", &[&user], &mut tampered, now);
    tampered.insert(&user, http::HeaderValue::from_static("2"));
    let other_user = client().get(&profile).headers(tampered).send().await.expect("answer");
    assert_eq!(other_user.status(), StatusCode::UNAUTHORIZED, "another user under a valid signature");

    let signed = call(DEMO_SIGNING_KEY, now).await.expect("answer");
    assert_eq!(signed.status(), StatusCode::OK, "the gateway's signature");
    let body: Value = signed.json().await.expect("JSON");
    assert_eq!(body["username"], "ada");
    let anonymous = client().get(format!("http://{address}/users/1/")).send().await.expect("answer");
    assert_eq!(anonymous.status(), StatusCode::OK, "no identity, nothing to verify");
}

/// The multipart request spec by hand: `operations`, `map`, then the file.
fn upload_form(query: &str, filename: &str, content_type: &str, file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "e2e-upload-boundary";
    let operations = json!({"query": query, "variables": {"file": null}}).to_string();
    let mut body = Vec::new();
    for (name, value) in [("operations", operations.as_str()), ("map", r#"{"0": ["variables.file"]}"#)] {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"{filename}\"\r\n\
             Content-Type: {content_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn an_avatar_uploaded_through_graphql_is_served_back_byte_for_byte(gateway: &Gateway) {
    // A GIF header and enough bytes to be spooled to a temporary file.
    let mut gif = b"GIF89a".to_vec();
    gif.extend((0..150_000_u32).map(|index| (index % 251) as u8));
    let query = "mutation($file: Upload!) { uploadAvatar(file: $file) { userId contentType size updatedAt } }";
    let (content_type, body) = upload_form(query, "me.gif", "image/gif", &gif);
    let response = client()
        .post(gateway.url("/graphql"))
        .bearer_auth(token("2", ""))
        .header("content-type", content_type)
        .header("apollo-require-preflight", "true")
        .body(body)
        .send()
        .await
        .expect("response");
    let answer: Value = response.json().await.expect("JSON");
    assert!(answer.get("errors").is_none(), "{answer}");
    let avatar = &answer["data"]["uploadAvatar"];
    assert_eq!(avatar["userId"], "2", "{answer}");
    assert_eq!(avatar["contentType"], "image/gif");
    assert_eq!(avatar["size"], gif.len());

    let served = client().get(gateway.url("/student-api/users/2/avatar/")).send().await.expect("response");
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.headers()["content-type"], "image/gif");
    let bytes = served.bytes().await.expect("the image");
    assert!(bytes.as_ref() == gif.as_slice(), "the stored image is the uploaded one, byte for byte");

    // Not an image: the service's own field error comes back coded.
    let (content_type, body) = upload_form(query, "notes.txt", "text/plain", b"not an image");
    let response = client()
        .post(gateway.url("/graphql"))
        .bearer_auth(token("2", ""))
        .header("content-type", content_type)
        .header("x-apollo-operation-name", "UploadAvatar")
        .body(body)
        .send()
        .await
        .expect("response");
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{answer}");
    assert_eq!(answer["errors"][0]["extensions"]["fieldErrors"]["avatar"][0], "Upload a PNG, JPEG, GIF or WebP image.");
}
