//! The `portico` command: parse the command line, load the configuration,
//! and hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use portico::config::{Config, ConfigError};

/// mimalloc: allocation-heavy GraphQL execution spends a sixth of its time
/// in glibc's malloc otherwise (measured with perf under the benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A GraphQL / backend-for-frontend API gateway.
#[derive(Debug, Parser)]
#[command(name = "portico", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file; without it, the embedded demo configuration
        /// for the three local services is used.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file, print every problem, and exit non-zero if
    /// there is any (like `nginx -t`).
    Check {
        /// Configuration file to check.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Mint a development token signed with the configuration's HS256
    /// secret (the demo's, without --config); the token is the last line.
    Token {
        /// The `sub` claim: the user id the services receive as X-User-Id.
        #[arg(long)]
        sub: String,
        /// A scope to grant; repeat for more.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// How long the token is valid, e.g. "1h" or "30m".
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Configuration file whose [auth.jwt] secret signs the token.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the OpenAPI 3.1 document of the REST endpoints: the stored
    /// operations of `[[operations]]` and the passthrough routes.
    Openapi {
        /// Configuration file; without it, the embedded demo configuration.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Work with the GraphQL schema.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
}

#[derive(Debug, Subcommand)]
enum SchemaCommand {
    /// Print the client-facing SDL (without gateway directives), for
    /// front-end code generation.
    Print {
        /// Configuration file; without it, the embedded demo configuration.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Token { sub, scopes, ttl, config } => match mint(config, &sub, &scopes, ttl) {
            Ok(token) => {
                eprintln!("# a development token for sub={sub}; use it as `Authorization: Bearer <token>`");
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("portico: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Schema { command: SchemaCommand::Print { config } } => match print_schema(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("portico: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Openapi { config } => match load(config.as_deref()) {
            Ok(config) => {
                let mut stdout = std::io::stdout().lock();
                let document = portico::app::openapi_document(&config);
                // A closed pipe (`| head`) is the reader's choice, not a failure.
                let _ = std::io::Write::write_all(&mut stdout, &document)
                    .and_then(|()| std::io::Write::write_all(&mut stdout, b"\n"));
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("portico: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => match run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("portico: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            for warning in config.warnings() {
                eprintln!("{}: warning: {warning}", path.display());
            }
            println!("{}: configuration is valid", path.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            print_config_error(&error);
            ExitCode::FAILURE
        }
    }
}

fn print_config_error(error: &ConfigError) {
    match error {
        ConfigError::Invalid(problems) => {
            for problem in problems {
                eprintln!("{problem}");
            }
            eprintln!("{} problem(s) found", problems.len());
        }
        ConfigError::Read { .. } => eprintln!("{error}"),
    }
}

fn load(config_path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let loaded = match config_path {
        Some(path) => Config::load(path),
        None => Config::embedded_default(),
    };
    loaded.map_err(|error| {
        print_config_error(&error);
        anyhow::anyhow!("the configuration is invalid")
    })
}

fn mint(
    config_path: Option<PathBuf>,
    sub: &str,
    scopes: &[String],
    ttl: std::time::Duration,
) -> anyhow::Result<String> {
    let config = load(config_path.as_deref())?;
    let jwt = config.auth.jwt.as_ref().context("the configuration has no [auth.jwt] section")?;
    let secret = jwt
        .secret
        .as_deref()
        .context("[auth.jwt] has no HS256 `secret`: tokens for key pairs are minted by the identity provider")?;
    anyhow::ensure!(jwt.algorithms.iter().any(|algorithm| algorithm == "HS256"), "[auth.jwt] does not accept HS256");
    Ok(portico::auth::mint_token(secret, sub, scopes, ttl, jwt.issuer.as_deref(), &jwt.audience)?)
}

fn print_schema(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load(config_path.as_deref())?;
    let schema =
        config.schema.clone().context("GraphQL is not enabled in this configuration ([graphql] enabled = true)")?;
    let upstreams = portico::upstream::Upstreams::new(&config.services)?;
    let endpoint = config.graphql.endpoint(&config.base_dir, schema, &upstreams, &config.services, None)?;
    print!("{}", endpoint.sdl());
    Ok(())
}

fn run(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    // The file is read once: what is checked here is what is served.
    let file = match config_path {
        Some(path) => Some(portico::LoadedFile::load(path).map_err(|error| {
            print_config_error(&error);
            anyhow::anyhow!("the configuration is invalid")
        })?),
        None => None,
    };
    let config = match &file {
        Some(file) => file.config.clone(),
        None => load(None)?,
    };
    let shutdown = ShutdownSignals::listen(config.server.readiness.drain_delay, config.server.shutdown_timeout)?;

    // On one core (a pinned process, a container limited to one CPU) the
    // current-thread scheduler runs the accept loop and every connection on
    // the one thread, without the work-stealing scheduler's cross-thread
    // queue and wake-ups, which cost CPU on every request and buy nothing
    // when there is no second core to steal to (measured: 11 % less CPU per
    // passthrough request).
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut runtime = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = runtime.enable_all().build().context("starting the runtime")?;
    // Span export runs on the runtime; the guard flushes it after serving.
    let telemetry = {
        let _entered = runtime.enter();
        config.telemetry.init()
    };
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        // A configuration file is reloaded on SIGHUP and when it changes;
        // the embedded default has nothing to reload.
        match file {
            Some(file) => portico::serve_loaded(file, listener, shutdown.first()).await?,
            None => portico::serve(config, listener, shutdown.first()).await?,
        }
        anyhow::Ok(())
    });
    // The flush waits on the exporter's task, so the runtime must still be
    // driven meanwhile (a current-thread runtime runs tasks only inside
    // `block_on`).
    runtime.block_on(async move {
        let _ = tokio::task::spawn_blocking(move || drop(telemetry)).await;
    });
    // Tasks still running after the drain are abandoned rather than awaited:
    // one stuck in a long computation would otherwise hold the exit.
    runtime.shutdown_background();
    served
}

/// SIGINT (Ctrl-C) and SIGTERM, watched on a thread of their own with its own
/// runtime, so that no task of the gateway's runtime, however stuck, can
/// delay them. The first signal starts the drain (`drain_delay` of serving
/// while `/readyz` says 503, then the graceful shutdown) and a watchdog:
/// the process exits by `drain_delay` + `shutdown_timeout` (plus
/// [`EXIT_MARGIN`] for the last log lines and span export) whatever the
/// drain is waiting for. A second signal exits at once.
struct ShutdownSignals {
    first: tokio::sync::oneshot::Receiver<()>,
}

/// Time after `shutdown_timeout` for flushing logs and spans before the
/// watchdog ends the process.
const EXIT_MARGIN: std::time::Duration = std::time::Duration::from_secs(1);

impl ShutdownSignals {
    /// Installs the signal handlers before returning, so that a signal sent
    /// once the gateway listens is never lost.
    fn listen(drain_delay: std::time::Duration, shutdown_timeout: std::time::Duration) -> anyhow::Result<Self> {
        let (first_sender, first) = tokio::sync::oneshot::channel();
        let (installed_sender, installed) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        std::thread::Builder::new()
            .name("portico-signals".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = installed_sender.send(Err(error).context("starting the signal runtime"));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let mut signals = match Signals::install() {
                        Ok(signals) => signals,
                        Err(error) => {
                            let _ = installed_sender.send(Err(error).context("installing signal handlers"));
                            return;
                        }
                    };
                    let _ = installed_sender.send(Ok(()));
                    let name = signals.next().await;
                    let _ = first_sender.send(());
                    tracing::info!(signal = name, ?drain_delay, timeout = ?shutdown_timeout, "shutdown requested; a second signal exits at once");
                    tokio::select! {
                        name = signals.next() => {
                            eprintln!("portico: second {name}: exiting without waiting for in-flight requests");
                            std::process::exit(exit_code(name));
                        }
                        () = tokio::time::sleep(drain_delay + shutdown_timeout + EXIT_MARGIN) => {
                            let waited = drain_delay + shutdown_timeout;
                            eprintln!("portico: requests still running {waited:?} after {name}; exiting");
                            std::process::exit(exit_code(name));
                        }
                    }
                });
            })
            .context("starting the signal thread")?;
        installed.recv().context("the signal thread stopped")??;
        Ok(Self { first })
    }

    /// Completes on the first signal.
    async fn first(self) {
        // A closed channel means the signal thread is gone: keep serving.
        if self.first.await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The shell's convention for a process ended by a signal: 128 + its number.
fn exit_code(signal: &str) -> i32 {
    match signal {
        "SIGINT" => 130,
        _ => 143,
    }
}

/// The shutdown signals this platform has.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self { terminate: signal(SignalKind::terminate())?, interrupt: signal(SignalKind::interrupt())? })
    }

    #[cfg(not(unix))]
    fn install() -> std::io::Result<Self> {
        Ok(Self {})
    }

    /// The name of the next signal received.
    #[cfg(unix)]
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }

    #[cfg(not(unix))]
    async fn next(&mut self) -> &'static str {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        "SIGINT"
    }
}
