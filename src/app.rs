//! The composition root: the state built from config at start and the one
//! function that stacks every layer around the front doors.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::handler::Handler as _;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{Request, StatusCode};
use http_body::Body as _;
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutBody;

use crate::auth::{self, AuthSetupError, Authenticator, Policy};
use crate::cache::{self, Cache, CachePolicy, CacheSetupError};
use crate::config::Config;
use crate::graphql::{self, GraphqlEndpoint, GraphqlSetupError};
use crate::proxy::{self, Proxy};
use crate::ratelimit::{self, RateLimitSetupError, RateLimiter};
use crate::server::protocol_guard;
use crate::telemetry::metrics::CacheSnapshot;
use crate::telemetry::{self, AccessLogLayer, Telemetry};
use crate::upstream::Upstreams;

/// Shared state, cheap to clone, built once from the configuration.
#[derive(Clone, Debug)]
pub struct AppState {
    upstreams: Upstreams,
    proxy: Arc<Proxy>,
    graphql: Option<Arc<GraphqlEndpoint>>,
    auth: Arc<Authenticator>,
    rate_limiter: Arc<RateLimiter>,
    telemetry: Telemetry,
    cache: Arc<Cache>,
}

impl AppState {
    /// Builds the state for a validated configuration. `telemetry` is the
    /// one the upstreams were built with, so every metric lands in one
    /// registry.
    pub fn new(config: &Config, upstreams: Upstreams, telemetry: Telemetry) -> Result<Self, StateError> {
        let proxy = Arc::new(Proxy::new(&config.routes, &upstreams, config.server.request_body_limit));
        let route_policies = config
            .routes
            .iter()
            .map(|route| (Arc::from(route.prefix.as_str()), Policy { mode: route.auth, scopes: route.scopes.clone() }));
        let graphql_policy = config.graphql.enabled.then(|| {
            (Arc::from(config.graphql.path.as_str()), Policy { mode: config.graphql.auth, scopes: Vec::new() })
        });
        let auth = Arc::new(Authenticator::new(&config.auth, &config.base_dir, route_policies.chain(graphql_policy))?);
        let graphql = match (&config.schema, config.graphql.enabled) {
            (Some(model), true) => {
                Some(Arc::new(config.graphql.endpoint(&config.base_dir, Arc::clone(model), &upstreams)?))
            }
            _ => None,
        };
        let limited_routes = config
            .routes
            .iter()
            .filter_map(|route| route.rate_limit.clone().map(|policy| (Arc::from(route.prefix.as_str()), policy)));
        let limited_graphql = config
            .graphql
            .rate_limit
            .clone()
            .filter(|_| config.graphql.enabled)
            .map(|policy| (Arc::from(config.graphql.path.as_str()), policy));
        let rate_limiter = Arc::new(RateLimiter::new(
            &config.rate_limiting,
            &config.rate_limits,
            limited_routes.chain(limited_graphql),
        )?);
        let cached_routes = config.routes.iter().filter_map(|route| {
            let settings = route.cache.clone()?;
            let policy = CachePolicy {
                route: Arc::from(route.prefix.as_str()),
                service: Arc::from(route.service.as_str()),
                rewrite: route.path_rewrite(),
                settings,
            };
            Some((Arc::from(route.prefix.as_str()), policy))
        });
        let cache = Arc::new(Cache::new(&config.cache, cached_routes)?);
        report_cache(&telemetry, &cache);
        for circuit in rate_limiter.redis_circuit().into_iter().chain(cache.redis_circuit()) {
            telemetry.metrics().watch_redis(Arc::clone(circuit));
        }
        Ok(Self { upstreams, proxy, graphql, auth, rate_limiter, telemetry, cache })
    }

    /// The authenticator, whose background work the server keeps running.
    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.auth
    }

    /// The rate limiter, whose housekeeping the server keeps running.
    pub fn rate_limiter(&self) -> &Arc<RateLimiter> {
        &self.rate_limiter
    }

    /// The response cache, whose [`Cache::stats`] metrics report.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }
}

/// Metrics read the response cache's counters at every scrape.
fn report_cache(telemetry: &Telemetry, cache: &Arc<Cache>) {
    let cache = Arc::clone(cache);
    telemetry.metrics().watch_cache("responses", move || {
        let stats = cache.stats();
        CacheSnapshot {
            hits: stats.hits,
            misses: stats.misses,
            evictions: stats.evictions,
            bytes: stats.bytes,
            entries: stats.entries,
        }
    });
}

/// Why the state could not be built from a validated configuration.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The GraphQL endpoint could not be set up.
    #[error(transparent)]
    Graphql(#[from] GraphqlSetupError),
    /// Authentication could not be set up.
    #[error(transparent)]
    Auth(#[from] AuthSetupError),
    /// Rate limiting could not be set up.
    #[error(transparent)]
    RateLimit(#[from] RateLimitSetupError),
    /// The response cache could not be set up.
    #[error(transparent)]
    Cache(#[from] CacheSetupError),
}

impl FromRef<AppState> for Arc<Proxy> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.proxy)
    }
}

impl FromRef<AppState> for Telemetry {
    fn from_ref(state: &AppState) -> Self {
        state.telemetry.clone()
    }
}

impl FromRef<AppState> for Upstreams {
    fn from_ref(state: &AppState) -> Self {
        state.upstreams.clone()
    }
}

/// The gateway's whole HTTP stack. Outside them all, with HTTPS and HSTS
/// configured, every answer (refusals included) gets
/// `Strict-Transport-Security`. Layers are listed outermost first:
///
/// 1. request id: set before anything else so every log line and every
///    error answer carries it, and copied onto the response; a client's id
///    is kept only when short and plain, else replaced;
/// 2. access log, request metrics and the request's trace span: outside
///    everything that can refuse a request, so refusals are logged, counted
///    and traced too;
/// 3. body read timeout: a client that stalls mid-body is cut off;
/// 4. protocol guard: requests without a valid host never reach a handler;
/// 5. canonical path: every later layer and door decides on the same,
///    normalised path;
/// 6. authentication: forged identity headers are removed and credentials
///    verified against the path's policy before anything reaches a door;
///    later layers (rate limits, caches) key on the identity it records;
/// 7. rate limit: after authentication, so the budget belongs to the
///    verified caller (a client cannot escape it by changing its address),
///    and before anything that spends backend capacity;
/// 8. response cache: after authentication, because private answers are
///    keyed by the verified caller it records; after the rate limit, so a
///    cached answer still counts against the caller's budget; innermost, so
///    a hit skips only the door and the backend;
/// 9. request deadline, around the REST door only (GraphQL operations have
///    their own): inside the cache, so a cached answer is never cut short,
///    and around every retry of the backend call.
pub fn app(state: AppState, config: &Config) -> Router {
    let body_read_timeout = config.server.body_read_timeout;
    let authenticator = Arc::clone(&state.auth);
    let rate_limiting =
        ratelimit::LimitState::new(Arc::clone(&state.rate_limiter), Arc::clone(state.telemetry.metrics()));
    let response_cache = Arc::clone(&state.cache);
    let mut router = Router::new();
    if let Some(endpoint) = &state.graphql {
        let path = &config.graphql.path;
        router = router.merge(
            Router::new()
                .route(path, get(graphql::http::handle).post(graphql::http::handle))
                .route(&format!("{path}/assets/{{name}}"), get(graphql::http::asset))
                .with_state(Arc::clone(endpoint)),
        );
    }
    // With an admin listener configured, the scrape path is served there only.
    let metrics = &config.telemetry.metrics;
    if metrics.enabled && metrics.listen.is_none() {
        router = router.route(&metrics.path, get(telemetry::scrape));
    }
    let access_log = AccessLogLayer::new(state.telemetry.clone());
    let rest_door = ServiceBuilder::new()
        .layer(proxy::DeadlineLayer::new(config.server.request_timeout, &config.routes))
        .service(proxy::handle.with_state(Arc::clone(&state.proxy)));
    router
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback_service(rest_door)
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .option_layer(config.server.hsts_layer())
                .map_request(telemetry::drop_unfit_request_id)
                .layer(SetRequestIdLayer::x_request_id(telemetry::RandomRequestId))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(access_log)
                .map_request(move |request: Request<Body>| {
                    // A body that has ended already stays recognisable as
                    // empty (the timeout wrapper would hide it).
                    request.map(|body| {
                        if body.is_end_stream() {
                            body
                        } else {
                            Body::new(TimeoutBody::new(body_read_timeout, body))
                        }
                    })
                })
                .layer(axum::middleware::from_fn(protocol_guard))
                .layer(axum::middleware::from_fn(crate::routing::canonical_path))
                .layer(axum::middleware::from_fn_with_state(authenticator, auth::authenticate))
                .layer(axum::middleware::from_fn_with_state(rate_limiting, ratelimit::limit))
                .layer(axum::middleware::from_fn_with_state(response_cache, cache::respond)),
        )
}

/// Liveness: the process answers.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: every service has at least one replica able to take traffic.
async fn readyz(State(upstreams): State<Upstreams>) -> Response {
    let unready = upstreams.unready_services();
    if unready.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unready", "services": unready }))).into_response()
    }
}
