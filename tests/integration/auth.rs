//! Authentication through the gateway: JWT algorithms and claim checks,
//! JWKS refresh and rotation, API keys, per-route policies, identity
//! forwarding, GraphQL field policies, and the development token command.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::harness::{client, config, eventually, json_of, service, Gateway, Stub};

use crate::graphql::SECRET;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jwt").join(name)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

pub(crate) fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 600, "iat": now(), "scope": "payments:read lessons:read"})
}

pub(crate) fn sign(algorithm: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("signing works")
}

fn hs256(claims: &Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET.as_bytes()), None, claims)
}

pub(crate) fn rsa_key(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixture(name)).expect("key")).expect("RSA key")
}

/// The JWT section for an HS256 gateway, plus extra lines.
fn hs256_auth(extra: &str) -> String {
    format!("[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\n{extra}\n\n")
}

async fn gateway_with(auth: &str, route_extra: &str) -> (Gateway, Stub) {
    let backend = Stub::echo("api").await;
    let toml = config(&format!("{auth}{}{route_extra}\n", service("api", &[backend.url()], "")));
    (Gateway::start(&toml).await, backend)
}

async fn get_with(gateway: &Gateway, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().get(gateway.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("response")
}

async fn bearer(gateway: &Gateway, token: &str) -> reqwest::Response {
    get_with(gateway, "/api/x/", &[("authorization", &format!("Bearer {token}"))]).await
}

#[tokio::test]
async fn each_algorithm_family_is_verified_and_the_subject_is_forwarded() {
    let cases: Vec<(&str, String, Algorithm, EncodingKey)> = vec![
        ("HS256", format!("secret = \"{SECRET}\""), Algorithm::HS256, EncodingKey::from_secret(SECRET.as_bytes())),
        ("HS512", format!("secret = \"{SECRET}\""), Algorithm::HS512, EncodingKey::from_secret(SECRET.as_bytes())),
        ("RS256", format!("public_key_file = {:?}", fixture("rsa.pub")), Algorithm::RS256, rsa_key("rsa.key")),
        ("PS384", format!("public_key_file = {:?}", fixture("rsa.pub")), Algorithm::PS384, rsa_key("rsa.key")),
        (
            "ES256",
            format!("public_key_file = {:?}", fixture("ec256.pub")),
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&std::fs::read(fixture("ec256.key")).expect("key")).expect("EC key"),
        ),
        (
            "ES384",
            format!("public_key_file = {:?}", fixture("ec384.pub")),
            Algorithm::ES384,
            EncodingKey::from_ec_pem(&std::fs::read(fixture("ec384.key")).expect("key")).expect("EC key"),
        ),
        (
            "EdDSA",
            format!("public_key_file = {:?}", fixture("ed25519.pub")),
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&std::fs::read(fixture("ed25519.key")).expect("key")).expect("Ed25519 key"),
        ),
    ];
    for (name, key_line, algorithm, key) in cases {
        let auth = format!("[auth.jwt]\nalgorithms = [\"{name}\"]\n{key_line}\n\n");
        let (gateway, _backend) = gateway_with(&auth, "auth = \"required\"").await;
        let token = sign(algorithm, &key, None, &claims("42"));
        let response = bearer(&gateway, &token).await;
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        let seen = json_of(response).await;
        assert_eq!(seen["headers"]["x-user-id"], "42", "{name}: the verified sub reaches the service");
        assert!(seen["headers"].get("authorization").is_none(), "{name}: the token itself is not passed on");
    }
}

#[tokio::test]
async fn invalid_tokens_are_refused_with_rfc_6750_answers() {
    let auth = hs256_auth("issuer = \"https://id.example\"\naudience = [\"portico\"]\nleeway = \"0s\"");
    let (gateway, backend) = gateway_with(&auth, "auth = \"optional\"").await;
    let good = json!({"sub": "1", "exp": now() + 600, "iss": "https://id.example", "aud": "portico"});
    assert_eq!(bearer(&gateway, &hs256(&good)).await.status(), StatusCode::OK);

    let with = |changes: Value| {
        let mut claims = good.clone();
        for (key, value) in changes.as_object().expect("object") {
            claims[key] = value.clone();
        }
        hs256(&claims)
    };
    let valid = hs256(&good);
    let (head, rest) = valid.split_once('.').expect("three parts");
    let (payload, _signature) = rest.split_once('.').expect("three parts");
    let none_header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
    let rsa_public_pem = std::fs::read(fixture("rsa.pub")).expect("pem");
    let cases = [
        ("expired", with(json!({"exp": now() - 120})), "expired"),
        ("not yet valid", with(json!({"nbf": now() + 600})), "not valid yet"),
        ("wrong issuer", with(json!({"iss": "https://evil.example"})), "wrong issuer"),
        ("wrong audience", with(json!({"aud": "someone-else"})), "wrong audience"),
        ("missing sub", hs256(&json!({"exp": now() + 600, "iss": "https://id.example", "aud": "portico"})), "sub"),
        (
            "tampered",
            format!(
                "{head}.{}.{}",
                base64_url(br#"{"sub":"2","exp":99999999999}"#),
                rest.split_once('.').expect("sig").1
            ),
            "signature",
        ),
        ("alg none", format!("{none_header}.{payload}."), "malformed"),
        ("garbage", "not-a-jwt".to_owned(), "malformed"),
        (
            "HS256 with the RSA public key as secret",
            sign(Algorithm::HS256, &EncodingKey::from_secret(&rsa_public_pem), None, &good),
            "signature",
        ),
    ];
    for (name, token, message) in cases {
        let response = bearer(&gateway, &token).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
        let challenge = response.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
        assert!(
            challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        let body = json_of(response).await;
        let text = body["error"]["message"].as_str().expect("message");
        assert!(text.contains(message), "{name}: {text}");
        assert!(!body.to_string().contains(&token), "{name}: the token is never echoed");
    }
    for malformed in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b"] {
        let response = get_with(&gateway, "/api/x/", &[("authorization", malformed)]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{malformed}");
    }
    let oversized = format!("Bearer {}", "a".repeat(10_000));
    assert_eq!(
        get_with(&gateway, "/api/x/", &[("authorization", &oversized)]).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(backend.hits(), 1, "only the valid token reached the backend");
}

#[tokio::test]
async fn an_rs256_gateway_refuses_hs256_tokens_whatever_their_key() {
    let auth = format!("[auth.jwt]\nalgorithms = [\"RS256\"]\npublic_key_file = {:?}\n\n", fixture("rsa.pub"));
    let (gateway, backend) = gateway_with(&auth, "auth = \"required\"").await;
    let rsa_public_pem = std::fs::read(fixture("rsa.pub")).expect("pem");
    let confused = sign(Algorithm::HS256, &EncodingKey::from_secret(&rsa_public_pem), None, &claims("1"));
    let response = bearer(&gateway, &confused).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(json_of(response).await["error"]["message"].as_str().expect("message").contains("algorithm"));
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn a_configured_issuer_and_audience_are_required_of_every_token() {
    let expectations = "issuer = \"https://id.example\"\naudience = [\"portico\"]";
    let families = [
        ("HS256", format!("secret = \"{SECRET}\""), Algorithm::HS256, EncodingKey::from_secret(SECRET.as_bytes())),
        ("RS256", format!("public_key_file = {:?}", fixture("rsa.pub")), Algorithm::RS256, rsa_key("rsa.key")),
    ];
    for (name, key_line, algorithm, key) in families {
        let auth = format!("[auth.jwt]\nalgorithms = [\"{name}\"]\n{key_line}\n{expectations}\n\n");
        let (gateway, backend) = gateway_with(&auth, "auth = \"optional\"").await;
        let full = json!({"sub": "7", "exp": now() + 600, "iss": "https://id.example", "aud": "portico"});
        let response = bearer(&gateway, &sign(algorithm, &key, None, &full)).await;
        assert_eq!(response.status(), StatusCode::OK, "{name}: a token with both claims passes");
        assert_eq!(json_of(response).await["headers"]["x-user-id"], "7");

        let cases = [
            ("no iss", "iss", json!(null)),
            ("no aud", "aud", json!(null)),
            // jsonwebtoken skips claims of the wrong type just as absent ones.
            ("a numeric iss", "iss", json!(42)),
            ("a numeric aud", "aud", json!(42)),
            ("an iss list holding the issuer", "iss", json!(["https://evil.example", "https://id.example"])),
        ];
        for (case, claim, value) in cases {
            let mut claims = full.clone();
            match value {
                Value::Null => {
                    claims.as_object_mut().expect("object").remove(claim);
                }
                other => claims[claim] = other,
            }
            let response = bearer(&gateway, &sign(algorithm, &key, None, &claims)).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name} with {case}");
            let body = json_of(response).await;
            let message = body["error"]["message"].as_str().expect("message");
            assert!(message.contains(claim), "{name} with {case}: {message}");
        }
        assert_eq!(backend.hits(), 1, "{name}: only the complete token reached the backend");
    }
}

/// A JWKS endpoint whose document the test can swap, counting fetches.
pub(crate) struct JwksServer {
    pub(crate) stub: Stub,
    document: Arc<Mutex<String>>,
    pub(crate) fetches: Arc<AtomicUsize>,
}

pub(crate) async fn jwks_server(initial: &str) -> JwksServer {
    let document = Arc::new(Mutex::new(std::fs::read_to_string(fixture(initial)).expect("jwks")));
    let fetches = Arc::new(AtomicUsize::new(0));
    let state = (Arc::clone(&document), Arc::clone(&fetches));
    let router = Router::new()
        .route(
            "/jwks.json",
            get(|State((document, fetches)): State<(Arc<Mutex<String>>, Arc<AtomicUsize>)>| async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                let body = document.lock().expect("lock").clone();
                ([("content-type", "application/json")], body)
            }),
        )
        .with_state(state);
    JwksServer { stub: Stub::serve(router).await, document, fetches }
}

pub(crate) fn jwks_auth(url: &str, min_refresh: &str) -> String {
    format!(
        "[auth.jwt]\nalgorithms = [\"RS256\"]\njwks_url = \"{url}/jwks.json\"\njwks_min_refresh_interval = \"{min_refresh}\"\n\
         jwks_refresh_interval = \"1h\"\n\n"
    )
}

#[tokio::test]
async fn an_unknown_kid_triggers_one_refresh_and_rotated_keys_are_accepted() {
    let jwks = jwks_server("jwks-1.json").await;
    let (gateway, _backend) = gateway_with(&jwks_auth(&jwks.stub.url(), "1h"), "auth = \"required\"").await;
    let first = sign(Algorithm::RS256, &rsa_key("rsa.key"), Some("key-1"), &claims("1"));
    eventually(Duration::from_secs(5), || async { bearer(&gateway, &first).await.status() == StatusCode::OK }).await;
    let fetched_at_start = jwks.fetches.load(Ordering::SeqCst);
    assert_eq!(fetched_at_start, 1);

    // The identity provider rotates and publishes both keys. With a minimum
    // refresh interval of an hour, the gateway does not fetch again for an
    // unknown kid so soon after the last fetch, so the new kid is refused.
    *jwks.document.lock().expect("lock") = std::fs::read_to_string(fixture("jwks-both.json")).expect("jwks");
    let second = sign(Algorithm::RS256, &rsa_key("rsa2.key"), Some("key-2"), &claims("2"));
    assert_eq!(bearer(&gateway, &second).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1, "fetches are rate limited");

    let jwks = jwks_server("jwks-1.json").await;
    let (gateway, _backend) = gateway_with(&jwks_auth(&jwks.stub.url(), "1s"), "auth = \"required\"").await;
    eventually(Duration::from_secs(5), || async { bearer(&gateway, &first).await.status() == StatusCode::OK }).await;
    *jwks.document.lock().expect("lock") = std::fs::read_to_string(fixture("jwks-both.json")).expect("jwks");
    // Once the minimum interval has passed, the unknown kid brings one fetch.
    eventually(Duration::from_secs(5), || async { bearer(&gateway, &second).await.status() == StatusCode::OK }).await;
    assert_eq!(bearer(&gateway, &first).await.status(), StatusCode::OK, "both keys are valid during rotation");
    let after_rotation = jwks.fetches.load(Ordering::SeqCst);
    let forged = sign(Algorithm::RS256, &rsa_key("rsa2.key"), Some("forged"), &claims("3"));
    for _ in 0..20 {
        assert_eq!(bearer(&gateway, &forged).await.status(), StatusCode::UNAUTHORIZED);
    }
    assert!(
        jwks.fetches.load(Ordering::SeqCst) <= after_rotation + 1,
        "forged kids cannot flood the identity provider"
    );
}

#[tokio::test]
async fn a_broken_jwks_never_replaces_a_good_one_and_an_unreachable_one_means_401_until_keys_arrive() {
    let jwks = jwks_server("jwks-1.json").await;
    let (gateway, _backend) = gateway_with(&jwks_auth(&jwks.stub.url(), "200ms"), "auth = \"required\"").await;
    let token = sign(Algorithm::RS256, &rsa_key("rsa.key"), Some("key-1"), &claims("1"));
    eventually(Duration::from_secs(5), || async { bearer(&gateway, &token).await.status() == StatusCode::OK }).await;
    *jwks.document.lock().expect("lock") = "{ not json".to_owned();
    let unknown = sign(Algorithm::RS256, &rsa_key("rsa2.key"), Some("key-2"), &claims("2"));
    let before = jwks.fetches.load(Ordering::SeqCst);
    eventually(Duration::from_secs(5), || async {
        bearer(&gateway, &unknown).await;
        jwks.fetches.load(Ordering::SeqCst) > before
    })
    .await;
    assert_eq!(bearer(&gateway, &token).await.status(), StatusCode::OK, "the good key set is kept");

    let down = crate::harness::closed_port().await;
    let (gateway, _backend) = gateway_with(&jwks_auth(&format!("http://{down}"), "100ms"), "auth = \"required\"").await;
    let response = bearer(&gateway, &token).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(json_of(response).await["error"]["message"].as_str().expect("message").contains("not available"));
    // The identity provider comes up on that port: keys arrive by themselves.
    let listener = tokio::net::TcpListener::bind(down).await.expect("rebind the port");
    let document = std::fs::read_to_string(fixture("jwks-1.json")).expect("jwks");
    let router = Router::new().route("/jwks.json", get(move || async move { document.clone() }));
    tokio::spawn(async move { axum::serve(listener, router).await });
    eventually(Duration::from_secs(10), || async { bearer(&gateway, &token).await.status() == StatusCode::OK }).await;
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test]
async fn api_keys_identify_machine_clients() {
    let auth = format!(
        "[[auth.api_keys]]\nname = \"reporting\"\nsha256 = \"{}\"\nscopes = [\"reports:read\"]\n\n\
         [[auth.api_keys]]\nname = \"retired\"\nsha256 = \"{}\"\nrevoked = true\n\n",
        sha256_hex("key-for-reports"),
        sha256_hex("old-key")
    );
    let (gateway, backend) = gateway_with(&auth, "auth = \"required\"\nscopes = [\"reports:read\"]").await;
    let response =
        get_with(&gateway, "/api/x/", &[("x-api-key", "key-for-reports"), ("x-api-client", "spoofed")]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = json_of(response).await;
    assert_eq!(seen["headers"]["x-api-client"], "reporting");
    assert!(seen["headers"].get("x-api-key").is_none(), "the key itself is not passed on");
    for (name, headers) in
        [("missing", vec![]), ("wrong", vec![("x-api-key", "guess")]), ("revoked", vec![("x-api-key", "old-key")])]
    {
        let response = get_with(&gateway, "/api/x/", &headers).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
    }
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn route_policies_and_forged_identity_headers() {
    let backend = Stub::echo("api").await;
    let routes = format!(
        "{}{}{}",
        service("open", &[backend.url()], ""),
        service("private", &[backend.url()], ""),
        service("public", &[backend.url()], ""),
    );
    let routes = routes
        .replacen(
            "prefix = \"/private/\"\nservice = \"private\"",
            "prefix = \"/private/\"\nservice = \"private\"\nauth = \"required\"\nscopes = [\"admin\"]",
            1,
        )
        .replacen(
            "prefix = \"/public/\"\nservice = \"public\"",
            "prefix = \"/public/\"\nservice = \"public\"\nauth = \"none\"",
            1,
        );
    let gateway = Gateway::start(&config(&format!("{}{routes}", hs256_auth("")))).await;
    let token = hs256(&claims("7"));
    let auth_header = format!("Bearer {token}");

    // optional: anonymous passes, without any identity a client made up.
    let seen = json_of(get_with(&gateway, "/open/x/", &[("x-user-id", "1")]).await).await;
    assert!(seen["headers"].get("x-user-id").is_none(), "{seen}");
    let seen =
        json_of(get_with(&gateway, "/open/x/", &[("authorization", &auth_header), ("x-user-id", "1")]).await).await;
    assert_eq!(seen["headers"]["x-user-id"], "7", "the verified sub replaces the forged one");
    assert_eq!(
        get_with(&gateway, "/open/x/", &[("authorization", "Bearer forged.token.here")]).await.status(),
        StatusCode::UNAUTHORIZED,
        "invalid credentials are refused even where optional"
    );

    // required with a scope: anonymous 401, missing scope 403.
    let response = get_with(&gateway, "/private/x/", &[]).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer realm=\"portico\"");
    let response = get_with(&gateway, "/private/x/", &[("authorization", &auth_header)]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .contains("error=\"insufficient_scope\", scope=\"admin\""));
    let admin = hs256(&json!({"sub": "8", "exp": now() + 60, "scope": "admin"}));
    assert_eq!(
        get_with(&gateway, "/private/x/", &[("authorization", &format!("Bearer {admin}"))]).await.status(),
        StatusCode::OK
    );

    // none: credentials are not looked at, and no identity is forwarded.
    let response = get_with(&gateway, "/public/x/", &[("authorization", "Bearer forged"), ("x-user-id", "1")]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = json_of(response).await;
    assert!(seen["headers"].get("x-user-id").is_none() && seen["headers"].get("authorization").is_none(), "{seen}");

    // A path that would climb into the protected route is refused outright.
    let answer = crate::harness::raw_get(gateway.addr, "/public/../private/x/").await;
    assert_eq!(crate::harness::status_of(&answer), 400, "{answer}");
}

async fn graphql_as(gateway: &Gateway, token: &str, body: &Value) -> Value {
    let response = client().post(gateway.url("/graphql")).bearer_auth(token).json(body).send().await.expect("response");
    response.json().await.expect("JSON")
}

#[tokio::test]
async fn graphql_field_policies_null_the_field_and_never_call_its_backend() {
    // The GraphQL test backends' gateway verifies HS256 tokens signed with SECRET.
    let backends = crate::graphql::backends(crate::graphql::Behaviour::default(), "").await;
    let gateway = Gateway::start(&backends.toml).await;
    let query = json!({"query": "{ lessons(first: 2) { id } payments(studentId: 1) { amount } }"});

    let anonymous: Value =
        client().post(gateway.url("/graphql")).json(&query).send().await.expect("response").json().await.expect("JSON");
    assert_eq!(anonymous["data"]["lessons"], json!([]), "the open field still answers: {anonymous}");
    assert_eq!(anonymous["data"]["payments"], Value::Null);
    assert_eq!(anonymous["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    assert_eq!(anonymous["errors"][0]["path"], json!(["payments"]));

    let no_scope = hs256(&json!({"sub": "1", "exp": now() + 60, "scope": "lessons:read"}));
    let body = graphql_as(&gateway, &no_scope, &query).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN", "{body}");
    assert!(!backends.calls.list().iter().any(|call| call.contains("/payments/")), "the backend was never called");

    let allowed = hs256(&claims("1"));
    let body = graphql_as(&gateway, &allowed, &query).await;
    assert_eq!(body["data"]["payments"][0]["amount"], "49.00", "{body}");
    let checkout = "mutation { checkout(input: {studentId: 1, amount: \"1.00\", currency: \"USD\"}, idempotencyKey: \"k\") { status } }";
    let body = graphql_as(&gateway, &allowed, &json!({"query": checkout})).await;
    assert_eq!(body["data"]["checkout"]["status"], "key=k;user=1", "the caller's id reaches the service: {body}");
}

#[tokio::test]
async fn the_token_command_mints_a_token_the_demo_configuration_accepts() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["token", "--sub", "5", "--scope", "payments:read"])
        .output()
        .expect("portico token runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let token = stdout.lines().last().expect("the token is the last line").trim().to_owned();

    let demo = portico::Config::embedded_default().expect("demo config");
    let secret = demo.auth.jwt.as_ref().and_then(|jwt| jwt.secret.clone()).expect("the demo uses an HS256 secret");
    let (gateway, _backend) = gateway_with(
        &format!("[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{secret}\"\n\n"),
        "auth = \"required\"",
    )
    .await;
    let response = bearer(&gateway, &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await["headers"]["x-user-id"], "5");
}

/// Runs `portico check` on `toml` written into `dir`; the exit status and stderr.
fn portico_check(dir: &Path, toml: &str) -> (bool, String) {
    let path = dir.join("portico.toml");
    std::fs::write(&path, toml).expect("config written");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("portico check runs");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn portico_check_reads_every_auth_key_file_and_names_the_key_and_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = |name: &str, contents: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).expect("file written");
        path.display().to_string()
    };
    let garbage = file("garbage.txt", b"hello, I am no key");
    let missing = dir.path().join("keys/missing").display().to_string();
    let rsa_pub = fixture("rsa.pub");
    let jwks = fixture("jwks-1.json");
    let good_key = format!("[[api_keys]]\nname = \"reporting\"\nsha256 = \"{}\"\n", sha256_hex("k"));
    let keys_file = file("keys.toml", good_key.as_bytes());
    let bad_digest = file("bad-digest.toml", b"[[api_keys]]\nname = \"reporting\"\nsha256 = \"abc\"\n");
    let empty_jwks = file("empty.json", br#"{"keys": []}"#);

    let jwt = |algorithms: &str, line: String| format!("[auth.jwt]\nalgorithms = {algorithms}\n{line}\n");
    let pem = |path: &str| format!("public_key_file = {path:?}");
    let set = |path: &str| format!("jwks_file = {path:?}");
    let keys = |path: &str| format!("[auth]\napi_keys_file = {path:?}\n");
    let refused = [
        (jwt("[\"RS256\"]", pem(&missing)), format!("auth.jwt.public_key_file: cannot read {missing}: ")),
        (
            jwt("[\"RS256\"]", pem(&garbage)),
            format!("auth.jwt.public_key_file: {garbage}: not a PEM public key for RS256"),
        ),
        (
            jwt("[\"RS256\"]", pem(&fixture("ec256.pub").display().to_string())),
            "auth.jwt.public_key_file: ".to_owned()
                + &format!("{}: not a PEM public key for RS256", fixture("ec256.pub").display()),
        ),
        (
            jwt("[\"RS256\", \"ES256\"]", pem(&rsa_pub.display().to_string())),
            format!("auth.jwt.public_key_file: {}: not a PEM public key for ES256", rsa_pub.display()),
        ),
        (jwt("[\"RS256\"]", set(&missing)), format!("auth.jwt.jwks_file: cannot read {missing}: ")),
        (jwt("[\"RS256\"]", set(&garbage)), format!("auth.jwt.jwks_file: {garbage}: not a JWKS document")),
        (
            jwt("[\"RS256\"]", set(&empty_jwks)),
            format!("auth.jwt.jwks_file: {empty_jwks}: the JWKS document holds no usable public key"),
        ),
        (
            jwt("[\"ES256\"]", set(&jwks.display().to_string())),
            format!("auth.jwt.jwks_file: {}: no key in the set suits ES256", jwks.display()),
        ),
        (keys(&missing), format!("auth.api_keys_file: cannot read {missing}: ")),
        (keys(&garbage), format!("auth.api_keys_file: {garbage}:1:")),
        (
            keys(&bad_digest),
            format!("auth.api_keys_file: {bad_digest}: api_keys[0].sha256: must be the 64-character hex"),
        ),
    ];
    for (toml, expected) in refused {
        let (passed, stderr) = portico_check(dir.path(), &toml);
        assert!(!passed, "check passed:\n{toml}");
        assert!(stderr.contains(&expected), "expected {expected:?} for\n{toml}\ngot:\n{stderr}");
    }

    let accepted = [
        jwt("[\"RS256\", \"PS256\"]", pem(&rsa_pub.display().to_string())),
        jwt("[\"RS256\"]", set(&jwks.display().to_string())),
        keys(&keys_file),
    ];
    for toml in accepted {
        let (passed, stderr) = portico_check(dir.path(), &toml);
        assert!(passed, "check refused\n{toml}\n{stderr}");
    }
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let value =
            chunk.iter().enumerate().fold(0_u32, |acc, (index, byte)| acc | (u32::from(*byte) << (16 - 8 * index)));
        for index in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((value >> (18 - 6 * index)) & 63) as usize]));
        }
    }
    out
}
