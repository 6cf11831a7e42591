use super::ControlArg;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use tasuki::{Host, HostConfig};

/// Serve an app: own its listeners and connections and dispatch their events to it, until
/// interrupted (Ctrl-C or SIGTERM stop it cleanly).
#[derive(Debug, clap::Args)]
pub struct RunCommand {
    /// The app's component (a `.wasm` built for wasm32-wasip2 with the tasuki guest SDK).
    app: PathBuf,
    /// Address to accept connections on, e.g. 127.0.0.1:6379. Repeat for several.
    #[arg(long, required = true, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// An argument for the app's `init`, given on start and to every upgraded version. Repeat
    /// for several.
    #[arg(long = "arg", value_name = "ARG")]
    args: Vec<String>,
    #[command(flatten)]
    control: ControlArg,
}

impl RunCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let host = Host::start(HostConfig {
            app: self.app,
            listen: self.listen,
            control: Some(self.control.control),
            args: self.args,
        })?;
        let (stop, stopped) = mpsc::channel();
        ctrlc::set_handler(move || {
            let _ = stop.send(());
        })
        .context("cannot install the signal handler")?;
        // Either a signal arrives, or the sender lives forever: both end the wait correctly.
        let _ = stopped.recv();
        tracing::info!("stopping");
        host.shutdown();
        Ok(ExitCode::SUCCESS)
    }
}
