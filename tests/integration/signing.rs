//! Identity signing: a backend behind either door receives an RFC 9421
//! signature it can verify with the shared key, over what it was told.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::graphql::{token, SECRET};
use crate::harness::{client, config, json_of, Gateway, Stub};

const KEY: &str = "an-integration-test-signing-key-0123456789";

/// What a service does: rebuild the signature base from the request it got
/// and compare the HMAC.
fn verifies(method: &str, path: &str, query: Option<&str>, headers: &Value) -> bool {
    let input = headers["signature-input"].as_str().expect("Signature-Input");
    let params = input.strip_prefix("portico=").expect("portico's label");
    let created: u64 = params
        .split(";created=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("created")
        .parse()
        .expect("number");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    assert!(created.abs_diff(now) < 30, "created is now: {created}");
    assert!(params.starts_with(r#"("@method" "@path" "@query" "x-user-id")"#), "{params}");
    assert!(params.ends_with(r#";keyid="k2""#), "the first key signs: {params}");
    let base = format!(
        "\"@method\": {method}\n\"@path\": {path}\n\"@query\": ?{}\n\"x-user-id\": {}\n\"@signature-params\": {params}",
        query.unwrap_or(""),
        headers["x-user-id"].as_str().expect("x-user-id")
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).expect("key");
    mac.update(base.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    headers["signature"].as_str() == Some(format!("portico=:{expected}:").as_str())
}

fn signing_config(backend: &Stub, schema: &std::path::Path) -> String {
    config(&format!(
        "[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\n\n\
         [identity_signing]\nkeys = [{{ id = \"k2\", secret = \"{KEY}\" }}, {{ id = \"k1\", secret = \"an-older-key-still-accepted-0123456789\" }}]\n\n\
         [services.api]\nendpoints = [\"{}\"]\nhealth_check = {{ enabled = false }}\n\n\
         [[routes]]\nprefix = \"/api/\"\nservice = \"api\"\nauth = \"optional\"\n\n\
         [graphql]\nenabled = true\nschema = [{:?}]\n",
        backend.url(),
        schema.display().to_string(),
    ))
}

#[tokio::test]
async fn backends_behind_both_doors_receive_a_signature_they_can_verify() {
    let backend = Stub::echo("api").await;
    let schema = tempfile::NamedTempFile::new().expect("temp file");
    let sdl = r#"type Query { echo(id: ID!): Echo @rest(service: "api", path: "/things/{$args.id}/", query: {v: "1,2"}) }
                 type Echo { method: String path: String query: String headers: JSON }"#;
    std::fs::write(schema.path(), sdl).expect("schema written");
    let gateway = Gateway::start(&signing_config(&backend, schema.path())).await;

    let seen = json_of(
        client()
            .get(gateway.url("/api/things/7/?a=1&b=%20"))
            .bearer_auth(token("42", ""))
            .header("signature", "portico=:forged-by-the-client:")
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(seen["headers"]["x-user-id"], "42");
    assert!(
        verifies("GET", seen["path"].as_str().expect("path"), seen["query"].as_str(), &seen["headers"]),
        "REST: {seen}"
    );

    let anonymous = json_of(
        client()
            .get(gateway.url("/api/things/7/"))
            .header("signature-input", "portico=()")
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert!(anonymous["headers"].get("signature").is_none(), "no identity, no signature: {anonymous}");
    assert!(anonymous["headers"].get("signature-input").is_none(), "and none of the client's");

    let answer = json_of(
        client()
            .post(gateway.url("/graphql"))
            .bearer_auth(token("42", ""))
            .json(&json!({"query": "{ echo(id: \"7\") { method path query headers } }"}))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    let seen = &answer["data"]["echo"];
    assert_eq!(seen["path"], "/things/7/", "{answer}");
    assert!(verifies("GET", "/things/7/", seen["query"].as_str(), &seen["headers"]), "GraphQL: {answer}");
}
