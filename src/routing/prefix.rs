//! Longest-prefix matching over whole path segments, for everything that is
//! configured per path prefix (routes, auth policies, ...).

use std::sync::Arc;

/// The result of looking a path up.
#[derive(Debug)]
pub enum PrefixMatch<'a, T> {
    /// The path falls under this entry.
    Found(&'a T),
    /// The path is the entry's prefix without its trailing slash (NGINX
    /// redirects such requests to the slashed form).
    AddSlash(&'a Arc<str>, &'a T),
    /// No entry matches.
    NotFound,
}

/// Entries keyed by path prefix, longest first.
#[derive(Debug)]
pub struct PrefixTable<T> {
    entries: Vec<(Arc<str>, T)>,
}

impl<T> Default for PrefixTable<T> {
    fn default() -> Self {
        Self { entries: Vec::new() }
    }
}

impl<T> PrefixTable<T> {
    /// Builds the table; prefixes are unique (validated with the config).
    pub fn new(entries: impl IntoIterator<Item = (Arc<str>, T)>) -> Self {
        let mut entries: Vec<(Arc<str>, T)> = entries.into_iter().collect();
        entries.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self { entries }
    }

    /// Finds the entry for a canonical path. A prefix matches whole
    /// segments only: `/api` matches `/api` and `/api/x`, not `/apix`.
    pub fn lookup(&self, path: &str) -> PrefixMatch<'_, T> {
        for (prefix, value) in &self.entries {
            if let Some(rest) = path.strip_prefix(&**prefix) {
                if prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/') {
                    return PrefixMatch::Found(value);
                }
            } else if prefix.len() > 1 && prefix.strip_suffix('/') == Some(path) {
                return PrefixMatch::AddSlash(prefix, value);
            }
        }
        PrefixMatch::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(table: &PrefixTable<&'static str>, path: &str) -> Option<&'static str> {
        match table.lookup(path) {
            PrefixMatch::Found(value) => Some(*value),
            _ => None,
        }
    }

    #[test]
    fn the_longest_whole_segment_prefix_wins() {
        let table = PrefixTable::new([
            ("/".into(), "root"),
            ("/payment/".into(), "payment"),
            ("/payment/admin/".into(), "admin"),
            ("/api".into(), "api"),
        ]);
        assert_eq!(found(&table, "/payment/admin/x"), Some("admin"));
        assert_eq!(found(&table, "/payment/checkout/"), Some("payment"));
        assert_eq!(found(&table, "/api"), Some("api"));
        assert_eq!(found(&table, "/api/v1"), Some("api"));
        assert_eq!(found(&table, "/apix"), Some("root"));
    }

    #[test]
    fn a_prefix_without_its_slash_asks_for_a_redirect() {
        let table = PrefixTable::new([("/payment/".into(), "payment")]);
        assert!(matches!(table.lookup("/payment"), PrefixMatch::AddSlash(prefix, _) if &**prefix == "/payment/"));
        assert!(matches!(table.lookup("/paymentx/"), PrefixMatch::NotFound));
    }
}
