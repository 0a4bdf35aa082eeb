//! File uploads: the GraphQL multipart request spec on `/graphql`, its
//! limits counted while the request streams, its CSRF rule, and a
//! `@rest(multipart:)` connector sending the file on to a stub that records
//! the form it received.

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use http::StatusCode;
use serde_json::{json, Value};

use crate::graphql::{token, SECRET};
use crate::harness::{client, config, json_of, Gateway, Stub};

const SCHEMA: &str = r#"
type Query { ping: String @rest(service: "api", path: "/ping/") }
type Mutation {
  uploadAvatar(file: Upload!, caption: String): Avatar
    @authenticated
    @rest(service: "api", method: "POST", path: "/users/{$claims.sub}/avatar/", multipart: {avatar: "$args.file", caption: "$args.caption"})
}
type Avatar { userId: ID! contentType: String! size: Int! }
"#;

const UPLOAD: &str =
    "mutation($file: Upload!) { uploadAvatar(file: $file, caption: \"me, smiling\") { userId contentType size } }";

/// One part of a form the stub received.
#[derive(Debug, Clone)]
struct ReceivedPart {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    bytes: Vec<u8>,
}

/// A request the stub received: its framing headers and its parts.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    content_length: Option<u64>,
    chunked: bool,
    body_length: u64,
    parts: Vec<ReceivedPart>,
}

type Log = Arc<Mutex<Vec<Received>>>;

async fn avatar_stub(log: Log) -> Stub {
    async fn receive(State(log): State<Log>, request: Request) -> impl IntoResponse {
        let path = request.uri().path().to_owned();
        let headers = request.headers().clone();
        let content_length = headers.get("content-length").and_then(|value| value.to_str().ok()?.parse().ok());
        let chunked = headers.get("transfer-encoding").is_some();
        let boundary = multer::parse_boundary(headers["content-type"].to_str().expect("ascii")).expect("a boundary");
        let body = axum::body::to_bytes(request.into_body(), usize::MAX).await.expect("the whole body");
        let body_length = body.len() as u64;
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
        let mut form = multer::Multipart::new(stream, boundary);
        let mut parts = Vec::new();
        while let Some(field) = form.next_field().await.expect("a valid form") {
            let name = field.name().unwrap_or_default().to_owned();
            let filename = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(ToString::to_string);
            let bytes = field.bytes().await.expect("part bytes").to_vec();
            parts.push(ReceivedPart { name, filename, content_type, bytes });
        }
        let size = parts.iter().find(|part| part.name == "avatar").map_or(0, |part| part.bytes.len());
        log.lock().expect("lock").push(Received { path, content_length, chunked, body_length, parts });
        (
            StatusCode::CREATED,
            axum::Json(json!({"user_id": 7, "url": "http://internal/users/7/avatar/", "content_type": "image/png",
                              "size": size, "updated_at": "2026-02-01T10:00:00Z"})),
        )
    }
    Stub::serve(Router::new().route("/users/{id}/avatar/", post(receive)).with_state(log)).await
}

/// A gateway in front of the stub, with `uploads` as its `[graphql.uploads]`.
async fn gateway(stub: &Stub, uploads: &str) -> (Gateway, tempfile::NamedTempFile) {
    let schema = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(schema.path(), SCHEMA).expect("schema written");
    let toml = config(&format!(
        "[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\n\n\
         [services.api]\nendpoints = [\"{}\"]\nhealth_check = {{ enabled = false }}\n\n\
         [graphql]\nenabled = true\nschema = [{:?}]\n\n[graphql.uploads]\n{uploads}\n",
        stub.url(),
        schema.path().display().to_string(),
    ));
    (Gateway::start(&toml).await, schema)
}

const LIMITS: &str = "enabled = true\nmax_files = 2\nmax_file_size = \"256KiB\"\nmax_request_size = \"384KiB\"";

/// A `multipart/form-data` body written by hand, so a test can put its
/// fields in any order.
struct Form {
    boundary: &'static str,
    body: Vec<u8>,
}

impl Form {
    fn new() -> Self {
        Self { boundary: "test-boundary-7d1f", body: Vec::new() }
    }

    fn field(mut self, name: &str, value: &str) -> Self {
        let head = format!("--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n", self.boundary);
        self.body.extend_from_slice(head.as_bytes());
        self.body.extend_from_slice(value.as_bytes());
        self.body.extend_from_slice(b"\r\n");
        self
    }

    fn file(mut self, name: &str, filename: &str, bytes: &[u8]) -> Self {
        let head = format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: image/png\r\n\r\n",
            self.boundary
        );
        self.body.extend_from_slice(head.as_bytes());
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    fn operations(self, query: &str, variables: Value) -> Self {
        self.field("operations", &json!({"query": query, "variables": variables}).to_string())
    }

    fn finish(mut self) -> (String, Vec<u8>) {
        self.body.extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        (format!("multipart/form-data; boundary={}", self.boundary), self.body)
    }
}

/// An image-like file of `size` bytes.
fn image(size: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend((0..size.saturating_sub(8)).map(|index| (index * 7 % 251) as u8));
    bytes
}

/// The usual single-file upload of `file`.
fn upload_form(file: &[u8]) -> (String, Vec<u8>) {
    Form::new()
        .operations(UPLOAD, json!({"file": null}))
        .field("map", r#"{"0": ["variables.file"]}"#)
        .file("0", "me.png", file)
        .finish()
}

/// Posts a form as caller 7, with the CSRF header unless `preflight` is off.
async fn post_form(gateway: &Gateway, (content_type, body): (String, Vec<u8>), preflight: bool) -> (StatusCode, Value) {
    let mut request = client()
        .post(gateway.url("/graphql"))
        .bearer_auth(token("7", ""))
        .header("content-type", content_type)
        .body(body);
    if preflight {
        request = request.header("apollo-require-preflight", "true");
    }
    let response = request.send().await.expect("an answer");
    let status = response.status();
    (status, json_of(response).await)
}

fn first_error(body: &Value) -> (&str, &str) {
    let error = &body["errors"][0];
    (error["message"].as_str().unwrap_or_default(), error["extensions"]["code"].as_str().unwrap_or_default())
}

#[tokio::test]
async fn an_uploaded_file_reaches_the_service_as_a_form_with_an_exact_content_length() {
    let log = Log::default();
    let stub = avatar_stub(Arc::clone(&log)).await;
    let (gateway, _schema) = gateway(&stub, LIMITS).await;
    // Larger than what is kept in memory: spooled to a temporary file.
    let file = image(100 * 1024);

    let (status, body) = post_form(&gateway, upload_form(&file), true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"data": {"uploadAvatar": {"userId": "7", "contentType": "image/png", "size": file.len()}}})
    );

    let received = log.lock().expect("lock").clone();
    assert_eq!(received.len(), 1);
    let call = &received[0];
    assert_eq!(call.path, "/users/7/avatar/", "the caller's own avatar, from the token's sub");
    assert!(!call.chunked, "gunicorn takes no chunked bodies");
    assert_eq!(call.content_length, Some(call.body_length), "an exact Content-Length");
    let avatar = call.parts.iter().find(|part| part.name == "avatar").expect("the file part");
    assert!(avatar.bytes == file, "the file's bytes arrive unchanged");
    assert_eq!(avatar.filename.as_deref(), Some("me.png"));
    assert_eq!(avatar.content_type.as_deref(), Some("image/png"));
    let caption = call.parts.iter().find(|part| part.name == "caption").expect("the text part");
    assert_eq!((caption.filename.as_deref(), caption.bytes.as_slice()), (None, &b"me, smiling"[..]));
}

#[tokio::test]
async fn limits_are_413_before_the_service_is_called() {
    let log = Log::default();
    let stub = avatar_stub(Arc::clone(&log)).await;
    let (gateway, _schema) = gateway(&stub, LIMITS).await;

    let (status, body) = post_form(&gateway, upload_form(&image(260 * 1024)), true).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(first_error(&body), ("file `0` is larger than 262144 bytes", "PAYLOAD_TOO_LARGE"));

    let three = Form::new()
        .operations(UPLOAD, json!({"file": null}))
        .field("map", r#"{"0": ["variables.file"], "1": ["variables.file"], "2": ["variables.file"]}"#)
        .file("0", "a.png", &image(10))
        .finish();
    let (status, body) = post_form(&gateway, three, true).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(first_error(&body), ("the request has more than 2 files", "PAYLOAD_TOO_LARGE"));

    // Each file is within max_file_size; together they are over max_request_size.
    let together = Form::new()
        .operations(UPLOAD, json!({"file": null, "other": null}))
        .field("map", r#"{"0": ["variables.file"], "1": ["variables.other"]}"#)
        .file("0", "a.png", &image(200 * 1024))
        .file("1", "b.png", &image(200 * 1024))
        .finish();
    let (status, body) = post_form(&gateway, together, true).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(first_error(&body), ("the request body is larger than 393216 bytes", "PAYLOAD_TOO_LARGE"));

    assert_eq!(stub.hits(), 0, "nothing over a limit reaches the service");
}

#[tokio::test]
async fn fields_out_of_the_specs_order_or_a_bad_map_are_400() {
    let log = Log::default();
    let stub = avatar_stub(Arc::clone(&log)).await;
    let (gateway, _schema) = gateway(&stub, LIMITS).await;
    let file = image(64);
    let cases = [
        (
            Form::new()
                .field("map", r#"{"0": ["variables.file"]}"#)
                .operations(UPLOAD, json!({"file": null}))
                .file("0", "a.png", &file),
            "the first field is `map`, not `operations`",
        ),
        (
            Form::new().operations(UPLOAD, json!({"file": null})).file("0", "a.png", &file),
            "the field after `operations` is `0`, not `map`",
        ),
        (
            Form::new()
                .operations(UPLOAD, json!({"file": null}))
                .field("map", r#"{"0": ["variables.picture"]}"#)
                .file("0", "a.png", &file),
            "path `variables.picture` is not in `operations`",
        ),
        (
            Form::new().operations(UPLOAD, json!({"file": null})).field("map", r#"["variables.file"]"#),
            "`map` is not valid",
        ),
        (
            Form::new()
                .operations(UPLOAD, json!({"file": null}))
                .field("map", r#"{"0": ["variables.file"]}"#)
                .file("1", "a.png", &file),
            "file field `1` is not in `map`",
        ),
        (
            Form::new().operations(UPLOAD, json!({"file": null})).field("map", r#"{"0": ["variables.file"]}"#),
            "`map` names file `0`, which the request did not send",
        ),
    ];
    for (form, expected) in cases {
        let (status, body) = post_form(&gateway, form.finish(), true).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{expected}: {body}");
        let (message, code) = first_error(&body);
        assert!(message.contains(expected), "{expected:?} not in {message:?}");
        assert_eq!(code, "BAD_REQUEST");
    }
    assert_eq!(stub.hits(), 0);
}

#[tokio::test]
async fn a_multipart_request_without_a_preflight_header_is_refused_as_csrf() {
    let log = Log::default();
    let stub = avatar_stub(Arc::clone(&log)).await;
    let (gateway, _schema) = gateway(&stub, LIMITS).await;
    let (status, body) = post_form(&gateway, upload_form(&image(64)), false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (message, code) = first_error(&body);
    assert!(message.contains("Cross-Site Request Forgery"), "{message}");
    assert!(message.contains("Apollo-Require-Preflight"), "{message}");
    assert_eq!(code, "BAD_REQUEST");
    assert_eq!(stub.hits(), 0);
}

#[tokio::test]
async fn with_uploads_off_a_multipart_request_is_a_415_that_says_why() {
    let log = Log::default();
    let stub = avatar_stub(Arc::clone(&log)).await;
    let (gateway, _schema) = gateway(&stub, "enabled = false").await;
    let (status, body) = post_form(&gateway, upload_form(&image(64)), true).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    assert_eq!(
        first_error(&body),
        (
            "this GraphQL endpoint does not accept file uploads (multipart requests); send the operation as application/json",
            "UNSUPPORTED_MEDIA_TYPE"
        )
    );
    assert_eq!(stub.hits(), 0);
}

#[tokio::test]
async fn an_upload_variable_in_a_json_request_is_refused() {
    let log = Log::default();
    let stub = avatar_stub(Arc::clone(&log)).await;
    let (gateway, _schema) = gateway(&stub, LIMITS).await;
    for file in [json!("/etc/passwd"), json!({"$upload": 0})] {
        let response = client()
            .post(gateway.url("/graphql"))
            .bearer_auth(token("7", ""))
            .json(&json!({"query": UPLOAD, "variables": {"file": file}}))
            .send()
            .await
            .expect("an answer");
        let body = json_of(response).await;
        let (message, code) = first_error(&body);
        assert!(message.contains("an Upload is a file"), "{message}");
        assert_eq!(code, "BAD_USER_INPUT");
    }
    assert_eq!(stub.hits(), 0);
}

#[tokio::test]
async fn a_stored_operation_that_takes_a_file_is_refused_at_load() {
    let directory = tempfile::tempdir().expect("temp dir");
    let schema = directory.path().join("schema.graphql");
    std::fs::write(&schema, SCHEMA).expect("schema written");
    let document = directory.path().join("upload.graphql");
    std::fs::write(&document, UPLOAD).expect("document written");
    let toml = config(&format!(
        "[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{SECRET}\"\n\n\
         [services.api]\nendpoints = [\"http://127.0.0.1:9\"]\n\n\
         [graphql]\nenabled = true\nschema = [{:?}]\n\n\
         [[operations]]\nmethod = \"POST\"\npath = \"/bff/avatar\"\ndocument = {:?}\n",
        schema.display().to_string(),
        document.display().to_string(),
    ));
    let error = portico::Config::parse(&toml, "test.toml").expect_err("refused").to_string();
    assert!(error.contains("operations[0].document"), "{error}");
    assert!(error.contains("$file of type Upload! takes files"), "{error}");
}
