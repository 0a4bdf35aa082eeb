//! The composition root: the state built from config at start and the one
//! function that stacks every layer around the front doors.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{Request, StatusCode};
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutBody;

use crate::auth::{self, AuthSetupError, Authenticator, Policy};
use crate::config::Config;
use crate::graphql::{self, GraphqlEndpoint, GraphqlSetupError};
use crate::proxy::{self, Proxy};
use crate::server::protocol_guard;
use crate::telemetry::AccessLogLayer;
use crate::upstream::Upstreams;

/// Shared state, cheap to clone, built once from the configuration.
#[derive(Clone, Debug)]
pub struct AppState {
    upstreams: Upstreams,
    proxy: Arc<Proxy>,
    graphql: Option<Arc<GraphqlEndpoint>>,
    auth: Arc<Authenticator>,
}

impl AppState {
    /// Builds the state for a validated configuration.
    pub fn new(config: &Config, upstreams: Upstreams) -> Result<Self, StateError> {
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
        Ok(Self { upstreams, proxy, graphql, auth })
    }

    /// The authenticator, whose background work the server keeps running.
    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.auth
    }
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
}

impl FromRef<AppState> for Arc<Proxy> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.proxy)
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
///    error answer carries it, and copied onto the response;
/// 2. access log: outside everything that can refuse a request, so refusals
///    are logged too;
/// 3. body read timeout: a client that stalls mid-body is cut off;
/// 4. protocol guard: requests without a valid host never reach a handler;
/// 5. canonical path: every later layer and door decides on the same,
///    normalised path;
/// 6. authentication: forged identity headers are removed and credentials
///    verified against the path's policy before anything reaches a door;
///    later layers (rate limits, caches) key on the identity it records.
pub fn app(state: AppState, config: &Config) -> Router {
    let body_read_timeout = config.server.body_read_timeout;
    let authenticator = Arc::clone(&state.auth);
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
    router
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(proxy::handle)
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .option_layer(config.server.hsts_layer())
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(AccessLogLayer)
                .map_request(move |request: Request<Body>| {
                    request.map(|body| Body::new(TimeoutBody::new(body_read_timeout, body)))
                })
                .layer(axum::middleware::from_fn(protocol_guard))
                .layer(axum::middleware::from_fn(crate::routing::canonical_path))
                .layer(axum::middleware::from_fn_with_state(authenticator, auth::authenticate)),
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
