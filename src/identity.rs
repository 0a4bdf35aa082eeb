//! The verified caller, as the authentication layer records it in request
//! extensions (`Arc<Identity>`). Doors and later layers read it from there;
//! none of them looks at credentials.

use std::collections::BTreeSet;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

/// The header through which services learn the calling user (the contract's
/// `X-User-Id`); only the gateway may set it.
pub const USER_ID: HeaderName = HeaderName::from_static("x-user-id");

/// Who is calling, once their credentials were verified.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The token's `sub`, for a person.
    pub subject: Option<String>,
    /// The API key's name, for a machine client.
    pub client: Option<String>,
    /// Granted scopes.
    pub scopes: BTreeSet<String>,
    /// All claims (for `$claims.x` in GraphQL connectors).
    pub claims: Arc<serde_json::Value>,
    /// Headers that tell backends who is calling (`X-User-Id: <sub>`, ...).
    pub forwarded_headers: Vec<(HeaderName, HeaderValue)>,
}

impl Identity {
    /// Whether every scope in `required` was granted.
    pub fn has_scopes(&self, required: &[String]) -> bool {
        required.iter().all(|scope| self.scopes.contains(scope))
    }

    /// A stable name for the caller, for logs and per-client limits:
    /// the subject, else the API key's name.
    pub fn key(&self) -> Option<&str> {
        self.subject.as_deref().or(self.client.as_deref())
    }
}
