//! Hot reload of the configuration and the GraphQL schema.
//!
//! On `SIGHUP`, and when the configuration file or a file it names (SDL,
//! trusted documents, API keys) changes (watched with `notify`, debounced),
//! the file is loaded and validated exactly as `portico check` does. A
//! valid configuration is built into a new stack (routes, services,
//! policies, schema and plans) and swapped in atomically: every request
//! loads the current stack once, so requests in flight finish on the one
//! they started with, and open connections are kept. Services whose
//! settings did not change keep their pools (and their connections and
//! health), and the rate limiter and the response cache keep their state
//! when their sections did not change. An invalid file leaves the served
//! configuration as it is and logs every problem with its key path.
//! Settings read only at start (listen address, TLS listener, connection
//! limits, telemetry) are named in the log as needing a restart.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tower::Service;

use super::AppState;
use crate::config::{Config, ConfigError};
use crate::telemetry::Telemetry;
use crate::upstream::{ServiceConfig, Upstreams};

/// Quiet time after a file event before reloading: editors and deploy
/// tools write a file in several steps.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The served stack, swapped by reloads. Cloning shares the slot.
#[derive(Debug)]
pub struct Live<S> {
    current: Arc<ArcSwap<S>>,
}

impl<S> Clone for Live<S> {
    fn clone(&self) -> Self {
        Self { current: Arc::clone(&self.current) }
    }
}

impl<S> Live<S> {
    /// Serves `first` until the first swap.
    pub fn new(first: S) -> Self {
        Self { current: Arc::new(ArcSwap::from_pointee(first)) }
    }

    fn swap(&self, next: S) {
        self.current.store(Arc::new(next));
    }
}

impl<S, R> Service<R> for Live<S>
where
    S: Service<R, Error = Infallible> + Clone,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every service of the stack is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        // One load per request; the clone is the one the server made of the
        // stack per request before reloads existed.
        let mut stack = S::clone(&self.current.load());
        stack.call(request)
    }
}

/// The hash a replica reports on `/readyz`: of the configuration file's
/// bytes and those of the SDL files it names.
pub fn config_hash(text: &str, config: &Config) -> Arc<str> {
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    for path in &config.graphql.schema {
        hasher.update(std::fs::read(config.base_dir.join(path)).unwrap_or_default());
    }
    let digest = hasher.finalize();
    Arc::from(digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect::<String>())
}

/// Reads and validates the file as `portico check` does (`Config::load`),
/// keeping its text for the hash.
fn load(path: &Path) -> Result<(Config, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Config::parse_in(&text, &path.display().to_string(), &base_dir).map(|config| (config, text))
}

/// A configuration file loaded at start, read once: the binary checks and
/// logs it, then serves it with [`super::serve_loaded`].
#[derive(Debug)]
pub struct LoadedFile {
    /// The file, watched for changes.
    pub path: PathBuf,
    /// What it says, validated.
    pub config: Config,
    /// The hash `/readyz` reports.
    pub hash: Arc<str>,
}

impl LoadedFile {
    /// Reads and validates the file as `portico check` does.
    pub fn load(path: PathBuf) -> Result<Self, ConfigError> {
        let (config, text) = load(&path)?;
        let hash = config_hash(&text, &config);
        Ok(Self { path, config, hash })
    }
}

/// Background tasks of one configuration's state, stopped when dropped.
#[derive(Default)]
pub struct Background {
    health_checks: Option<Box<dyn Send>>,
    auth: Option<Box<dyn Send>>,
    housekeeping: Option<Box<dyn Send>>,
}

impl Background {
    /// Starts everything `state` needs running.
    pub fn start(state: &AppState) -> Self {
        let mut background = Self::default();
        background.restart(state, true, true);
        background
    }

    fn restart(&mut self, state: &AppState, new_auth: bool, new_rate_limiter: bool) {
        self.health_checks = Some(Box::new(state.upstreams.spawn_background()));
        if new_auth {
            self.auth = state.authenticator().spawn_background().map(|task| Box::new(task) as Box<dyn Send>);
        }
        if new_rate_limiter {
            self.housekeeping = Some(Box::new(state.rate_limiter().spawn_housekeeping()));
        }
    }
}

/// Settings read only at start: changing them needs a restart.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.server, &new.server);
    let debug = |value: &dyn std::fmt::Debug| format!("{value:?}");
    [
        ("server.listen", a.listen != b.listen),
        ("server.tls", debug(&a.tls) != debug(&b.tls)),
        ("server.header_read_timeout", a.header_read_timeout != b.header_read_timeout),
        ("server.max_headers", a.max_headers != b.max_headers),
        ("server.max_header_size", a.max_header_size != b.max_header_size),
        ("server.shutdown_timeout", a.shutdown_timeout != b.shutdown_timeout),
        ("server.readiness.drain_delay", a.readiness.drain_delay != b.readiness.drain_delay),
        ("telemetry", debug(&old.telemetry) != debug(&new.telemetry)),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// Whether a service's pool can be kept: everything but its header rules
/// (read by the doors) is the same.
fn same_pool(old: Option<&ServiceConfig>, new: &ServiceConfig) -> bool {
    let Some(old) = old else { return false };
    let without_headers = |config: &ServiceConfig| {
        let mut config = config.clone();
        config.headers = Default::default();
        format!("{config:?}")
    };
    without_headers(old) == without_headers(new)
}

/// Watches the files and signals, and swaps in what they say.
pub struct Reloader<S> {
    path: PathBuf,
    config: Config,
    hash: Arc<str>,
    state: AppState,
    background: Background,
    telemetry: Telemetry,
    live: Live<S>,
    build: fn(AppState, &Config) -> S,
}

impl<S: Send + Sync + 'static> Reloader<S> {
    /// The reloader of `path`, whose `config` (with `hash`) is served by
    /// `live` with `state` and its `background` tasks; `build` stacks the
    /// layers for a new state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: PathBuf,
        config: Config,
        hash: Arc<str>,
        state: AppState,
        background: Background,
        telemetry: Telemetry,
        live: Live<S>,
        build: fn(AppState, &Config) -> S,
    ) -> Self {
        Self { path, config, hash, state, background, telemetry, live, build }
    }

    /// Starts watching now (a change right after this returns is seen)
    /// and reloads in a task, until the returned handle is aborted.
    pub fn start(self) -> tokio::task::JoinHandle<()> {
        let (events, changed) = mpsc::channel::<()>(1);
        let watcher = match self.watch(events) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, path = %self.path.display(), "cannot watch the configuration; reload with SIGHUP");
                None
            }
        };
        let hangup = Hangup::install();
        tokio::spawn(self.run(watcher, changed, hangup))
    }

    async fn run(mut self, mut watcher: Option<Watching>, mut changed: mpsc::Receiver<()>, mut hangup: Hangup) {
        loop {
            tokio::select! {
                () = hangup.next() => tracing::info!("SIGHUP: reloading the configuration"),
                Some(()) = changed.recv() => {
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changed.recv()).await {}
                }
            }
            self.reload();
            // The files to watch may have changed with the configuration.
            if let Some(current) = watcher.as_mut() {
                if let Err(error) = self.rewatch(current) {
                    tracing::warn!(%error, "cannot watch the configuration's files");
                }
            }
        }
    }

    /// The files whose change is a reason to reload.
    fn watched_files(&self) -> Vec<PathBuf> {
        let base = &self.config.base_dir;
        let mut files = vec![self.path.clone()];
        files.extend(self.config.graphql.schema.iter().map(|path| base.join(path)));
        files.extend(self.config.graphql.trusted_documents.iter().map(|path| base.join(path)));
        files.extend(self.config.auth.api_keys_file.iter().map(|path| base.join(path)));
        // Editors replace files by renaming, so the folders are watched and
        // events filtered by name, on absolute paths as notify reports them.
        files
            .iter()
            .filter_map(|file| Some(std::fs::canonicalize(file.parent()?).ok()?.join(file.file_name()?)))
            .collect()
    }

    fn watch(&self, events: mpsc::Sender<()>) -> notify::Result<Watching> {
        let files = Arc::new(ArcSwap::from_pointee(self.watched_files()));
        let filter = Arc::clone(&files);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            // Reading a file (the reload itself does) is no change.
            if matches!(
                event.kind,
                notify::EventKind::Access(
                    notify::event::AccessKind::Open(_)
                        | notify::event::AccessKind::Read
                        | notify::event::AccessKind::Close(
                            notify::event::AccessMode::Read
                                | notify::event::AccessMode::Execute
                                | notify::event::AccessMode::Any
                                | notify::event::AccessMode::Other
                        )
                )
            ) {
                return;
            }
            let watched = filter.load();
            if event.paths.iter().any(|path| watched.contains(path)) {
                // A full channel already holds a pending reload.
                let _ = events.try_send(());
            }
        })?;
        let mut watching = Watching { watcher, files, folders: Vec::new() };
        self.rewatch(&mut watching)?;
        Ok(watching)
    }

    fn rewatch(&self, watching: &mut Watching) -> notify::Result<()> {
        use notify::Watcher as _;
        let files = self.watched_files();
        let mut folders: Vec<PathBuf> = files.iter().filter_map(|file| file.parent().map(Path::to_path_buf)).collect();
        folders.sort();
        folders.dedup();
        for folder in watching.folders.iter().filter(|folder| !folders.contains(folder)) {
            let _ = watching.watcher.unwatch(folder);
        }
        for folder in folders.iter().filter(|folder| !watching.folders.contains(folder)) {
            watching.watcher.watch(folder, notify::RecursiveMode::NonRecursive)?;
        }
        watching.folders = folders;
        watching.files.store(Arc::new(files));
        Ok(())
    }

    /// One reload: validate, build, swap; or log why not.
    fn reload(&mut self) {
        let metrics = Arc::clone(self.telemetry.metrics());
        let (config, text) = match load(&self.path) {
            Ok(loaded) => loaded,
            Err(ConfigError::Invalid(problems)) => {
                for problem in &problems {
                    tracing::error!(source = %problem.source, key = %problem.key, problem = %problem, "invalid configuration");
                }
                tracing::error!(count = problems.len(), hash = %self.hash, "the configuration is invalid; still serving the previous one");
                metrics.config_reload(false);
                return;
            }
            Err(error) => {
                tracing::error!(%error, hash = %self.hash, "cannot read the configuration; still serving the previous one");
                metrics.config_reload(false);
                return;
            }
        };
        let hash = config_hash(&text, &config);
        if hash == self.hash {
            tracing::debug!(%hash, "the configuration is unchanged");
            return;
        }
        let restart = needs_restart(&self.config, &config);
        let upstreams = match Upstreams::reusing(
            &self.state.upstreams,
            |name| same_pool(self.config.services.get(name), &config.services[name]),
            &config.services,
            &metrics,
        ) {
            Ok(upstreams) => upstreams,
            Err(error) => {
                tracing::error!(%error, "the configuration cannot be served; still serving the previous one");
                metrics.config_reload(false);
                return;
            }
        };
        let previous = &self.state;
        let state = match AppState::reloaded(previous, &self.config, &config, upstreams, self.telemetry.clone()) {
            Ok(state) => state.with_config_hash(Arc::clone(&hash)),
            Err(error) => {
                tracing::error!(%error, "the configuration cannot be served; still serving the previous one");
                metrics.config_reload(false);
                return;
            }
        };
        let new_rate_limiter = !Arc::ptr_eq(previous.rate_limiter(), state.rate_limiter());
        let new_auth = !Arc::ptr_eq(previous.authenticator(), state.authenticator());
        self.telemetry.metrics().watch_endpoints(Arc::new(state.upstreams.clone()));
        self.live.swap((self.build)(state.clone(), &config));
        self.background.restart(&state, new_auth, new_rate_limiter);
        let kept: Vec<&str> = config
            .services
            .keys()
            .filter(|name| match (self.state.upstreams.get(name), state.upstreams.get(name)) {
                (Some(old), Some(new)) => Arc::ptr_eq(old, new),
                _ => false,
            })
            .map(String::as_str)
            .collect();
        tracing::info!(%hash, previous = %self.hash, kept_pools = ?kept, "configuration reloaded");
        for key in &restart {
            tracing::warn!(key, "changed, but takes effect only after a restart");
        }
        metrics.config_reload(true);
        self.config = config;
        self.hash = hash;
        self.state = state;
    }
}

/// The watcher, the folders it watches and the files it reports.
struct Watching {
    watcher: notify::RecommendedWatcher,
    files: Arc<ArcSwap<Vec<PathBuf>>>,
    folders: Vec<PathBuf>,
}

/// `SIGHUP`, where the platform has it.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn install() -> Self {
        #[cfg(unix)]
        {
            let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGHUP; reload by changing the file"))
                .ok();
            Self { signal }
        }
        #[cfg(not(unix))]
        Self {}
    }

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

    fn parsed(text: &str) -> Config {
        Config::parse(text, "test.toml").expect("valid")
    }

    #[test]
    fn settings_read_only_at_start_are_named() {
        let old = parsed("[server]\nlisten = \"127.0.0.1:8080\"\n");
        let new =
            parsed("[server]\nlisten = \"127.0.0.1:8081\"\nmax_headers = 50\n[telemetry]\nlog_level = \"debug\"\n");
        assert_eq!(needs_restart(&old, &new), ["server.listen", "server.max_headers", "telemetry"]);
        assert!(needs_restart(&old, &parsed("[server]\nlisten = \"127.0.0.1:8080\"\nrequest_timeout = \"5s\"\n"))
            .is_empty());
        let draining = parsed("[server]\nlisten = \"127.0.0.1:8080\"\n[server.readiness]\ndrain_delay = \"5s\"\n");
        assert_eq!(needs_restart(&old, &draining), ["server.readiness.drain_delay"]);
        let requiring =
            parsed("[server]\nlisten = \"127.0.0.1:8080\"\n[server.readiness]\nrequire_healthy_endpoints = true\n");
        assert!(needs_restart(&old, &requiring).is_empty(), "/readyz follows a reload");
    }

    #[test]
    fn a_pool_is_kept_unless_its_client_settings_change() {
        let service = |extra: &str| {
            let config = parsed(&format!("[services.a]\nendpoints = [\"http://127.0.0.1:9\"]\n{extra}\n"));
            config.services["a"].clone()
        };
        let base = service("");
        assert!(same_pool(Some(&base), &service("headers = { add = { \"x-a\" = \"1\" } }")));
        assert!(!same_pool(Some(&base), &service("connect_timeout = \"1s\"")));
        assert!(!same_pool(None, &base));
    }
}
