//! The route table: longest-prefix matching over whole path segments.

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderName, Method};

use crate::routing::{PathRewrite, PrefixMatch, PrefixTable};
use crate::upstream::{UpstreamService, Upstreams};

use super::RouteConfig;

/// A route, ready to serve.
#[derive(Debug)]
pub struct Route {
    /// The configured prefix; also the route's name in logs.
    pub prefix: Arc<str>,
    /// The service behind it.
    pub service: Arc<UpstreamService>,
    rewrite: PathRewrite,
    methods: Vec<Method>,
    hidden_response_headers: Vec<HeaderName>,
}

/// The result of looking a path up.
pub type RouteMatch<'a> = PrefixMatch<'a, Route>;

/// All routes, by prefix.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: PrefixTable<Route>,
}

impl RouteTable {
    /// Builds the table from validated routes; every service named exists.
    pub fn new(configs: &[RouteConfig], upstreams: &Upstreams) -> Self {
        let routes = configs.iter().filter_map(|config| {
            let service = upstreams.get(&config.service)?;
            let prefix: Arc<str> = Arc::from(config.prefix.as_str());
            let route = Route {
                prefix: Arc::clone(&prefix),
                service: Arc::clone(service),
                rewrite: config.path_rewrite(),
                methods: config.allowed_methods(),
                hidden_response_headers: config.hidden_response_headers(),
            };
            Some((prefix, route))
        });
        Self { routes: PrefixTable::new(routes) }
    }

    /// Finds the route for a canonical path.
    pub fn lookup(&self, path: &str) -> RouteMatch<'_> {
        self.routes.lookup(path)
    }
}

impl Route {
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
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::upstream::{EndpointConfig, ServiceConfig};

    fn table(prefixes: &[(&str, bool)]) -> RouteTable {
        table_of(prefixes.iter().map(|&(prefix, strip_prefix)| route(prefix, strip_prefix, None)).collect())
    }

    fn table_of(configs: Vec<RouteConfig>) -> RouteTable {
        let service = ServiceConfig {
            endpoints: vec![EndpointConfig::Url("http://127.0.0.1:9".to_owned())],
            ..ServiceConfig::default()
        };
        let upstreams = Upstreams::new(&BTreeMap::from([("svc".to_owned(), service)])).expect("valid");
        RouteTable::new(&configs, &upstreams)
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
