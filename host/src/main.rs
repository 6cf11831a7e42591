//! The `tasuki` command: a thin shell over the library. One module per subcommand.

mod commands;

use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Run network servers compiled to WebAssembly components, and upgrade them while they run.
#[derive(Debug, Parser)]
#[command(name = "tasuki", version)]
struct Cli {
    #[command(subcommand)]
    command: commands::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = log_filter(std::env::var("TASUKI_LOG").ok().as_deref());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("TASUKI_LOG={filter}: {e}; logging at info");
        EnvFilter::new(log_filter(None))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command.execute() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&*e));
            ExitCode::FAILURE
        }
    }
}

/// The log filter for `TASUKI_LOG`. A bare level (`debug`) is tasuki's own: its dependencies
/// (wasmtime, cranelift: tens of thousands of lines per compile at debug) stay at `warn`.
/// Directives that name a target (`cranelift=debug`) are passed as they are.
fn log_filter(setting: Option<&str>) -> String {
    let mut directives = vec!["warn".to_string()];
    let setting = setting.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("info");
    for directive in setting.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if directive.contains('=') || directive.contains('[') {
            directives.push(directive.into());
        } else {
            directives.push(format!("tasuki={directive}"));
        }
    }
    directives.join(",")
}

/// An error and its causes, each said once: many errors already include their cause's text in
/// their own (`cannot listen on ADDR: Address in use`), so a cause already said is left out.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut said = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !said.contains(&text) {
            said.push_str(": ");
            said.push_str(&text);
        }
        cause = e.source();
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_level_is_tasukis_own_and_targets_pass_through() {
        assert_eq!(log_filter(None), "warn,tasuki=info");
        assert_eq!(log_filter(Some("debug")), "warn,tasuki=debug");
        assert_eq!(log_filter(Some("debug,cranelift=trace")), "warn,tasuki=debug,cranelift=trace");
    }
}
