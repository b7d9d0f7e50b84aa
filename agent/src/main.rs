use std::io::IsTerminal;

use clap::Parser;

use whisperer::cli::{Args, Command, LogFormat};
use whisperer::contract::Contract;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Ready { wait }) = args.command {
        if whisperer::ready::wait_ready(wait) {
            return Ok(());
        }
        anyhow::bail!("the Whisperer in this pod is not capturing (waited {wait:?})");
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: stdout carries the JSON lines only.
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match args.log_format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }
    let contract = Contract::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let reason = runtime.block_on(whisperer::run::run(args, contract))?;
    tracing::info!(?reason, "stopped");
    Ok(())
}
