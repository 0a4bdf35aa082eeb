//! HTTP caching semantics (RFC 9111, RFC 5861): which answers may be
//! stored, for how long, and what a client's request directives ask for.
//!
//! The gateway is a shared cache: `s-maxage` wins over `max-age`, and a
//! `private` answer is only stored where the key is one caller's own.

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, HeaderName, StatusCode};

/// `Cache-Control` directives the cache acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub must_revalidate: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl Directives {
    /// Reads every `Cache-Control` header. Unknown directives are ignored;
    /// a malformed number makes the directive count as zero, the safe side.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut directives = Self::default();
        let values = headers.get_all(header::CACHE_CONTROL).iter().filter_map(|value| value.to_str().ok());
        for item in values.flat_map(|value| value.split(',')) {
            let (name, argument) = match item.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
                None => (item.trim(), None),
            };
            let seconds = || argument.map(|text| text.parse::<u64>().unwrap_or(0));
            match name.to_ascii_lowercase().as_str() {
                "no-store" => directives.no_store = true,
                // `no-cache="Set-Cookie"` and `private="X"` name fields; the
                // cache honours them for the whole answer.
                "no-cache" => directives.no_cache = true,
                "private" => directives.private = true,
                "must-revalidate" | "proxy-revalidate" => directives.must_revalidate = true,
                "max-age" => directives.max_age = seconds(),
                "s-maxage" => directives.s_maxage = seconds(),
                "stale-while-revalidate" => directives.stale_while_revalidate = seconds(),
                "stale-if-error" => directives.stale_if_error = seconds(),
                _ => {}
            }
        }
        directives
    }
}

/// What a client's request asks of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestMode {
    /// A stored answer may be used.
    UseStored,
    /// A new answer must be fetched (and stored): `no-cache`, `max-age=0`.
    Revalidate,
    /// The cache must neither answer nor store: `no-store`.
    Bypass,
}

/// The client's directives; `honor_no_cache` is the route's setting.
pub(crate) fn request_mode(headers: &HeaderMap, honor_no_cache: bool) -> RequestMode {
    let directives = Directives::of(headers);
    if directives.no_store {
        return RequestMode::Bypass;
    }
    let pragma_no_cache = !headers.contains_key(header::CACHE_CONTROL)
        && headers.get_all(header::PRAGMA).iter().any(|value| value.as_bytes().eq_ignore_ascii_case(b"no-cache"));
    let wants_new = directives.no_cache || directives.max_age == Some(0) || pragma_no_cache;
    if wants_new && honor_no_cache {
        RequestMode::Revalidate
    } else {
        RequestMode::UseStored
    }
}

/// What a storing site allows: the route's settings, or a GraphQL field's
/// `@cacheControl` hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Allowance {
    /// Freshness when the answer says nothing, and its ceiling.
    pub ttl: Duration,
    /// Freshness of 404 and 410 answers, which are otherwise not stored.
    pub negative_ttl: Option<Duration>,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// Whether the key is one caller's own, so `private` answers may be kept.
    pub own_key: bool,
}

/// How long a stored answer lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lifetimes {
    /// Freshness lifetime, counted from the answer's creation.
    pub fresh_for: Duration,
    /// The answer's age when it arrived (its `Age` header).
    pub initial_age: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
}

/// Why an answer was not stored (for debug logs).
pub(crate) type Refusal = &'static str;

/// Decides whether an answer to a GET may be stored, and for how long.
pub(crate) fn storable(
    status: StatusCode,
    headers: &HeaderMap,
    allowance: &Allowance,
    now: SystemTime,
) -> Result<Lifetimes, Refusal> {
    let ceiling = match status.as_u16() {
        200 | 203 | 204 | 301 => allowance.ttl,
        404 | 410 => allowance.negative_ttl.ok_or("negative answers are not cached on this route")?,
        _ => return Err("the status is not cacheable"),
    };
    if headers.contains_key(header::SET_COOKIE) {
        return Err("the answer sets a cookie");
    }
    if vary_names(headers).is_none() {
        return Err("the answer varies on everything (Vary: *)");
    }
    let directives = Directives::of(headers);
    if directives.no_store {
        return Err("no-store");
    }
    if directives.no_cache {
        return Err("no-cache: every use would need a round trip");
    }
    if directives.private && !allowance.own_key {
        return Err("private answer on a shared key");
    }
    let given =
        directives.s_maxage.or(directives.max_age).map(Duration::from_secs).or_else(|| expires_lifetime(headers, now));
    let fresh_for = given.map_or(ceiling, |given| given.min(ceiling));
    let initial_age = header_seconds(headers, &header::AGE).map_or(Duration::ZERO, Duration::from_secs);
    if fresh_for <= initial_age {
        return Err("already stale on arrival");
    }
    let window = |route: Duration, answer: Option<u64>| {
        if directives.must_revalidate {
            Duration::ZERO
        } else {
            answer.map_or(route, |seconds| route.min(Duration::from_secs(seconds)))
        }
    };
    Ok(Lifetimes {
        fresh_for,
        initial_age,
        stale_while_revalidate: window(allowance.stale_while_revalidate, directives.stale_while_revalidate),
        stale_if_error: window(allowance.stale_if_error, directives.stale_if_error),
    })
}

/// `Expires` minus `Date` (or now); an unparsable `Expires` means already
/// expired (RFC 9111 5.3).
fn expires_lifetime(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let expires = headers.get(header::EXPIRES)?;
    let Some(expires) = expires.to_str().ok().and_then(|text| httpdate::parse_http_date(text).ok()) else {
        return Some(Duration::ZERO);
    };
    let date = headers
        .get(header::DATE)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| httpdate::parse_http_date(text).ok())
        .unwrap_or(now);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

fn header_seconds(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The request headers an answer varies on, lowercase, sorted and
/// deduplicated; `None` for `Vary: *`.
pub(crate) fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        for name in value.to_str().unwrap_or("*").split(',') {
            let name = name.trim();
            if name == "*" {
                return None;
            }
            if !name.is_empty() {
                names.push(HeaderName::from_bytes(name.as_bytes()).ok()?);
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_static(name), HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    fn allowance(ttl: u64) -> Allowance {
        Allowance {
            ttl: Duration::from_secs(ttl),
            negative_ttl: None,
            stale_while_revalidate: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(60),
            own_key: false,
        }
    }

    fn fresh_for(pairs: &[(&'static str, &str)], ttl: u64) -> Result<u64, Refusal> {
        storable(StatusCode::OK, &headers(pairs), &allowance(ttl), SystemTime::now())
            .map(|lifetimes| lifetimes.fresh_for.as_secs())
    }

    #[test]
    fn the_route_ttl_is_the_default_and_the_ceiling() {
        assert_eq!(fresh_for(&[], 30), Ok(30));
        assert_eq!(fresh_for(&[("cache-control", "max-age=10")], 30), Ok(10));
        assert_eq!(fresh_for(&[("cache-control", "max-age=600")], 30), Ok(30));
        assert_eq!(fresh_for(&[("cache-control", "max-age=100, s-maxage=5")], 30), Ok(5), "s-maxage wins");
        assert_eq!(fresh_for(&[("cache-control", "public, max-age=bogus")], 30), Err("already stale on arrival"));
    }

    #[test]
    fn refusals_follow_the_response_directives() {
        assert_eq!(fresh_for(&[("cache-control", "no-store")], 30), Err("no-store"));
        assert!(fresh_for(&[("cache-control", "No-Cache")], 30).is_err());
        assert!(fresh_for(&[("cache-control", "private, max-age=60")], 30).is_err());
        let own = Allowance { own_key: true, ..allowance(30) };
        let private = headers(&[("cache-control", "private, max-age=60")]);
        assert!(storable(StatusCode::OK, &private, &own, SystemTime::now()).is_ok(), "a caller's own key keeps it");
        assert!(fresh_for(&[("set-cookie", "a=b")], 30).is_err());
        assert!(fresh_for(&[("vary", "Accept, *")], 30).is_err());
        assert_eq!(fresh_for(&[("age", "40")], 30), Err("already stale on arrival"));
    }

    #[test]
    fn expires_counts_from_the_date_header() {
        let now = SystemTime::now();
        let date = httpdate::fmt_http_date(now);
        let expires = httpdate::fmt_http_date(now + Duration::from_secs(20));
        assert_eq!(fresh_for(&[("date", &date), ("expires", &expires)], 30), Ok(20));
        assert!(fresh_for(&[("expires", "0")], 30).is_err(), "an invalid Expires is already expired");
        assert_eq!(fresh_for(&[("expires", "0"), ("cache-control", "max-age=7")], 30), Ok(7), "max-age wins");
    }

    #[test]
    fn statuses_outside_the_set_and_unconfigured_negatives_are_not_stored() {
        let none = HeaderMap::new();
        let now = SystemTime::now();
        for status in [201, 206, 302, 400, 403, 500, 503] {
            let status = StatusCode::from_u16(status).expect("status");
            assert!(storable(status, &none, &allowance(30), now).is_err(), "{status}");
        }
        for status in [200, 203, 204, 301] {
            let status = StatusCode::from_u16(status).expect("status");
            assert!(storable(status, &none, &allowance(30), now).is_ok(), "{status}");
        }
        assert!(storable(StatusCode::NOT_FOUND, &none, &allowance(30), now).is_err());
        let negative = Allowance { negative_ttl: Some(Duration::from_secs(5)), ..allowance(30) };
        let lifetimes = storable(StatusCode::NOT_FOUND, &none, &negative, now).expect("stored");
        assert_eq!(lifetimes.fresh_for, Duration::from_secs(5));
    }

    #[test]
    fn stale_windows_are_bounded_by_the_route_and_cut_by_must_revalidate() {
        let now = SystemTime::now();
        let given = headers(&[("cache-control", "max-age=10, stale-while-revalidate=5, stale-if-error=600")]);
        let lifetimes = storable(StatusCode::OK, &given, &allowance(30), now).expect("stored");
        assert_eq!(lifetimes.stale_while_revalidate, Duration::from_secs(5));
        assert_eq!(lifetimes.stale_if_error, Duration::from_secs(60));
        let strict = headers(&[("cache-control", "max-age=10, must-revalidate")]);
        let lifetimes = storable(StatusCode::OK, &strict, &allowance(30), now).expect("stored");
        assert_eq!((lifetimes.stale_while_revalidate, lifetimes.stale_if_error), (Duration::ZERO, Duration::ZERO));
    }

    #[test]
    fn client_directives_pick_the_request_mode() {
        assert_eq!(request_mode(&headers(&[]), true), RequestMode::UseStored);
        assert_eq!(request_mode(&headers(&[("cache-control", "no-cache")]), true), RequestMode::Revalidate);
        assert_eq!(request_mode(&headers(&[("cache-control", "max-age=0")]), true), RequestMode::Revalidate);
        assert_eq!(request_mode(&headers(&[("pragma", "no-cache")]), true), RequestMode::Revalidate);
        assert_eq!(request_mode(&headers(&[("cache-control", "no-cache")]), false), RequestMode::UseStored);
        assert_eq!(request_mode(&headers(&[("cache-control", "no-store")]), false), RequestMode::Bypass);
    }

    #[test]
    fn vary_names_are_normalised() {
        let names = vary_names(&headers(&[("vary", "Accept-Language, accept"), ("vary", "Accept")])).expect("names");
        assert_eq!(names, [HeaderName::from_static("accept"), HeaderName::from_static("accept-language")]);
        assert_eq!(vary_names(&headers(&[("vary", "*")])), None);
    }
}
