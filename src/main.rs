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
        Ok(_) => {
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
    let endpoint = config.graphql.endpoint(&config.base_dir, schema, &upstreams)?;
    print!("{}", endpoint.sdl());
    Ok(())
}

fn run(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load(config_path.as_deref())?;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    // Span export runs on the runtime; the guard flushes it after serving.
    let _telemetry = {
        let _entered = runtime.enter();
        config.telemetry.init()
    };
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        portico::serve(config, listener, shutdown_signal()).await?;
        Ok(())
    })
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
