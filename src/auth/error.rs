//! Why a caller was refused. Messages say what is wrong without echoing
//! the credential.

/// A refused credential or an unmet route policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The route needs credentials and none were sent.
    #[error("this route requires authentication")]
    MissingCredentials,
    /// The `Authorization` header is not `Bearer <token>`, or is too long.
    #[error("the Authorization header must be `Bearer <token>`")]
    MalformedHeader,
    /// The token cannot be decoded or uses a refused algorithm.
    #[error("the token is malformed")]
    MalformedToken,
    /// The token's algorithm is not one the gateway accepts.
    #[error("the token's algorithm is not accepted")]
    AlgorithmNotAllowed,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `exp` is in the past.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("the token has the wrong issuer")]
    WrongIssuer,
    /// `aud` is not an accepted audience.
    #[error("the token has the wrong audience")]
    WrongAudience,
    /// A required claim is missing.
    #[error("the token lacks the required claim {0}")]
    MissingClaim(String),
    /// The token names a key the gateway does not know.
    #[error("the token is signed with an unknown key")]
    UnknownKey,
    /// The signing keys have not been fetched yet.
    #[error("the signing keys are not available yet")]
    NoKeys,
    /// The API key is unknown or revoked.
    #[error("the API key is not valid")]
    InvalidApiKey,
    /// The caller lacks scopes the route requires.
    #[error("this route requires the scopes: {}", .required.join(" "))]
    InsufficientScope {
        /// The scopes required.
        required: Vec<String>,
    },
}

impl AuthError {
    /// Whether this is about a missing permission (403) rather than an
    /// unproven identity (401).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::InsufficientScope { .. })
    }
}
