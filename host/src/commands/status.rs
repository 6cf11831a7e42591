use super::ControlArg;
use anyhow::bail;
use std::process::ExitCode;
use tasuki::control::{Request, Response};

/// Show the running version, uptime, connections and the last upgrade.
#[derive(Debug, clap::Args)]
pub struct StatusCommand {
    #[command(flatten)]
    control: ControlArg,
}

impl StatusCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match tasuki::control::request(&self.control.control, &Request::Status)? {
            Response::Status(status) => {
                say!("{status}");
                Ok(ExitCode::SUCCESS)
            }
            Response::Failed(reason) => bail!("{reason}"),
            other => bail!("unexpected answer from the host: {other:?}"),
        }
    }
}
