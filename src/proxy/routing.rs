//! The route table: longest-prefix matching over whole path segments.

use std::sync::Arc;

use http::Method;

use crate::upstream::{UpstreamService, Upstreams};

use super::RouteConfig;

/// A route, ready to serve.
#[derive(Debug)]
pub struct Route {
    /// The configured prefix; also the route's name in logs.
    pub prefix: Arc<str>,
    /// The service behind it.
    pub service: Arc<UpstreamService>,
    strip_prefix: bool,
    methods: Vec<Method>,
}

/// The result of looking a path up.
#[derive(Debug)]
pub enum RouteMatch<'a> {
    /// The path belongs to this route.
    Found(&'a Route),
    /// The path is the route's prefix without its trailing slash; like
    /// NGINX, the client is redirected to the slashed form.
    AddSlash(&'a Route),
    /// No route matches.
    NotFound,
}

/// All routes, longest prefix first.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Builds the table from validated routes; every service named exists.
    pub fn new(configs: &[RouteConfig], upstreams: &Upstreams) -> Self {
        let mut routes: Vec<Route> = configs
            .iter()
            .filter_map(|config| {
                let service = upstreams.get(&config.service)?;
                Some(Route {
                    prefix: Arc::from(config.prefix.as_str()),
                    service: Arc::clone(service),
                    strip_prefix: config.strip_prefix,
                    methods: config.allowed_methods(),
                })
            })
            .collect();
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        Self { routes }
    }

    /// Finds the route for a normalised path.
    pub fn lookup(&self, path: &str) -> RouteMatch<'_> {
        for route in &self.routes {
            let prefix = &*route.prefix;
            if let Some(rest) = path.strip_prefix(prefix) {
                if prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/') {
                    return RouteMatch::Found(route);
                }
            } else if prefix.len() > 1 && prefix.strip_suffix('/') == Some(path) {
                return RouteMatch::AddSlash(route);
            }
        }
        RouteMatch::NotFound
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

    /// The path the backend sees for a normalised request path.
    pub fn upstream_path<'a>(&self, path: &'a str) -> &'a str {
        if !self.strip_prefix {
            return path;
        }
        let rest = &path[self.prefix.len()..];
        if rest.is_empty() {
            "/"
        } else if self.prefix.ends_with('/') {
            // Keep the slash that ended the prefix: "/payment/checkout/" -> "/checkout/".
            &path[self.prefix.len() - 1..]
        } else {
            rest
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::upstream::{EndpointConfig, ServiceConfig};

    fn table(prefixes: &[(&str, bool)]) -> RouteTable {
        let service = ServiceConfig {
            endpoints: vec![EndpointConfig::Url("http://127.0.0.1:9".to_owned())],
            ..ServiceConfig::default()
        };
        let upstreams = Upstreams::new(&BTreeMap::from([("svc".to_owned(), service)])).expect("valid");
        let configs: Vec<RouteConfig> = prefixes
            .iter()
            .map(|&(prefix, strip_prefix)| RouteConfig {
                prefix: prefix.to_owned(),
                service: "svc".to_owned(),
                strip_prefix,
                methods: Vec::new(),
            })
            .collect();
        RouteTable::new(&configs, &upstreams)
    }

    fn forwarded(table: &RouteTable, path: &str) -> Option<(String, String)> {
        match table.lookup(path) {
            RouteMatch::Found(route) => Some((route.prefix.to_string(), route.upstream_path(path).to_owned())),
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
        assert!(matches!(table.lookup("/payment"), RouteMatch::AddSlash(_)));
        assert!(matches!(table.lookup("/paymentx/"), RouteMatch::NotFound));
        assert!(matches!(table.lookup("/"), RouteMatch::NotFound));
    }
}
