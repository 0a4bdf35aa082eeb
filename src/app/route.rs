//! The one route lookup.
//!
//! Every request is looked up once, right after its path was made
//! canonical, in one table built at start from `[[routes]]`, the GraphQL
//! endpoint and the operational endpoints. A client route's [`Route`] goes
//! into request extensions as an `Arc`, carrying everything every later
//! layer and the door need (its auth, rate-limit and cache policies, the
//! passthrough's service, rewrite, methods, body limit and deadline); no
//! layer looks a prefix up again. Operational endpoints (`/healthz`,
//! `/readyz`, the metrics scrape, the cache admin path) are answered here,
//! outside the client-facing layers.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use futures_util::future::{BoxFuture, Either};
use http::Request;
use tower::{Layer, Service};

use super::doors::Operations;
use crate::auth::{self, ProtectedRoute};
use crate::cache::{CachePolicy, CachedRoute};
use crate::cors::{CorsPolicy, CorsRoute};
use crate::error::GatewayError;
use crate::operations::OperationEndpoint;
use crate::proxy;
use crate::ratelimit::{self, LimitedRoute};
use crate::routing::{PrefixMatch, PrefixTable};
use crate::telemetry::RequestLog;

/// A client-facing route, ready to serve.
#[derive(Debug)]
pub struct Route {
    /// The prefix (or path); the route's label in logs and metrics.
    pub name: Arc<str>,
    /// The service's name for logs; empty for the gateway's own doors.
    pub service: Arc<str>,
    /// Who answers.
    pub door: Door,
    /// What callers must prove.
    pub auth: auth::Policy,
    /// What requests are charged to.
    pub rate_limit: Option<Arc<ratelimit::Policy>>,
    /// How answers are cached.
    pub cache: Option<Arc<CachePolicy>>,
    /// Which browser origins may call.
    pub cors: Option<Arc<CorsPolicy>>,
}

/// The front door behind a route.
#[derive(Debug)]
pub enum Door {
    /// REST passthrough to a service.
    Rest(Arc<proxy::Route>),
    /// The GraphQL endpoint (and its playground's assets under it).
    Graphql,
    /// A REST endpoint running a stored GraphQL operation.
    Operation(Arc<OperationEndpoint>),
    /// No route matches: refused with 404 once the client-facing layers
    /// (the gateway-wide rate limit among them) have seen the request.
    NotFound,
}

impl ProtectedRoute for Route {
    fn auth_policy(&self) -> &auth::Policy {
        &self.auth
    }
}

impl LimitedRoute for Route {
    fn rate_limit(&self) -> Option<&Arc<ratelimit::Policy>> {
        self.rate_limit.as_ref()
    }
}

impl CorsRoute for Route {
    fn cors_policy(&self) -> Option<&Arc<CorsPolicy>> {
        self.cors.as_ref()
    }
}

impl CachedRoute for Route {
    fn cache_policy(&self) -> Option<&Arc<CachePolicy>> {
        self.cache.as_ref()
    }
}

/// An endpoint the gateway answers itself, outside the client layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `/healthz`: liveness.
    Health,
    /// `/readyz`: readiness.
    Ready,
    /// The Prometheus scrape on the main listener.
    Metrics,
    /// The cache's admin endpoint.
    CacheAdmin,
    /// The OpenAPI document.
    Openapi,
}

/// Every route, built once at start.
#[derive(Debug)]
pub struct RouteTable {
    /// Exact paths of the operational endpoints (a handful: a scan beats a
    /// hash here).
    operations: Vec<(Arc<str>, Operation)>,
    routes: PrefixTable<Arc<Route>>,
    /// Routes of stored operations, by path template: matched before the
    /// prefixes (a handful, each matched segment by segment).
    templated: Vec<Arc<Route>>,
    /// The route of requests no prefix matches.
    unrouted: Arc<Route>,
    /// The (empty) service name of operational endpoints, for logs.
    no_service: Arc<str>,
}

impl RouteTable {
    /// The table; `routes` are the client routes by prefix.
    pub fn new(
        operations: Vec<(Arc<str>, Operation)>,
        routes: impl IntoIterator<Item = Arc<Route>>,
        templated: Vec<Arc<Route>>,
        unrouted: Route,
    ) -> Self {
        let routes = PrefixTable::new(routes.into_iter().map(|route| (Arc::clone(&route.name), route)));
        Self { operations, routes, templated, unrouted: Arc::new(unrouted), no_service: Arc::from("") }
    }

    fn lookup(&self, method: &http::Method, path: &str) -> Routed<'_> {
        if let Some((name, operation)) = self.operations.iter().find(|(exact, _)| **exact == *path) {
            return Routed::Operation(name, *operation);
        }
        // The route answering the method, else the first of the path (whose
        // door answers 405).
        let mut matching = self.templated.iter().filter(|route| match &route.door {
            Door::Operation(endpoint) => endpoint.template().matches(path),
            _ => false,
        });
        if let Some(first) = matching.next() {
            let answering = std::iter::once(first)
                .chain(matching)
                .find(|route| matches!(&route.door, Door::Operation(endpoint) if endpoint.answers(method)));
            return Routed::Client(answering.unwrap_or(first));
        }
        match self.routes.lookup(path) {
            PrefixMatch::Found(route) => Routed::Client(route),
            PrefixMatch::AddSlash(prefix, _) => Routed::AddSlash(prefix),
            PrefixMatch::NotFound => Routed::Client(&self.unrouted),
        }
    }
}

enum Routed<'a> {
    Operation(&'a Arc<str>, Operation),
    Client(&'a Arc<Route>),
    AddSlash(&'a Arc<str>),
}

/// Looks every request up in the [`RouteTable`] (see the module docs).
#[derive(Debug, Clone)]
pub struct RouteLayer {
    table: Arc<RouteTable>,
    operations: Arc<Operations>,
}

impl RouteLayer {
    /// The layer over `table`; `operations` answers the operational routes.
    pub fn new(table: RouteTable, operations: Operations) -> Self {
        Self { table: Arc::new(table), operations: Arc::new(operations) }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = RouteService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RouteService { inner, table: Arc::clone(&self.table), operations: Arc::clone(&self.operations) }
    }
}

/// The service of [`RouteLayer`]; `S` is the client-facing stack.
#[derive(Debug, Clone)]
pub struct RouteService<S> {
    inner: S,
    table: Arc<RouteTable>,
    operations: Arc<Operations>,
}

impl<S> Service<Request<Body>> for RouteService<S>
where
    S: Service<Request<Body>, Response = Response, Error = GatewayError>,
{
    type Response = Response;
    type Error = GatewayError;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, GatewayError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let route = match self.table.lookup(request.method(), request.uri().path()) {
            Routed::Operation(name, operation) => {
                if let Some(log) = request.extensions().get::<Arc<RequestLog>>() {
                    log.set_route(name, &self.table.no_service);
                }
                return Either::Right(Box::pin(Arc::clone(&self.operations).answer(operation, request)));
            }
            Routed::AddSlash(prefix) => {
                let redirect = proxy::redirect_to_slash(prefix, request.uri().query());
                return Either::Right(Box::pin(std::future::ready(Ok(redirect))));
            }
            Routed::Client(route) => Arc::clone(route),
        };
        if !matches!(route.door, Door::NotFound) {
            if let Some(log) = request.extensions().get::<Arc<RequestLog>>() {
                log.set_route(&route.name, &route.service);
            }
        }
        request.extensions_mut().insert(route);
        Either::Left(self.inner.call(request))
    }
}
