//! Identity the services can verify: RFC 9421 HTTP Message Signatures over
//! what portico tells a backend about the caller.
//!
//! With `[identity_signing]` keys, every backend request that carries
//! identity headers (`X-User-Id`, forwarded claims, `X-Api-Client`), from
//! either door, gets `Signature-Input` and `Signature` (label `portico`,
//! HMAC-SHA256 with the first key) covering the method, the path and query
//! the backend receives, every identity header, the creation time and the
//! key id. A service (`services/portico_common/signing.py`) then refuses
//! identity that did not come from the gateway, or came too long ago.
//!
//! No maintained RFC 9421 crate fits here (the candidates are pre-1.0 and
//! pull in every asymmetric algorithm), and the part needed is small: the
//! signature base of §2.5 for a fixed list of components, tested against the
//! RFC's HMAC example (B.2.5). The key's HMAC state is computed once; a
//! signature costs one clone of it, one string and two header values.
//!
//! Architecture invariant: a leaf; both doors call it, it imports neither.

mod config;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use sha2::Sha256;

pub use config::{IdentitySigningConfig, SigningKeyConfig};

/// `Signature-Input` (RFC 9421 §4.1).
pub const SIGNATURE_INPUT: HeaderName = HeaderName::from_static("signature-input");
/// `Signature` (RFC 9421 §4.2).
pub const SIGNATURE: HeaderName = HeaderName::from_static("signature");
/// The label of portico's signature in both headers.
pub const LABEL: &str = "portico";

/// Signs identity with the first configured key.
pub struct IdentitySigner {
    key_id: Box<str>,
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for IdentitySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentitySigner").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl IdentitySigner {
    /// The signer of a validated section; `None` when it lists no key.
    pub fn new(config: &IdentitySigningConfig) -> Option<Arc<Self>> {
        let key = config.keys.first()?;
        let mac = Hmac::<Sha256>::new_from_slice(key.secret.as_bytes()).ok()?;
        Some(Arc::new(Self { key_id: key.id.as_str().into(), mac }))
    }

    /// Signs a backend request that carries the identity headers `covered`
    /// (already set in `headers`): removes any `Signature`/`Signature-Input`
    /// from elsewhere and sets portico's, created now.
    pub fn sign(&self, method: &Method, path_and_query: &str, covered: &[&HeaderName], headers: &mut HeaderMap) {
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
        self.sign_at(method, path_and_query, covered, headers, created);
    }

    /// [`IdentitySigner::sign`] with a given creation time (seconds since
    /// the epoch), for tests and tools.
    pub fn sign_at(
        &self,
        method: &Method,
        path_and_query: &str,
        covered: &[&HeaderName],
        headers: &mut HeaderMap,
        created: u64,
    ) {
        headers.remove(&SIGNATURE);
        headers.remove(&SIGNATURE_INPUT);
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, query),
            None => (path_and_query, ""),
        };
        let mut base = SignatureBase::with_capacity(192 + path_and_query.len());
        base.derived("@method", &[method.as_str()]);
        base.derived("@path", &[if path.is_empty() { "/" } else { path }]);
        base.derived("@query", &["?", query]);
        for name in covered {
            // A value that is not visible ASCII is left unsigned, and a
            // service refuses it as unsigned identity.
            let Some(Ok(value)) = headers.get(*name).map(HeaderValue::to_str) else { continue };
            base.derived(name.as_str(), &[value.trim()]);
        }
        let mut params = itoa::Buffer::new();
        let parameters = [";created=", params.format(created), ";keyid=\"", &self.key_id, "\""];
        base.finish(&parameters);
        let signature_params = &base.params;

        let mut mac = self.mac.clone();
        mac.update(base.text.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut signature = String::with_capacity(LABEL.len() + 48);
        signature.push_str(LABEL);
        signature.push_str("=:");
        base64::engine::general_purpose::STANDARD.encode_string(digest, &mut signature);
        signature.push(':');
        let mut input = String::with_capacity(LABEL.len() + 1 + signature_params.len());
        input.push_str(LABEL);
        input.push('=');
        input.push_str(signature_params);
        if let (Ok(input), Ok(signature)) = (HeaderValue::try_from(input), HeaderValue::try_from(signature)) {
            headers.insert(SIGNATURE_INPUT, input);
            headers.insert(SIGNATURE, signature);
        }
    }
}

/// The signature base of RFC 9421 §2.5: one line per covered component,
/// then `"@signature-params"`, whose value (the inner list of component
/// names and the parameters) is also the `Signature-Input` member's value.
struct SignatureBase {
    text: String,
    /// The `("a" "b")` list, then the parameters.
    params: String,
}

impl SignatureBase {
    fn with_capacity(capacity: usize) -> Self {
        let mut params = String::with_capacity(96);
        params.push('(');
        Self { text: String::with_capacity(capacity), params }
    }

    /// A component (a lowercase field name or a derived `@name`) whose value
    /// is the concatenation of `parts`.
    fn derived(&mut self, name: &str, parts: &[&str]) {
        if self.params.len() > 1 {
            self.params.push(' ');
        }
        for target in [&mut self.text, &mut self.params] {
            target.push('"');
            target.push_str(name);
            target.push('"');
        }
        self.text.push_str(": ");
        parts.iter().for_each(|part| self.text.push_str(part));
        self.text.push('\n');
    }

    /// Closes the list with `parameters` (`;created=...`) and adds the
    /// `@signature-params` line.
    fn finish(&mut self, parameters: &[&str]) {
        self.params.push(')');
        parameters.iter().for_each(|part| self.params.push_str(part));
        self.text.push_str("\"@signature-params\": ");
        self.text.push_str(&self.params);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hmac_base64(key: &[u8], text: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
        mac.update(text.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    #[test]
    fn bad_keys_are_named_with_their_key_path() {
        let toml = r#"
            [identity_signing]
            keys = [{ id = "k 1", secret = "short" }, { id = "k2", secret = "0123456789abcdef0123456789abcdef" },
                    { id = "k2", secret = "0123456789abcdef0123456789abcdef" }]
        "#;
        let problems = match crate::Config::parse(toml, "test.toml") {
            Ok(_) => panic!("the keys must be refused"),
            Err(error) => error.to_string(),
        };
        assert!(problems.contains("identity_signing.keys[0].id"), "{problems}");
        assert!(problems.contains("identity_signing.keys[0].secret"), "{problems}");
        assert!(problems.contains("identity_signing.keys[2].id") && problems.contains("listed twice"), "{problems}");
        assert!(!problems.contains("short"), "the secret is never echoed: {problems}");
    }

    /// RFC 9421 Appendix B.2.5, "Signing a Request Using hmac-sha256".
    #[test]
    fn the_signature_base_and_signature_match_the_rfcs_hmac_example() {
        let mut base = SignatureBase::with_capacity(256);
        base.derived("date", &["Tue, 20 Apr 2021 02:07:55 GMT"]);
        base.derived("@authority", &["example.com"]);
        base.derived("content-type", &["application/json"]);
        base.finish(&[";created=1618884473", ";keyid=\"test-shared-secret\""]);
        let params = base.params.clone();
        assert_eq!(params, r#"("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret""#);
        assert_eq!(
            base.text,
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@authority\": example.com\n\"content-type\": application/json\n\
             \"@signature-params\": (\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\""
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode("uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==")
            .expect("the RFC's key");
        assert_eq!(hmac_base64(&key, &base.text), "pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=");
    }

    #[test]
    fn a_request_is_signed_over_method_target_identity_and_time() {
        let config =
            IdentitySigningConfig { keys: vec![SigningKeyConfig { id: "k1".to_owned(), secret: "s".repeat(32) }] };
        let signer = IdentitySigner::new(&config).expect("a key");
        let user = HeaderName::from_static("x-user-id");
        let mut headers = HeaderMap::new();
        headers.insert(&user, HeaderValue::from_static("42"));
        headers.insert(SIGNATURE, HeaderValue::from_static("portico=:forged:"));
        signer.sign_at(&Method::GET, "/users/?ids=1%2C2", &[&user], &mut headers, 1_700_000_000);
        assert_eq!(
            headers[&SIGNATURE_INPUT],
            r#"portico=("@method" "@path" "@query" "x-user-id");created=1700000000;keyid="k1""#
        );
        let base = "\"@method\": GET\n\"@path\": /users/\n\"@query\": ?ids=1%2C2\n\"x-user-id\": 42\n\
                    \"@signature-params\": (\"@method\" \"@path\" \"@query\" \"x-user-id\");created=1700000000;keyid=\"k1\"";
        let expected = format!("portico=:{}:", hmac_base64("s".repeat(32).as_bytes(), base));
        assert_eq!(headers[&SIGNATURE], expected.as_str(), "the client's Signature was replaced");

        // No query: `@query` is "?" (RFC 9421 §2.2.7).
        signer.sign_at(&Method::POST, "/checkout/", &[&user], &mut headers, 1_700_000_000);
        let base = base.replace("GET", "POST").replace("/users/", "/checkout/").replace("?ids=1%2C2", "?");
        let expected = format!("portico=:{}:", hmac_base64("s".repeat(32).as_bytes(), &base));
        assert_eq!(headers[&SIGNATURE], expected.as_str());
    }
}
