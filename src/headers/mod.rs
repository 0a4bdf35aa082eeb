//! Declarative header rules between clients and backends, for both doors.
//!
//! A service's `headers` table applies to every call to it, a route's is
//! added to its service's. The rules say which client request headers reach
//! the backend (by name or prefix pattern, renamed, with a default), which
//! headers the gateway sets (fixed text, a verified claim, the route), and
//! which backend answer headers a GraphQL client receives
//! ([`ResponseHeaderMerge`]). Defaults keep today's behaviour: REST passes
//! every client header, GraphQL calls none, and identity, forwarding and
//! hop-by-hop headers are the gateway's alone (configuration that would
//! produce them is refused at start).

mod config;

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub use config::{Conflict, HeaderRulesConfig, RequestHeaderConfig};

use crate::identity::Identity;

/// Which headers match a rule.
#[derive(Debug, Clone)]
enum Matcher {
    Exact(HeaderName),
    /// Lowercase name prefix.
    Prefix(String),
}

impl Matcher {
    fn parse(text: &str) -> Option<Self> {
        match text.strip_suffix('*') {
            Some(prefix) => Some(Self::Prefix(prefix.to_ascii_lowercase())),
            None => HeaderName::from_bytes(text.as_bytes()).ok().map(Self::Exact),
        }
    }

    fn matches(&self, name: &HeaderName) -> bool {
        match self {
            Self::Exact(exact) => exact == name,
            Self::Prefix(prefix) => name.as_str().starts_with(prefix.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
struct Forward {
    matcher: Matcher,
    rename: Option<HeaderName>,
    default: Option<HeaderValue>,
}

/// A header value the gateway sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AddedValue {
    Fixed(HeaderValue),
    Claim(String),
    Route,
}

impl AddedValue {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text == "{route}" {
            return Ok(Self::Route);
        }
        if let Some(claim) = text.strip_prefix("{claim:").and_then(|rest| rest.strip_suffix('}')) {
            return if claim.is_empty() {
                Err("name the claim, e.g. \"{claim:tenant}\"".to_owned())
            } else {
                Ok(Self::Claim(claim.to_owned()))
            };
        }
        if text.starts_with('{') && text.ends_with('}') {
            return Err(format!("{text:?}: the placeholders are \"{{claim:NAME}}\" and \"{{route}}\""));
        }
        HeaderValue::try_from(text).map(Self::Fixed).map_err(|_| "must be visible ASCII text".to_owned())
    }
}

/// Client-to-backend header rules, compiled once at start.
#[derive(Debug, Clone, Default)]
pub struct RequestHeaderRules {
    forward: Vec<Forward>,
    only_listed: bool,
    add: Vec<(HeaderName, AddedValue)>,
}

/// Headers that describe a request's body: kept on REST routes with
/// `only_listed`, as the body cannot be forwarded without them.
const BODY_HEADERS: [HeaderName; 4] =
    [header::CONTENT_TYPE, header::CONTENT_LENGTH, header::CONTENT_ENCODING, header::CONTENT_LANGUAGE];

impl RequestHeaderRules {
    /// The rules of a service followed by those of a route (validated
    /// configuration). `None` when there are none, so the hot path skips
    /// them.
    pub fn new<'a>(tables: impl IntoIterator<Item = &'a HeaderRulesConfig>) -> Option<Arc<Self>> {
        let mut rules = Self::default();
        for table in tables {
            rules.only_listed |= table.only_listed;
            rules.forward.extend(table.request.iter().filter_map(|rule| {
                Some(Forward {
                    matcher: Matcher::parse(&rule.name)?,
                    rename: rule.rename.as_deref().and_then(|name| HeaderName::from_bytes(name.as_bytes()).ok()),
                    default: rule.default.as_deref().and_then(|value| HeaderValue::try_from(value).ok()),
                })
            }));
            for (name, value) in &table.add {
                let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), AddedValue::parse(value)) else {
                    continue;
                };
                rules.add.retain(|(earlier, _)| *earlier != name);
                rules.add.push((name, value));
            }
        }
        let empty = rules.forward.is_empty() && rules.add.is_empty() && !rules.only_listed;
        (!empty).then(|| Arc::new(rules))
    }

    /// Applies the rules to a REST request's headers in place (after the
    /// authentication layer set the identity headers): every header passes
    /// unless `only_listed`, listed ones are renamed or defaulted, and the
    /// gateway's own are set.
    pub fn apply_in_place(&self, headers: &mut HeaderMap, identity: Option<&Identity>, route: &str) {
        if self.only_listed || self.forward.iter().any(|rule| rule.rename.is_some() || rule.default.is_some()) {
            let client = std::mem::take(headers);
            let identity_names: Vec<&HeaderName> = identity
                .map(|identity| identity.forwarded_headers.iter().map(|(name, _)| name).collect())
                .unwrap_or_default();
            for (name, value) in &client {
                let listed = self.forward.iter().any(|rule| rule.matcher.matches(name));
                if !listed && (!self.only_listed || BODY_HEADERS.contains(name) || identity_names.contains(&name)) {
                    headers.append(name.clone(), value.clone());
                }
            }
            self.forward_listed(&client, headers);
        }
        self.add_own(identity, route, headers);
    }

    /// Writes into `out` the backend request headers the rules derive from
    /// a client's headers: the listed client headers (renamed, defaulted)
    /// and the gateway's own. For GraphQL `@rest` calls, where nothing else
    /// of the client's request is forwarded.
    pub fn apply(&self, client: &HeaderMap, identity: Option<&Identity>, route: &str, out: &mut HeaderMap) {
        self.forward_listed(client, out);
        self.add_own(identity, route, out);
    }

    fn forward_listed(&self, client: &HeaderMap, out: &mut HeaderMap) {
        for rule in &self.forward {
            match &rule.matcher {
                Matcher::Exact(name) => {
                    let target = rule.rename.as_ref().unwrap_or(name);
                    let mut sent = false;
                    for value in client.get_all(name) {
                        if !sent {
                            out.remove(target);
                        }
                        out.append(target.clone(), value.clone());
                        sent = true;
                    }
                    if let (false, Some(default)) = (sent, &rule.default) {
                        out.insert(target.clone(), default.clone());
                    }
                }
                Matcher::Prefix(_) => {
                    for (name, value) in client {
                        if rule.matcher.matches(name) && !out.get_all(name).iter().any(|sent| sent == value) {
                            out.append(name.clone(), value.clone());
                        }
                    }
                }
            }
        }
    }

    fn add_own(&self, identity: Option<&Identity>, route: &str, out: &mut HeaderMap) {
        for (name, value) in &self.add {
            let value = match value {
                AddedValue::Fixed(value) => Some(value.clone()),
                AddedValue::Route => HeaderValue::try_from(route).ok(),
                AddedValue::Claim(claim) => {
                    identity.and_then(|identity| identity.claims.get(claim.as_str())).and_then(|value| match value {
                        serde_json::Value::String(text) => HeaderValue::try_from(text.as_str()).ok(),
                        serde_json::Value::Number(number) => HeaderValue::try_from(number.to_string()).ok(),
                        serde_json::Value::Bool(flag) => {
                            Some(HeaderValue::from_static(if *flag { "true" } else { "false" }))
                        }
                        _ => None,
                    })
                }
            };
            match value {
                Some(value) => out.insert(name.clone(), value),
                // A client's own value must not stand in for a missing claim.
                None => out.remove(name),
            };
        }
    }
}

/// Which backend answer headers reach a GraphQL client, and how the
/// answers of several calls combine.
#[derive(Debug, Clone, Default)]
pub struct ResponseHeaderRules {
    allowed: Vec<Matcher>,
    conflict: Conflict,
}

impl ResponseHeaderRules {
    /// The rules of a service's `headers.response` (validated configuration).
    pub fn new(config: &HeaderRulesConfig) -> Self {
        Self::layered([config])
    }

    /// The `response` lists of several tables together (a service's, then
    /// a field's); the last table that lists any decides the conflict rule.
    pub fn layered<'a>(tables: impl IntoIterator<Item = &'a HeaderRulesConfig>) -> Self {
        let mut rules = Self::default();
        for table in tables {
            if !table.response.is_empty() {
                rules.conflict = table.response_conflict;
            }
            rules.allowed.extend(table.response.iter().filter_map(|name| Matcher::parse(name)));
        }
        rules
    }

    /// Whether no answer header is allowed (the default).
    pub fn is_empty(&self) -> bool {
        self.allowed.is_empty()
    }

    fn allows(&self, name: &HeaderName) -> bool {
        self.allowed.iter().any(|matcher| matcher.matches(name))
    }
}

/// The header rules of one kind of GraphQL backend call: its service's
/// `headers`, followed by the field's `@rest(headerRules: ...)` table if it
/// names one. Compiled once at start; plans hold them.
#[derive(Debug, Default)]
pub struct CallHeaderRules {
    /// Which client headers the call carries, and which the gateway adds.
    pub request: Option<Arc<RequestHeaderRules>>,
    /// Which answer headers reach the client.
    pub response: ResponseHeaderRules,
}

impl CallHeaderRules {
    /// The tables in order (validated configuration); `None` when they
    /// hold no rule at all.
    pub fn new(tables: &[&HeaderRulesConfig]) -> Option<Arc<Self>> {
        let rules = Self {
            request: RequestHeaderRules::new(tables.iter().copied()),
            response: ResponseHeaderRules::layered(tables.iter().copied()),
        };
        (rules.request.is_some() || !rules.response.is_empty()).then(|| Arc::new(rules))
    }
}

/// The answer headers of one GraphQL response, merged from the backend
/// calls that built it.
///
/// The executor calls [`ResponseHeaderMerge::add`] with each call's answer
/// headers and the called service's [`ResponseHeaderRules`], in the order
/// the calls were started, then [`ResponseHeaderMerge::finish`] for the
/// headers to put on the client's answer. Only headers the service allows
/// are taken; `Set-Cookie` lines stay separate lines (never joined, as a
/// cookie's `Expires` holds a comma) in call order, duplicates removed;
/// `Vary` is the union of the calls' field names; every other allowed
/// header takes the first or last call's value, as the service's
/// `response_conflict` says. `Cache-Control` is not handled here: the
/// answer's comes from the selected fields' `@cacheControl`.
#[derive(Debug, Default)]
pub struct ResponseHeaderMerge {
    cookies: Vec<HeaderValue>,
    vary: Vec<String>,
    others: HeaderMap,
}

impl ResponseHeaderMerge {
    /// An empty merge.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one backend call's answer headers.
    pub fn add(&mut self, rules: &ResponseHeaderRules, answer: &HeaderMap) {
        if rules.is_empty() {
            return;
        }
        // A call may send a header on several lines: they count as one value.
        let mut seen_in_call: Vec<&HeaderName> = Vec::new();
        let mut skipped: Vec<&HeaderName> = Vec::new();
        for (name, value) in answer {
            if *name == header::CACHE_CONTROL || !rules.allows(name) {
                continue;
            }
            if *name == header::SET_COOKIE {
                if !self.cookies.contains(value) {
                    self.cookies.push(value.clone());
                }
            } else if *name == header::VARY {
                for field in value.to_str().unwrap_or("").split(',') {
                    let field = field.trim().to_ascii_lowercase();
                    if !field.is_empty() && !self.vary.contains(&field) {
                        self.vary.push(field);
                    }
                }
            } else {
                if !seen_in_call.contains(&name) {
                    seen_in_call.push(name);
                    match rules.conflict {
                        Conflict::First if self.others.contains_key(name) => skipped.push(name),
                        Conflict::First => {}
                        Conflict::Last => {
                            self.others.remove(name);
                        }
                    }
                }
                if !skipped.contains(&name) {
                    self.others.append(name.clone(), value.clone());
                }
            }
        }
    }

    /// The headers for the client's answer.
    pub fn finish(self) -> HeaderMap {
        let mut headers = self.others;
        for cookie in self.cookies {
            headers.append(header::SET_COOKIE, cookie);
        }
        if !self.vary.is_empty() {
            if let Ok(vary) = HeaderValue::try_from(self.vary.join(", ")) {
                headers.insert(header::VARY, vary);
            }
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(toml: &str) -> HeaderRulesConfig {
        toml::from_str(toml).expect("valid rules")
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn graphql_calls_get_only_listed_headers_renamed_and_defaulted() {
        let config = rules(
            r#"
            request = [
              { name = "accept-language" },
              { name = "x-client-version", rename = "x-app-version", default = "unknown" },
              { name = "x-feature-*" },
            ]
            add = { "x-gateway" = "portico", "x-tenant" = "{claim:tenant}", "x-route" = "{route}" }
            "#,
        );
        let compiled = RequestHeaderRules::new([&config]).expect("rules");
        let client = map(&[
            ("accept-language", "de"),
            ("cookie", "session=1"),
            ("x-feature-a", "on"),
            ("x-feature-b", "off"),
            ("x-tenant", "forged"),
        ]);
        let identity = Identity {
            subject: Some("1".to_owned()),
            client: None,
            scopes: Default::default(),
            claims: Arc::new(serde_json::json!({"tenant": "acme"})),
            forwarded_headers: Vec::new(),
        };
        let mut out = HeaderMap::new();
        compiled.apply(&client, Some(&identity), "/graphql", &mut out);
        assert_eq!(out["accept-language"], "de");
        assert_eq!(out["x-app-version"], "unknown");
        assert_eq!(out["x-feature-a"], "on");
        assert_eq!(out["x-feature-b"], "off");
        assert_eq!(out["x-gateway"], "portico");
        assert_eq!(out["x-tenant"], "acme");
        assert_eq!(out["x-route"], "/graphql");
        assert!(!out.contains_key("cookie"));

        let mut anonymous = HeaderMap::new();
        compiled.apply(&client, None, "/graphql", &mut anonymous);
        assert!(!anonymous.contains_key("x-tenant"), "a forged header never stands in for a claim");
    }

    #[test]
    fn only_listed_keeps_the_body_and_identity_headers() {
        let config = rules(
            r#"only_listed = true
            request = [{ name = "cookie" }]"#,
        );
        let compiled = RequestHeaderRules::new([&config]).expect("rules");
        let mut headers =
            map(&[("cookie", "a=1"), ("content-type", "application/json"), ("x-secret", "s"), ("x-user-id", "1")]);
        let identity = Identity {
            subject: Some("1".to_owned()),
            client: None,
            scopes: Default::default(),
            claims: Arc::new(serde_json::Value::Null),
            forwarded_headers: vec![(HeaderName::from_static("x-user-id"), HeaderValue::from_static("1"))],
        };
        compiled.apply_in_place(&mut headers, Some(&identity), "/api/");
        assert_eq!(headers["cookie"], "a=1");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-user-id"], "1");
        assert!(!headers.contains_key("x-secret"));
    }

    #[test]
    fn answers_of_several_calls_merge_cookies_vary_and_the_rest() {
        let first = ResponseHeaderRules::new(&rules(
            r#"response = ["set-cookie", "vary", "content-language", "x-trace-*", "cache-control"]"#,
        ));
        let last = ResponseHeaderRules::new(&rules(
            r#"response = ["set-cookie", "vary", "content-language"]
               response_conflict = "last""#,
        ));
        let mut merge = ResponseHeaderMerge::new();
        merge.add(
            &first,
            &map(&[
                ("set-cookie", "csrftoken=abc; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/"),
                ("set-cookie", "sessionid=s1; HttpOnly"),
                ("vary", "Accept-Language, Cookie"),
                ("content-language", "de"),
                ("x-trace-id", "t1"),
                ("cache-control", "no-store"),
                ("server", "gunicorn"),
            ]),
        );
        merge.add(
            &first,
            &map(&[("set-cookie", "sessionid=s1; HttpOnly"), ("vary", "cookie, origin"), ("content-language", "fr")]),
        );
        let headers = merge.finish();
        let cookies: Vec<&str> = headers.get_all("set-cookie").iter().map(|v| v.to_str().expect("ascii")).collect();
        assert_eq!(cookies, ["csrftoken=abc; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/", "sessionid=s1; HttpOnly"]);
        assert_eq!(headers["vary"], "accept-language, cookie, origin");
        assert_eq!(headers["content-language"], "de", "the first call wins");
        assert_eq!(headers["x-trace-id"], "t1");
        assert!(!headers.contains_key("cache-control"), "cache-control comes from @cacheControl");
        assert!(!headers.contains_key("server"));

        let mut merge = ResponseHeaderMerge::new();
        merge.add(&last, &map(&[("content-language", "de")]));
        merge.add(&last, &map(&[("content-language", "fr")]));
        merge.add(&ResponseHeaderRules::default(), &map(&[("content-language", "es"), ("set-cookie", "x=1")]));
        let headers = merge.finish();
        assert_eq!(headers["content-language"], "fr", "the last allowing call wins");
        assert!(!headers.contains_key("set-cookie"), "a service that allows nothing adds nothing");
    }
}
