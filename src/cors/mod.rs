//! CORS for browser front ends, per route and on the GraphQL endpoint.
//!
//! Each named policy of `[cors.policies]` becomes one tower-http
//! [`tower_http::cors::CorsLayer`] at start; a route carries its policy (as
//! it carries its auth and rate-limit policies), and [`CorsLayer`] sits
//! right after the route lookup, before authentication and the rate limit,
//! so a preflight is answered by the gateway without a backend call, a
//! credential check or a charge to anyone's budget.
//!
//! tower-http's layer expresses every rule but one: it adds some CORS
//! headers (`Access-Control-Allow-Credentials`, `-Expose-Headers`) whatever
//! the origin. So the origin is decided here first: a request from an
//! origin the policy does not list gets no CORS headers at all, and its
//! preflight is answered without them (the browser then refuses the call).
//! On a route with a policy the backend's own `Access-Control-*` headers
//! never reach the client: the gateway's policy is the only one.
//!
//! Refusals of inner layers (401, 429, ...) must carry CORS headers too, or
//! a front end cannot read them; as they are errors until the error edge
//! renders them, a cross-origin request's errors are rendered here through
//! the renderer the composition root hands in (the error edge's own), so
//! the answer is the same, with CORS headers added.
//!
//! tower-http's layer is chosen per request: a cross-origin request from an
//! allowed origin wraps the rest of the stack in its route's prebuilt layer
//! (a clone of its header values); same-origin and non-browser requests, and
//! routes without a policy, skip all of it.

mod config;

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderName, HeaderValue, Method, Request};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_http::cors::{self as tower_cors, AllowOrigin};

pub use config::{CorsConfig, CorsPolicyConfig};
use config::{OriginPattern, ALWAYS_EXPOSED};

use crate::request::REQUEST_ID;

/// One policy, ready to serve.
pub struct CorsPolicy {
    /// `None`: any origin (never with credentials).
    origins: Option<Vec<OriginPattern>>,
    layer: tower_cors::CorsLayer,
}

impl std::fmt::Debug for CorsPolicy {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("CorsPolicy").field("origins", &self.origins).finish_non_exhaustive()
    }
}

impl CorsPolicy {
    /// The policy for a validated configuration.
    pub fn new(config: &CorsPolicyConfig) -> Self {
        let any = config.allowed_origins.iter().any(|origin| origin == "*");
        let origins = (!any)
            .then(|| config.allowed_origins.iter().filter_map(|origin| OriginPattern::parse(origin).ok()).collect());
        let methods: Vec<Method> =
            config.allowed_methods.iter().filter_map(|method| Method::from_bytes(method.as_bytes()).ok()).collect();
        let names = |names: &[String]| -> Vec<HeaderName> {
            names.iter().filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok()).collect()
        };
        let mut exposed = names(&config.exposed_headers);
        for name in ALWAYS_EXPOSED {
            let name = HeaderName::from_static(name);
            if !exposed.contains(&name) {
                exposed.push(name);
            }
        }
        // The origin was checked against the list before the layer runs,
        // so the layer echoes it.
        let allow_origin = if any { AllowOrigin::any() } else { AllowOrigin::mirror_request() };
        let layer = tower_cors::CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods(methods)
            .allow_headers(names(&config.allowed_headers))
            .expose_headers(exposed)
            .allow_credentials(config.allow_credentials)
            .max_age(config.max_age);
        Self { origins, layer }
    }

    /// Every policy of a validated `[cors]` section, by name.
    pub fn all(config: &CorsConfig) -> BTreeMap<String, Arc<Self>> {
        config.policies.iter().map(|(name, policy)| (name.clone(), Arc::new(Self::new(policy)))).collect()
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        match &self.origins {
            None => true,
            Some(patterns) => patterns.iter().any(|pattern| pattern.matches(origin.as_bytes())),
        }
    }
}

/// What the CORS layer needs to know about the request's route.
pub trait CorsRoute: Send + Sync + 'static {
    /// The route's policy; `None` leaves CORS to the backend.
    fn cors_policy(&self) -> Option<&Arc<CorsPolicy>>;
}

/// Renders an inner layer's error as the error edge would, with the
/// request's id.
pub type RenderError<E> = fn(E, Option<&HeaderValue>) -> Response;

/// The CORS layer (see the module docs). `R` is the route type in request
/// extensions (as `Arc<R>`), `E` the stack's error type.
pub struct CorsLayer<R, E> {
    render: RenderError<E>,
    route: PhantomData<fn() -> R>,
}

impl<R, E> CorsLayer<R, E> {
    /// The layer; `render` turns a cross-origin request's errors into
    /// answers so they get CORS headers.
    pub fn new(render: RenderError<E>) -> Self {
        Self { render, route: PhantomData }
    }
}

impl<R, E> Clone for CorsLayer<R, E> {
    fn clone(&self) -> Self {
        Self { render: self.render, route: PhantomData }
    }
}

impl<S, R, E> Layer<S> for CorsLayer<R, E> {
    type Service = Cors<S, R, E>;

    fn layer(&self, inner: S) -> Self::Service {
        Cors { inner, render: self.render, route: PhantomData }
    }
}

/// The service of [`CorsLayer`].
pub struct Cors<S, R, E> {
    inner: S,
    render: RenderError<E>,
    route: PhantomData<fn() -> R>,
}

impl<S: Clone, R, E> Clone for Cors<S, R, E> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), render: self.render, route: PhantomData }
    }
}

impl<S: std::fmt::Debug, R, E> std::fmt::Debug for Cors<S, R, E> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Cors").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S, R, E> Service<Request<Body>> for Cors<S, R, E>
where
    S: Service<Request<Body>, Response = Response, Error = E> + Clone,
    R: CorsRoute,
{
    type Response = Response;
    type Error = E;
    type Future = CorsFuture<S::Future, E>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let policy = request.extensions().get::<Arc<R>>().and_then(|route| route.cors_policy().cloned());
        let (Some(policy), Some(origin)) = (policy, request.headers().get(header::ORIGIN)) else {
            return CorsFuture::from(State::Direct { inner: self.inner.call(request) });
        };
        let preflight = request.method() == Method::OPTIONS
            && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !policy.allows(origin) {
            if preflight {
                let mut answer = Response::new(Body::empty());
                answer.headers_mut().insert(header::VARY, HeaderValue::from_static("origin"));
                return CorsFuture::from(State::Refused { answer: Some(answer) });
            }
            return CorsFuture::from(State::Stripped { inner: self.inner.call(request) });
        }
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        let mut service = policy.layer.layer(RenderErrors { inner, render: self.render });
        CorsFuture::from(State::Allowed { inner: service.call(request) })
    }
}

/// Turns errors into answers, so tower-http's CORS layer sees every answer.
struct RenderErrors<S, E> {
    inner: S,
    render: RenderError<E>,
}

impl<S, E> Service<Request<Body>> for RenderErrors<S, E>
where
    S: Service<Request<Body>, Response = Response, Error = E>,
{
    type Response = Response;
    type Error = E;
    type Future = Rendered<S::Future, E>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let request_id = request.headers().get(REQUEST_ID).cloned();
        Rendered { inner: self.inner.call(request), request_id, render: self.render }
    }
}

pin_project! {
    /// An inner answer with the backend's CORS headers removed and errors
    /// rendered.
    pub struct Rendered<F, E> {
        #[pin]
        inner: F,
        request_id: Option<HeaderValue>,
        render: RenderError<E>,
    }
}

impl<F, E> Future for Rendered<F, E>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut answer = match std::task::ready!(this.inner.poll(cx)) {
            Ok(answer) => answer,
            Err(error) => (this.render)(error, this.request_id.as_ref()),
        };
        remove_cors_headers(&mut answer);
        Poll::Ready(Ok(answer))
    }
}

/// The backend's own CORS answer headers, which a gateway policy replaces.
fn remove_cors_headers(answer: &mut Response) {
    for name in [
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        header::ACCESS_CONTROL_ALLOW_METHODS,
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        header::ACCESS_CONTROL_MAX_AGE,
    ] {
        answer.headers_mut().remove(name);
    }
}

pin_project! {
    /// The future of [`Cors`].
    pub struct CorsFuture<F, E> {
        #[pin]
        state: State<F, E>,
    }
}

pin_project! {
    #[project = StateProjection]
    enum State<F, E> {
        // No policy or no `Origin`: untouched.
        Direct { #[pin] inner: F },
        // A disallowed origin: no CORS headers, not even the backend's.
        Stripped { #[pin] inner: F },
        // An allowed origin, through tower-http's layer.
        Allowed { #[pin] inner: tower_cors::ResponseFuture<Rendered<F, E>> },
        // A disallowed origin's preflight.
        Refused { answer: Option<Response> },
    }
}

impl<F, E> Future for CorsFuture<F, E>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProjection::Direct { inner } => inner.poll(cx),
            StateProjection::Stripped { inner } => {
                let mut answer = std::task::ready!(inner.poll(cx))?;
                remove_cors_headers(&mut answer);
                Poll::Ready(Ok(answer))
            }
            StateProjection::Allowed { inner } => inner.poll(cx),
            StateProjection::Refused { answer } => match answer.take() {
                Some(answer) => Poll::Ready(Ok(answer)),
                None => Poll::Pending,
            },
        }
    }
}

impl<F, E> From<State<F, E>> for CorsFuture<F, E> {
    fn from(state: State<F, E>) -> Self {
        Self { state }
    }
}
