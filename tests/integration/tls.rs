//! HTTPS: termination (ALPN, TLS versions, handshakes off the accept loop),
//! the plain-HTTP redirect, HSTS, certificate reload without dropping
//! connections, and verified `https://` upstreams. Every certificate is
//! made at test time by a throwaway CA.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::harness::{
    client, closed_port, config, config_requiring_healthy_endpoints, config_with_server, json_of, raw_exchange,
    service, status_of,
};
use crate::harness::{Gateway, Stub};

const NO_HEALTH_NO_RETRY: &str = "health_check = { enabled = false }\nretry = { attempts = 0 }";
const BOTH_VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
/// Long enough for a loaded CI machine, short enough to fail a broken test fast.
const RELOAD_DEADLINE: Duration = Duration::from_secs(10);

/// A throwaway certificate authority.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        TestCa { issuer }
    }

    /// A certificate for `localhost` and `127.0.0.1`; `common_name` tells
    /// two of them apart.
    fn leaf(&self, common_name: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    fn write_pem(&self, path: &Path) {
        std::fs::write(path, self.issuer.pem()).expect("write CA");
    }
}

/// Puts `leaf` in `dir` as `cert.pem` and `key.pem`, each by an atomic
/// rename, the way certificate tools replace files.
fn install(dir: &Path, leaf: &Leaf) {
    replace_file(dir, "cert.pem", &leaf.cert_pem);
    replace_file(dir, "key.pem", &leaf.key_pem);
}

fn replace_file(dir: &Path, name: &str, contents: &str) {
    let staging = dir.join(format!("{name}.new"));
    std::fs::write(&staging, contents).expect("write staging file");
    std::fs::rename(&staging, dir.join(name)).expect("rename into place");
}

/// A test configuration whose listener speaks HTTPS with the files in `dir`.
fn tls_config(dir: &Path, tls_lines: &str, body: &str) -> String {
    config(&format!(
        "[server.tls]\ncert = {:?}\nkey = {:?}\nreload_check_interval = \"50ms\"\n{tls_lines}\n\n{body}",
        dir.join("cert.pem"),
        dir.join("key.pem"),
    ))
}

/// A client trusting only `ca`, offering `alpn` and `versions`.
fn client_config(
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).expect("CA is a valid trust anchor");
    let mut config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Arc::new(config)
}

async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    TlsConnector::from(config).connect(name, tcp).await.expect("TLS handshake")
}

/// The certificate the server presented on `stream`.
fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).expect("a server certificate").clone()
}

/// An HTTP/1.1 connection over `stream`, kept open for more requests.
async fn http1(stream: TlsStream<TcpStream>) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP/1.1");
    tokio::spawn(connection);
    sender
}

async fn get1(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>, path: &str) -> Answer {
    let request = Request::get(path).header(header::HOST, "localhost").body(Empty::new()).expect("request");
    Answer::read(sender.send_request(request).await.expect("an answer")).await
}

/// A response, read whole.
struct Answer {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    async fn read(response: Response<Incoming>) -> Answer {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Answer { status: parts.status, version: parts.version, headers: parts.headers, body }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[tokio::test]
async fn https_negotiates_h2_and_tells_the_backend_the_client_used_https() {
    let ca = TestCa::new("portico test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    install(dir.path(), &ca.leaf("gateway"));
    let backend = Stub::echo("a").await;
    let gateway =
        Gateway::start(&tls_config(dir.path(), "", &service("api", &[backend.url()], NO_HEALTH_NO_RETRY))).await;

    let stream = connect(gateway.addr, client_config(&ca.der(), &[b"h2", b"http/1.1"], BOTH_VERSIONS)).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("HTTP/2");
    tokio::spawn(connection);
    let request = Request::get(format!("https://localhost:{}/api/items?page=2", gateway.addr.port()))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let answer = Answer::read(sender.send_request(request).await.expect("an answer")).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.version, Version::HTTP_2);
    let echoed = answer.json();
    assert_eq!(echoed["path"], "/items");
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn clients_without_h2_get_http1() {
    let ca = TestCa::new("portico test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    install(dir.path(), &ca.leaf("gateway"));
    let gateway = Gateway::start(&tls_config(dir.path(), "", "")).await;

    for alpn in [&[&b"http/1.1"[..]][..], &[]] {
        let stream = connect(gateway.addr, client_config(&ca.der(), alpn, BOTH_VERSIONS)).await;
        let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(negotiated, alpn.first().map(|protocol| protocol.to_vec()));
        let answer = get1(&mut http1(stream).await, "/healthz").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.version, Version::HTTP_11);
    }
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_offered() {
    let ca = TestCa::new("portico test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    install(dir.path(), &ca.leaf("gateway"));
    let gateway = Gateway::start(&tls_config(dir.path(), "", "")).await;

    for (version, expected) in
        [(&rustls::version::TLS12, ProtocolVersion::TLSv1_2), (&rustls::version::TLS13, ProtocolVersion::TLSv1_3)]
    {
        let stream = connect(gateway.addr, client_config(&ca.der(), &[], &[version])).await;
        assert_eq!(stream.get_ref().1.protocol_version(), Some(expected));
        assert_eq!(get1(&mut http1(stream).await, "/healthz").await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_tls_1_1_client_hello_is_refused_with_a_protocol_version_alert() {
    let ca = TestCa::new("portico test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    install(dir.path(), &ca.leaf("gateway"));
    let gateway = Gateway::start(&tls_config(dir.path(), "", "")).await;

    // rustls cannot speak TLS 1.1, so the ClientHello is written by hand:
    // version 3.2, two CBC suites, no compression, and no supported_versions
    // extension to upgrade with. It does carry signature_algorithms, so that
    // the server gets as far as the version check (without it, rustls refuses
    // earlier, with handshake_failure).
    let mut hello = vec![0x03, 0x02];
    hello.extend_from_slice(&[7; 32]);
    hello.extend_from_slice(&[0x00, 0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f, 0x01, 0x00]);
    hello.extend_from_slice(&[0x00, 0x08, 0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03]);
    let mut handshake = vec![0x01, 0x00, 0x00, u8::try_from(hello.len()).expect("short")];
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, u8::try_from(handshake.len()).expect("short")];
    record.extend_from_slice(&handshake);

    let mut stream = TcpStream::connect(gateway.addr).await.expect("connect");
    stream.write_all(&record).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the gateway closes the connection")
        .expect("read");
    // An alert record (type 21), fatal (2), protocol_version (70): no ServerHello.
    assert_eq!(answer.first(), Some(&0x15), "{answer:02x?}");
    assert_eq!(answer.get(5..7), Some(&[0x02, 0x46][..]), "{answer:02x?}");
}

#[tokio::test]
async fn a_silent_client_holds_up_neither_the_accept_loop_nor_its_connection() {
    let ca = TestCa::new("portico test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    install(dir.path(), &ca.leaf("gateway"));
    let gateway = Gateway::start(&config_with_server(
        "header_read_timeout = \"500ms\"",
        &format!("[server.tls]\ncert = {:?}\nkey = {:?}\n", dir.path().join("cert.pem"), dir.path().join("key.pem")),
    ))
    .await;

    let mut silent = TcpStream::connect(gateway.addr).await.expect("connect");
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        connect(gateway.addr, client_config(&ca.der(), &[], BOTH_VERSIONS)),
    )
    .await
    .expect("another client's handshake is not held up");
    assert_eq!(get1(&mut http1(stream).await, "/healthz").await.status, StatusCode::OK);

    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the handshake timeout closes a client that never says hello");
}

#[tokio::test]
async fn plain_http_is_redirected_to_https_and_its_listener_stops_with_the_gateway() {
    let ca = TestCa::new("portico test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    install(dir.path(), &ca.leaf("gateway"));
    let backend = Stub::echo("a").await;
    let redirect = closed_port().await;
    let mut gateway = Gateway::start(&tls_config(
        dir.path(),
        &format!("http_redirect = {{ listen = \"{redirect}\" }}"),
        &service("api", &[backend.url()], NO_HEALTH_NO_RETRY),
    ))
    .await;
    until_listening(redirect).await;
    let https_port = gateway.addr.port();

    let answer = client().get(format!("http://{redirect}/api/items?page=2&q=a%20b")).send().await.expect("answer");
    assert_eq!(answer.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(answer.headers()[header::LOCATION], format!("https://127.0.0.1:{https_port}/api/items?page=2&q=a%20b"));

    let raw = raw_exchange(
        redirect,
        format!("GET /x HTTP/1.1\r\nHost: Gateway.Test:{}\r\nConnection: close\r\n\r\n", redirect.port()).as_bytes(),
    )
    .await;
    assert_eq!(status_of(&raw), 301, "{raw}");
    assert!(raw.to_ascii_lowercase().contains(&format!("location: https://gateway.test:{https_port}/x\r\n")), "{raw}");

    let raw = raw_exchange(redirect, b"GET /x HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&raw), 400, "{raw}");
    assert_eq!(backend.hits(), 0, "nothing is proxied over plain HTTP");

    gateway.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(10), gateway.stopped()).await.expect("serve returns");
    assert!(TcpStream::connect(redirect).await.is_err(), "the redirect listener is closed");
}

#[tokio::test]
async fn the_redirect_can_name_the_port_clients_use_and_leaves_out_443() {
    let ca = TestCa::new("portico test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    install(dir.path(), &ca.leaf("gateway"));
    let redirect = closed_port().await;
    let _gateway = Gateway::start(&tls_config(
        dir.path(),
        &format!("http_redirect = {{ listen = \"{redirect}\", https_port = 443 }}"),
        "",
    ))
    .await;
    until_listening(redirect).await;

    let answer = client()
        .get(format!("http://{redirect}/login?next=%2F"))
        .header(header::HOST, "gateway.test")
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(answer.headers()[header::LOCATION], "https://gateway.test/login?next=%2F");
}

#[tokio::test]
async fn hsts_is_sent_on_every_https_answer() {
    let ca = TestCa::new("portico test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    install(dir.path(), &ca.leaf("gateway"));
    let gateway =
        Gateway::start(&tls_config(dir.path(), "hsts = { max_age = \"365d\", include_subdomains = true }", "")).await;

    let stream = connect(gateway.addr, client_config(&ca.der(), &[], BOTH_VERSIONS)).await;
    let mut sender = http1(stream).await;
    for (path, status) in [("/healthz", StatusCode::OK), ("/no/such/route", StatusCode::NOT_FOUND)] {
        let answer = get1(&mut sender, path).await;
        assert_eq!(answer.status, status);
        assert_eq!(answer.headers[header::STRICT_TRANSPORT_SECURITY], "max-age=31536000; includeSubDomains");
    }
}

/// Waits until the redirect listener, bound as `serve` starts, accepts.
async fn until_listening(addr: SocketAddr) {
    crate::harness::eventually(Duration::from_secs(5), || async move { TcpStream::connect(addr).await.is_ok() }).await;
}

/// Handshakes until the gateway presents `expected`, failing after
/// [`RELOAD_DEADLINE`].
async fn until_presented(addr: SocketAddr, config: &Arc<ClientConfig>, expected: &CertificateDer<'static>) {
    let deadline = tokio::time::Instant::now() + RELOAD_DEADLINE;
    loop {
        if presented(&connect(addr, Arc::clone(config)).await) == *expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not served within {RELOAD_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_new_connections_while_open_ones_keep_working() {
    let ca = TestCa::new("portico test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let first = ca.leaf("first");
    install(dir.path(), &first);
    let gateway = Gateway::start(&tls_config(dir.path(), "", "")).await;
    let client_config = client_config(&ca.der(), &[b"http/1.1"], BOTH_VERSIONS);

    let open = connect(gateway.addr, Arc::clone(&client_config)).await;
    assert_eq!(presented(&open), first.der);
    let mut open = http1(open).await;
    assert_eq!(get1(&mut open, "/healthz").await.status, StatusCode::OK);

    let second = ca.leaf("second");
    install(dir.path(), &second);
    until_presented(gateway.addr, &client_config, &second.der).await;

    // The same keep-alive connection, still on the first certificate's session.
    assert_eq!(get1(&mut open, "/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_broken_replacement_keeps_the_current_certificate() {
    let ca = TestCa::new("portico test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let first = ca.leaf("first");
    install(dir.path(), &first);
    let gateway = Gateway::start(&tls_config(dir.path(), "", "")).await;
    let client_config = client_config(&ca.der(), &[], BOTH_VERSIONS);

    replace_file(dir.path(), "cert.pem", "-----BEGIN CERTIFICATE-----\nnot base64\n");
    // There is no event for "a reload failed"; give the 50 ms check several turns.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(presented(&connect(gateway.addr, Arc::clone(&client_config)).await), first.der);

    // A key that belongs to another certificate is refused the same way.
    replace_file(dir.path(), "cert.pem", &ca.leaf("mismatched").cert_pem);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(presented(&connect(gateway.addr, Arc::clone(&client_config)).await), first.der);

    // The watcher is still alive: a good pair is picked up.
    let third = ca.leaf("third");
    install(dir.path(), &third);
    until_presented(gateway.addr, &client_config, &third.der).await;
}

/// A backend speaking HTTPS with `leaf`, answering every request with
/// "secure hello".
async fn tls_backend(leaf: &Leaf) -> (SocketAddr, JoinHandle<()>) {
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], key)
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(server_config));
    let router = Router::new().fallback(|| async { "secure hello" });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                // An untrusting gateway hangs up mid-handshake; nothing to serve then.
                let Ok(stream) = acceptor.accept(stream).await else { return };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router))
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn https_upstreams_are_verified_against_the_service_ca_or_the_public_roots() {
    let service_ca = TestCa::new("service CA");
    let stranger_ca = TestCa::new("stranger CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("service-ca.pem");
    service_ca.write_pem(&ca_file);
    let (trusted, _trusted_task) = tls_backend(&service_ca.leaf("backend")).await;
    let (stranger, _stranger_task) = tls_backend(&stranger_ca.leaf("impostor")).await;

    let with_ca = format!("{NO_HEALTH_NO_RETRY}\ntls = {{ ca_file = {ca_file:?} }}");
    let gateway = Gateway::start(&config(
        &[
            service("secure", &[format!("https://{trusted}")], &with_ca),
            service("impostor", &[format!("https://{stranger}")], &with_ca),
            // Without a CA file only the public web CAs are trusted.
            service("public", &[format!("https://{trusted}")], NO_HEALTH_NO_RETRY),
        ]
        .concat(),
    ))
    .await;

    let answer = client().get(gateway.url("/secure/hello")).send().await.expect("answer");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.expect("body"), "secure hello");

    for path in ["/impostor/hello", "/public/hello"] {
        let answer = client().get(gateway.url(path)).send().await.expect("answer");
        assert_eq!(answer.status(), StatusCode::BAD_GATEWAY, "{path}");
        assert_eq!(json_of(answer).await["error"]["code"], "upstream_unreachable", "{path}");
    }
}

#[tokio::test]
async fn https_upstreams_are_health_checked_over_tls() {
    let service_ca = TestCa::new("service CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("service-ca.pem");
    service_ca.write_pem(&ca_file);
    let (trusted, _task) = tls_backend(&service_ca.leaf("backend")).await;
    let stranger_ca = TestCa::new("stranger CA");
    let (stranger, _stranger_task) = tls_backend(&stranger_ca.leaf("impostor")).await;

    let checks =
        format!("health_check = {{ interval = \"50ms\", unhealthy_threshold = 1 }}\ntls = {{ ca_file = {ca_file:?} }}");
    let gateway = Gateway::start(&config_requiring_healthy_endpoints(
        &[
            service("secure", &[format!("https://{trusted}")], &checks),
            service("impostor", &[format!("https://{stranger}")], &checks),
        ]
        .concat(),
    ))
    .await;

    // The impostor fails its checks (its certificate is not trusted), the
    // trusted replica passes them over the same verified client.
    crate::harness::eventually(RELOAD_DEADLINE, || async {
        let answer = client().get(gateway.url("/readyz")).send().await.expect("answer");
        answer.status() == StatusCode::SERVICE_UNAVAILABLE
            && json_of(answer).await["services"] == serde_json::json!(["impostor"])
    })
    .await;
    // Several more check rounds later, the trusted replica is still in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = client().get(gateway.url("/readyz")).send().await.expect("answer");
    assert_eq!(json_of(answer).await["services"], serde_json::json!(["impostor"]));
}

#[tokio::test]
async fn a_connection_silent_after_the_handshake_is_closed() {
    let ca = TestCa::new("portico test CA");
    let dir = tempfile::tempdir().expect("tempdir");
    install(dir.path(), &ca.leaf("gateway"));
    let toml = config_with_server(
        "header_read_timeout = \"300ms\"",
        &format!("[server.tls]\ncert = {:?}\nkey = {:?}\n", dir.path().join("cert.pem"), dir.path().join("key.pem")),
    );
    let gateway = Gateway::start(&toml).await;

    let mut stream = connect(gateway.addr, client_config(&ca.der(), &[b"http/1.1"], rustls::DEFAULT_VERSIONS)).await;
    let mut buffer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
    assert!(closed.is_ok(), "a TLS connection that never sends a request is still open after 5 s");
}
