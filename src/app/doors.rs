//! What answers a routed request: the front doors behind the client-facing
//! layers, and the operational endpoints in front of them.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use http::{Method, Request, StatusCode};
use serde_json::json;
use tower::Service;

use super::route::{Door, Operation, Route};
use crate::cache::Cache;
use crate::error::GatewayError;
use crate::graphql::{self, GraphqlEndpoint};
use crate::proxy;
use crate::routing::RouteError;
use crate::server::Draining;
use crate::telemetry::{self, Telemetry};
use crate::upstream::Upstreams;

const READ_METHODS: [Method; 2] = [Method::GET, Method::HEAD];
const GRAPHQL_METHODS: [Method; 3] = [Method::GET, Method::HEAD, Method::POST];

/// The innermost service: the door of the request's route.
#[derive(Debug, Clone)]
pub struct Doors {
    graphql: Option<Arc<GraphqlEndpoint>>,
    /// The GraphQL endpoint's path, under which its playground's assets are.
    graphql_path: Arc<str>,
    cache: Arc<Cache>,
}

impl Doors {
    /// The doors; `graphql` is the endpoint at `graphql_path`, if enabled.
    pub fn new(graphql: Option<Arc<GraphqlEndpoint>>, graphql_path: &str, cache: Arc<Cache>) -> Self {
        Self { graphql, graphql_path: Arc::from(graphql_path), cache }
    }
}

impl Service<Request<Body>> for Doors {
    type Response = Response;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<Response, GatewayError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let Some(route) = request.extensions().get::<Arc<Route>>().cloned() else {
            return std::future::ready(Err(RouteError::NotFound.into())).boxed();
        };
        match (&route.door, &self.graphql) {
            (Door::Rest(rest), _) => Box::pin(proxy::forward::<GatewayError>(Arc::clone(rest), request)),
            (Door::Graphql, Some(endpoint)) => {
                if !GRAPHQL_METHODS.contains(request.method()) {
                    let refusal = RouteError::MethodNotAllowed { allowed: &GRAPHQL_METHODS };
                    return std::future::ready(Err(refusal.into())).boxed();
                }
                let endpoint = Arc::clone(endpoint);
                if request.uri().path() == &*self.graphql_path {
                    // The door caches its `@rest` GET calls in the cache.
                    request.extensions_mut().insert(Arc::clone(&self.cache));
                    return graphql::http::handle(State(endpoint), request).map(Ok).boxed();
                }
                let asset = request
                    .uri()
                    .path()
                    .strip_prefix(&*self.graphql_path)
                    .and_then(|rest| rest.strip_prefix("/assets/"))
                    .filter(|name| !name.is_empty() && !name.contains('/'))
                    .map(str::to_owned);
                match asset {
                    Some(name) => graphql::http::asset(State(endpoint), Path(name)).map(Ok).boxed(),
                    None => std::future::ready(Err(RouteError::NotFound.into())).boxed(),
                }
            }
            (Door::Operation(operation), Some(endpoint)) => {
                let (operation, endpoint) = (Arc::clone(operation), Arc::clone(endpoint));
                // Its `@rest` GET calls go through the cache, as the GraphQL door's do.
                request.extensions_mut().insert(Arc::clone(&self.cache));
                async move { Ok(operation.answer(&endpoint, request).await?) }.boxed()
            }
            (Door::Graphql | Door::Operation(_) | Door::NotFound, _) => {
                std::future::ready(Err(RouteError::NotFound.into())).boxed()
            }
        }
    }
}

/// The operational endpoints.
#[derive(Debug)]
pub struct Operations {
    upstreams: Upstreams,
    telemetry: Telemetry,
    cache: Arc<Cache>,
    config_hash: Option<Arc<str>>,
    /// The OpenAPI document, when it is served.
    openapi: Option<bytes::Bytes>,
    /// Whether a service without a healthy endpoint makes `/readyz` 503.
    require_healthy_endpoints: bool,
    /// Set when shutdown starts: `/readyz` is 503 from then on.
    draining: Draining,
}

impl Operations {
    /// The endpoints, reporting on `upstreams` and `telemetry`.
    pub fn new(upstreams: Upstreams, telemetry: Telemetry, cache: Arc<Cache>) -> Self {
        Self {
            upstreams,
            telemetry,
            cache,
            config_hash: None,
            openapi: None,
            require_healthy_endpoints: false,
            draining: Draining::default(),
        }
    }

    /// The endpoints, with `/readyz` following `[server.readiness]` and
    /// the server's `draining` flag.
    pub fn with_readiness(mut self, require_healthy_endpoints: bool, draining: Draining) -> Self {
        self.require_healthy_endpoints = require_healthy_endpoints;
        self.draining = draining;
        self
    }

    /// The endpoints, serving `document` as the OpenAPI document.
    pub fn with_openapi(mut self, document: Option<bytes::Bytes>) -> Self {
        self.openapi = document;
        self
    }

    /// The endpoints, with `/readyz` naming the served configuration.
    pub fn with_config_hash(mut self, hash: Option<Arc<str>>) -> Self {
        self.config_hash = hash;
        self
    }

    /// Answers one operational request.
    pub async fn answer(
        self: Arc<Self>,
        operation: Operation,
        request: Request<Body>,
    ) -> Result<Response, GatewayError> {
        if operation != Operation::CacheAdmin && !READ_METHODS.contains(request.method()) {
            return Err(RouteError::MethodNotAllowed { allowed: &READ_METHODS }.into());
        }
        match operation {
            // Liveness: the process answers.
            Operation::Health => Ok(Json(json!({ "status": "ok" })).into_response()),
            Operation::Ready => Ok(self.readiness()),
            Operation::Metrics => Ok(telemetry::scrape(State(self.telemetry.clone()), request).await),
            Operation::CacheAdmin => Ok(self.cache.admin(request).await?),
            Operation::Openapi => match &self.openapi {
                Some(document) => Ok((
                    [(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"))],
                    document.clone(),
                )
                    .into_response()),
                None => Err(RouteError::NotFound.into()),
            },
        }
    }

    /// Readiness, with the reason when not ready: the gateway is not
    /// draining and, when required, every service has at least one replica
    /// able to take traffic. (The listener is bound only once the
    /// configuration is loaded and validated, so a gateway that answers has
    /// one.) Services without a healthy endpoint are named either way.
    fn readiness(&self) -> Response {
        let unready = self.upstreams.unready_services();
        let config = self.config_hash.as_deref();
        if self.draining.is_draining() {
            let body = json!({
                "status": "draining",
                "reason": "draining: shutting down, finishing in-flight requests",
                "config": config,
            });
            return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        }
        if unready.is_empty() {
            return Json(json!({ "status": "ready", "config": config })).into_response();
        }
        let reason = format!("no healthy endpoint: {}", unready.join(", "));
        if self.require_healthy_endpoints {
            let body = json!({ "status": "unready", "reason": reason, "services": unready, "config": config });
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        } else {
            // Reported, not refused: `require_healthy_endpoints` is off.
            let body = json!({ "status": "ready", "degraded": reason, "services": unready, "config": config });
            Json(body).into_response()
        }
    }
}
