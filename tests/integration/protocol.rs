//! Hostile and broken clients, byte for byte.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{config, config_with_server, raw_exchange, service, status_of, Gateway, Stub};

async fn gateway_for(backend: &Stub, server: &str) -> Gateway {
    Gateway::start(&config_with_server(server, &service("api", &[backend.url()], ""))).await
}

#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_request() {
    let backend = Stub::echo("api").await;
    let gateway = gateway_for(&backend, "").await;
    // The classic CL.TE desync: a front end trusting Content-Length would see
    // one request, a back end trusting the chunked framing would see two.
    let answer = raw_exchange(
        gateway.addr,
        b"POST /api/x/ HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/smuggled/ HTTP/1.1\r\nHost: gw\r\n\r\n",
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "one answer, then the connection is closed: {answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert!(!answer.contains("smuggled"), "{answer}");
    assert_eq!(backend.hits(), 1, "the smuggled request never reaches the backend");
}

#[tokio::test]
async fn conflicting_content_lengths_are_refused() {
    let backend = Stub::echo("api").await;
    let gateway = gateway_for(&backend, "").await;
    let answer = raw_exchange(
        gateway.addr,
        b"POST /api/x/ HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    )
    .await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn a_bad_chunk_size_is_refused_and_closed() {
    let backend = Stub::echo("api").await;
    let gateway = gateway_for(&backend, "").await;
    let answer = raw_exchange(
        gateway.addr,
        b"POST /api/x/ HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 400, "{answer}");
}

#[tokio::test]
async fn a_request_without_host_is_refused() {
    let backend = Stub::echo("api").await;
    let gateway = gateway_for(&backend, "").await;
    let answer = raw_exchange(gateway.addr, b"GET /api/x/ HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(answer.contains("missing_host"), "{answer}");
    let answer = raw_exchange(gateway.addr, b"GET /api/x/ HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_refused() {
    let backend = Stub::echo("api").await;
    let gateway = gateway_for(&backend, "max_headers = 20\nmax_header_size = \"8KiB\"").await;
    let mut many = String::from("GET /api/x/ HTTP/1.1\r\nHost: gw\r\n");
    for index in 0..30 {
        many.push_str(&format!("x-header-{index}: v\r\n"));
    }
    many.push_str("\r\n");
    let answer = raw_exchange(gateway.addr, many.as_bytes()).await;
    assert_eq!(status_of(&answer), 431, "{answer}");

    let large = format!("GET /api/x/ HTTP/1.1\r\nHost: gw\r\nx-big: {}\r\n\r\n", "a".repeat(16 * 1024));
    let answer = raw_exchange(gateway.addr, large.as_bytes()).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn a_client_sending_headers_too_slowly_is_disconnected() {
    let backend = Stub::echo("api").await;
    let gateway = gateway_for(&backend, "header_read_timeout = \"300ms\"").await;
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.expect("connect");
    stream.write_all(b"GET /api/x/ HTTP/1.1\r\nHost: gw\r\n").await.expect("write");
    let mut buffer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buffer)).await;
    assert!(closed.is_ok(), "the gateway closes a connection whose head never completes");
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let backend = Stub::echo("api").await;
    let gateway = gateway_for(&backend, "header_read_timeout = \"300ms\"").await;
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.expect("connect");
    stream.write_all(b"GET /api/x/ HTTP/1.1\r\nHost: gw\r\n\r\n").await.expect("write");
    let mut buffer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buffer)).await;
    assert!(closed.is_ok(), "an idle keep-alive connection is closed after the timeout");
    assert_eq!(status_of(&String::from_utf8_lossy(&buffer)), 200);
}

#[tokio::test]
async fn garbage_instead_of_http_gets_400() {
    let backend = Stub::echo("api").await;
    let gateway = Gateway::start(&config(&service("api", &[backend.url()], ""))).await;
    let answer = raw_exchange(gateway.addr, b"\x16\x03\x01 hello this is not http\r\n\r\n").await;
    assert!(answer.is_empty() || status_of(&answer) == 400, "{answer:?}");
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn two_host_headers_are_refused() {
    let backend = Stub::echo("api").await;
    let gateway = gateway_for(&backend, "").await;
    for hosts in ["Host: gw\r\nHost: gw", "Host: gw\r\nHost: other.example", "Host: gw\r\nhost: x"] {
        let request = format!("GET /api/x/ HTTP/1.1\r\n{hosts}\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(gateway.addr, request.as_bytes()).await;
        assert_eq!(status_of(&answer), 400, "{hosts:?}: {answer}");
        assert!(answer.contains(r#""code":"duplicate_host""#), "{answer}");
    }
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed() {
    let backend = Stub::echo("api").await;
    let gateway = gateway_for(&backend, "header_read_timeout = \"300ms\"").await;
    let started = std::time::Instant::now();
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.expect("connect");
    let mut buffer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
    assert!(closed.is_ok(), "a silent connection is still open after 5 s (header_read_timeout = 300ms)");
    assert!(started.elapsed() >= Duration::from_millis(250), "closed by the timeout, not at once");
    assert!(buffer.is_empty(), "nothing is sent to a client that asked nothing");

    // A client that does speak in time is served as before.
    let answer = raw_exchange(gateway.addr, b"GET /api/x/ HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&answer), 200, "{answer}");
}
