use std::path::PathBuf;
use std::process::ExitCode;
use tasuki::sim::trace::Trace;
use tasuki::sim::{SimConfig, Simulator, Target, UpgradeAt};

/// Run a trace of client events against an app in the deterministic simulator, optionally with
/// an upgrade at every event boundary. Exit status: 0 when every expectation held, 1 when one
/// did not, 2 when the trace or the components could not be used.
#[derive(Debug, clap::Args)]
pub struct TestCommand {
    /// The trace file (see README, "Testing migrations").
    trace: PathBuf,
    /// The version the trace starts with.
    #[arg(long, value_name = "APP.wasm")]
    app: PathBuf,
    /// The version to upgrade to.
    #[arg(long, value_name = "NEW.wasm")]
    upgrade: Option<PathBuf>,
    /// A transformer on the way to --upgrade, in order. Repeat for a chain.
    #[arg(long = "transform", value_name = "T.wasm", requires = "upgrade")]
    transforms: Vec<PathBuf>,
    /// Where to upgrade: `every` event boundary (one run each), or after N events. The default
    /// is `every` with --upgrade, and `never` (only the trace's own `upgrade` lines) without.
    /// A run in which the upgrade asked for did not happen fails.
    #[arg(long, value_name = "every|never|N", value_parser = parse_at)]
    upgrade_at: Option<UpgradeAt>,
    /// Also rebuild the app from its checkpoint and journal at every event boundary, as
    /// recovery would after a trap, and check every expectation still holds (`every`), or not
    /// (`never`, the default). A pre-copied upgrade then commits at the boundary where it starts
    /// (a rebuild would restart its pre-copy).
    #[arg(long, value_name = "every|never", default_value = "never", value_parser = parse_rebuild,
          action = clap::ArgAction::Set)]
    rebuild_at: bool,
    /// An argument for every version's `init`. Repeat for several.
    #[arg(long = "arg", value_name = "ARG")]
    args: Vec<String>,
    /// Seeds the guests' randomness.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Bytes of state an upgrade's pre-copy moves per step. Small by default, so that even a
    /// short trace's events interleave with many steps; 0 moves the state inside the pause.
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    precopy_chunk: u64,
    /// Run the --upgrade as a canary of N client events, as `tasuki upgrade --canary N` does:
    /// the new version runs beside the old one on the events after the boundary and takes over
    /// only if every reply agreed; a divergence fails the run with the canary's report. A
    /// window that the trace ends inside ends with it. With `--upgrade-at every`, the windows
    /// end at every boundary, and each verdict is the same on every run.
    #[arg(long, value_name = "N", requires = "upgrade", value_parser = clap::value_parser!(u64).range(1..))]
    canary: Option<u64>,
    /// Start the app from this snapshot file (as `tasuki run --restore`, no connection open)
    /// instead of `init`'s state: the trace a diverging `tasuki upgrade --canary` saves starts
    /// from the state it names.
    #[arg(long, value_name = "FILE")]
    restore: Option<PathBuf>,
    /// A connection's send window, in KiB, as `tasuki run --output-buffer`: an app that sends
    /// more to one connection waits for an `on-writable` call, which the simulator makes at
    /// once (a virtual client reads everything) as an event with a boundary of its own. A small
    /// buffer puts upgrades and rebuilds in the middle of a stream.
    #[arg(long, value_name = "KIB", default_value_t = tasuki::limits::OUTPUT_HIGH_WATER / 1024)]
    output_buffer: usize,
    /// Listeners the app may open at run time, as `tasuki run --max-listeners`.
    #[arg(long, value_name = "N", default_value_t = tasuki::limits::MAX_LISTENERS)]
    max_listeners: usize,
    /// The virtual ports the app may listen on at run time, LOW-HIGH, as `tasuki run
    /// --data-ports`: port 0 then takes the first free one of them. Without it, only port 0,
    /// which takes the first free port from 49152.
    #[arg(long, value_name = "LOW-HIGH", value_parser = super::run::parse_ports)]
    data_ports: Option<std::ops::RangeInclusive<u16>>,
    /// A host directory the guests may read, as `tasuki run --dir HOST[::GUEST]`, but
    /// read-only: the trace runs once per event boundary, and every run must find the same
    /// files (a write fails as on a read-only file system). Repeat for several.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<tasuki::sandbox::Preopen>,
}

fn parse_rebuild(s: &str) -> Result<bool, String> {
    match s {
        "every" => Ok(true),
        "never" => Ok(false),
        other => Err(format!("`{other}` is not `every` or `never`")),
    }
}

fn parse_at(s: &str) -> Result<UpgradeAt, String> {
    match s {
        "every" => Ok(UpgradeAt::Every),
        "never" => Ok(UpgradeAt::Never),
        n => n
            .parse()
            .map(UpgradeAt::Boundary)
            .map_err(|_| format!("`{n}` is not `every`, `never` or a number of events")),
    }
}

impl TestCommand {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let trace = match Trace::read(&self.trace) {
            Ok(trace) => trace,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
        };
        if self.canary.is_some() && self.rebuild_at {
            // A rebuild leaves the two versions running different histories: `tasuki run`
            // ends a canary at a trap's rebuild, so one at every boundary would end them all.
            eprintln!(
                "error: --canary cannot be combined with --rebuild-at every: a rebuild ends a \
                 canary (as a trap does under tasuki run); run the two apart"
            );
            return Ok(ExitCode::from(2));
        }
        let at = match (self.upgrade_at, &self.upgrade) {
            (Some(at), _) => at,
            (None, Some(_)) => UpgradeAt::Every,
            (None, None) => UpgradeAt::Never,
        };
        let simulator = Simulator::new(SimConfig {
            app: self.app.clone(),
            upgrade: self
                .upgrade
                .clone()
                .map(|wasm| Target { wasm, transforms: self.transforms.clone() }),
            args: self.args.clone(),
            seed: self.seed,
            rebuild_every_boundary: self.rebuild_at,
            canary: self.canary,
            restore: self.restore.clone(),
            dirs: self.dirs.clone(),
            limits: tasuki::limits::Limits {
                precopy_chunk: self.precopy_chunk,
                output_buffer: self.output_buffer.saturating_mul(1024).max(1),
                max_listeners: self.max_listeners,
                data_ports: self.data_ports.clone(),
                ..tasuki::limits::Limits::default()
            },
        });
        let report = match simulator.and_then(|s| s.run(&trace, at)) {
            Ok(report) => report,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
        };
        say!("{report}");
        if report.passed() {
            return Ok(ExitCode::SUCCESS);
        }
        if let Some((boundary, _, _)) = report.first_failure() {
            say!("  reproduce only that case:\n    {}", self.reproduce(boundary));
        }
        Ok(ExitCode::FAILURE)
    }

    /// The command line that runs just the upgrade at `boundary`.
    fn reproduce(&self, boundary: usize) -> String {
        let mut words = vec![
            "tasuki".to_string(),
            "test".into(),
            self.trace.display().to_string(),
            "--app".into(),
            self.app.display().to_string(),
        ];
        if let Some(upgrade) = &self.upgrade {
            words.extend(["--upgrade".into(), upgrade.display().to_string()]);
        }
        for t in &self.transforms {
            words.extend(["--transform".into(), t.display().to_string()]);
        }
        for dir in &self.dirs {
            words.extend(["--dir".into(), format!("{}::{}", dir.host.display(), dir.guest)]);
        }
        for a in &self.args {
            words.extend(["--arg".into(), a.clone()]);
        }
        if self.seed != 0 {
            words.extend(["--seed".into(), self.seed.to_string()]);
        }
        if self.rebuild_at {
            words.extend(["--rebuild-at".into(), "every".into()]);
        }
        // What the upgrade is, and the state the trace starts from.
        if let Some(events) = self.canary {
            words.extend(["--canary".into(), events.to_string()]);
        }
        if let Some(snapshot) = &self.restore {
            words.extend(["--restore".into(), snapshot.display().to_string()]);
        }
        // Where the boundaries fall depends on --output-buffer (each on-writable is one), and
        // what an upgrade placed there does on --precopy-chunk.
        if self.precopy_chunk != 64 {
            words.extend(["--precopy-chunk".into(), self.precopy_chunk.to_string()]);
        }
        if self.output_buffer != tasuki::limits::OUTPUT_HIGH_WATER / 1024 {
            words.extend(["--output-buffer".into(), self.output_buffer.to_string()]);
        }
        // Which ports the app is given, and what it is refused.
        if self.max_listeners != tasuki::limits::MAX_LISTENERS {
            words.extend(["--max-listeners".into(), self.max_listeners.to_string()]);
        }
        if let Some(ports) = &self.data_ports {
            words.extend(["--data-ports".into(), format!("{}-{}", ports.start(), ports.end())]);
        }
        words.extend(["--upgrade-at".into(), boundary.to_string()]);
        words.join(" ")
    }
}
