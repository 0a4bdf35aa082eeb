//! A REST route, ready to serve: where the passthrough sends a request and
//! how it rewrites it.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use http::{HeaderName, Method};

use crate::headers::RequestHeaderRules;
use crate::routing::PathRewrite;
use crate::signing::IdentitySigner;
use crate::upstream::{UpstreamService, Upstreams};

use super::RouteConfig;

/// What the passthrough needs of a route.
#[derive(Debug)]
pub struct Route {
    /// The configured prefix; also the route's name in logs.
    pub prefix: Arc<str>,
    /// The service behind it.
    pub service: Arc<UpstreamService>,
    rewrite: PathRewrite,
    methods: Vec<Method>,
    hidden_response_headers: Vec<HeaderName>,
    timeout: Duration,
    body_limit: ByteSize,
    request_headers: Option<Arc<RequestHeaderRules>>,
    signer: Option<Arc<IdentitySigner>>,
}

impl Route {
    /// The route of a validated config entry; `None` only if its service
    /// does not exist, which validation rules out. `default_timeout` and
    /// `body_limit` are the server's.
    pub fn new(
        config: &RouteConfig,
        upstreams: &Upstreams,
        default_timeout: Duration,
        body_limit: ByteSize,
    ) -> Option<Self> {
        Some(Self {
            prefix: Arc::from(config.prefix.as_str()),
            service: Arc::clone(upstreams.get(&config.service)?),
            rewrite: config.path_rewrite(),
            methods: config.allowed_methods(),
            hidden_response_headers: config.hidden_response_headers(),
            timeout: config.timeout.unwrap_or(default_timeout),
            body_limit,
            request_headers: None,
            signer: None,
        })
    }

    /// The route with its service's and its own request header rules.
    pub fn with_request_headers(mut self, rules: Option<Arc<RequestHeaderRules>>) -> Self {
        self.request_headers = rules;
        self
    }

    /// Signs the identity the route's requests carry.
    pub fn with_identity_signer(mut self, signer: Option<Arc<IdentitySigner>>) -> Self {
        self.signer = signer;
        self
    }

    /// The identity signer, if `[identity_signing]` has keys.
    pub fn identity_signer(&self) -> Option<&IdentitySigner> {
        self.signer.as_deref()
    }

    /// The request header rules, if any.
    pub fn request_headers(&self) -> Option<&RequestHeaderRules> {
        self.request_headers.as_deref()
    }

    /// Whether the route accepts `method`.
    pub fn allows(&self, method: &Method) -> bool {
        self.methods.is_empty() || self.methods.contains(method)
    }

    /// The methods allowed, for an `Allow` header.
    pub fn allowed_methods(&self) -> &[Method] {
        &self.methods
    }

    /// Backend answer headers kept from clients.
    pub fn hidden_response_headers(&self) -> &[HeaderName] {
        &self.hidden_response_headers
    }

    /// The path the backend sees for a normalised request path.
    pub fn upstream_path<'a>(&self, path: &'a str) -> Cow<'a, str> {
        self.rewrite.apply(path)
    }

    /// Time for the answer's head, retries included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The largest request body forwarded.
    pub fn body_limit(&self) -> ByteSize {
        self.body_limit
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::routing::{PrefixMatch, PrefixTable};
    use crate::upstream::{EndpointConfig, ServiceConfig};

    type RouteTable = PrefixTable<Route>;

    fn table(prefixes: &[(&str, bool)]) -> RouteTable {
        table_of(prefixes.iter().map(|&(prefix, strip_prefix)| route(prefix, strip_prefix, None)).collect())
    }

    fn table_of(configs: Vec<RouteConfig>) -> RouteTable {
        let service = ServiceConfig {
            endpoints: vec![EndpointConfig::Url("http://127.0.0.1:9".to_owned())],
            ..ServiceConfig::default()
        };
        let upstreams = Upstreams::new(&BTreeMap::from([("svc".to_owned(), service)])).expect("valid");
        PrefixTable::new(configs.iter().map(|config| {
            let route =
                Route::new(config, &upstreams, Duration::from_secs(1), ByteSize::kib(1)).expect("service exists");
            (Arc::clone(&route.prefix), route)
        }))
    }

    fn route(prefix: &str, strip_prefix: bool, upstream_prefix: Option<&str>) -> RouteConfig {
        RouteConfig {
            prefix: prefix.to_owned(),
            service: "svc".to_owned(),
            strip_prefix,
            upstream_prefix: upstream_prefix.map(str::to_owned),
            methods: Vec::new(),
            auth: crate::auth::AuthMode::Optional,
            scopes: Vec::new(),
            rate_limit: None,
            cache: None,
            timeout: None,
            hide_response_headers: Vec::new(),
            cors: None,
            headers: Default::default(),
        }
    }

    fn forwarded(table: &RouteTable, path: &str) -> Option<(String, String)> {
        match table.lookup(path) {
            PrefixMatch::Found(route) => Some((route.prefix.to_string(), route.upstream_path(path).into_owned())),
            _ => None,
        }
    }

    #[test]
    fn longest_prefix_wins_and_prefix_is_stripped() {
        let table = table(&[("/", false), ("/payment/", true), ("/payment/admin/", true), ("/api", true)]);
        assert_eq!(forwarded(&table, "/payment/checkout/"), Some(("/payment/".into(), "/checkout/".into())));
        assert_eq!(forwarded(&table, "/payment/admin/x"), Some(("/payment/admin/".into(), "/x".into())));
        assert_eq!(forwarded(&table, "/payment/"), Some(("/payment/".into(), "/".into())));
        assert_eq!(forwarded(&table, "/api/v1"), Some(("/api".into(), "/v1".into())));
        assert_eq!(forwarded(&table, "/api"), Some(("/api".into(), "/".into())));
        assert_eq!(forwarded(&table, "/apix"), Some(("/".into(), "/apix".into())), "segments, not characters");
        assert_eq!(forwarded(&table, "/other/"), Some(("/".into(), "/other/".into())));
    }

    #[test]
    fn a_prefix_without_its_slash_redirects_and_unknown_paths_do_not_match() {
        let table = table(&[("/payment/", true)]);
        assert!(matches!(table.lookup("/payment"), PrefixMatch::AddSlash(..)));
        assert!(matches!(table.lookup("/paymentx/"), PrefixMatch::NotFound));
        assert!(matches!(table.lookup("/"), PrefixMatch::NotFound));
    }

    #[test]
    fn an_upstream_prefix_replaces_the_route_prefix() {
        let table =
            table_of(vec![route("/live-reading/", true, None), route("/live-reading/lesson/", true, Some("/lesson/"))]);
        assert_eq!(
            forwarded(&table, "/live-reading/lesson/5/"),
            Some(("/live-reading/lesson/".into(), "/lesson/5/".into()))
        );
        assert_eq!(
            forwarded(&table, "/live-reading/lesson/"),
            Some(("/live-reading/lesson/".into(), "/lesson/".into()))
        );
        assert_eq!(forwarded(&table, "/live-reading/sessions/"), Some(("/live-reading/".into(), "/sessions/".into())));
    }
}
