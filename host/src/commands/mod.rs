//! The subcommands. Flags are parsed and validated here; the work is the library's.

/// `println!` for a command's output, which stops quietly once its reader has gone away
/// (`tasuki status | head`), as Unix tools do, instead of panicking on the broken pipe.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::commands::say(format_args!($($arg)*))
    };
}

mod compact;
mod migrate;
mod run;
mod snapshot;
mod status;
mod test;
mod upgrade;

use std::path::PathBuf;
use std::process::ExitCode;
use tasuki::control::DEFAULT_CONTROL_PATH;

/// Writes one line of output; a reader that went away is not an error of ours.
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("cannot write the output: {e}");
        }
        _ => {}
    }
}

/// What `tasuki` can do.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Run(Box<run::RunCommand>),
    Upgrade(upgrade::UpgradeCommand),
    Status(status::StatusCommand),
    Snapshot(snapshot::SnapshotCommand),
    Compact(compact::CompactCommand),
    Migrate(migrate::MigrateCommand),
    Test(test::TestCommand),
}

impl Command {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match self {
            Self::Run(c) => c.execute(),
            Self::Upgrade(c) => c.execute(),
            Self::Status(c) => c.execute(),
            Self::Snapshot(c) => c.execute(),
            Self::Compact(c) => c.execute(),
            Self::Migrate(c) => c.execute(),
            Self::Test(c) => c.execute(),
        }
    }
}

/// The control socket flag, shared by every subcommand.
#[derive(Debug, clap::Args)]
pub struct ControlArg {
    /// The running host's control socket. The default is a file in the current directory, so
    /// `run` and `upgrade` started from the same place find each other.
    #[arg(long, env = "TASUKI_CONTROL", default_value = DEFAULT_CONTROL_PATH)]
    pub control: PathBuf,
}
