//! Fast backend stubs serving the contract's shapes
//! (`../shared/contract/services.md`), so that the benchmark measures the
//! gateways and not the backends. One hyper server per service, on a tokio
//! runtime of one thread inside the xtask process.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The three services' stubs, running until the runtime is dropped.
pub struct Stubs {
    pub student_api: SocketAddr,
    pub live_reading: SocketAddr,
    pub payment: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Stubs {
    pub fn start() -> Result<Stubs> {
        // One worker thread drives all three, for as long as the xtask lives.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-stubs")
            .enable_all()
            .build()
            .context("starting the stubs' runtime")?;
        let mut addresses = Vec::new();
        for _ in 0..3 {
            let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).context("binding a stub backend")?;
            addresses.push(listener.local_addr()?);
            runtime.spawn(serve(listener));
        }
        Ok(Stubs { student_api: addresses[0], live_reading: addresses[1], payment: addresses[2], _runtime: runtime })
    }
}

async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                Ok::<_, Infallible>(answer(request.uri().path(), request.uri().query().unwrap_or("")))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The answer for one request; every service shares the path space, as no
/// two services use the same path.
pub fn answer(path: &str, query: &str) -> Response<Full<Bytes>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let body = match segments.as_slice() {
        ["health"] => Some(r#"{"status":"ok"}"#.to_owned()),
        ["users", id] => id.parse().ok().map(user),
        ["users"] => Some(page(ids(query).into_iter().map(user))),
        ["lesson", id] => id.parse().ok().map(lesson),
        ["lesson"] => Some(page(ids(query).into_iter().map(lesson))),
        ["sessions"] => {
            let student = param(query, "student_id").and_then(|id| id.parse().ok()).unwrap_or(1);
            Some(page(
                [(10, 3), (11, 4), (12, 7), (13, 3)].into_iter().map(|(id, lesson)| session(id, student, lesson)),
            ))
        }
        ["payments"] => {
            let student = param(query, "student_id").and_then(|id| id.parse().ok()).unwrap_or(1);
            Some(page([payment(5, student)].into_iter()))
        }
        _ => None,
    };
    let (status, body) = match body {
        Some(body) => (StatusCode::OK, body),
        None => (StatusCode::NOT_FOUND, r#"{"detail":"Not found."}"#.to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    response
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn ids(query: &str) -> Vec<u64> {
    let raw = param(query, "ids").unwrap_or("");
    raw.replace("%2C", ",").replace("%2c", ",").split(',').filter_map(|id| id.parse().ok()).collect()
}

fn page(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    format!(r#"{{"count":{},"next":null,"previous":null,"results":[{}]}}"#, items.len(), items.join(","))
}

fn user(id: u64) -> String {
    format!(
        r#"{{"id":{id},"username":"user{id}","email":"user{id}@example.com","full_name":"Ada Lovelace","grade":5,"created_at":"2026-01-02T03:04:05Z"}}"#
    )
}

fn lesson(id: u64) -> String {
    let mut title = String::new();
    let _ = write!(title, "Lesson {id}");
    format!(r#"{{"id":{id},"title":"{title}","level":"A2","word_count":350,"duration_seconds":600}}"#)
}

fn session(id: u64, student: u64, lesson: u64) -> String {
    format!(
        r#"{{"id":{id},"student_id":{student},"lesson_id":{lesson},"started_at":"2026-02-01T10:00:00Z","words_per_minute":112.5,"accuracy":0.97}}"#
    )
}

fn payment(id: u64, student: u64) -> String {
    format!(
        r#"{{"id":{id},"student_id":{student},"amount":"49.00","currency":"USD","status":"succeeded","created_at":"2026-02-03T12:00:00Z"}}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_the_contracts_shapes() {
        assert_eq!(answer("/users/1/", "").status(), StatusCode::OK);
        assert_eq!(answer("/nope/", "").status(), StatusCode::NOT_FOUND);
        assert_eq!(ids("ids=3%2C4%2C7&page_size=3"), vec![3, 4, 7]);
        assert_eq!(param("student_id=1&page_size=50", "student_id"), Some("1"));
    }
}
