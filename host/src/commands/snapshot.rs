use super::ControlArg;
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::ExitCode;
use tasuki::control::{Request, Response};

/// Write the running app's state to a snapshot file, without stopping service: the app pauses
/// between two events just long enough to export, and the file is written off the event loop.
#[derive(Debug, clap::Args)]
pub struct SnapshotCommand {
    /// Where to write it (replaced atomically if it exists).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    control: ControlArg,
}

impl SnapshotCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        // The host writes the file: give it a path that means the same from its directory.
        let out = match self.out.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => std::fs::canonicalize(dir)
                .with_context(|| {
                    format!("cannot write {}: no directory {}", self.out.display(), dir.display())
                })?
                .join(self.out.file_name().ok_or_else(|| anyhow::anyhow!("--out names no file"))?),
            _ => std::env::current_dir()
                .context("cannot read the current directory")?
                .join(&self.out),
        };
        match tasuki::control::request(&self.control.control, &Request::Snapshot { out })? {
            Response::Snapshotted(report) => {
                say!("{report}");
                Ok(ExitCode::SUCCESS)
            }
            Response::Failed(reason) => {
                eprintln!("snapshot failed: {reason}");
                Ok(ExitCode::FAILURE)
            }
            other => bail!("unexpected answer from the host: {other:?}"),
        }
    }
}
