//! How a gateway path becomes the path a service sees: the route's prefix
//! is kept, removed (NGINX's `proxy_pass http://service/;`) or replaced by
//! another prefix. The proxy forwards with it; the cache names entries with
//! it, so a purge by service path reaches REST and GraphQL answers alike.

use std::borrow::Cow;
use std::sync::Arc;

/// Replaces a leading part of a path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathRewrite {
    /// Removed from the start of the path (no trailing slash).
    remove: Arc<str>,
    /// Put in its place (no trailing slash).
    insert: Arc<str>,
}

impl PathRewrite {
    /// Paths reach the service unchanged.
    pub fn keep() -> Self {
        Self::default()
    }

    /// `prefix` is replaced by `with` (`""` removes it): with `/payment/`
    /// and `""`, `/payment/checkout/` becomes `/checkout/`; with
    /// `/live-reading/lesson/` and `/lesson/`, `/live-reading/lesson/5/`
    /// becomes `/lesson/5/`.
    pub fn replace_prefix(prefix: &str, with: &str) -> Self {
        Self { remove: Arc::from(prefix.trim_end_matches('/')), insert: Arc::from(with.trim_end_matches('/')) }
    }

    /// The service's path for a gateway path under the prefix.
    pub fn apply<'a>(&self, path: &'a str) -> Cow<'a, str> {
        let rest = path.strip_prefix(&*self.remove).unwrap_or(path);
        match (self.insert.is_empty(), rest.is_empty()) {
            (true, true) => Cow::Borrowed("/"),
            (true, false) => Cow::Borrowed(rest),
            (false, _) => Cow::Owned(format!("{}{rest}", self.insert)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_kept_removed_or_replaced() {
        assert_eq!(PathRewrite::keep().apply("/payment/x"), "/payment/x");
        let strip = PathRewrite::replace_prefix("/payment/", "");
        assert_eq!(strip.apply("/payment/checkout/"), "/checkout/");
        assert_eq!(strip.apply("/payment/"), "/");
        let strip_unslashed = PathRewrite::replace_prefix("/api", "");
        assert_eq!(strip_unslashed.apply("/api"), "/");
        assert_eq!(strip_unslashed.apply("/api/v1"), "/v1");
        assert_eq!(PathRewrite::replace_prefix("/", "").apply("/other/"), "/other/");
        let replace = PathRewrite::replace_prefix("/live-reading/lesson/", "/lesson/");
        assert_eq!(replace.apply("/live-reading/lesson/"), "/lesson/");
        assert_eq!(replace.apply("/live-reading/lesson/5/"), "/lesson/5/");
        assert_eq!(PathRewrite::replace_prefix("/v1/", "/").apply("/v1/x"), "/x");
    }
}
