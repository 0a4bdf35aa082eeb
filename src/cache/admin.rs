//! The cache's admin endpoint (`cache.admin_path`, on only with
//! `cache.admin_key_sha256`): `DELETE` purges by `service=`, `prefix=`, both
//! (a path prefix on the service) or neither (everything); `GET` returns
//! [`super::CacheStats`]. The key travels in `X-Admin-Key`.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{HeaderName, Method};
use percent_encoding::percent_decode_str;
use serde_json::json;

use super::{Cache, CacheError, Purge};
use crate::error::GatewayError;
use crate::request::REQUEST_ID;

/// The header carrying the admin key.
pub const ADMIN_KEY: HeaderName = HeaderName::from_static("x-admin-key");

pub(super) async fn handle(cache: &Cache, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let request_id = parts.headers.get(REQUEST_ID).cloned();
    match answer(cache, &parts).await {
        Ok(response) => response,
        Err(error) => {
            tracing::info!(%error, "cache admin request refused");
            GatewayError::from(error).into_response_with_id(request_id.as_ref())
        }
    }
}

async fn answer(cache: &Cache, request: &http::request::Parts) -> Result<Response, CacheError> {
    let Some(expected) = &cache.admin_key_sha256 else { return Err(CacheError::AdminKeyInvalid) };
    let key = request.headers.get(ADMIN_KEY).ok_or(CacheError::AdminKeyMissing)?;
    if !expected.matches(key.as_bytes()) {
        return Err(CacheError::AdminKeyInvalid);
    }
    match request.method {
        Method::GET => {
            cache.settle().await;
            Ok(Json(cache.stats()).into_response())
        }
        Method::DELETE => {
            let purge = purge_of(request.uri.query().unwrap_or_default())?;
            let purged = cache.purge(&purge).await;
            tracing::info!(?purge, purged, "cache purged");
            Ok(Json(json!({ "purged": purged })).into_response())
        }
        _ => Err(CacheError::MethodNotAllowed),
    }
}

/// `service=` and/or `prefix=`, percent-decoded.
fn purge_of(query: &str) -> Result<Purge, CacheError> {
    let mut service = None;
    let mut prefix = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| CacheError::BadPurge(format!("{name} is not UTF-8")))?
            .into_owned();
        let slot = match name {
            "service" => &mut service,
            "prefix" => &mut prefix,
            other => {
                return Err(CacheError::BadPurge(format!("unknown parameter {other:?}; use service= and/or prefix=")))
            }
        };
        if value.is_empty() || slot.replace(value).is_some() {
            return Err(CacheError::BadPurge(format!("give {name} once, with a value")));
        }
    }
    if prefix.as_deref().is_some_and(|prefix| !prefix.starts_with('/')) {
        return Err(CacheError::BadPurge("prefix must be a path starting with '/'".to_owned()));
    }
    Ok(match (service, prefix) {
        (None, None) => Purge::All,
        (Some(service), None) => Purge::Service(service),
        (None, Some(prefix)) => Purge::GatewayPrefix(prefix),
        (Some(service), Some(prefix)) => Purge::ServicePrefix { service, prefix },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_queries_select_what_goes() {
        assert_eq!(purge_of(""), Ok(Purge::All));
        assert_eq!(purge_of("service=payment"), Ok(Purge::Service("payment".to_owned())));
        assert_eq!(purge_of("prefix=%2Fpayment%2F"), Ok(Purge::GatewayPrefix("/payment/".to_owned())));
        assert_eq!(
            purge_of("service=payment&prefix=/payments/"),
            Ok(Purge::ServicePrefix { service: "payment".to_owned(), prefix: "/payments/".to_owned() })
        );
        assert!(purge_of("servic=payment").is_err());
        assert!(purge_of("prefix=payment").is_err());
        assert!(purge_of("service=a&service=b").is_err());
    }
}
