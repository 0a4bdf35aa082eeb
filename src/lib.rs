//! portico: a GraphQL / backend-for-frontend API gateway.
//!
//! # Layout
//!
//! - [`config`]: loads the TOML file, expands `${VAR}`, validates every
//!   section once; each concern owns its own section's struct.
//! - [`server`]: the listener, HTTPS termination and the HTTP→HTTPS
//!   redirect, protocol-level protection, graceful shutdown.
//! - [`mod@app`]: the composition root: the route table, `app()` stacks
//!   every layer, and [`serve`] is the library's entry point.
//! - [`routing`]: canonical paths and prefix matching, shared by layers
//!   and doors.
//! - [`check`]: the layer for synchronous request checks (host guard,
//!   canonical path) with typed errors.
//! - [`client`]: the client's address through trusted proxies, and the one
//!   caller key.
//! - [`proxy`]: the REST front door (prefix routes, passthrough).
//! - [`graphql`]: the GraphQL front door (SDL with `@rest` connectors).
//! - [`operations`]: REST endpoints backed by stored GraphQL operations,
//!   and their OpenAPI document.
//! - [`cors`]: CORS policies for browser front ends, per route.
//! - [`headers`]: declarative header rules between clients and backends
//!   (both doors), and the merge of several calls' answer headers.
//! - [`auth`]: JWT and API-key authentication, per-route policies.
//! - [`identity`]: the verified caller, as layers hand it to the doors.
//! - [`problems`]: configuration problem lists (a leaf every concern's
//!   config check reports into).
//! - [`cache`]: response caching for REST routes and GraphQL `@rest` calls,
//!   scoped per caller, bounded in bytes, optionally shared through Redis.
//! - [`ratelimit`]: per-client GCRA limits, in memory or shared in Redis.
//! - [`request`]: the request-id header and `ConnectionInfo`, a leaf read
//!   by layers, doors, telemetry and the server alike.
//! - [`redis_health`]: the circuit breaker that keeps a Redis that is down
//!   off the hot path (used by `ratelimit` and `cache`).
//! - [`upstream`]: the client library for backends (pools, balancing,
//!   health, retries, timeouts).
//! - [`telemetry`]: logs, the per-request access log, Prometheus metrics,
//!   W3C trace propagation and optional OTLP span export.
//! - [`error`]: the single edge where failures become client answers.
//! - `fuzzing` (hidden): the fuzz targets' bodies, shared by `fuzz/` and
//!   the corpus replay test.
//!
//! See `ARCHITECTURE.md` for the request's path through these modules.

pub mod app;
pub mod auth;
pub mod cache;
pub mod check;
pub mod client;
pub mod config;
pub mod cors;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod graphql;
pub mod headers;
pub mod identity;
pub mod operations;
pub mod problems;
pub mod proxy;
pub mod ratelimit;
pub mod redis_health;
pub mod request;
pub mod routing;
pub mod server;
pub mod signing;
pub mod telemetry;
pub mod upstream;

pub use app::app;
pub use app::serve;
pub use app::serve_loaded;
pub use app::serve_reloading;
pub use app::LoadedFile;
pub use config::Config;
