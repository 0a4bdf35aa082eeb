//! HTTPS termination: the certificate, the rustls acceptor, and reloading
//! the certificate from disk while the gateway runs.
//!
//! The acceptor never holds a certificate itself: it asks a
//! [`CertificateStore`] at every handshake, and the reload task swaps the
//! store's certificate. A new handshake gets the new certificate; a
//! connection already established keeps its session untouched, so rotating
//! a certificate drops nothing.
//!
//! Only the `ring` provider is used, so aws-lc is never compiled.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, version, ServerConfig};
use tokio_rustls::TlsAcceptor;

use super::config::TlsConfig;

/// ALPN protocols offered, preferred first. hyper-util's auto builder
/// detects HTTP/2 by its preface, so both work on the same listener.
const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate or key file cannot be used. Every message ends with
/// what to do about it, since `portico check` prints it as it is.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// A file could not be read.
    #[error("cannot read {path:?}: {source}; check the path and that portico may read the file")]
    Unreadable {
        /// Which of the two files.
        file: CertificateFile,
        /// The resolved path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file is not well-formed PEM.
    #[error("{path:?} is not a valid PEM file ({source}); it should contain \"-----BEGIN ...-----\" blocks")]
    BadPem {
        /// Which of the two files.
        file: CertificateFile,
        /// The resolved path.
        path: PathBuf,
        /// The parser's complaint.
        source: pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error(
        "{path:?} contains no \"-----BEGIN CERTIFICATE-----\" block; point cert at the certificate chain (leaf first)"
    )]
    NoCertificate {
        /// The resolved path.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error("{path:?} contains no private key (\"-----BEGIN PRIVATE KEY-----\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\"); point key at the certificate's private key")]
    NoPrivateKey {
        /// The resolved path.
        path: PathBuf,
    },
    /// The key is of a kind rustls cannot sign with, or does not belong to
    /// the certificate.
    #[error("{path:?} cannot be used with the certificate ({source}); the key must be the one the certificate was issued for (RSA, ECDSA P-256/P-384 or Ed25519)")]
    UnusableKey {
        /// The resolved key path.
        path: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
}

/// One of the two files of `[server.tls]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateFile {
    /// `cert`: the certificate chain.
    Cert,
    /// `key`: the private key.
    Key,
}

impl CertificateError {
    /// The configuration key the problem is reported under.
    pub fn config_key(&self) -> &'static str {
        let file = match self {
            Self::Unreadable { file, .. } | Self::BadPem { file, .. } => *file,
            Self::NoCertificate { .. } => CertificateFile::Cert,
            Self::NoPrivateKey { .. } | Self::UnusableKey { .. } => CertificateFile::Key,
        };
        match file {
            CertificateFile::Cert => "server.tls.cert",
            CertificateFile::Key => "server.tls.key",
        }
    }
}

/// Why HTTPS could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The certificate or key cannot be used.
    #[error("{}: {error}", error.config_key())]
    Certificate {
        /// What is wrong with the files.
        #[from]
        error: CertificateError,
    },
    /// rustls refused the protocol settings.
    #[error("server.tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate and key paths, resolved against the configuration's
/// folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
}

/// A certificate as read from its files, with the files' state at the time
/// so that the reload task can tell when they change.
#[derive(Clone)]
pub struct LoadedCertificate {
    files: CertificateFiles,
    certified: Arc<CertifiedKey>,
    stamps: FileStamps,
}

impl std::fmt::Debug for LoadedCertificate {
    // The chain and key are long and say nothing useful in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCertificate").field("files", &self.files).finish_non_exhaustive()
    }
}

impl CertificateFiles {
    /// The files named by `config`, relative paths taken from `base_dir`.
    pub fn resolve(base_dir: &Path, config: &TlsConfig) -> Self {
        Self { cert: base_dir.join(&config.cert), key: base_dir.join(&config.key) }
    }

    /// Reads and checks both files. Blocking: call it at start or from a
    /// blocking task.
    pub fn load(&self) -> Result<LoadedCertificate, CertificateError> {
        // Stamped before reading: a change that lands during the read is
        // then seen as a change at the next check, never missed.
        let stamps = self.stamps();
        let certified = Arc::new(self.read()?);
        Ok(LoadedCertificate { files: self.clone(), certified, stamps })
    }

    fn read(&self) -> Result<CertifiedKey, CertificateError> {
        let cert_pem = read_file(CertificateFile::Cert, &self.cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem).collect::<Result<Vec<_>, _>>().map_err(|source| {
            CertificateError::BadPem { file: CertificateFile::Cert, path: self.cert.clone(), source }
        })?;
        if chain.is_empty() {
            return Err(CertificateError::NoCertificate { path: self.cert.clone() });
        }
        let key_pem = read_file(CertificateFile::Key, &self.key)?;
        let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
            Ok(key) => key,
            Err(pem::Error::NoItemsFound) => return Err(CertificateError::NoPrivateKey { path: self.key.clone() }),
            Err(source) => {
                return Err(CertificateError::BadPem { file: CertificateFile::Key, path: self.key.clone(), source })
            }
        };
        // `from_der` also checks that the key belongs to the leaf certificate.
        CertifiedKey::from_der(chain, key, &provider())
            .map_err(|source| CertificateError::UnusableKey { path: self.key.clone(), source })
    }

    /// The error for a key file that cannot be read at all, if it cannot.
    pub fn unreadable_key(&self) -> Option<CertificateError> {
        std::fs::File::open(&self.key).err().map(|source| CertificateError::Unreadable {
            file: CertificateFile::Key,
            path: self.key.clone(),
            source,
        })
    }

    fn stamps(&self) -> FileStamps {
        FileStamps([FileStamp::of(&self.cert), FileStamp::of(&self.key)])
    }
}

fn read_file(file: CertificateFile, path: &Path) -> Result<Vec<u8>, CertificateError> {
    std::fs::read(path).map_err(|source| CertificateError::Unreadable { file, path: path.to_owned(), source })
}

/// What identifies one version of a file without reading it. The inode
/// catches files replaced by a rename (as certificate tools do) even when
/// size and time happen to match.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    /// `None` when the file cannot be examined, which is itself a state: a
    /// file that reappears counts as changed.
    fn of(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Self { modified: metadata.modified().ok(), len: metadata.len(), inode })
    }
}

/// The stamps of the certificate and the key file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamps([Option<FileStamp>; 2]);

/// The certificate handed to each new handshake.
#[derive(Debug)]
pub struct CertificateStore {
    // A std lock is enough: it is held only to clone an `Arc`, never across
    // an `.await`, and written once per reload.
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertificateStore {
    fn new(certified: Arc<CertifiedKey>) -> Self {
        Self { current: RwLock::new(certified) }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn replace(&self, certified: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = certified;
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The `ring` provider: the only one compiled in.
fn provider() -> CryptoProvider {
    ring::default_provider()
}

/// The HTTPS side of the main listener: the acceptor and the task that keeps
/// its certificate current. Dropping it stops the task.
pub(super) struct TlsTermination {
    acceptor: TlsAcceptor,
    reload_task: JoinHandle<()>,
}

impl TlsTermination {
    /// Sets up HTTPS with the certificate read during validation (or reads
    /// it now, when the configuration was built without validation) and
    /// starts watching the files.
    pub(super) fn start(config: &TlsConfig, base_dir: &Path) -> Result<Self, TlsSetupError> {
        let loaded = match &config.loaded {
            Some(loaded) => loaded.clone(),
            None => CertificateFiles::resolve(base_dir, config).load()?,
        };
        let store = Arc::new(CertificateStore::new(Arc::clone(&loaded.certified)));
        let mut server_config = ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&store) as Arc<dyn ResolvesServerCert>);
        server_config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|protocol| protocol.to_vec()).collect();
        let reload_task = tokio::spawn(keep_current(loaded, store, config.reload_check_interval));
        Ok(Self { acceptor: TlsAcceptor::from(Arc::new(server_config)), reload_task })
    }

    /// The acceptor; its handshakes read the store's current certificate.
    pub(super) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

impl Drop for TlsTermination {
    fn drop(&mut self) {
        self.reload_task.abort();
    }
}

/// Reloads the certificate when its files change or on `SIGHUP`, until
/// aborted. A failed reload is logged and keeps the current certificate.
async fn keep_current(loaded: LoadedCertificate, store: Arc<CertificateStore>, check_interval: Duration) {
    let LoadedCertificate { files, mut stamps, .. } = loaded;
    let mut hangups = Hangups::listen();
    let mut checks = tokio::time::interval(check_interval);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    checks.tick().await;
    loop {
        let forced = tokio::select! {
            _ = checks.tick() => false,
            () = hangups.next() => true,
        };
        let previous = stamps.clone();
        let files_for_task = files.clone();
        // Reading files blocks; keep it off the runtime's worker threads.
        let checked = tokio::task::spawn_blocking(move || {
            let now = files_for_task.stamps();
            let changed = forced || now != previous;
            changed.then(|| (now, files_for_task.read()))
        })
        .await;
        match checked {
            Ok(None) => {}
            Ok(Some((now, outcome))) => {
                // Remember the failed version too, so a broken file is
                // reported once, not at every check.
                stamps = now;
                match outcome {
                    Ok(certified) => {
                        store.replace(Arc::new(certified));
                        tracing::info!(cert = %files.cert.display(), key = %files.key.display(), forced, "TLS certificate reloaded");
                    }
                    Err(error) => {
                        tracing::error!(%error, key = error.config_key(), "TLS certificate reload failed; keeping the current certificate");
                    }
                }
            }
            Err(error) => tracing::error!(%error, "TLS certificate check did not finish"),
        }
    }
}

/// `SIGHUP` deliveries, where the platform has them.
struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(signal) => Self { signal: Some(signal) },
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGHUP; certificates reload on file changes only");
                    Self { signal: None }
                }
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Completes at the next `SIGHUP`; never, without signals.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
            self.signal = None;
        }
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pki {
        cert_pem: String,
        key_pem: String,
        other_key_pem: String,
    }

    fn pki() -> Pki {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        let other = rcgen::KeyPair::generate().expect("key");
        Pki { cert_pem: cert.pem(), key_pem: key.serialize_pem(), other_key_pem: other.serialize_pem() }
    }

    fn files_with(dir: &Path, cert: &str, key: &str) -> CertificateFiles {
        std::fs::write(dir.join("cert.pem"), cert).expect("write cert");
        std::fs::write(dir.join("key.pem"), key).expect("write key");
        let config = TlsConfig { cert: "cert.pem".into(), key: "key.pem".into(), ..TlsConfig::default() };
        CertificateFiles::resolve(dir, &config)
    }

    #[test]
    fn a_matching_pair_loads_from_paths_relative_to_the_base_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = pki();
        let loaded = files_with(dir.path(), &pki.cert_pem, &pki.key_pem).load().expect("loads");
        assert_eq!(loaded.certified.cert.len(), 1);
    }

    #[test]
    fn each_unusable_file_is_reported_under_its_own_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = pki();
        let cases = [
            (String::from("not pem"), pki.key_pem.clone(), "server.tls.cert", "no \"-----BEGIN CERTIFICATE-----\""),
            (pki.cert_pem.clone(), String::from("not pem"), "server.tls.key", "contains no private key"),
            (pki.cert_pem.clone(), pki.cert_pem.clone(), "server.tls.key", "contains no private key"),
            (pki.cert_pem.clone(), pki.other_key_pem.clone(), "server.tls.key", "cannot be used with the certificate"),
            (
                "-----BEGIN CERTIFICATE-----\nMIIB\n".to_owned(),
                pki.key_pem.clone(),
                "server.tls.cert",
                "not a valid PEM file",
            ),
        ];
        for (cert, key, config_key, message) in cases {
            let error = files_with(dir.path(), &cert, &key).load().expect_err("refused");
            assert_eq!(error.config_key(), config_key, "{error}");
            assert!(error.to_string().contains(message), "{error}");
        }
    }

    #[test]
    fn a_missing_file_names_the_resolved_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = TlsConfig { cert: "missing.pem".into(), key: "key.pem".into(), ..TlsConfig::default() };
        let error = CertificateFiles::resolve(dir.path(), &config).load().expect_err("refused");
        assert_eq!(error.config_key(), "server.tls.cert");
        assert!(error.to_string().contains(&dir.path().join("missing.pem").display().to_string()), "{error}");
    }

    #[test]
    fn stamps_change_when_a_file_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = pki();
        let files = files_with(dir.path(), &pki.cert_pem, &pki.key_pem);
        let before = files.stamps();
        assert_eq!(before, files.stamps());
        let replacement = dir.path().join("new.pem");
        std::fs::write(&replacement, &pki.cert_pem).expect("write");
        std::fs::rename(&replacement, dir.path().join("cert.pem")).expect("rename");
        assert_ne!(before, files.stamps());
    }
}
