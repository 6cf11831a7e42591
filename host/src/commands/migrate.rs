use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use tasuki::limits::Limits;
use tasuki::runtime::Runtime;
use tasuki::sandbox::Sandbox;
use tasuki::snapshot::SnapshotFile;
use tasuki::version::Version;

/// Run a snapshot file through transformers offline, and with --check prove that an app imports
/// the result — before any production upgrade depends on it.
#[derive(Debug, clap::Args)]
pub struct MigrateCommand {
    /// The snapshot file to read.
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,
    /// A transformer, in order. Repeat for a chain.
    #[arg(long = "transform", value_name = "T.wasm")]
    transforms: Vec<PathBuf>,
    /// Where to write the transformed snapshot.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Start this app and import the result into it: proves the migration end to end.
    #[arg(long, value_name = "APP.wasm")]
    check: Option<PathBuf>,
    /// An argument for the checked app's `init`. Repeat for several.
    #[arg(long = "arg", value_name = "ARG", requires = "check")]
    args: Vec<String>,
}

impl MigrateCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        anyhow::ensure!(
            self.out.is_some() || self.check.is_some(),
            "nothing to do: give --out FILE, --check APP.wasm, or both"
        );
        let runtime = Runtime::new(Limits::default(), Sandbox::default())
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .context("cannot set up the WebAssembly engine")?;
        let target = match &self.check {
            Some(app) => {
                let version = Version::load(&runtime, app)?;
                let (instance, info) = tasuki::upgrade::start_instance(&version, &self.args)
                    .map_err(|e| anyhow::anyhow!("{} failed to start: {e}", app.display()))?;
                Some((instance, info))
            }
            None => None,
        };
        let (chunks, snapshot) = tasuki::host::migrate(
            &runtime,
            &self.input,
            &self.transforms,
            target.as_ref().map(|(_, info)| info),
        )?;
        let sections: Vec<String> = snapshot
            .sections
            .iter()
            .map(|s| format!("{} v{} {} B", s.name, s.version, s.bytes.len()))
            .collect();
        let chunk_bytes: usize = chunks.iter().map(|c| c.bytes.len()).sum();
        if chunks.is_empty() {
            say!("migrated {}: {}", self.input.display(), sections.join(", "));
        } else {
            say!(
                "migrated {}: {}, and {} pre-copied chunks of {chunk_bytes} B",
                self.input.display(),
                sections.join(", "),
                chunks.len()
            );
        }
        if let (Some((mut instance, info)), Some(app)) = (target, &self.check) {
            instance.import(&chunks, &snapshot, &[]).map_err(|e| {
                anyhow::anyhow!("{} {} refused the state: {e}", info.name, info.version)
            })?;
            say!("checked: {} {} ({}) imports it", info.name, info.version, app.display());
        }
        if let Some(out) = &self.out {
            let bytes = SnapshotFile::from_state(&chunks, &snapshot).write(out)?;
            say!("wrote {} ({bytes} bytes)", out.display());
        }
        Ok(ExitCode::SUCCESS)
    }
}
