//! The `sluice` command line: parse arguments, load config, call the library.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

// mimalloc instead of glibc malloc: a proxy allocates and frees many small buffers per request
// across threads, where glibc's arena locking and consolidation showed up in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A WebAssembly-scriptable edge reverse proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with a config file.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a config file (and read its certificates), then exit.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Start demo origins and a proxy in front of them; no files needed.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8443")]
        https: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run { config } => runtime.block_on(run(config)),
        Command::Check { config } => check(config),
        Command::Demo { http, https, admin } => {
            runtime.block_on(sluice::demo::run(sluice::demo::DemoOptions {
                http,
                https,
                admin,
            }))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = sluice::config::Config::load(&path)?;
    sluice::logging::init(&config.log);
    // Installed before binding: from here a SIGTERM is a graceful stop, never a kill.
    let mut signals = sluice::StopSignals::install();
    let running = sluice::start(config).await?;
    signals.wait(&running).await;
    let outcome = running.shutdown().await;
    tracing::info!(?outcome, "stopped");
    Ok(())
}

fn check(path: PathBuf) -> anyhow::Result<()> {
    let config = sluice::config::Config::load(&path)?;
    for l in &config.listeners {
        if let Some(tls) = &l.tls {
            sluice::listener::tls::CertResolver::new(tls.clone())?;
        }
    }
    println!(
        "{}: ok ({} listeners, {} pools, default pool \"{}\")",
        path.display(),
        config.listeners.len(),
        config.pools.len(),
        config.proxy.default_pool
    );
    Ok(())
}
