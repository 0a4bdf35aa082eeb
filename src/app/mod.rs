//! The composition root: the state built from config at start, the one
//! route table, and the one function that stacks every layer around the
//! front doors. Nothing else imports this module except the crate root.

mod doors;
mod reload;

pub use reload::LoadedFile;
mod route;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::Request;
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder};
use tower_http::timeout::TimeoutBody;

use crate::auth::{self, AuthLayer, AuthSetupError, Authenticator};
use crate::cache::{Cache, CacheLayer, CachePolicy, CacheSetupError};
use crate::check::CheckLayer;
use crate::client::{ClientAddressLayer, TrustedProxies};
use crate::config::Config;
use crate::cors::{CorsLayer, CorsPolicy};
use crate::error::{ErrorEdgeLayer, GatewayError};
use crate::graphql::{GraphqlEndpoint, GraphqlSetupError};
use crate::headers::RequestHeaderRules;
use crate::operations::OperationEndpoint;
use crate::proxy;
use crate::ratelimit::{RateLimitLayer, RateLimitSetupError, RateLimiter};
use crate::routing::{CanonicalPath, PathRewrite};
use crate::server::{self, Draining, HostGuard, ServerError};
use crate::signing::IdentitySigner;
use crate::telemetry::metrics::CacheSnapshot;
use crate::telemetry::{self, AccessLogLayer, Telemetry};
use crate::upstream::{UpstreamBuildError, Upstreams};
use doors::{Doors, Operations};
use route::{Door, Operation, Route, RouteLayer, RouteTable};

/// Shared state, cheap to clone, built once from the configuration.
#[derive(Clone, Debug)]
pub struct AppState {
    upstreams: Upstreams,
    graphql: Option<Arc<GraphqlEndpoint>>,
    auth: Arc<Authenticator>,
    rate_limiter: Arc<RateLimiter>,
    telemetry: Telemetry,
    cache: Arc<Cache>,
    /// The served configuration's hash, when it came from a file.
    config_hash: Option<Arc<str>>,
    /// Signs the identity both doors tell backends, with `[identity_signing]` keys.
    signer: Option<Arc<IdentitySigner>>,
    /// Set when shutdown starts; one flag across reloads, read by `/readyz`.
    draining: Draining,
}

/// The GraphQL endpoint of a validated configuration, if it serves one.
fn graphql_endpoint(
    config: &Config,
    upstreams: &Upstreams,
    signer: Option<&Arc<IdentitySigner>>,
) -> Result<Option<Arc<GraphqlEndpoint>>, StateError> {
    match (&config.schema, config.graphql.enabled) {
        (Some(model), true) => Ok(Some(Arc::new(config.graphql.endpoint(
            &config.base_dir,
            Arc::clone(model),
            upstreams,
            &config.services,
            signer.cloned(),
        )?))),
        _ => Ok(None),
    }
}

impl AppState {
    /// Builds the state for a validated configuration. `telemetry` is the
    /// one the upstreams were built with, so every metric lands in one
    /// registry.
    pub fn new(config: &Config, upstreams: Upstreams, telemetry: Telemetry) -> Result<Self, StateError> {
        let auth = Arc::new(Authenticator::new(&config.auth, &config.base_dir)?);
        let signer = IdentitySigner::new(&config.identity_signing);
        let graphql = graphql_endpoint(config, &upstreams, signer.as_ref())?;
        let rate_limiter = Arc::new(RateLimiter::new(&config.rate_limiting, &config.rate_limits)?);
        let cache = Arc::new(Cache::new(&config.cache)?);
        report_cache(&telemetry, &cache);
        telemetry.metrics().watch_redis("ratelimit", rate_limiter.redis_circuit().cloned());
        telemetry.metrics().watch_redis("cache", cache.redis_circuit().cloned());
        Ok(Self {
            upstreams,
            graphql,
            auth,
            rate_limiter,
            telemetry,
            cache,
            config_hash: None,
            signer,
            draining: Draining::default(),
        })
    }

    /// The state for a reloaded configuration `config`, replacing
    /// `previous` (built from `old`): the rate limiter and the response
    /// cache are kept, with their state, when their sections are unchanged
    /// (compared by their `Debug` rendering, which shows every field).
    fn reloaded(
        previous: &AppState,
        old: &Config,
        config: &Config,
        upstreams: Upstreams,
        telemetry: Telemetry,
    ) -> Result<Self, StateError> {
        let same = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
        // Kept when unchanged: a JWKS fetched from a URL stays, with its
        // refresh schedule, rather than being fetched again. Key files are
        // compared by the digest their loaded keys carry.
        let auth = if same(&(&old.auth, &old.base_dir), &(&config.auth, &config.base_dir)) {
            Arc::clone(&previous.auth)
        } else {
            Arc::new(Authenticator::new(&config.auth, &config.base_dir)?)
        };
        let signer = IdentitySigner::new(&config.identity_signing);
        let graphql = graphql_endpoint(config, &upstreams, signer.as_ref())?;
        let rate_limiter =
            if same(&(&old.rate_limiting, &old.rate_limits), &(&config.rate_limiting, &config.rate_limits)) {
                Arc::clone(&previous.rate_limiter)
            } else {
                let limiter = Arc::new(RateLimiter::new(&config.rate_limiting, &config.rate_limits)?);
                telemetry.metrics().watch_redis("ratelimit", limiter.redis_circuit().cloned());
                limiter
            };
        let cache = if same(&old.cache, &config.cache) {
            Arc::clone(&previous.cache)
        } else {
            let cache = Arc::new(Cache::new(&config.cache)?);
            report_cache(&telemetry, &cache);
            telemetry.metrics().watch_redis("cache", cache.redis_circuit().cloned());
            cache
        };
        let draining = previous.draining.clone();
        Ok(Self { upstreams, graphql, auth, rate_limiter, telemetry, cache, config_hash: None, signer, draining })
    }

    /// The state, reporting `hash` as its configuration's on `/readyz`.
    pub fn with_config_hash(mut self, hash: Arc<str>) -> Self {
        self.config_hash = Some(hash);
        self
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

    /// The flag the server sets when shutdown starts.
    pub fn draining(&self) -> &Draining {
        &self.draining
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

/// Every route of `config`, looked up once per request by [`RouteLayer`].
fn route_table(state: &AppState, config: &Config) -> RouteTable {
    let server = &config.server;
    let cors_policies = CorsPolicy::all(&config.cors);
    let cors_policy = |name: Option<&str>| name.and_then(|name| cors_policies.get(name)).cloned();
    let rest_routes = config.routes.iter().filter_map(|route| {
        let service_headers = config.services.get(&route.service).map(|service| &service.headers);
        let rest = proxy::Route::new(route, &state.upstreams, server.request_timeout, server.request_body_limit)?
            .with_request_headers(RequestHeaderRules::new(service_headers.into_iter().chain([&route.headers])))
            .with_identity_signer(state.signer.clone());
        let cache = route.cache.clone().map(|settings| {
            Arc::new(CachePolicy {
                route: Arc::clone(&rest.prefix),
                service: Arc::clone(rest.service.name()),
                rewrite: route.path_rewrite(),
                settings,
            })
        });
        Some(Arc::new(Route {
            name: Arc::clone(&rest.prefix),
            service: Arc::clone(rest.service.name()),
            auth: auth::Policy { mode: route.auth, scopes: route.scopes.clone() },
            rate_limit: state.rate_limiter.policy_for(route.rate_limit.as_deref()),
            cache,
            cors: cors_policy(route.cors.as_deref()),
            door: Door::Rest(Arc::new(rest)),
        }))
    });
    let graphql = &config.graphql;
    let graphql_route = state.graphql.as_ref().map(|_| {
        Arc::new(Route {
            name: Arc::from(graphql.path.as_str()),
            service: Arc::from(""),
            door: Door::Graphql,
            auth: auth::Policy { mode: graphql.auth, scopes: Vec::new() },
            rate_limit: state.rate_limiter.policy_for(graphql.rate_limit.as_deref()),
            cache: None,
            cors: cors_policy(config.cors.graphql.as_deref()),
        })
    });
    let unrouted = Route {
        name: Arc::from(""),
        service: Arc::from(""),
        door: Door::NotFound,
        auth: auth::Policy::default(),
        rate_limit: state.rate_limiter.policy_for(None),
        cache: None,
        cors: None,
    };
    let mut operations = vec![(Arc::from("/healthz"), Operation::Health), (Arc::from("/readyz"), Operation::Ready)];
    // With an admin listener configured, the scrape path is served there only.
    let metrics = &config.telemetry.metrics;
    if metrics.enabled && metrics.listen.is_none() {
        operations.push((Arc::from(metrics.path.as_str()), Operation::Metrics));
    }
    if let Some(path) = state.cache.admin_path() {
        operations.push((Arc::from(path), Operation::CacheAdmin));
    }
    if let Some(path) = &config.openapi.path {
        operations.push((Arc::from(path.as_str()), Operation::Openapi));
    }
    let max_body_size = usize::try_from(graphql.max_body_size.as_u64()).unwrap_or(usize::MAX);
    let templated = config
        .operations
        .iter()
        .filter(|_| state.graphql.is_some())
        .filter_map(|operation| {
            let endpoint = Arc::new(OperationEndpoint::new(operation, max_body_size)?);
            let cache = operation.cache.clone().map(|settings| {
                Arc::new(CachePolicy {
                    route: Arc::clone(&endpoint.label),
                    service: Arc::from(""),
                    rewrite: PathRewrite::keep(),
                    settings,
                })
            });
            Some(Arc::new(Route {
                name: Arc::clone(&endpoint.label),
                service: Arc::from(""),
                auth: auth::Policy { mode: operation.auth, scopes: operation.scopes.clone() },
                rate_limit: state.rate_limiter.policy_for(operation.rate_limit.as_deref()),
                cache,
                cors: cors_policy(operation.cors.as_deref()),
                door: Door::Operation(endpoint),
            }))
        })
        .collect();
    RouteTable::new(operations, rest_routes.chain(graphql_route), templated, unrouted)
}

/// The gateway's whole HTTP stack, as the server runs it for every
/// connection. Outside them all, with HTTPS and HSTS configured, every
/// answer (refusals included) gets `Strict-Transport-Security`. Layers are
/// listed outermost first:
///
/// 1. request id: set before anything else so every log line and every
///    error answer carries it, and copied onto the response; a client's id
///    is kept only when short and plain, else replaced;
/// 2. client address: the one rule (trusted proxies) every later layer and
///    the proxy use to name the client;
/// 3. access log, request metrics and the request's trace span: outside
///    everything that can refuse a request, so refusals are logged, counted
///    and traced too;
/// 4. body read timeout: a client that stalls mid-body is cut off;
/// 5. the error edge: from here inwards every layer returns typed errors,
///    rendered here, once;
/// 6. host guard: requests without one valid host never reach a route;
/// 7. canonical path: the route lookup and every later decision see the
///    same, normalised path;
/// 8. route: the one lookup; operational endpoints (`/healthz`, `/readyz`,
///    metrics, cache admin) are answered here, outside the client layers,
///    and every other request carries its `Arc<Route>` inwards;
/// 9. CORS: right after the lookup that names the route's policy, so a
///    preflight is answered before authentication and the rate limit (no
///    credentials, no charge, no backend call), and every later answer,
///    refusals included, gets the route's CORS headers;
/// 10. authentication: forged identity headers are removed and credentials
///     verified against the route's policy; later layers (rate limits,
///     caches) key on the identity it records;
/// 11. rate limit: after authentication, so the budget belongs to the
///     verified caller (a client cannot escape it by changing its address),
///     and before anything that spends backend capacity;
/// 12. response cache: after authentication, because private answers are
///     keyed by the verified caller it records; after the rate limit, so a
///     cached answer still counts against the caller's budget; innermost,
///     so a hit skips only the door and the backend;
/// 13. the doors: the REST passthrough (under the route's deadline, retries
///     included, inside the cache so a cached answer is never cut short) or
///     the GraphQL endpoint (its operations have their own deadline).
pub fn app(
    state: AppState,
    config: &Config,
) -> impl Service<Request<Incoming>, Response = Response, Error = Infallible, Future: Send + 'static> + Clone + Send + 'static
{
    let body_read_timeout = config.server.body_read_timeout;
    let table = route_table(&state, config);
    let operations = Operations::new(state.upstreams.clone(), state.telemetry.clone(), Arc::clone(&state.cache))
        .with_config_hash(state.config_hash.clone())
        .with_readiness(config.server.readiness.require_healthy_endpoints, state.draining.clone())
        .with_openapi(config.openapi.path.as_ref().map(|_| openapi_document(config)));
    let doors = Doors::new(state.graphql.clone(), &config.graphql.path, Arc::clone(&state.cache));
    let trusted_proxies = TrustedProxies::new(&config.rate_limiting.trusted_proxies);
    ServiceBuilder::new()
        .map_request(|request: Request<Incoming>| request.map(Body::new))
        .option_layer(config.server.hsts_layer())
        .layer(telemetry::RequestIdLayer)
        .layer(ClientAddressLayer::new(trusted_proxies))
        .layer(AccessLogLayer::new(state.telemetry.clone()))
        .map_request(move |request: Request<Body>| {
            // A body that has ended already stays recognisable as empty
            // (the timeout wrapper would hide it).
            request.map(
                |body| {
                    if body.is_end_stream() {
                        body
                    } else {
                        Body::new(TimeoutBody::new(body_read_timeout, body))
                    }
                },
            )
        })
        .layer(ErrorEdgeLayer)
        .layer(CheckLayer::new(HostGuard))
        .layer(CheckLayer::new(CanonicalPath))
        .layer(RouteLayer::new(table, operations))
        .layer(CorsLayer::<Route, GatewayError>::new(|error, request_id| error.into_response_with_id(request_id)))
        .layer(AuthLayer::<Route, GatewayError>::new(Arc::clone(&state.auth)))
        .layer(RateLimitLayer::<Route, GatewayError>::new(
            Arc::clone(&state.rate_limiter),
            Arc::clone(state.telemetry.metrics()),
        ))
        .layer(CacheLayer::<Route, GatewayError>::new(Arc::clone(&state.cache)))
        .service(doors)
}

/// The OpenAPI document of `config`'s REST surface, as served.
pub fn openapi_document(config: &Config) -> bytes::Bytes {
    let document = match &config.schema {
        Some(model) => crate::operations::openapi::document(&config.openapi, &config.operations, &config.routes, model),
        None => crate::operations::openapi::document(
            &config.openapi,
            &[],
            &config.routes,
            &crate::graphql::model::SchemaModel::default(),
        ),
    };
    bytes::Bytes::from(serde_json::to_vec_pretty(&document).unwrap_or_default())
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A backend service could not be set up.
    #[error(transparent)]
    Upstream(#[from] UpstreamBuildError),
    /// The application state could not be built.
    #[error(transparent)]
    State(#[from] StateError),
    /// The listener could not be set up.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The configuration file could not be loaded.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
}

/// Serves `config` on `listener` until `shutdown` completes, then drains:
/// `/readyz` answers 503 `draining` at once while requests are still
/// served for `server.readiness.drain_delay`, then the listener stops
/// accepting (the redirect listener too) and in-flight requests finish for
/// up to `server.shutdown_timeout`. The library's entry point:
/// the binary and the tests start the gateway the same way.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let telemetry = Telemetry::new(&config.telemetry);
    let upstreams = Upstreams::with_metrics(&config.services, telemetry.metrics())?;
    telemetry.metrics().watch_endpoints(Arc::new(upstreams.clone()));
    let _health_checks = upstreams.spawn_background();
    let _admin = server::serve_admin(&config.telemetry.metrics, &telemetry).await?;
    let state = AppState::new(&config, upstreams, telemetry)?;
    let _auth_background = state.authenticator().spawn_background();
    let _rate_limit_housekeeping = state.rate_limiter().spawn_housekeeping();
    let draining = state.draining().clone();
    let gateway = app(state, &config);
    server::run(&config.server, &config.base_dir, listener, gateway, shutdown, draining).await?;
    Ok(())
}

/// Like [`serve`], for the configuration file at `path`, reloaded on
/// `SIGHUP` and whenever it or a file it names changes (see
/// `app/reload.rs`); `/readyz` reports the served configuration's hash.
pub async fn serve_reloading(
    path: std::path::PathBuf,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_loaded(reload::LoadedFile::load(path)?, listener, shutdown).await
}

/// [`serve_reloading`] for a file the caller has loaded already.
pub async fn serve_loaded(
    file: reload::LoadedFile,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let reload::LoadedFile { path, config, hash } = file;
    let telemetry = Telemetry::new(&config.telemetry);
    let upstreams = Upstreams::with_metrics(&config.services, telemetry.metrics())?;
    telemetry.metrics().watch_endpoints(Arc::new(upstreams.clone()));
    let _admin = server::serve_admin(&config.telemetry.metrics, &telemetry).await?;
    let state = AppState::new(&config, upstreams, telemetry.clone())?.with_config_hash(Arc::clone(&hash));
    let background = reload::Background::start(&state);
    let live = reload::Live::new(app(state.clone(), &config));
    let (server_config, base_dir) = (config.server.clone(), config.base_dir.clone());
    let draining = state.draining().clone();
    tracing::info!(%hash, path = %path.display(), "configuration loaded; reloaded on SIGHUP or when it changes");
    let reloader = reload::Reloader::new(path, config, hash, state, background, telemetry, live.clone(), app);
    let reloading = AbortOnDrop(reloader.start());
    server::run(&server_config, &base_dir, listener, live, shutdown, draining).await?;
    drop(reloading);
    Ok(())
}

/// Stops the reloader when serving ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
