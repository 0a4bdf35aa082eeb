//! The `[server]` section: the listener, the limits that protect it, and
//! HTTPS termination (`[server.tls]`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use http::{header, HeaderValue};
use serde::Deserialize;
use tower_http::set_header::SetResponseHeaderLayer;

use super::tls::{CertificateFiles, LoadedCertificate};
use crate::problems::Problems;

/// Listener settings and the limits applied to every client connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to accept connections on.
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones are answered 413.
    pub request_body_limit: ByteSize,
    /// Time a client has to send a complete request head. The clock starts
    /// when the connection is accepted (a connection that never sends a byte
    /// is closed after it) and again whenever hyper waits for the next
    /// request, so it also closes keep-alive connections that stay idle this
    /// long. With TLS, it also bounds the handshake, and then the wait for
    /// the first request.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest pause allowed between two pieces of a request body.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Largest number of request headers.
    pub max_headers: usize,
    /// Largest request head (request line plus headers), answered 431 above it.
    pub max_header_size: ByteSize,
    /// How long in-flight requests may run after a shutdown signal; the
    /// process exits by then (plus a second for the last logs) whatever
    /// they are doing. A second signal exits at once.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Total time a REST request may take to get its answer's head, across
    /// all retries (each attempt is also bounded by its service's
    /// `request_timeout`); past it the client gets 504. A route's `timeout`
    /// overrides it.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// HTTPS on `listen`; without this table the listener speaks plain HTTP.
    pub tls: Option<TlsConfig>,
    /// What `/readyz` reports, and how long a shutting-down gateway keeps
    /// serving while load balancers take it out of rotation.
    pub readiness: ReadinessConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            request_body_limit: ByteSize::mib(10),
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            max_headers: 100,
            max_header_size: ByteSize::kib(32),
            shutdown_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            tls: None,
            readiness: ReadinessConfig::default(),
        }
    }
}

impl ServerConfig {
    pub(crate) fn validate(&self, problems: &mut Problems) {
        if self.header_read_timeout.is_zero() {
            problems.push("server.header_read_timeout", "must be greater than zero, e.g. \"30s\"");
        }
        if self.body_read_timeout.is_zero() {
            problems.push("server.body_read_timeout", "must be greater than zero, e.g. \"30s\"");
        }
        if self.request_timeout.is_zero() {
            problems.push("server.request_timeout", "must be greater than zero, e.g. \"60s\"");
        }
        if self.max_headers == 0 {
            problems.push("server.max_headers", "must be at least 1 (100 is a common limit)");
        }
        if self.max_header_size < ByteSize::kib(1) {
            problems.push("server.max_header_size", "must be at least \"1KiB\" (\"32KiB\" is a common limit)");
        }
        if let Some(tls) = &self.tls {
            tls.validate(self.listen, problems);
        }
    }

    /// Reads the TLS certificate and key (relative paths against `base_dir`)
    /// so that `portico check` reports unusable files, and `serve` uses what
    /// was read here instead of reading the files a second time.
    pub(crate) fn load_tls_files(&mut self, base_dir: &Path, problems: &mut Problems) {
        let Some(tls) = &mut self.tls else { return };
        if tls.cert.as_os_str().is_empty() || tls.key.as_os_str().is_empty() {
            return;
        }
        let files = CertificateFiles::resolve(base_dir, tls);
        match files.load() {
            Ok(loaded) => tls.loaded = Some(loaded),
            Err(error) => {
                problems.push(error.config_key(), error.to_string());
                // Loading stops at the certificate; say at once if the key
                // cannot even be read, as on a first setup with neither file.
                if error.config_key() == "server.tls.cert" {
                    if let Some(key_error) = files.unreadable_key() {
                        problems.push(key_error.config_key(), key_error.to_string());
                    }
                }
            }
        }
    }

    /// The layer that puts `Strict-Transport-Security` on every answer, when
    /// TLS and HSTS are both configured. It overrides a backend's own value:
    /// the gateway terminates TLS, so it owns that policy.
    pub fn hsts_layer(&self) -> Option<SetResponseHeaderLayer<HeaderValue>> {
        let value = self.tls.as_ref()?.hsts.as_ref()?.header_value();
        Some(SetResponseHeaderLayer::overriding(header::STRICT_TRANSPORT_SECURITY, value))
    }
}

/// `[server.readiness]`: what `/readyz` tells a load balancer or the
/// Kubernetes endpoint controller, and the drain before shutdown.
///
/// `/readyz` is 503 while the gateway drains (`"status": "draining"`) and,
/// with `require_healthy_endpoints`, while some service has no endpoint able
/// to take traffic (`"status": "unready"`, naming the services). `/healthz`
/// (liveness) never looks at backends.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadinessConfig {
    /// Whether a service without a healthy endpoint makes the gateway
    /// unready. Off by default: every replica shares the same backends, so
    /// a backend outage would take all of them out of rotation at once and
    /// turn the gateway's clear 502/503 answers (and its other, healthy
    /// routes) into refused connections. Turn it on when a gateway replica
    /// can be unready on its own (its own network path to the backends).
    pub require_healthy_endpoints: bool,
    /// How long, after a shutdown signal, the gateway keeps accepting and
    /// serving with `/readyz` answering 503 `draining`, so that load
    /// balancers and the endpoint controller stop sending it traffic
    /// before the listener closes; then in-flight requests get
    /// `shutdown_timeout`. Read at start only.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        Self { require_healthy_endpoints: false, drain_delay: Duration::ZERO }
    }
}

/// `[server.tls]`: HTTPS termination on the main listener.
///
/// Only TLS 1.2 and 1.3 are offered, with ALPN `h2` and `http/1.1`. The
/// certificate and key are read again when either file changes (checked
/// every `reload_check_interval`) or on `SIGHUP`; connections already open
/// keep the certificate they started with, and a reload that fails keeps
/// the previous certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first (e.g. `fullchain.pem`).
    /// Relative paths are resolved against the configuration file's folder.
    pub cert: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    /// Relative paths are resolved against the configuration file's folder.
    pub key: PathBuf,
    /// How often the two files are checked for changes.
    #[serde(with = "humantime_serde")]
    pub reload_check_interval: Duration,
    /// A plain-HTTP listener that answers every request with a redirect to
    /// the same URL over HTTPS.
    pub http_redirect: Option<HttpRedirectConfig>,
    /// HTTP Strict Transport Security: tells browsers to use HTTPS only.
    pub hsts: Option<HstsConfig>,
    /// The certificate as read during validation, handed to the listener.
    #[serde(skip)]
    pub(crate) loaded: Option<LoadedCertificate>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            reload_check_interval: Duration::from_secs(5),
            http_redirect: None,
            hsts: None,
            loaded: None,
        }
    }
}

impl TlsConfig {
    fn validate(&self, https_listen: SocketAddr, problems: &mut Problems) {
        if self.cert.as_os_str().is_empty() {
            problems.push(
                "server.tls.cert",
                "is required: the PEM certificate chain, e.g. cert = \"/etc/portico/tls/fullchain.pem\"",
            );
        }
        if self.key.as_os_str().is_empty() {
            problems.push(
                "server.tls.key",
                "is required: the PEM private key, e.g. key = \"/etc/portico/tls/privkey.pem\"",
            );
        }
        if self.reload_check_interval.is_zero() {
            problems.push("server.tls.reload_check_interval", "must be greater than zero, e.g. \"5s\"");
        }
        if let Some(redirect) = &self.http_redirect {
            if listeners_overlap(redirect.listen, https_listen) {
                problems.push(
                    "server.tls.http_redirect.listen",
                    format!("{} is also server.listen; use another port, e.g. \"0.0.0.0:80\"", redirect.listen),
                );
            }
        }
        if let Some(hsts) = &self.hsts {
            hsts.validate(problems);
        }
    }
}

/// Whether two listen addresses would collide when both are bound.
fn listeners_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.port() != 0 && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// `[server.tls.http_redirect]`: the plain-HTTP listener that sends clients
/// to HTTPS, like NGINX's `return 301 https://$host$request_uri`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpRedirectConfig {
    /// Address of the plain-HTTP listener.
    pub listen: SocketAddr,
    /// Port written into the redirect. Defaults to the HTTPS listener's own
    /// port; set it when clients reach HTTPS through a different port than
    /// the one portico binds (a container port mapping, a load balancer).
    /// 443 is left out of the URL.
    pub https_port: Option<u16>,
}

impl Default for HttpRedirectConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([0, 0, 0, 0], 80)), https_port: None }
    }
}

/// `[server.tls.hsts]`: the `Strict-Transport-Security` answer header.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HstsConfig {
    /// How long browsers remember to use HTTPS only (`"0s"` tells them to
    /// forget it).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Whether the rule covers every subdomain too.
    pub include_subdomains: bool,
    /// Whether to ask for inclusion in browsers' preload lists; that list
    /// requires `include_subdomains` and a `max_age` of at least a year.
    pub preload: bool,
}

/// The shortest `max_age` the browsers' HSTS preload list accepts.
const PRELOAD_MIN_MAX_AGE: Duration = Duration::from_secs(365 * 24 * 60 * 60);

impl Default for HstsConfig {
    fn default() -> Self {
        Self { max_age: PRELOAD_MIN_MAX_AGE, include_subdomains: false, preload: false }
    }
}

impl HstsConfig {
    fn validate(&self, problems: &mut Problems) {
        if self.preload && (!self.include_subdomains || self.max_age < PRELOAD_MIN_MAX_AGE) {
            problems.push(
                "server.tls.hsts.preload",
                "the preload list requires include_subdomains = true and max_age of at least \"365d\"",
            );
        }
    }

    /// The header value, such as `max-age=31536000; includeSubDomains`.
    pub fn header_value(&self) -> HeaderValue {
        let mut value = format!("max-age={}", self.max_age.as_secs());
        if self.include_subdomains {
            value.push_str("; includeSubDomains");
        }
        if self.preload {
            value.push_str("; preload");
        }
        // Digits, letters, '=', ';' and spaces only: always a valid value.
        HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static("max-age=0"))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    fn problems_in(text: &str, base_dir: &Path) -> Vec<String> {
        match Config::parse_in(text, "test.toml", base_dir) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
            Err(other) => vec![other.to_string()],
        }
    }

    fn write_pair(dir: &Path) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::create_dir_all(dir.join("tls")).expect("mkdir");
        std::fs::write(dir.join("tls/cert.pem"), cert.pem()).expect("write");
        std::fs::write(dir.join("tls/key.pem"), key.serialize_pem()).expect("write");
    }

    #[test]
    fn relative_certificate_paths_are_read_from_the_config_folder_at_validation() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_pair(dir.path());
        let text = "[server.tls]\ncert = \"tls/cert.pem\"\nkey = \"tls/key.pem\"\n";
        let config = Config::parse_in(text, "test.toml", dir.path()).expect("valid");
        let tls = config.server.tls.as_ref().expect("tls");
        assert!(tls.loaded.is_some(), "read once, during validation");
        assert!(config.server.hsts_layer().is_none(), "no HSTS unless configured");
    }

    #[test]
    fn unusable_certificate_files_are_reported_with_their_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_pair(dir.path());
        let found = problems_in("[server.tls]\ncert = \"tls/missing.pem\"\nkey = \"tls/key.pem\"\n", dir.path());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("test.toml: server.tls.cert: cannot read "), "{found:?}");
        assert!(found[0].contains("missing.pem"), "{found:?}");

        let found = problems_in("[server.tls]\ncert = \"tls/none.pem\"\nkey = \"tls/none.pem\"\n", dir.path());
        assert_eq!(found.len(), 2, "both missing files at once: {found:?}");
        assert!(found[1].starts_with("test.toml: server.tls.key: cannot read "), "{found:?}");

        let found = problems_in("[server.tls]\ncert = \"tls/cert.pem\"\nkey = \"tls/cert.pem\"\n", dir.path());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("test.toml: server.tls.key: "), "{found:?}");
    }

    #[test]
    fn tls_settings_are_checked_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = r#"
            [server]
            listen = "0.0.0.0:8443"
            [server.tls]
            reload_check_interval = "0s"
            http_redirect = { listen = "127.0.0.1:8443" }
            hsts = { max_age = "1d", preload = true }
        "#;
        let found = problems_in(text, dir.path());
        for key in [
            "server.tls.cert: is required",
            "server.tls.key: is required",
            "server.tls.reload_check_interval",
            "server.tls.http_redirect.listen",
            "server.tls.hsts.preload",
        ] {
            assert!(found.iter().any(|problem| problem.contains(key)), "{key} not in {found:?}");
        }
        assert_eq!(found.len(), 5, "{found:?}");
    }

    #[test]
    fn deadlines_and_hidden_headers_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = r#"
            [server]
            request_timeout = "0s"
            [services.api]
            endpoints = ["http://127.0.0.1:9"]
            [[routes]]
            prefix = "/api/"
            service = "api"
            timeout = "0s"
            hide_response_headers = ["server", "not a header"]
        "#;
        let found = problems_in(text, dir.path());
        for key in ["server.request_timeout", "routes[0].timeout", "routes[0].hide_response_headers[1]"] {
            assert!(found.iter().any(|problem| problem.contains(&format!("{key}: "))), "{key} not in {found:?}");
        }
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn the_hsts_header_spells_out_the_policy() {
        let hsts = super::HstsConfig::default();
        assert_eq!(hsts.header_value(), "max-age=31536000");
        let hsts = super::HstsConfig { include_subdomains: true, preload: true, ..hsts };
        assert_eq!(hsts.header_value(), "max-age=31536000; includeSubDomains; preload");
    }

    #[test]
    fn an_unusable_upstream_ca_file_is_reported_with_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "[services.api]\nendpoints = [\"https://api.internal\"]\ntls = { ca_file = \"ca.pem\" }\n";
        let found = problems_in(text, dir.path());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("test.toml: services.api.tls.ca_file: cannot read "), "{found:?}");
    }
}
