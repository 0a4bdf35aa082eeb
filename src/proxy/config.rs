//! The `[[routes]]` entries: which path prefixes go to which service.

use std::time::Duration;

use http::{HeaderName, Method};
use serde::Deserialize;

use crate::auth::AuthMode;
use crate::cache::RouteCacheConfig;
use crate::problems::Problems;
use crate::routing::PathRewrite;

/// One REST passthrough route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix, such as `"/payment/"`. The longest matching prefix wins;
    /// a prefix matches whole path segments only.
    pub prefix: String,
    /// Name of the `[services.<name>]` table that serves the route.
    pub service: String,
    /// Whether the prefix is removed before forwarding (NGINX's
    /// `proxy_pass http://service/;`), so `/payment/checkout/` reaches the
    /// service as `/checkout/`.
    #[serde(default = "default_strip_prefix")]
    pub strip_prefix: bool,
    /// Replaces the prefix with this one instead of removing it, so a route
    /// `/live-reading/lesson/` with `upstream_prefix = "/lesson/"` reaches
    /// the service as `/lesson/...`.
    #[serde(default)]
    pub upstream_prefix: Option<String>,
    /// Methods allowed on the route; empty allows every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Whether callers must authenticate (`required`), may (`optional`:
    /// credentials are verified when sent) or are not asked (`none`).
    #[serde(default)]
    pub auth: AuthMode,
    /// Scopes a caller needs on this route (all of them).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Caching of GET and HEAD answers (`{ ttl = "30s", scope = "public" }`);
    /// without it, nothing on the route is cached.
    #[serde(default)]
    pub cache: Option<RouteCacheConfig>,
    /// The `[rate_limits.<name>]` policy for this route (`"none"`: no
    /// limit); without it, `rate_limits.default` applies if defined.
    #[serde(default)]
    pub rate_limit: Option<String>,
    /// Total time for an answer's head on this route, retries included;
    /// without it, `server.request_timeout` applies.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Backend answer headers that never reach clients (NGINX's
    /// `proxy_hide_header`). By default `Server` and `X-Powered-By`, which
    /// name the backend's software and version; `[]` passes every header.
    #[serde(default = "default_hide_response_headers")]
    pub hide_response_headers: Vec<String>,
    /// The `[cors.policies.<name>]` policy for browsers calling this route
    /// from another origin; without it, CORS is left to the service.
    #[serde(default)]
    pub cors: Option<String>,
    /// Header rules added to the service's `headers` for this route.
    #[serde(default)]
    pub headers: crate::headers::HeaderRulesConfig,
}

fn default_hide_response_headers() -> Vec<String> {
    vec!["server".to_owned(), "x-powered-by".to_owned()]
}

fn default_strip_prefix() -> bool {
    true
}

impl RouteConfig {
    pub(crate) fn validate(&self, key: &str, problems: &mut Problems) {
        if !self.prefix.starts_with('/') {
            problems
                .push(format!("{key}.prefix"), format!("{:?} must start with '/', e.g. \"/payment/\"", self.prefix));
        }
        if self.prefix.contains(['?', '#', '%', '\\']) {
            problems.push(
                format!("{key}.prefix"),
                format!("{:?}: a prefix is a plain path without '?', '#', '%' or '\\'", self.prefix),
            );
        }
        if self.prefix.split('/').any(|segment| segment == "." || segment == "..") {
            problems.push(format!("{key}.prefix"), format!("{:?} must not contain '.' or '..' segments", self.prefix));
        }
        if self.timeout.is_some_and(|timeout| timeout.is_zero()) {
            problems.push(format!("{key}.timeout"), "must be greater than zero, e.g. \"60s\"");
        }
        if !self.scopes.is_empty() && self.auth == AuthMode::None {
            problems.push(format!("{key}.scopes"), "scopes need auth = \"required\" or \"optional\"");
        }
        if let Some(upstream_prefix) = &self.upstream_prefix {
            let dot_segment = upstream_prefix.split('/').any(|segment| segment == "." || segment == "..");
            if !upstream_prefix.starts_with('/') || upstream_prefix.contains(['?', '#', '%', '\\']) || dot_segment {
                problems.push(
                    format!("{key}.upstream_prefix"),
                    format!("{upstream_prefix:?} must be a plain path starting with '/', e.g. \"/lesson/\""),
                );
            }
            if !self.strip_prefix {
                problems.push(
                    format!("{key}.upstream_prefix"),
                    "replaces the prefix, which strip_prefix = false keeps; set one or the other",
                );
            }
        }
        for (index, name) in self.hide_response_headers.iter().enumerate() {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                problems.push(
                    format!("{key}.hide_response_headers[{index}]"),
                    format!("{name:?} is not a header name, e.g. \"x-powered-by\""),
                );
            }
        }
        if let Some(cache) = &self.cache {
            cache.validate(&format!("{key}.cache"), problems);
        }
        for (index, method) in self.methods.iter().enumerate() {
            if self.parsed_method(method).is_none() {
                problems.push(
                    format!("{key}.methods[{index}]"),
                    format!("{method:?} is not an HTTP method; write it in capitals, e.g. \"GET\""),
                );
            }
        }
    }

    fn parsed_method(&self, name: &str) -> Option<Method> {
        let uppercase = name.bytes().all(|byte| byte.is_ascii_uppercase() || byte == b'-');
        (uppercase && !name.is_empty()).then(|| Method::from_bytes(name.as_bytes()).ok()).flatten()
    }

    /// How the route's paths become the service's paths.
    pub fn path_rewrite(&self) -> PathRewrite {
        match (&self.upstream_prefix, self.strip_prefix) {
            (Some(upstream_prefix), _) => PathRewrite::replace_prefix(&self.prefix, upstream_prefix),
            (None, true) => PathRewrite::replace_prefix(&self.prefix, ""),
            (None, false) => PathRewrite::keep(),
        }
    }

    /// The answer headers to remove. Valid after validation.
    pub(crate) fn hidden_response_headers(&self) -> Vec<HeaderName> {
        self.hide_response_headers.iter().filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok()).collect()
    }

    /// The allowed methods; empty means all. Valid after validation.
    pub(crate) fn allowed_methods(&self) -> Vec<Method> {
        self.methods.iter().filter_map(|name| self.parsed_method(name)).collect()
    }
}
