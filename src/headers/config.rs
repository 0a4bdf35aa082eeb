//! The `headers` tables of services and routes: typed, validated once.

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::problems::Problems;

/// Header rules of a service (every call to it: REST routes and GraphQL
/// `@rest` fields) or of one route (added to its service's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderRulesConfig {
    /// Client request headers that reach the backend, by name or by a
    /// prefix pattern (`"x-client-*"`), optionally renamed or with a
    /// default for when the client sent none. REST routes pass every other
    /// client header too unless `only_listed`; GraphQL calls pass only
    /// these.
    pub request: Vec<RequestHeaderConfig>,
    /// On REST routes: forward only the listed client headers (and those
    /// describing the body), not every header as by default.
    pub only_listed: bool,
    /// Headers the gateway sets on the backend request: a fixed text,
    /// `"{claim:NAME}"` (the verified caller's claim; not set for
    /// anonymous callers or a missing claim) or `"{route}"` (the route's
    /// prefix, or the GraphQL path).
    pub add: BTreeMap<String, String>,
    /// Backend answer headers a GraphQL client receives (names or
    /// `"x-*"`-style patterns); `Set-Cookie` lines of several calls stay
    /// separate lines and `Vary` is their union. REST answers keep every
    /// header but a route's `hide_response_headers`.
    pub response: Vec<String>,
    /// Which value wins for an allowed answer header (other than
    /// `Set-Cookie` and `Vary`) that several calls of one GraphQL answer
    /// send: `"first"` or `"last"` (in the order the calls were started).
    pub response_conflict: Conflict,
}

/// One client header rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestHeaderConfig {
    /// The header's name, or a prefix pattern ending in `*`.
    pub name: String,
    /// The name the backend receives it under (not with a pattern).
    #[serde(default)]
    pub rename: Option<String>,
    /// The value sent when the client sent none (not with a pattern).
    #[serde(default)]
    pub default: Option<String>,
}

/// First or last value wins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Conflict {
    /// The first call's value.
    #[default]
    First,
    /// The last call's value.
    Last,
}

/// Names a backend must only ever learn from the gateway, or that describe
/// one connection: rules may not produce them.
const RESERVED: [&str; 16] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "signature",
    "signature-input",
];

impl HeaderRulesConfig {
    /// Checks the rules; `identity` are the headers that tell backends who
    /// calls, which rules may neither forward from clients nor produce.
    pub(crate) fn validate(&self, key: &str, identity: &[HeaderName], problems: &mut Problems) {
        let refused = |name: &HeaderName| RESERVED.contains(&name.as_str()) || identity.contains(name);
        let gateway_only = "is set only by the gateway (identity, forwarding or hop-by-hop header)";
        for (index, rule) in self.request.iter().enumerate() {
            let key = format!("{key}.request[{index}]");
            match rule.name.strip_suffix('*') {
                Some(prefix) => {
                    if prefix.is_empty() || HeaderName::from_bytes(prefix.as_bytes()).is_err() {
                        problems.push(
                            format!("{key}.name"),
                            format!("{:?}: a pattern is a name prefix and '*', e.g. \"x-client-*\"", rule.name),
                        );
                    }
                    if rule.rename.is_some() || rule.default.is_some() {
                        problems.push(key.clone(), "rename and default need a single header name, not a pattern");
                    }
                }
                None => match HeaderName::from_bytes(rule.name.as_bytes()) {
                    Ok(name) if refused(&name) => {
                        problems.push(format!("{key}.name"), format!("{:?} {gateway_only}", rule.name))
                    }
                    Ok(_) => {}
                    Err(_) => problems.push(
                        format!("{key}.name"),
                        format!("{:?} is not a header name, e.g. \"accept-language\"", rule.name),
                    ),
                },
            }
            if let Some(rename) = &rule.rename {
                match HeaderName::from_bytes(rename.as_bytes()) {
                    Ok(name) if refused(&name) => {
                        problems.push(format!("{key}.rename"), format!("{rename:?} {gateway_only}"))
                    }
                    Ok(_) => {}
                    Err(_) => problems.push(format!("{key}.rename"), format!("{rename:?} is not a header name")),
                }
            }
            if rule.default.as_ref().is_some_and(|value| HeaderValue::try_from(value.as_str()).is_err()) {
                problems.push(format!("{key}.default"), "must be visible ASCII text");
            }
        }
        for (name, value) in &self.add {
            let key = format!("{key}.add.{name}");
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(header) if refused(&header) => problems.push(key.clone(), format!("{name:?} {gateway_only}")),
                Ok(_) => {}
                Err(_) => problems.push(key.clone(), format!("{name:?} is not a header name")),
            }
            if let Err(message) = super::AddedValue::parse(value) {
                problems.push(key, message);
            }
        }
        for (index, name) in self.response.iter().enumerate() {
            let bare = name.strip_suffix('*').unwrap_or(name);
            if bare.is_empty() || HeaderName::from_bytes(bare.as_bytes()).is_err() {
                problems.push(
                    format!("{key}.response[{index}]"),
                    format!("{name:?} is not a header name or pattern, e.g. \"set-cookie\""),
                );
            }
        }
    }
}
