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
}

impl AppState {
    /// Builds the state for a validated configuration.
    pub fn new(config: &Config, upstreams: Upstreams) -> Result<Self, GraphqlSetupError> {
        let proxy = Arc::new(Proxy::new(&config.routes, &upstreams, config.server.request_body_limit));
        let graphql = match (&config.schema, config.graphql.enabled) {
            (Some(model), true) => {
                Some(Arc::new(config.graphql.endpoint(&config.base_dir, Arc::clone(model), &upstreams)?))
            }
            _ => None,
        };
        Ok(Self { upstreams, proxy, graphql })
    }
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

/// The gateway's whole HTTP stack. Layers are listed outermost first:
///
/// 1. request id: set before anything else so every log line and every
///    error answer carries it, and copied onto the response;
/// 2. access log: outside everything that can refuse a request, so refusals
///    are logged too;
/// 3. body read timeout: a client that stalls mid-body is cut off;
/// 4. protocol guard: requests without a valid host never reach a handler;
/// 5. canonical path: every later layer and door decides on the same,
///    normalised path.
pub fn app(state: AppState, config: &Config) -> Router {
    let body_read_timeout = config.server.body_read_timeout;
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
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(AccessLogLayer)
                .map_request(move |request: Request<Body>| {
                    request.map(|body| Body::new(TimeoutBody::new(body_read_timeout, body)))
                })
                .layer(axum::middleware::from_fn(protocol_guard))
                .layer(axum::middleware::from_fn(crate::routing::canonical_path)),
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
