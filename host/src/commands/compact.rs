use super::ControlArg;
use anyhow::bail;
use std::process::ExitCode;
use tasuki::control::{self, Request, Response};

/// Give the running app's unused memory back: swap its instance for a fresh one of the same
/// release.
///
/// A WebAssembly linear memory never shrinks, so memory an app frees (after deleting most of
/// its keys, say) stays with its instance. A compaction is an upgrade to the same release
/// through the ordinary transaction — the state is pre-copied while the app serves, the pause
/// moves only what changed, a failure rolls back — and the fresh instance holds only the live
/// state. The host also compacts by itself when the heap in use falls below `tasuki run
/// --compact-below`. Prints the pause and the memory before and after.
#[derive(Debug, clap::Args)]
pub struct CompactCommand {
    #[command(flatten)]
    control: ControlArg,
}

impl CompactCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match control::request(&self.control.control, &Request::Compact)? {
            Response::Upgraded(report) => {
                say!("{report}");
                Ok(ExitCode::SUCCESS)
            }
            Response::Failed(reason) => {
                eprintln!("compaction failed: {reason}");
                Ok(ExitCode::FAILURE)
            }
            other => bail!("unexpected answer from the host: {other:?}"),
        }
    }
}
