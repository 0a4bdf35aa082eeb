//! The verified caller, as the authentication layer records it in request
//! extensions. The front doors read it from there; they never look at
//! credentials themselves.

use std::sync::Arc;

/// The claims of a verified token (or of an API key's identity), as JSON.
#[derive(Debug, Clone)]
pub struct VerifiedClaims(pub Arc<serde_json::Value>);
