//! Request ids: the client's `X-Request-Id` when it is fit to pass on,
//! otherwise a fresh random one.
//!
//! A client's id reaches backends, log lines and error bodies, so it is
//! bounded: at most [`MAX_LEN`] visible ASCII characters, without `"` and
//! `\` (which would need escaping wherever the id is quoted). Anything else,
//! including a repeated header, is replaced rather than trimmed, so a
//! backend never sees a half of what the client sent.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::request::REQUEST_ID;

/// The longest client-sent request id kept.
pub const MAX_LEN: usize = 128;

/// Removes the client's `X-Request-Id` unless it is one fit value, so that
/// the request-id layer makes a new one.
pub fn drop_unfit_request_id<B>(mut request: Request<B>) -> Request<B> {
    let mut values = request.headers().get_all(REQUEST_ID).iter();
    let fit = match (values.next(), values.next()) {
        (None, _) => return request,
        (Some(value), None) => is_fit(value),
        (Some(_), Some(_)) => false,
    };
    if !fit {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

fn is_fit(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes.iter().all(|&byte| matches!(byte, 0x21..=0x7E) && byte != b'"' && byte != b'\\')
}

/// Makes request ids: 128 random bits written as a version 4 UUID, from the
/// thread's fast generator (seeded once per thread) rather than a call into
/// the operating system's random source for every request. The ids need to
/// be unique, not unpredictable.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomRequestId;

impl RandomRequestId {
    fn make(self) -> Option<HeaderValue> {
        let uuid = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
        let mut text = [0_u8; uuid::fmt::Hyphenated::LENGTH];
        let text = uuid.hyphenated().encode_lower(&mut text);
        HeaderValue::from_str(text).ok()
    }
}

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        self.make().map(RequestId::new)
    }
}

/// Gives every request one fit id ([`drop_unfit_request_id`], else a
/// [`RandomRequestId`]) and copies it onto the answer unless the answer
/// has its own. tower-http's `SetRequestId` and `PropagateRequestId` do
/// the same in two layers, and each also stores the id in the request's or
/// the answer's extensions, which nothing here reads: three allocations per
/// request saved.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

/// The middleware of [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct RequestIdService<S> {
    inner: S,
}

impl<S, B, ResBody> Service<Request<B>> for RequestIdService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = RequestIdFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let mut request = drop_unfit_request_id(request);
        let id = match request.headers().get(REQUEST_ID) {
            Some(id) => Some(id.clone()),
            None => {
                let id = RandomRequestId.make();
                if let Some(id) = &id {
                    request.headers_mut().insert(REQUEST_ID, id.clone());
                }
                id
            }
        };
        RequestIdFuture { inner: self.inner.call(request), id }
    }
}

pin_project! {
    /// Copies the request id onto the answer.
    pub struct RequestIdFuture<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, ResBody, E> Future for RequestIdFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(id) = this.id.take() {
            response.headers_mut().entry(REQUEST_ID).or_insert(id);
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(values: &[&[u8]]) -> Option<Vec<u8>> {
        let mut request = Request::new(());
        for value in values {
            request.headers_mut().append(REQUEST_ID, HeaderValue::from_bytes(value).expect("header value"));
        }
        let request = drop_unfit_request_id(request);
        request.headers().get(REQUEST_ID).map(|value| value.as_bytes().to_vec())
    }

    #[test]
    fn only_short_visible_ascii_ids_are_kept() {
        let longest = "a".repeat(MAX_LEN);
        for good in [b"abc-123".as_slice(), b"0af7651916cd43dd8448eb211c80319c", longest.as_bytes(), b"a:b/c=d+e"] {
            assert_eq!(kept(&[good]).as_deref(), Some(good));
        }
        let too_long = "a".repeat(MAX_LEN + 1);
        for bad in [too_long.as_bytes(), b"a b", b"a\tb", b"\"quoted\"", b"back\\slash", "caf\u{e9}".as_bytes(), b""] {
            assert_eq!(kept(&[bad]), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(kept(&[b"one", b"two"]), None, "two ids are none");
        assert_eq!(kept(&[]), None);
    }

    #[test]
    fn made_ids_are_distinct_uuids() {
        let request = Request::new(());
        let mut make = RandomRequestId;
        let first = make.make_request_id(&request).expect("an id");
        let second = make.make_request_id(&request).expect("an id");
        let first = first.header_value().to_str().expect("ascii").to_owned();
        let parsed = uuid::Uuid::parse_str(&first).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4);
        assert_ne!(first, second.header_value().to_str().expect("ascii"));
    }
}
