//! The `sluice` command line: parse arguments, load config, call the library.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

// mimalloc instead of glibc malloc: a proxy allocates and frees many small buffers per request
// across threads, where glibc's arena locking and consolidation showed up in profiles.
#[cfg(not(feature = "count-allocs"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
// Bench builds that count allocations per request (`GET /stats`); see alloc_count.rs.
#[cfg(feature = "count-allocs")]
#[global_allocator]
static GLOBAL: sluice::alloc_count::Counting<mimalloc::MiMalloc> =
    sluice::alloc_count::Counting(mimalloc::MiMalloc);

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
        /// Also reload when the config file changes (as on SIGHUP).
        #[arg(long)]
        watch: bool,
    },
    /// Validate a config file (read its certificates, compile and rehearse its policy), then
    /// exit.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Develop policies locally: run a component on requests without a proxy.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
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

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print the decision for one request as JSON, or check a corpus of request/decision
    /// pairs (exit status 1 on any mismatch).
    Test {
        /// The policy component (.wasm).
        module: PathBuf,
        /// `METHOD URL`, e.g. `GET https://example.com/api/x?b=2`.
        #[arg(long, short = 'r', required_unless_present = "corpus")]
        request: Option<String>,
        /// A request header, `name: value`; repeatable.
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The client IP the policy sees.
        #[arg(long, default_value = "127.0.0.1")]
        client: std::net::IpAddr,
        /// JSON lines of `{"request", "headers", "client", "expect"}`; `expect` is matched as a
        /// subset of the decision.
        #[arg(long, conflicts_with = "request")]
        corpus: Option<PathBuf>,
        /// A sluice config: its pools and `[policy]` settings and limits are used.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// A policy setting `key=value`, overriding the config's; repeatable.
        #[arg(long = "set")]
        settings: Vec<String>,
        /// Also run the response phase on a response head with this status, e.g. `503`.
        #[arg(long, conflicts_with = "corpus")]
        response: Option<String>,
        /// A response header for `--response`, `name: value`; repeatable.
        #[arg(short = 'R', long = "response-header", requires = "response")]
        response_headers: Vec<String>,
        /// Where the `--response` comes from: `upstream` or `cache`.
        #[arg(long, default_value = "upstream", requires = "response")]
        source: String,
    },
    /// Build the policy in DIR (a Cargo project, package.json, policy.py or policy.c) into a
    /// component, check it against the sluice:policy world, and print its path.
    Build {
        /// The policy's directory.
        dir: PathBuf,
    },
    /// Write a starting policy in DIR that `sluice policy build` builds and `sluice policy test`
    /// passes.
    New {
        /// rust, js, python or c.
        #[arg(long)]
        lang: String,
        /// A directory that does not exist yet, or is empty.
        dir: PathBuf,
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
        Command::Policy { command } => {
            let result = match command {
                PolicyCommand::Test {
                    module,
                    request,
                    headers,
                    client,
                    corpus,
                    config,
                    settings,
                    response,
                    response_headers,
                    source,
                } => policy_test(&TestArgs {
                    module,
                    request,
                    headers,
                    client,
                    corpus,
                    config,
                    settings,
                    response,
                    response_headers,
                    source,
                }),
                PolicyCommand::Build { dir } => sluice::build::build_command(&dir),
                PolicyCommand::New { lang, dir } => sluice::build::new_command(&lang, &dir),
            };
            return match result {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("sluice: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Run { config, watch } => runtime.block_on(run(config, watch)),
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

async fn run(path: PathBuf, watch: bool) -> anyhow::Result<()> {
    let config = sluice::config::Config::load(&path)?;
    sluice::logging::init(&config.log);
    // Installed before binding: from here a SIGTERM is a graceful stop, never a kill.
    let mut signals = sluice::StopSignals::install();
    let running = sluice::start(config).await?;
    signals.wait(&running, Some(&path), watch).await;
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
    let pools = std::sync::Arc::new(sluice::upstream::PoolTable::new(
        sluice::upstream::Pools::new(&config, None)?,
    ));
    let policy = sluice::policy::PolicyRuntime::new(&config.policy, pools)?;
    let active = policy.status().active;
    println!(
        "{}: ok ({} listeners, {} pools, default pool \"{}\", policy {} sha256 {})",
        path.display(),
        config.listeners.len(),
        config.pools.len(),
        config.proxy.default_pool,
        active.source,
        &active.sha256[..12]
    );
    Ok(())
}

/// `sluice policy test`: exit 0 when every decision was made (and matched), 1 on a mismatch
/// or a policy failure, 2 when the module or inputs cannot be used.
/// `sluice policy test`'s arguments.
struct TestArgs {
    module: PathBuf,
    request: Option<String>,
    headers: Vec<String>,
    client: std::net::IpAddr,
    corpus: Option<PathBuf>,
    config: Option<PathBuf>,
    settings: Vec<String>,
    response: Option<String>,
    response_headers: Vec<String>,
    source: String,
}

fn policy_test(args: &TestArgs) -> anyhow::Result<ExitCode> {
    use sluice::policy::local::{
        LocalPolicy, TestRequest, TestResponse, outcome_json, response_json,
    };
    use std::sync::Arc;
    let module = &args.module;
    // Guest log lines (and an SDK policy's panic message) go to stderr.
    sluice::logging::init(&sluice::config::LogConfig {
        level: "info".into(),
        format: sluice::config::LogFormat::Text,
        access_log: false,
        access_log_path: None,
    });
    let (mut policy_config, upstreams) = match &args.config {
        Some(path) => {
            let c = sluice::config::Config::load(path)?;
            let pools: Arc<dyn sluice::policy::Upstreams> = Arc::new(
                sluice::upstream::PoolTable::new(sluice::upstream::Pools::new(&c, None)?),
            );
            (c.policy, Some(pools))
        }
        None => (sluice::config::PolicyConfig::default(), None),
    };
    if let Some(stem) = module.file_stem() {
        policy_config.name = stem.to_string_lossy().into_owned();
    }
    for s in &args.settings {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set {s:?}: expected key=value"))?;
        policy_config.settings.insert(k.to_owned(), v.to_owned());
    }
    let bytes = std::fs::read(module)
        .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", module.display()))?;
    let policy = LocalPolicy::load(&bytes, &policy_config, upstreams)
        .map_err(|e| anyhow::anyhow!("{}: {e}", module.display()))?;
    let report = |f: &sluice::policy::PolicyFailure| {
        eprintln!("policy failed in {}: {:?}: {}", f.phase, f.kind, f.detail);
        if !f.backtrace.is_empty() {
            eprintln!("guest backtrace (innermost first):");
            for (i, frame) in f.backtrace.iter().enumerate() {
                eprintln!("  {i:>2}: {frame}");
            }
        }
    };

    let Some(corpus) = &args.corpus else {
        let req = TestRequest::parse(
            args.request.as_deref().unwrap_or_default(),
            &args.headers,
            args.client,
        )
        .map_err(anyhow::Error::msg)?;
        let result = policy.decide(&req);
        let Some(status) = &args.response else {
            println!("{}", serde_json::to_string_pretty(&outcome_json(&result))?);
            if let Err(f) = &result {
                report(f);
                return Ok(ExitCode::from(1));
            }
            return Ok(ExitCode::SUCCESS);
        };
        let resp = TestResponse::parse(status, &args.response_headers, &args.source)
            .map_err(anyhow::Error::msg)?;
        // The proxy runs the response phase only on responses to forwarded requests.
        let responded = matches!(result, Ok(sluice::policy::Decision::Forward(_)))
            .then(|| policy.respond(&req, &resp));
        let json = serde_json::json!({
            "decision": outcome_json(&result),
            "response": responded.as_ref().map(response_json),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        if !policy.has_response_phase() {
            eprintln!(
                "note: the policy does not export on-response; responses are served as they are"
            );
        }
        let failure = result
            .as_ref()
            .err()
            .or(responded.as_ref().and_then(|r| r.as_ref().err()));
        if let Some(f) = failure {
            report(f);
            return Ok(ExitCode::from(1));
        }
        return Ok(ExitCode::SUCCESS);
    };

    let report = sluice::policy::local::run_corpus(&policy, corpus, args.client)
        .map_err(anyhow::Error::msg)?;
    for m in &report.mismatches {
        println!("{m}");
    }
    println!(
        "{} passed, {} failed",
        report.passed,
        report.mismatches.len()
    );
    Ok(if report.mismatches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
