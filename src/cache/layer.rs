//! The cache layer for REST passthrough routes.
//!
//! GET and HEAD requests on a route with a cache policy are answered from
//! the cache when a usable answer is stored; otherwise one request per key
//! goes on to the door, and its answer is buffered (up to
//! `cache.max_entry_size`) and stored when HTTP allows. Everything that is
//! not stored streams through unchanged.

use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::future::{BoxFuture, Either};
use futures_util::StreamExt as _;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use tower::{Layer, Service, ServiceExt as _};

use super::entry::{variant_key, Answer, CacheKey, Freshness, Origin, Partition, Stored};
use super::flight::{Filled, Role};
use super::rules::{self, Allowance, RequestMode};
use super::{Cache, CachePolicy, CacheScope, Counters};
use crate::identity::Identity;
use crate::request::REQUEST_ID;

/// `HIT`, `MISS`, `BYPASS` or `STALE` on every answer of a caching route.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Headers a 304 answer repeats from the stored answer (RFC 9110 15.4.5).
const NOT_MODIFIED_HEADERS: [HeaderName; 6] =
    [header::CACHE_CONTROL, header::CONTENT_LOCATION, header::DATE, header::ETAG, header::EXPIRES, header::VARY];

/// What the cache layer needs to know about the request's route.
pub trait CachedRoute: Send + Sync + 'static {
    /// The route's cache policy, if its answers are cached.
    fn cache_policy(&self) -> Option<&Arc<CachePolicy>>;
}

/// The cache layer (see the module docs). `R` is the route type the route
/// lookup leaves in request extensions (as `Arc<R>`), `E` the stack's error
/// type, which the layer passes through: an error from the door counts as a
/// failed fetch (stale-if-error applies).
pub struct CacheLayer<R, E> {
    cache: Arc<Cache>,
    _types: PhantomData<fn() -> (R, E)>,
}

impl<R, E> CacheLayer<R, E> {
    /// The layer over `cache`.
    pub fn new(cache: Arc<Cache>) -> Self {
        Self { cache, _types: PhantomData }
    }
}

impl<R, E> Clone for CacheLayer<R, E> {
    fn clone(&self) -> Self {
        Self::new(Arc::clone(&self.cache))
    }
}

impl<S, R, E> Layer<S> for CacheLayer<R, E> {
    type Service = Caching<S, R, E>;

    fn layer(&self, inner: S) -> Self::Service {
        Caching { inner, cache: Arc::clone(&self.cache), _types: PhantomData }
    }
}

/// The service of [`CacheLayer`].
pub struct Caching<S, R, E> {
    inner: S,
    cache: Arc<Cache>,
    _types: PhantomData<fn() -> (R, E)>,
}

impl<S: Clone, R, E> Clone for Caching<S, R, E> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), cache: Arc::clone(&self.cache), _types: PhantomData }
    }
}

impl<S, R, E> Service<Request<Body>> for Caching<S, R, E>
where
    S: Service<Request<Body>, Response = Response, Error = E> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: CachedRoute,
    E: Send + 'static,
{
    type Response = Response;
    type Error = E;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, E>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Some(policy) = request.extensions().get::<Arc<R>>().and_then(|route| route.cache_policy()).cloned() else {
            return Either::Left(self.inner.call(request));
        };
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        Either::Right(Box::pin(respond(Arc::clone(&self.cache), policy, request, inner)))
    }
}

/// Answers a request on a caching route.
async fn respond<S, E>(
    cache: Arc<Cache>,
    policy: Arc<CachePolicy>,
    request: Request<Body>,
    next: S,
) -> Result<Response, E>
where
    S: Service<Request<Body>, Response = Response, Error = E> + Clone + Send + 'static,
    S::Future: Send + 'static,
    E: Send + 'static,
{
    let identity = request.extensions().get::<Arc<Identity>>().cloned();
    let partition = match policy.settings.scope {
        CacheScope::Public => Partition::Public,
        CacheScope::Private => Partition::of(identity.as_deref()),
    };
    let origin = origin_of(&request, &policy, partition);

    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        let response = next.oneshot(request).await?;
        if !method.is_safe() && (response.status().is_success() || response.status().is_redirection()) {
            // RFC 9111 4.4: a successful unsafe request invalidates what is
            // stored for its URI, for this caller and for everyone.
            cache.invalidate_target(&origin).await;
        }
        return Ok(bypass(&cache, response));
    }
    let mode = rules::request_mode(request.headers(), policy.settings.honor_client_no_cache);
    // Without an identity, a cookie may still personalise the answer.
    let anonymous_with_cookie = policy.settings.scope == CacheScope::Private
        && identity.is_none()
        && request.headers().contains_key(header::COOKIE);
    if mode == RequestMode::Bypass || request.headers().contains_key(header::RANGE) || anonymous_with_cookie {
        let response = next.oneshot(request).await?;
        return Ok(bypass(&cache, response));
    }

    let base = origin.key();
    let now = SystemTime::now();
    let head = method == Method::HEAD;
    let mut fallback = None;
    if let Some((_, stored)) = cache.lookup(&base, request.headers()).await {
        if let Some(answer) = stored.answer() {
            let conditions = Conditions::of(request.headers());
            match (mode, answer.freshness(now)) {
                (RequestMode::UseStored, Freshness::Fresh) => {
                    Counters::count(&cache.counters.hits);
                    return Ok(serve(answer, "HIT", now, head, &conditions));
                }
                (RequestMode::UseStored, Freshness::StaleRevalidate) => {
                    Counters::count(&cache.counters.stale);
                    let response = serve(answer, "STALE", now, head, &conditions);
                    if stored.claim_refresh() {
                        spawn_refresh(Arc::clone(&cache), policy, &request, next, origin, Arc::clone(&stored));
                    }
                    return Ok(response);
                }
                (_, Freshness::Expired) => {}
                _ => fallback = Some(Arc::clone(&stored)),
            }
        }
    }
    if head {
        // A HEAD answer has no body to store; only GETs fill the cache.
        Counters::count(&cache.counters.misses);
        return Ok(mark(next.oneshot(request).await?, "MISS"));
    }
    fetch(&cache, &policy, Fetch { origin, base, mode, fallback, own_key: identity.is_some() }, request, next).await
}

/// What a fetch needs besides the request.
struct Fetch {
    origin: Origin,
    base: CacheKey,
    mode: RequestMode,
    /// A stored answer still usable if the backend fails.
    fallback: Option<Arc<Stored>>,
    /// Whether the key is one verified caller's own.
    own_key: bool,
}

/// Fetches a new answer (once per key for concurrent requests), stores it
/// when allowed, and answers.
async fn fetch<S, E>(
    cache: &Cache,
    policy: &CachePolicy,
    fetch: Fetch,
    mut request: Request<Body>,
    next: S,
) -> Result<Response, E>
where
    S: Service<Request<Body>, Response = Response, Error = E>,
{
    let Fetch { origin, base, mode, fallback, own_key } = fetch;
    let guard = loop {
        match cache.flights.join(&base) {
            Role::Leader(guard) => break Some(guard),
            Role::Follower(pending) => match pending.await {
                Ok(Some(filled)) if same_variant(&filled, &base, request.headers()) => match filled.stored.answer() {
                    Some(answer) => {
                        Counters::count(&cache.counters.hits);
                        let conditions = Conditions::of(request.headers());
                        return Ok(serve(answer, "HIT", SystemTime::now(), false, &conditions));
                    }
                    None => break None,
                },
                Ok(_) => break None,
                Err(_leader_gone) => continue,
            },
        }
    };
    Counters::count(&cache.counters.misses);
    let Some(guard) = guard else {
        // The leader's answer was not stored, so it is not handed on: it
        // may be one caller's, or too large to hold.
        return Ok(mark(next.oneshot(request).await?, "MISS"));
    };
    let now = SystemTime::now();
    if origin.partition.is_public() && mode == RequestMode::UseStored {
        if let Some(stored) = cache.shared_lookup(&base, now).await {
            if let Some(answer) = stored.answer() {
                let response = serve(answer, "HIT", now, false, &Conditions::of(request.headers()));
                guard.finish(Some(Filled { key: base, vary: Arc::from([]), stored: Arc::clone(&stored) }));
                return Ok(response);
            }
        }
    }

    // The cache fetches the whole answer and judges the client's
    // conditions itself, so the stored answer is never a 304.
    let conditions = Conditions::of(request.headers());
    request.headers_mut().remove(header::IF_NONE_MATCH);
    request.headers_mut().remove(header::IF_MODIFIED_SINCE);
    let request_headers = request.headers().clone();
    let outcome = next.oneshot(request).await;
    let now = SystemTime::now();

    // No answer at all (the door's error) is a failed fetch like a 5xx.
    if outcome.as_ref().map_or(true, |response| response.status().is_server_error()) {
        if let Some(answer) = fallback.as_deref().and_then(Stored::answer).filter(|answer| answer.usable_on_error(now))
        {
            guard.finish(None);
            Counters::count(&cache.counters.stale);
            return Ok(serve(answer, "STALE", now, false, &conditions));
        }
    }
    let response = match outcome {
        Ok(response) => response,
        Err(error) => {
            guard.finish(None);
            return Err(error);
        }
    };
    let settings = &policy.settings;
    let allowance = Allowance {
        ttl: settings.ttl,
        negative_ttl: settings.negative_ttl,
        stale_while_revalidate: settings.stale_while_revalidate,
        stale_if_error: settings.stale_if_error,
        own_key,
    };
    let lifetimes = match rules::storable(response.status(), response.headers(), &allowance, now) {
        Ok(lifetimes) => lifetimes,
        Err(reason) => {
            tracing::debug!(reason, path = origin.gateway_path(), "answer not cached");
            guard.finish(None);
            return Ok(mark(response, "MISS"));
        }
    };
    let declared_length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > cache.max_entry_size as u64) {
        guard.finish(None);
        return Ok(mark(response, "MISS"));
    }
    let vary = rules::vary_names(response.headers()).unwrap_or_default();
    let (mut parts, body) = response.into_parts();
    Ok(match buffer(body, cache.max_entry_size).await {
        Buffered::Complete(body) => {
            parts.headers.remove(REQUEST_ID);
            let answer = Answer { status: parts.status, headers: parts.headers, body, received_at: now, lifetimes };
            let filled = cache.store_answer(&origin, &base, vary, &request_headers, answer).await;
            let response = match filled.stored.answer() {
                Some(answer) => serve(answer, "MISS", now, false, &conditions),
                None => mark(Response::new(Body::empty()), "MISS"),
            };
            guard.finish(Some(filled));
            response
        }
        Buffered::Partial(chunks, rest) => {
            guard.finish(None);
            mark(Response::from_parts(parts, replay(chunks, Ok(rest))), "MISS")
        }
        Buffered::Failed(chunks, error) => {
            guard.finish(None);
            mark(Response::from_parts(parts, replay(chunks, Err(error))), "MISS")
        }
    })
}

/// Refreshes a stale answer in the background, once per entry at a time.
fn spawn_refresh<S, E>(
    cache: Arc<Cache>,
    policy: Arc<CachePolicy>,
    request: &Request<Body>,
    next: S,
    origin: Origin,
    stale: Arc<Stored>,
) where
    S: Service<Request<Body>, Response = Response, Error = E> + Send + 'static,
    S::Future: Send + 'static,
    E: Send + 'static,
{
    let mut refresh = Request::new(Body::empty());
    *refresh.method_mut() = Method::GET;
    *refresh.uri_mut() = request.uri().clone();
    *refresh.version_mut() = request.version();
    *refresh.headers_mut() = request.headers().clone();
    *refresh.extensions_mut() = request.extensions().clone();
    let own_key = request.extensions().get::<Arc<Identity>>().is_some();
    tokio::spawn(async move {
        let base = origin.key();
        let job = Fetch { origin, base, mode: RequestMode::UseStored, fallback: Some(Arc::clone(&stale)), own_key };
        // The answer went to the cache; its body (if streamed) is dropped,
        // and so is an error: the stale answer stays until it expires.
        drop(fetch(&cache, &policy, job, refresh, next).await);
        stale.release_refresh();
    });
}

/// The cache key's parts for a request on a caching route.
fn origin_of(request: &Request<Body>, policy: &CachePolicy, partition: Partition) -> Origin {
    let uri = request.uri();
    let path = uri.path();
    let query = uri.query().map(|query| format!("?{query}")).unwrap_or_default();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| uri.authority().map(http::uri::Authority::as_str))
        .unwrap_or_default()
        .to_ascii_lowercase();
    Origin {
        kind: 'r',
        service: Arc::clone(&policy.service),
        service_target: format!("{}{query}", policy.rewrite.apply(path)),
        gateway_target: format!("{path}{query}"),
        host,
        partition,
    }
}

impl Cache {
    /// Drops what is stored for a URI after an unsafe request: the caller's
    /// entry and the public one.
    async fn invalidate_target(&self, origin: &Origin) {
        let mut public = origin.clone();
        public.partition = Partition::Public;
        for key in [origin.key(), public.key()] {
            self.store.invalidate(&key).await;
        }
        if let Some(shared) = &self.shared {
            shared.delete(&public.key());
        }
    }
}

impl Answer {
    /// Whether the answer may stand in for a failed fetch now: fresh, or
    /// within `stale_if_error`.
    fn usable_on_error(&self, now: SystemTime) -> bool {
        let age = self.age(now);
        age < self.lifetimes.fresh_for || age < self.lifetimes.fresh_for + self.lifetimes.stale_if_error
    }
}

/// Whether a leader's answer is the variant this request would get.
fn same_variant(filled: &Filled, base: &CacheKey, request: &HeaderMap) -> bool {
    if filled.vary.is_empty() {
        return filled.key == *base;
    }
    variant_key(base, &filled.vary, request) == filled.key
}

fn bypass(cache: &Cache, response: Response) -> Response {
    Counters::count(&cache.counters.bypasses);
    mark(response, "BYPASS")
}

fn mark(mut response: Response, label: &'static str) -> Response {
    response.headers_mut().insert(X_CACHE, HeaderValue::from_static(label));
    response
}

/// A stored answer for one client: `Age` and `X-Cache` added, a 304 when
/// the client's conditions say it has the answer already.
fn serve(answer: &Answer, label: &'static str, now: SystemTime, head: bool, conditions: &Conditions) -> Response {
    let mut response = if conditions.not_modified(answer) {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        for name in NOT_MODIFIED_HEADERS {
            for value in answer.headers.get_all(&name) {
                response.headers_mut().append(name.clone(), value.clone());
            }
        }
        // RFC 9110 15.4.5: without an ETag, Last-Modified is what the
        // client's cache revalidates by next time.
        if !answer.headers.contains_key(header::ETAG) {
            if let Some(last_modified) = answer.headers.get(header::LAST_MODIFIED) {
                response.headers_mut().insert(header::LAST_MODIFIED, last_modified.clone());
            }
        }
        response
    } else {
        let body = if head { Body::empty() } else { Body::from(answer.body.clone()) };
        let mut response = Response::new(body);
        *response.status_mut() = answer.status;
        *response.headers_mut() = answer.headers.clone();
        response
    };
    if label != "MISS" {
        response.headers_mut().insert(header::AGE, HeaderValue::from(answer.age(now).as_secs()));
    }
    mark(response, label)
}

/// A GET or HEAD's conditional headers, judged by the cache against a
/// stored answer (RFC 9110 13.1.2, 13.1.3, 13.2.2; RFC 9111 4.3.2).
#[derive(Debug, Default)]
struct Conditions {
    if_none_match: Option<HeaderValue>,
    /// A valid HTTP-date; an invalid one is ignored, as 13.1.3 asks.
    if_modified_since: Option<SystemTime>,
}

impl Conditions {
    fn of(headers: &HeaderMap) -> Self {
        let if_none_match = headers.get(header::IF_NONE_MATCH).cloned();
        // If-None-Match takes precedence: If-Modified-Since is then ignored.
        let if_modified_since = match if_none_match {
            Some(_) => None,
            None => headers.get(header::IF_MODIFIED_SINCE).and_then(http_date),
        };
        Self { if_none_match, if_modified_since }
    }

    /// Whether the client's copy is the stored answer: a 2xx answer whose
    /// `ETag` the client names, or (without `If-None-Match`) not modified
    /// since the client's date, by `Last-Modified`, else `Date`, else when
    /// it was received.
    fn not_modified(&self, answer: &Answer) -> bool {
        if !answer.status.is_success() {
            return false;
        }
        if let Some(wanted) = &self.if_none_match {
            return etag_matches(answer.headers.get(header::ETAG), wanted);
        }
        let Some(since) = self.if_modified_since else { return false };
        let modified = answer
            .headers
            .get(header::LAST_MODIFIED)
            .or_else(|| answer.headers.get(header::DATE))
            .and_then(http_date)
            .unwrap_or(answer.received_at);
        modified <= since
    }
}

fn http_date(value: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

/// Weak comparison of `If-None-Match` with an `ETag` (RFC 9110 13.1.2).
fn etag_matches(etag: Option<&HeaderValue>, wanted: &HeaderValue) -> bool {
    let Ok(wanted) = wanted.to_str() else { return false };
    if wanted.trim() == "*" {
        return true;
    }
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let Some(Ok(etag)) = etag.map(|etag| etag.to_str().map(opaque)) else { return false };
    wanted.split(',').any(|candidate| opaque(candidate) == etag)
}

/// A body read into memory up to a limit.
enum Buffered {
    Complete(Bytes),
    /// Over the limit: what was read, and the rest still streaming.
    Partial(Vec<Bytes>, Body),
    /// The body failed after these chunks.
    Failed(Vec<Bytes>, axum::Error),
}

async fn buffer(mut body: Body, limit: usize) -> Buffered {
    let mut chunks = Vec::new();
    let mut total = 0;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                // Trailers are dropped: backends of a cacheable GET send none.
                if let Ok(data) = frame.into_data() {
                    total += data.len();
                    chunks.push(data);
                    if total > limit {
                        return Buffered::Partial(chunks, body);
                    }
                }
            }
            Some(Err(error)) => return Buffered::Failed(chunks, error),
        }
    }
    Buffered::Complete(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => {
            let mut joined = BytesMut::with_capacity(total);
            for chunk in &chunks {
                joined.extend_from_slice(chunk);
            }
            joined.freeze()
        }
    })
}

/// The chunks already read, then the rest of the stream or its error.
fn replay(chunks: Vec<Bytes>, rest: Result<Body, axum::Error>) -> Body {
    let head = futures_util::stream::iter(chunks.into_iter().map(Ok::<Bytes, axum::Error>));
    match rest {
        Ok(rest) => Body::from_stream(head.chain(rest.into_data_stream())),
        Err(error) => Body::from_stream(head.chain(futures_util::stream::once(async move { Err(error) }))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_compare_weakly() {
        let tag = HeaderValue::from_static("\"v1\"");
        let weak = HeaderValue::from_static("W/\"v1\"");
        assert!(etag_matches(Some(&tag), &weak));
        assert!(etag_matches(Some(&tag), &HeaderValue::from_static("\"v0\", \"v1\"")));
        assert!(etag_matches(Some(&tag), &HeaderValue::from_static("*")));
        assert!(etag_matches(None, &HeaderValue::from_static("*")), "`*`: any stored answer");
        assert!(!etag_matches(Some(&tag), &HeaderValue::from_static("\"v2\"")));
        assert!(!etag_matches(None, &weak));
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_replayed_whole() {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            vec![Ok(Bytes::from_static(b"abc")), Ok(Bytes::from_static(b"def")), Ok(Bytes::from_static(b"gh"))];
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let Buffered::Partial(read, rest) = buffer(body, 4).await else { panic!("over the limit") };
        let replayed = replay(read, Ok(rest)).collect().await.expect("body").to_bytes();
        assert_eq!(replayed, Bytes::from_static(b"abcdefgh"));

        let Buffered::Complete(whole) = buffer(Body::from("small"), 5).await else { panic!("fits") };
        assert_eq!(whole, Bytes::from_static(b"small"));
    }
}
