use super::ControlArg;
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::ExitCode;
use tasuki::control::Response;
use tasuki::upgrade::UpgradeOptions;

/// Replace the running version with NEW, carrying its state and connections across.
///
/// NEW is compiled and started while the old version keeps serving; the state is then copied to
/// it in chunks between events (pre-copy, when both versions and every transformer can), and
/// the old version pauses only to hand over what changed since — or its whole state, when it
/// cannot be pre-copied. It keeps serving if anything fails. Prints the new version, the pause,
/// the pre-copy and the bytes of state moved, or why the upgrade rolled back.
///
/// Ctrl-C does not cancel an upgrade: once asked for, the host carries it through to a commit or
/// a rollback. The command stays to report which; a second Ctrl-C stops waiting (exit 130), and
/// `tasuki status` then shows the outcome.
#[derive(Debug, clap::Args)]
pub struct UpgradeCommand {
    /// The new version's component.
    new: PathBuf,
    /// Escape hatch for an app whose export keeps failing: take the state from the host's last
    /// checkpoint and replay every event journaled since into NEW, instead of asking the
    /// running version to export. The report says how old the checkpoint was, and warns if
    /// the journal had overflowed (changes after the checkpoint are then lost).
    #[arg(long)]
    from_checkpoint: bool,
    /// A transformer the state goes through between the two versions, in order: repeat for a
    /// chain (`--transform v1-to-v2.wasm --transform v2-to-v3.wasm`). The host checks before the
    /// pause that the chain ends in versions NEW reads.
    #[arg(long = "transform", value_name = "T.wasm")]
    transforms: Vec<PathBuf>,
    /// Move the whole state inside the pause instead of pre-copying it while the old version
    /// serves: for a migration or transformer that must read a collection whole (to rekey it),
    /// which a pre-copy cannot feed (it traps naming the rule, and the upgrade rolls back).
    #[arg(long)]
    no_precopy: bool,
    /// With the whole state moved at once (the app cannot pre-copy, or `--no-precopy`), import
    /// it inside the pause too. By default at most the export pauses the loop, and once the
    /// host holds a checkpoint not even that: NEW, if it is the running component with the same
    /// arguments, replays the checkpoint and journal itself; otherwise a replica of the running
    /// version rebuilt from them exports off the loop (once the last checkpoint holds 1 MiB or more). NEW
    /// imports on a thread of its own while the old version serves, then runs the events since,
    /// its replies compared with the old version's, and takes over when it has caught up (a
    /// difference starts over with the state moved in the pause). Used only when the app has
    /// no `--dir`, since a replayed event could write a file twice.
    #[arg(long)]
    no_catch_up: bool,
    /// Try NEW on live traffic before it takes over: after it imports the state, the old
    /// version keeps serving and NEW also runs every client event of the window, at the same
    /// clock reading, its replies compared byte for byte with the old version's and never sent.
    /// If all agreed, NEW takes over by swapping instances (nothing more crosses); otherwise it is
    /// dropped and the first difference is reported: connection, request, both replies. WINDOW
    /// is a number of client events (`500`) or a duration (`30s`, `1500ms`, `2m`).
    #[arg(long, value_name = "WINDOW", conflicts_with = "from_checkpoint")]
    canary: Option<tasuki::canary::Window>,
    /// Where a canary that diverges saves what reproduces it: a `tasuki test` trace of the
    /// canary's events, whose expectations are the old version's replies, and the snapshot file
    /// it starts from (`canary-<ms>.trace` and `.snap`). The failure message gives the command.
    #[arg(long, value_name = "DIR", default_value = ".", requires = "canary")]
    divergence_dir: PathBuf,
    /// An argument for NEW's `init`, as `tasuki run --arg`: repeat for several. Given, they
    /// replace the running version's arguments from the commit on (a rebuild after a trap and
    /// later upgrades use them); not given, NEW gets the running version's. A release whose
    /// settings changed (a new option, one the old release refused) takes them here. A rollback
    /// keeps the old ones.
    #[arg(long = "arg", value_name = "ARG")]
    args: Vec<String>,
    #[command(flatten)]
    control: ControlArg,
}

impl UpgradeCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let wasm = std::fs::canonicalize(&self.new)
            .with_context(|| format!("cannot read {}", self.new.display()))?;
        let transforms = self
            .transforms
            .iter()
            .map(|t| {
                std::fs::canonicalize(t).with_context(|| format!("cannot read {}", t.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let options = UpgradeOptions {
            transforms,
            from_checkpoint: self.from_checkpoint,
            no_precopy: self.no_precopy,
            no_catch_up: self.no_catch_up,
            canary: self.canary,
            args: (!self.args.is_empty()).then_some(self.args),
            divergence_dir: match self.canary {
                Some(_) => {
                    Some(std::fs::canonicalize(&self.divergence_dir).with_context(|| {
                        format!("cannot use --divergence-dir {}", self.divergence_dir.display())
                    })?)
                }
                None => None,
            },
        };
        // The default action of SIGINT would end this process and leave the operator not knowing
        // how the upgrade they asked for ended.
        let mut interrupts = 0u32;
        ctrlc::set_handler(move || {
            interrupts += 1;
            if interrupts == 1 {
                eprintln!(
                    "the upgrade goes on in the host (Ctrl-C does not cancel it); waiting to \
                     report how it ends. Ctrl-C again to stop waiting"
                );
            } else {
                eprintln!(
                    "stopped waiting; the upgrade goes on in the host: `tasuki status` shows how \
                     it ended"
                );
                std::process::exit(130);
            }
        })
        .context("cannot install the signal handler")?;
        match tasuki::host::request_upgrade(&self.control.control, &wasm, options)? {
            Response::Upgraded(report) => {
                say!("{report}");
                Ok(ExitCode::SUCCESS)
            }
            Response::Failed(reason) => {
                eprintln!("upgrade failed: {reason}");
                Ok(ExitCode::FAILURE)
            }
            other => bail!("unexpected answer from the host: {other:?}"),
        }
    }
}
