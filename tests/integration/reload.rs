//! Hot reload: a file change is validated and swapped in without dropping
//! a connection or a request; an invalid file keeps the served config; a
//! schema change reaches GraphQL. Every step awaits the change of the
//! configuration hash on `/readyz` (or the reload counter), never a sleep.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::graphql::{backends, Behaviour};
use crate::harness::{client, config, eventually, json_of, service, Gateway, Stub};

const PATIENCE: Duration = Duration::from_secs(20);

async fn served_hash(gateway: &Gateway) -> String {
    let ready = client().get(gateway.url("/readyz")).send().await.expect("readyz");
    json_of(ready).await["config"].as_str().expect("a config hash on /readyz").to_owned()
}

/// Writes `text` and waits until the gateway serves a configuration other
/// than `previous`; returns its hash.
async fn reload_to(gateway: &Gateway, path: &Path, text: &str, previous: &str) -> String {
    replace(path, text);
    eventually(PATIENCE, || async { served_hash(gateway).await != previous }).await;
    served_hash(gateway).await
}

/// Replaces a file as deploy tools and editors do (write aside, rename), so
/// the gateway never reads a half-written file.
fn replace(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).expect("write file");
    std::fs::rename(&aside, path).expect("rename file");
}

async fn reload_counter(gateway: &Gateway, result: &str) -> u64 {
    let metrics = client().get(gateway.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let prefix = format!("portico_config_reloads_total{{result=\"{result}\"}} ");
    metrics.lines().find_map(|line| line.strip_prefix(&prefix)).map_or(0, |count| count.trim().parse().unwrap_or(0))
}

fn quiet(name: &str, backend: &Stub) -> String {
    service(name, &[backend.url()], "health_check = { enabled = false }")
}

/// One HTTP/1.1 connection, kept open.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Connection {
    async fn open(gateway: &Gateway) -> Self {
        let stream = tokio::net::TcpStream::connect(gateway.addr).await.expect("connect");
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
        tokio::spawn(connection);
        Self { sender }
    }

    async fn get(&mut self, path: &str) -> StatusCode {
        self.sender.ready().await.expect("the connection is still open");
        let request = http::Request::get(path).header("host", "gateway").body(Empty::new()).expect("request");
        let answer = self.sender.send_request(request).await.expect("an answer on the same connection");
        let status = answer.status();
        answer.into_body().collect().await.expect("body");
        status
    }
}

#[tokio::test]
async fn a_route_added_by_a_reload_is_served_on_a_connection_open_across_it() {
    let (a, b) = (Stub::echo("a").await, Stub::echo("b").await);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("portico.toml");
    std::fs::write(&path, config(&quiet("a", &a))).expect("write");
    let gateway = Gateway::start_file(&path).await;
    let first = served_hash(&gateway).await;

    let mut connection = Connection::open(&gateway).await;
    assert_eq!(connection.get("/a/x").await, StatusCode::OK);
    assert_eq!(connection.get("/b/x").await, StatusCode::NOT_FOUND);

    let second = reload_to(&gateway, &path, &config(&format!("{}{}", quiet("a", &a), quiet("b", &b))), &first).await;
    assert_ne!(first, second);
    assert_eq!(connection.get("/b/x").await, StatusCode::OK, "the new route, on the old connection");
    assert_eq!(connection.get("/a/x").await, StatusCode::OK);
    assert_eq!(b.hits(), 1);
    assert_eq!(reload_counter(&gateway, "ok").await, 1);
}

#[tokio::test]
async fn an_invalid_file_keeps_the_served_configuration() {
    let a = Stub::echo("a").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("portico.toml");
    std::fs::write(&path, config(&quiet("a", &a))).expect("write");
    let gateway = Gateway::start_file(&path).await;
    let first = served_hash(&gateway).await;

    let broken = format!("{}[[routes]]\nprefix = \"/c/\"\nservice = \"nope\"\n", config(&quiet("a", &a)));
    std::fs::write(&path, broken).expect("write");
    eventually(PATIENCE, || async { reload_counter(&gateway, "invalid").await >= 1 }).await;
    assert_eq!(served_hash(&gateway).await, first);
    assert_eq!(client().get(gateway.url("/a/x")).send().await.expect("answer").status(), StatusCode::OK);
    assert_eq!(reload_counter(&gateway, "ok").await, 0);

    // Fixed, it is taken.
    let fixed = format!("{}[[routes]]\nprefix = \"/c/\"\nservice = \"a\"\n", config(&quiet("a", &a)));
    reload_to(&gateway, &path, &fixed, &first).await;
    assert_eq!(client().get(gateway.url("/c/x")).send().await.expect("answer").status(), StatusCode::OK);
}

#[tokio::test]
async fn a_schema_change_adds_a_field() {
    let backends = backends(Behaviour::default(), "schema = [\"schema.graphql\"]").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let schema = dir.path().join("schema.graphql");
    let original = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/portico.graphql"))
        .expect("the demo schema");
    std::fs::write(&schema, &original).expect("write schema");
    let path = dir.path().join("portico.toml");
    std::fs::write(&path, &backends.toml).expect("write config");
    let gateway = Gateway::start_file(&path).await;
    let first = served_hash(&gateway).await;

    let fields = || async {
        let answer = client()
            .post(gateway.url("/graphql"))
            .json(&serde_json::json!({"query": "{ __type(name: \"Lesson\") { fields { name } } }"}))
            .send()
            .await
            .expect("answer");
        let body = json_of(answer).await;
        body["data"]["__type"]["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .map(|field| field["name"].as_str().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
    };
    assert!(!fields().await.contains(&"subtitle".to_owned()));

    let changed = original.replacen(
        "type Lesson @cacheControl(maxAge: 60, scope: PUBLIC) {\n",
        "type Lesson @cacheControl(maxAge: 60, scope: PUBLIC) {\n  subtitle: String\n",
        1,
    );
    assert_ne!(changed, original, "the schema's Lesson type moved; update this test");
    replace(&schema, &changed);
    eventually(PATIENCE, || async { served_hash(&gateway).await != first }).await;
    assert!(fields().await.contains(&"subtitle".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_no_request() {
    let a = Stub::echo("a").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("portico.toml");
    std::fs::write(&path, config(&quiet("a", &a))).expect("write");
    let gateway = Arc::new(Gateway::start_file(&path).await);
    let mut hash = served_hash(&gateway).await;

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (gateway, stop, answered, failures) =
            (Arc::clone(&gateway), Arc::clone(&stop), Arc::clone(&answered), Arc::clone(&failures));
        load.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::SeqCst) {
                let failure = match client.get(gateway.url("/a/x")).send().await {
                    Ok(answer) if answer.status() == StatusCode::OK => {
                        answered.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    Ok(answer) => answer.status().to_string(),
                    Err(error) => format!("{error:?}"),
                };
                failures.lock().expect("failures").push(failure);
            }
        }));
    }
    let lost = || failures.lock().expect("failures").clone();
    for round in 0..5 {
        let before = answered.load(Ordering::SeqCst);
        let text = format!("{}[[routes]]\nprefix = \"/round-{round}/\"\nservice = \"a\"\n", config(&quiet("a", &a)));
        hash = reload_to(&gateway, &path, &text, &hash).await;
        // Requests were flowing across this reload.
        eventually(PATIENCE, || async { answered.load(Ordering::SeqCst) > before || !lost().is_empty() }).await;
        assert_eq!(lost(), Vec::<String>::new(), "requests lost across reload {round}");
    }
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.expect("load task");
    }
    assert_eq!(lost(), Vec::<String>::new(), "requests lost across reloads");
    assert_eq!(reload_counter(&gateway, "ok").await, 5);
}

/// A backend that answers with the client port of the connection each
/// request came on.
async fn port_echo() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::extract::ConnectInfo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = axum::Router::new()
        .fallback(|ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>| async move { peer.port().to_string() });
    let task = tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
            .await
            .expect("serves");
    });
    (addr, task)
}

#[tokio::test]
async fn an_unchanged_service_keeps_its_pooled_connection_and_the_rate_limit_its_state() {
    let (backend, _task) = port_echo().await;
    let other = Stub::echo("other").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("portico.toml");
    // One request per 1000 s: nothing refills it during the test.
    let limits = "[rate_limits.one]\nper_second = 0.001\nburst = 1\n\n";
    let a = service("a", &[format!("http://{backend}")], "health_check = { enabled = false }");
    let limited = "[[routes]]\nprefix = \"/limited/\"\nservice = \"a\"\nrate_limit = \"one\"\n\n";
    std::fs::write(&path, config(&format!("{limits}{a}{limited}"))).expect("write");
    let gateway = Gateway::start_file(&path).await;
    let first = served_hash(&gateway).await;

    let port = || async { client().get(gateway.url("/a/x")).send().await.expect("answer").text().await.expect("text") };
    let before = port().await;
    assert_eq!(port().await, before, "the pool reuses its connection");
    assert_eq!(client().get(gateway.url("/limited/x")).send().await.expect("answer").status(), StatusCode::OK);
    assert_eq!(
        client().get(gateway.url("/limited/x")).send().await.expect("answer").status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    let text = format!("{limits}{a}{limited}{}", quiet("other", &other));
    reload_to(&gateway, &path, &config(&text), &first).await;
    assert_eq!(port().await, before, "service a's pool and its connection survived the reload");
    assert_eq!(
        client().get(gateway.url("/limited/x")).send().await.expect("answer").status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the spent budget survived the reload"
    );
    assert_eq!(client().get(gateway.url("/other/x")).send().await.expect("answer").status(), StatusCode::OK);
}

#[tokio::test]
async fn an_unchanged_auth_section_keeps_its_fetched_keys_across_a_reload() {
    use crate::auth::{claims, jwks_auth, jwks_server, rsa_key, sign};
    let jwks = jwks_server("jwks-1.json").await;
    let backend = Stub::echo("api").await;
    let other = Stub::echo("other").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("portico.toml");
    let api =
        format!("{}auth = \"required\"\n\n", service("api", &[backend.url()], "health_check = { enabled = false }"));
    let auth = jwks_auth(&jwks.stub.url(), "1h");
    std::fs::write(&path, config(&format!("{auth}{api}"))).expect("write");
    let gateway = Gateway::start_file(&path).await;
    let token = sign(jsonwebtoken::Algorithm::RS256, &rsa_key("rsa.key"), Some("key-1"), &claims("1"));
    let status =
        || async { client().get(gateway.url("/api/x/")).bearer_auth(&token).send().await.expect("answer").status() };
    eventually(PATIENCE, || async { status().await == StatusCode::OK }).await;
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1);

    let first = served_hash(&gateway).await;
    let second = reload_to(&gateway, &path, &config(&format!("{auth}{api}{}", quiet("other", &other))), &first).await;
    assert_eq!(status().await, StatusCode::OK);
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 1, "[auth] did not change: its keys were kept, not fetched again");

    let changed = auth.replace("jwks_refresh_interval = \"1h\"", "jwks_refresh_interval = \"2h\"");
    reload_to(&gateway, &path, &config(&format!("{changed}{api}")), &second).await;
    eventually(PATIENCE, || async { status().await == StatusCode::OK }).await;
    assert_eq!(jwks.fetches.load(Ordering::SeqCst), 2, "a changed [auth] is built anew");
}
