//! The `[cors]` section: named CORS policies, attached to routes by name
//! (`cors = "frontend"` on a `[[routes]]` entry, `cors.graphql` for the
//! GraphQL endpoint), like rate-limit policies.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{HeaderName, Method};
use serde::Deserialize;

use crate::problems::Problems;

/// Named CORS policies and the one the GraphQL endpoint uses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// The policy (a name under `[cors.policies]`) on the GraphQL endpoint;
    /// without it, the endpoint answers no cross-origin requests.
    pub graphql: Option<String>,
    /// Policies by name.
    pub policies: BTreeMap<String, CorsPolicyConfig>,
}

/// Which browser origins may call a route, and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsPolicyConfig {
    /// Origins allowed to call: exact (`"http://localhost:3000"`), a
    /// subdomain pattern (`"https://*.example.com"`: any one or more labels
    /// in place of `*`), or `"*"` for any origin (not with credentials).
    pub allowed_origins: Vec<String>,
    /// Methods a preflight allows.
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight allows.
    pub allowed_headers: Vec<String>,
    /// Answer headers scripts may read, besides those always exposed:
    /// `RateLimit`, `RateLimit-Policy`, `Retry-After`, `X-Request-Id`.
    pub exposed_headers: Vec<String>,
    /// Whether cookies and `Authorization` may be sent
    /// (`Access-Control-Allow-Credentials: true`).
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight's answer.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsPolicyConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allowed_methods: ["GET", "HEAD", "POST"].map(str::to_owned).to_vec(),
            allowed_headers: ["authorization", "content-type", "x-request-id"].map(str::to_owned).to_vec(),
            exposed_headers: Vec::new(),
            allow_credentials: false,
            max_age: Duration::from_secs(600),
        }
    }
}

/// Headers every policy exposes, so a front end can read its budget and
/// quote the request id.
pub(crate) const ALWAYS_EXPOSED: [&str; 4] = ["ratelimit", "ratelimit-policy", "retry-after", "x-request-id"];

impl CorsConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        for (name, policy) in &self.policies {
            policy.validate(&format!("cors.policies.{name}"), problems);
        }
        self.check_reference("cors.graphql".to_owned(), self.graphql.as_deref(), problems);
    }

    /// Reports a policy name at `key` that names no policy.
    pub(crate) fn check_reference(&self, key: String, name: Option<&str>, problems: &mut Problems) {
        let Some(name) = name else { return };
        if !self.policies.contains_key(name) {
            let known: Vec<&str> = self.policies.keys().map(String::as_str).collect();
            let known =
                if known.is_empty() { "none; add a [cors.policies.<name>] table".to_owned() } else { known.join(", ") };
            problems.push(key, format!("unknown CORS policy {name:?} (known: {known})"));
        }
    }
}

impl CorsPolicyConfig {
    fn validate(&self, key: &str, problems: &mut Problems) {
        if self.allowed_origins.is_empty() {
            problems
                .push(format!("{key}.allowed_origins"), "list at least one origin, e.g. [\"http://localhost:3000\"]");
        }
        for (index, origin) in self.allowed_origins.iter().enumerate() {
            let key = format!("{key}.allowed_origins[{index}]");
            if origin == "*" {
                if self.allow_credentials {
                    problems.push(
                        key,
                        "\"*\" cannot be combined with allow_credentials = true; list the origins that may send credentials",
                    );
                }
            } else if let Err(message) = OriginPattern::parse(origin) {
                problems.push(key, message);
            }
        }
        for (index, method) in self.allowed_methods.iter().enumerate() {
            let upper = !method.is_empty() && method.bytes().all(|byte| byte.is_ascii_uppercase());
            if !upper || Method::from_bytes(method.as_bytes()).is_err() {
                problems.push(
                    format!("{key}.allowed_methods[{index}]"),
                    format!("{method:?} is not an HTTP method; write it in capitals, e.g. \"POST\""),
                );
            }
        }
        for (field, names) in [("allowed_headers", &self.allowed_headers), ("exposed_headers", &self.exposed_headers)] {
            for (index, name) in names.iter().enumerate() {
                if name == "*" || HeaderName::from_bytes(name.as_bytes()).is_err() {
                    problems.push(
                        format!("{key}.{field}[{index}]"),
                        format!(
                            "{name:?} is not a header name (wildcards are not supported), e.g. \"x-client-version\""
                        ),
                    );
                }
            }
        }
    }
}

/// One allowed origin: exact, or `scheme://*.domain[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OriginPattern {
    /// The origin as browsers send it.
    Exact(String),
    /// `*` stands for one or more DNS labels before `suffix`.
    Subdomains {
        /// `https://`.
        scheme: String,
        /// `.example.com` (with a port, `.example.com:8443`).
        suffix: String,
    },
}

impl OriginPattern {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let example = "e.g. \"https://app.example.com\" or \"https://*.example.com\"";
        let Some((scheme, host)) = text.split_once("://") else {
            return Err(format!("{text:?} is not an origin (scheme://host[:port]), {example}"));
        };
        if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains(['/', '?', '#', '@']) {
            return Err(format!("{text:?} is not an origin (http or https, no path), {example}"));
        }
        if text.bytes().any(|byte| byte.is_ascii_uppercase()) {
            return Err(format!("{text:?}: browsers send origins in lower case; write it so"));
        }
        match host.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 && !suffix.contains('*') => {
                Ok(Self::Subdomains { scheme: format!("{scheme}://"), suffix: suffix.to_owned() })
            }
            Some(_) => Err(format!("{text:?}: a wildcard stands only for whole leading labels, {example}")),
            None if host.contains('*') => {
                Err(format!("{text:?}: a wildcard stands only for whole leading labels, {example}"))
            }
            None => Ok(Self::Exact(text.to_owned())),
        }
    }

    /// Whether a browser's `Origin` matches.
    pub(crate) fn matches(&self, origin: &[u8]) -> bool {
        match self {
            Self::Exact(exact) => exact.as_bytes() == origin,
            Self::Subdomains { scheme, suffix } => {
                let Some(rest) = origin.strip_prefix(scheme.as_bytes()) else { return false };
                let Some(labels) = rest.strip_suffix(suffix.as_bytes()) else { return false };
                !labels.is_empty()
                    && labels.split(|byte| *byte == b'.').all(|label| {
                        !label.is_empty() && label.iter().all(|byte| byte.is_ascii_alphanumeric() || *byte == b'-')
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomain_patterns_match_whole_labels_only() {
        let pattern = OriginPattern::parse("https://*.example.com").expect("valid");
        assert!(pattern.matches(b"https://app.example.com"));
        assert!(pattern.matches(b"https://a.b.example.com"));
        assert!(!pattern.matches(b"https://example.com"));
        assert!(!pattern.matches(b"https://evil-example.com"));
        assert!(!pattern.matches(b"https://app.example.com.evil.net"));
        assert!(!pattern.matches(b"http://app.example.com"));
        assert!(!pattern.matches(b"https://x/.example.com"));
        assert!(!pattern.matches(b"https://app.example.com:8443"));
    }

    #[test]
    fn bad_origins_are_refused_with_an_example() {
        for bad in ["localhost:3000", "https://a.*.com", "ftp://x", "https://app.example.com/", "https://App.example"] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            OriginPattern::parse("http://localhost:3000"),
            Ok(OriginPattern::Exact("http://localhost:3000".to_owned()))
        );
    }

    #[test]
    fn a_wildcard_with_credentials_is_refused() {
        let mut config = CorsConfig::default();
        config.policies.insert(
            "open".to_owned(),
            CorsPolicyConfig { allowed_origins: vec!["*".to_owned()], allow_credentials: true, ..Default::default() },
        );
        let mut problems = Problems::default();
        config.validate(&mut problems);
        let found: Vec<String> = problems.into_iter().map(|problem| problem.to_string()).collect();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("cors.policies.open.allowed_origins[0]"), "{found:?}");
    }
}
