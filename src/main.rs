use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use whisperer_injector::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    // Installed as `kubectl-whisper` on PATH, kubectl runs this binary for `kubectl whisper`.
    if std::env::args_os()
        .next()
        .is_some_and(|a| whisperer_injector::plugin::invoked_as_plugin(&a))
    {
        let cli = whisperer_injector::plugin::PluginCli::parse();
        std::process::exit(plugin(cli.args));
    }
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log).context("--log is not a valid filter")?;
    if cli.log_json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let runtime = runtime()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(cli))
}

/// One CPU to run on (the affinity mask, or a cgroup quota under 2 CPUs, as a webhook pod's
/// `resources.limits.cpu` often is): a single-threaded scheduler, which skips the work-stealing
/// pool's cross-thread wake-ups; more: one worker per CPU.
fn runtime() -> tokio::runtime::Builder {
    match std::thread::available_parallelism() {
        Ok(n) if n.get() == 1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let running = whisperer_injector::app::start(&args).await?;
            if let Some(ca) = &running.generated_ca {
                println!(
                    "# No --tls-cert/--tls-key: serving a self-signed certificate for localhost."
                );
                println!("# Trust this CA to call https://{}/mutate:", running.addr);
                println!("{ca}");
            }
            tracing::info!(addr = %running.addr, "webhook listening");
            shutdown_signal().await;
            tracing::info!("signal received, shutting down");
            running.shutdown().await;
            Ok(())
        }
        Command::Inject(args) => inject(&args),
        Command::Check(args) => {
            let (ok, report) = whisperer_injector::check::run(&args).await?;
            print!("{report}");
            if !ok {
                anyhow::bail!("the webhook is not reachable as it should be (see above)");
            }
            Ok(())
        }
        Command::Whisper(args) => std::process::exit(plugin_in(args).await),
        Command::Explain(args) => {
            print!("{}", whisperer_injector::explain::run(&args).await?);
            Ok(())
        }
        Command::Status(args) => {
            let ca = match &args.cacert {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read --cacert {}", p.display()))?,
                ),
                None => None,
            };
            let report = whisperer_injector::status::fetch(&args.url, ca.as_deref()).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", whisperer_injector::status::render_text(&report));
            }
            Ok(())
        }
    }
}

/// The plugin's exit codes: 0 done, 1 error (the message on stderr), 2 usage (clap), 3 incomplete (attach
/// timed out or pods were refused, log streams unavailable).
fn plugin(args: whisperer_injector::plugin::WhisperArgs) -> i32 {
    // Quiet unless asked: the plugin's output is for people and scripts, not log collectors.
    // kube's client logs every refused request as an ERROR; the plugin prints the API
    // server's own message instead.
    let filter = std::env::var("WHISPERER_LOG").unwrap_or_else(|_| "warn,kube_client=off".into());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(plugin_in(args)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            1
        }
    }
}

async fn plugin_in(args: whisperer_injector::plugin::WhisperArgs) -> i32 {
    use whisperer_injector::plugin::Outcome;
    match whisperer_injector::plugin::run(args).await {
        Ok(Outcome::Ok) => 0,
        Ok(Outcome::Incomplete) => 3,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

fn inject(args: &whisperer_injector::cli::InjectArgs) -> anyhow::Result<()> {
    use std::io::Read;
    use whisperer_injector::config::Config;
    use whisperer_injector::engine::Settings;
    let (text, origin) = if args.file.as_os_str() == "-" {
        let mut t = String::new();
        std::io::stdin()
            .read_to_string(&mut t)
            .context("cannot read standard input")?;
        (t, "<stdin>".to_string())
    } else {
        let t = std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?;
        (t, args.file.display().to_string())
    };
    let config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let mut settings = Settings::new(std::sync::Arc::new(config), &args.injector_namespace);
    settings.inject_by_default = args.inject_by_default;
    let (out, outcomes) =
        whisperer_injector::offline::inject_yaml(&text, &origin, &args.namespace, &settings)?;
    print!("{out}");
    for o in outcomes {
        if let Some(result) = o.result {
            eprintln!("{} {}: {result}", o.kind, o.name);
        }
    }
    Ok(())
}
