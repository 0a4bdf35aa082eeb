//! TLS towards backends: whom a service's client trusts, and the connector
//! that speaks HTTPS to `https://` endpoints and plain TCP to `http://` ones.
//!
//! Certificates are always verified; a service may only narrow trust to its
//! own CA. Only the `ring` provider is used, so aws-lc is never compiled.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, version, ClientConfig, RootCertStore};

/// A service's connector: TCP for `http://`, TLS over TCP for `https://`.
/// A connector for `http://` and `https://` URLs.
pub type Connector = HttpsConnector<HttpConnector>;

/// Why a `ca_file` cannot be used. Messages end with what to do about it,
/// since `portico check` prints them as they are.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// The file could not be read.
    #[error("cannot read {path:?}: {source}; check the path and that portico may read the file")]
    Unreadable {
        /// The resolved path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not well-formed PEM.
    #[error("{path:?} is not a valid PEM file ({source}); it should contain \"-----BEGIN CERTIFICATE-----\" blocks")]
    BadPem {
        /// The resolved path.
        path: PathBuf,
        /// The parser's complaint.
        source: pem::Error,
    },
    /// The file holds no certificate, or none usable as a trust anchor.
    #[error("{path:?} contains no usable CA certificate; point ca_file at the PEM certificate of the CA that issues the service's certificates")]
    NoCertificate {
        /// The resolved path.
        path: PathBuf,
    },
}

/// Reads the CA certificates of a `ca_file`.
pub(super) fn load_ca_file(path: &Path) -> Result<RootCertStore, CaFileError> {
    let pem = std::fs::read(path).map_err(|source| CaFileError::Unreadable { path: path.to_owned(), source })?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CaFileError::BadPem { path: path.to_owned(), source })?;
    let mut roots = RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(CaFileError::NoCertificate { path: path.to_owned() });
    }
    Ok(roots)
}

/// The public web CAs (Mozilla's list, compiled in so that every machine
/// trusts the same set).
pub(super) fn public_roots() -> RootCertStore {
    RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
}

/// A connector trusting the public web roots, for clients outside the
/// service pools (such as the JWKS fetcher).
pub fn public_connector(connect_timeout: Duration) -> Result<Connector, rustls::Error> {
    connector(Arc::new(public_roots()), connect_timeout, Duration::from_secs(60), None)
}

/// The connector of one service. `http://` endpoints go straight to the TCP
/// connector, as before TLS existed; only `https://` ones pay for TLS. With
/// `server_name`, certificates are verified for that name (and it is sent
/// as SNI) whatever the dialled URI's host: a replica found by DNS is
/// dialled by address, but its certificate names the service.
pub(super) fn connector(
    roots: Arc<RootCertStore>,
    connect_timeout: Duration,
    keepalive: Duration,
    server_name: Option<ServerName<'static>>,
) -> Result<Connector, rustls::Error> {
    let tls = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    tcp.set_keepalive(Some(keepalive));
    // The TLS connector passes `https://` URIs down; the TCP connector
    // would refuse them otherwise.
    tcp.enforce_http(false);
    let builder = HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
    let builder = match server_name {
        Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
        None => builder,
    };
    Ok(builder.enable_http1().wrap_connector(tcp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_needs_a_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let ca = rcgen::CertificateParams::new(Vec::new()).expect("params").self_signed(&key).expect("ca");
        let path = dir.path().join("ca.pem");

        std::fs::write(&path, ca.pem()).expect("write");
        assert_eq!(load_ca_file(&path).expect("loads").len(), 1);

        std::fs::write(&path, key.serialize_pem()).expect("write");
        let error = load_ca_file(&path).expect_err("a key is not a CA");
        assert!(error.to_string().contains("no usable CA certificate"), "{error}");

        let error = load_ca_file(&dir.path().join("missing.pem")).expect_err("missing");
        assert!(error.to_string().contains("cannot read"), "{error}");
    }
}
