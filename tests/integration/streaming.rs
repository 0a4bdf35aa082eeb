//! Bodies stream through the gateway in both directions; the body limit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::Router;
use futures_util::StreamExt;
use http::StatusCode;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::harness::{client, config, config_with_server, json_of, service, Gateway, Stub};

const MIB: usize = 1024 * 1024;

type Signal = Arc<Mutex<Option<oneshot::Sender<()>>>>;

fn fire(signal: &Signal) {
    if let Some(sender) = signal.lock().expect("lock").take() {
        let _ = sender.send(());
    }
}

async fn count_upload(State(first_chunk_arrived): State<Signal>, request: Request) -> String {
    let mut stream = request.into_body().into_data_stream();
    let mut total = 0;
    while let Some(chunk) = stream.next().await {
        total += chunk.expect("upload chunk").len();
        fire(&first_chunk_arrived);
    }
    total.to_string()
}

#[tokio::test]
async fn a_large_upload_streams_to_the_backend_before_it_is_complete() {
    let (arrived_tx, arrived_rx) = oneshot::channel();
    let signal: Signal = Arc::new(Mutex::new(Some(arrived_tx)));
    let backend = Stub::serve(Router::new().fallback(count_upload).with_state(signal)).await;
    let toml = config_with_server("request_body_limit = \"64MiB\"", &service("upload", &[backend.url()], ""));
    let gateway = Gateway::start(&toml).await;

    let (chunks, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let upload = tokio::spawn(
        client()
            .put(gateway.url("/upload/files/"))
            .body(reqwest::Body::wrap_stream(ReceiverStream::new(receiver)))
            .send(),
    );
    chunks.send(Ok(Bytes::from(vec![b'a'; MIB]))).await.expect("send first chunk");
    // The backend sees data while the client still holds most of the body:
    // nothing buffers the whole request.
    tokio::time::timeout(Duration::from_secs(10), arrived_rx).await.expect("first chunk forwarded").expect("signal");
    for _ in 1..32 {
        chunks.send(Ok(Bytes::from(vec![b'b'; MIB]))).await.expect("send chunk");
    }
    drop(chunks);

    let response = upload.await.expect("task").expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("text"), (32 * MIB).to_string());
}

async fn staged_download(State(release): State<Arc<Mutex<Option<oneshot::Receiver<()>>>>>) -> Body {
    let release = release.lock().expect("lock").take().expect("one download");
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let _ = sender.send(Ok(Bytes::from(vec![b'x'; MIB]))).await;
        let _ = release.await;
        for _ in 1..32 {
            if sender.send(Ok(Bytes::from(vec![b'y'; MIB]))).await.is_err() {
                return;
            }
        }
    });
    Body::from_stream(ReceiverStream::new(receiver))
}

#[tokio::test]
async fn a_large_answer_streams_to_the_client_before_the_backend_finishes() {
    let (release_tx, release_rx) = oneshot::channel();
    let backend =
        Stub::serve(Router::new().fallback(staged_download).with_state(Arc::new(Mutex::new(Some(release_rx))))).await;
    let gateway =
        Gateway::start(&config(&service("download", &[backend.url()], "health_check = { enabled = false }"))).await;

    let response = client().get(gateway.url("/download/big/")).send().await.expect("response head");
    let mut stream = response.bytes_stream();
    let mut received = 0;
    while received == 0 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("first bytes arrive while the backend is still holding the rest")
            .expect("a chunk")
            .expect("chunk ok");
        received += chunk.len();
    }
    release_tx.send(()).expect("release the rest");
    while let Some(chunk) = stream.next().await {
        received += chunk.expect("chunk").len();
    }
    assert_eq!(received, 32 * MIB);
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_with_413() {
    let backend = Stub::echo("api").await;
    let toml = config_with_server("request_body_limit = \"1KiB\"", &service("api", &[backend.url()], ""));
    let gateway = Gateway::start(&toml).await;

    let declared = client().post(gateway.url("/api/upload/")).body(vec![b'a'; 2048]).send().await.expect("response");
    assert_eq!(declared.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_of(declared).await["error"]["code"], "body_too_large");
    assert_eq!(backend.hits(), 0, "a declared oversize body never reaches the backend");

    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..4).map(|_| Ok(Bytes::from(vec![b'b'; 512]))).collect();
    let streamed = client()
        .post(gateway.url("/api/upload/"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .expect("response");
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_of(streamed).await["error"]["code"], "body_too_large");

    let within = client().post(gateway.url("/api/upload/")).body(vec![b'c'; 1024]).send().await.expect("response");
    assert_eq!(within.status(), StatusCode::OK);
}
