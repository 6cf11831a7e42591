//! The live version: the one value the dispatcher serves — the component version, its running
//! instance, what it `describe`d, and its recovery state (checkpoint + journal).
//!
//! Its fields are private: start, restore, commit, rebuild and a fresh restart each replace the
//! whole value (or the instance together with the journal that rebuilt it) in one move, and every
//! event that reaches the instance is journaled here when it completes. That is what keeps the
//! invariant of [`crate::recovery`] true: *the checkpoint, imported into a fresh instance of this
//! version, plus the journal replayed, is the live state* — whatever replaced the value last.

use crate::bindings::{AppInfo, Chunk, ConnInfo, PrecopyBatch, Snapshot};
use crate::clock::EventClock;
use crate::instance::{CallError, Instance, MemoryUsage};
use crate::listeners::{ListenError, ListenerBook};
use crate::recovery::{self, RebuildError, RebuildReport, Recovery, Skip, Stamp};
use crate::spill::Chunks;
use crate::store::Effect;
use crate::version::{AppVersion, Version};
use std::sync::Arc;

/// One event for the live instance.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Call<'a> {
    Connect(&'a ConnInfo),
    Data(u64, &'a [u8]),
    Disconnect(u64),
    Timer(u64),
    /// `on-writable(conn, window)`: the connection can take `window` more bytes.
    Writable(u64, u64),
    /// `on-listening(id, result)`: the answer to the app's `listeners.listen(id, ...)`.
    Listening(u64, &'a Result<String, ListenError>),
    /// `on-accept(conn, listener)`: a connection accepted on a listener the app opened.
    Accept(&'a ConnInfo, u64),
    /// `on-listeners-lost()`: the app started from a snapshot file; its listeners are gone.
    ListenersLost,
}

impl Call<'_> {
    /// The connection the event belongs to; `None` for a timer.
    pub(crate) fn conn(&self) -> Option<u64> {
        match self {
            Self::Connect(info) | Self::Accept(info, _) => Some(info.id),
            Self::Data(id, _) | Self::Disconnect(id) | Self::Writable(id, _) => Some(*id),
            Self::Timer(_) | Self::Listening(..) | Self::ListenersLost => None,
        }
    }
}

/// Where the state of a committed version came from, which decides its recovery state.
#[derive(Debug)]
pub(crate) enum Imported {
    /// It imported these pre-copied chunks (none for a full transfer) and this snapshot (after
    /// transformers) with these connections open.
    Snapshot(Chunks, Snapshot, Vec<ConnInfo>),
    /// `--from-checkpoint`: it imported the checkpoint (after transformers; `None` when there
    /// was none and `init` built the state) and replayed the journal since.
    Journal(Option<(Chunks, Snapshot)>),
}

/// The version being served, with its instance and recovery state.
#[derive(Debug)]
pub(crate) struct Live {
    version: Arc<Version>,
    instance: Instance,
    info: AppInfo,
    recovery: Recovery,
    /// See [`Live::generation`].
    generation: u64,
}

impl Live {
    /// A fresh start: `init` built the state, nothing is journaled yet.
    pub(crate) fn start(
        version: Arc<Version>,
        args: &[String],
        journal_limit: usize,
    ) -> Result<Self, CallError> {
        let (instance, info) = recovery::start(&version, args)?;
        let recovery =
            Recovery::fresh(journal_limit, version.runtime.limits.checkpoint_dir.as_deref());
        Ok(Self { version, instance, info, recovery, generation: 0 })
    }

    /// A start from a state (`run --restore`, after transformers: pre-copied chunks and the
    /// snapshot of the rest) into `instance`, which
    /// has just run `init`: the imported snapshot is the first checkpoint. What the import asked
    /// for (timers) stays queued for the loop.
    pub(crate) fn restore(
        version: Arc<Version>,
        (mut instance, info): (Instance, AppInfo),
        journal_limit: usize,
        (chunks, snapshot): (Vec<Chunk>, Snapshot),
    ) -> Result<Self, CallError> {
        instance.import(&chunks, &snapshot, &[])?;
        let dir = version.runtime.limits.checkpoint_dir.as_deref();
        let chunks = Chunks::from_vec(dir, chunks);
        // No timers before the import; the dispatcher anchors the time when it starts.
        let recovery = Recovery::from_snapshot(
            (journal_limit, dir),
            (chunks, snapshot),
            Vec::new(),
            Vec::new(),
            0,
        );
        let mut live = Self { version, instance, info, recovery, generation: 0 };
        // Listening sockets do not outlive the process that wrote the file: the app hears that
        // its listeners are gone before any other event (journaled, so a rebuild hears it too).
        // Serial 0: the dispatcher numbers its events from 1.
        let wall = crate::clock::now_unix_ms().saturating_mul(1_000_000);
        let at = Stamp { wall, mono: 0, serial: 0 };
        live.version.runtime.clock.begin(at);
        live.call(at, Call::ListenersLost)?;
        Ok(live)
    }

    /// The dispatcher starts at monotonic time `mono`: a fresh start's or a restore's timers
    /// count from there.
    pub(crate) fn anchor(&mut self, mono: u64) {
        self.recovery.anchor(mono);
    }

    /// Replaces this live version by a newly committed one and returns the one it replaced.
    /// The new recovery state is built from what the new instance imported, at monotonic time
    /// `mono`, when the host's timers were `timers` (before the import's own requests).
    pub(crate) fn commit(
        &mut self,
        version: Arc<Version>,
        instance: Instance,
        info: AppInfo,
        imported: Imported,
        timers: Vec<(u64, u64)>,
        mono: u64,
    ) -> Live {
        let snapshot = match imported {
            Imported::Snapshot(chunks, snapshot, live) => {
                let next =
                    self.candidate(version, instance, info, (chunks, snapshot, live), timers, mono);
                return self.adopt(next);
            }
            Imported::Journal(snapshot) => snapshot,
        };
        let fresh = Recovery::fresh(
            self.recovery.limit(),
            version.runtime.limits.checkpoint_dir.as_deref(),
        );
        let recovery =
            std::mem::replace(&mut self.recovery, fresh).with_checkpoint_snapshot(snapshot);
        let generation = self.generation + 1;
        std::mem::replace(self, Self { version, instance, info, recovery, generation })
    }

    /// A new instance that imported `imported` and is not (yet) live: a canary's candidate
    /// ([`crate::canary`]), or the next live value of [`Live::commit`]. Its recovery state is
    /// what it imported, and it journals the events it is fed, so that adopting it later needs
    /// nothing more.
    pub(crate) fn candidate(
        &self,
        version: Arc<Version>,
        instance: Instance,
        info: AppInfo,
        (chunks, snapshot, live): (Chunks, Snapshot, Vec<ConnInfo>),
        timers: Vec<(u64, u64)>,
        mono: u64,
    ) -> Live {
        let limit = (self.recovery.limit(), version.runtime.limits.checkpoint_dir.as_deref());
        let mut recovery = Recovery::from_snapshot(limit, (chunks, snapshot), live, timers, mono);
        // The state crossed, and with it what the app believes about its listeners.
        recovery.inherit_listeners(self.recovery.listener_book().clone());
        Self { version, instance, info, recovery, generation: self.generation + 1 }
    }

    /// A candidate of the same release built from the live journal (a catch-up that replays
    /// the checkpoint and the journal instead of an export): it keeps no journal of its own,
    /// since at the commit it takes the live one over ([`Live::take_journal`]), which holds
    /// every event it ran.
    pub(crate) fn candidate_replaying(&self, instance: Instance) -> Live {
        Self {
            version: Arc::clone(&self.version),
            instance,
            info: self.info.clone(),
            recovery: Recovery::fresh(0, None),
            generation: self.generation + 1,
        }
    }

    /// Takes `from`'s recovery state (checkpoint and journal) for this instance, leaving it
    /// this one's: for a same-release instance that ran every event `from` journaled.
    pub(crate) fn take_journal(&mut self, from: &mut Live) {
        std::mem::swap(&mut self.recovery, &mut from.recovery);
    }

    /// A candidate's state was exported earlier, when the app believed `book` about its
    /// listeners (a catch-up's: the events since are run in the candidate after).
    pub(crate) fn believe_listeners(&mut self, book: ListenerBook) {
        self.recovery.inherit_listeners(book);
    }

    /// Makes `candidate` the live value (a canary that agreed) and returns the one it replaced.
    pub(crate) fn adopt(&mut self, mut candidate: Live) -> Live {
        candidate.generation = self.generation + 1;
        std::mem::replace(self, candidate)
    }

    /// Runs one event; journals it if it completed. A trap leaves the instance unusable:
    /// rebuild it before the next call.
    pub(crate) fn call(&mut self, at: Stamp, call: Call<'_>) -> Result<(), CallError> {
        let result = match call {
            Call::Connect(info) => self.instance.on_connect(info),
            Call::Data(id, bytes) => self.instance.on_data(id, bytes),
            Call::Disconnect(id) => self.instance.on_disconnect(id),
            Call::Timer(id) => self.instance.on_timer(id),
            Call::Writable(id, window) => self.instance.on_writable(id, window),
            Call::Listening(id, result) => self.instance.on_listening(id, result),
            Call::Accept(info, listener) => self.instance.on_accept(info, listener),
            Call::ListenersLost => self.instance.on_listeners_lost(),
        };
        if result.is_ok() {
            match call {
                Call::Connect(info) => self.recovery.connect(at, info),
                Call::Data(id, bytes) => self.recovery.data(at, id, bytes),
                Call::Disconnect(id) => self.recovery.disconnect(at, id),
                Call::Timer(id) => self.recovery.timer(at, id),
                Call::Writable(id, window) => self.recovery.writable(at, id, window),
                Call::Listening(id, result) => self.recovery.listening(at, id, result),
                Call::Accept(info, listener) => self.recovery.accept(at, info, listener),
                Call::ListenersLost => self.recovery.listeners_lost(at),
            }
        }
        result
    }

    /// Hands `apply` what the instance asked for since the last drain, in order, without a
    /// copy (this runs after every event). A send marks its connection's input so far as
    /// answered (see [`Recovery::unanswered`]).
    pub(crate) fn drain_effects(&mut self, mut apply: impl FnMut(Effect)) {
        for effect in self.instance.take_effects() {
            match &effect {
                Effect::Send(conn, _) => self.recovery.replied(*conn),
                Effect::Listen(..) | Effect::Unlisten(_) => self.recovery.requested(&effect),
                _ => {}
            }
            apply(effect);
        }
    }

    pub(crate) fn discard_effects(&mut self) {
        self.instance.discard_effects();
    }

    /// Whether this version asks to be told when a connection can take more.
    pub(crate) fn takes_writable(&self) -> bool {
        self.instance.takes_writable()
    }

    /// The live state, exported (the instance serves on unchanged).
    pub(crate) fn export(&mut self) -> Result<Snapshot, CallError> {
        let snapshot = self.instance.export_state();
        self.instance.discard_effects();
        snapshot
    }

    /// Whether this instance's release declares the difference between `old` and `new` output
    /// expected (see [`Instance::expected_difference`]); a trap counts as no.
    pub(crate) fn expected_difference(&mut self, request: &[u8], old: &[u8], new: &[u8]) -> bool {
        let declared = self.instance.expected_difference(request, old, new);
        self.instance.discard_effects();
        declared.unwrap_or_else(|e| {
            tracing::warn!("{} failed to say whether a difference was expected: {e}", self.app());
            false
        })
    }

    /// The live instance's memory, as it reports it; `Ok(None)` if it cannot.
    pub(crate) fn memory_usage(&mut self) -> Result<Option<MemoryUsage>, CallError> {
        let usage = self.instance.memory_usage();
        self.instance.discard_effects();
        usage
    }

    /// Opens a pre-copy session on the live instance.
    pub(crate) fn precopy_begin(&mut self) -> Result<(), CallError> {
        let result = self.instance.precopy_begin();
        self.instance.discard_effects();
        result
    }

    /// The next batch of the pre-copy session (the instance serves on unchanged).
    pub(crate) fn precopy_next(&mut self, max_bytes: u64) -> Result<PrecopyBatch, CallError> {
        let result = self.instance.precopy_next(max_bytes);
        self.instance.discard_effects();
        result
    }

    /// Ends the pre-copy session: the records still owed and the snapshot of the rest.
    pub(crate) fn precopy_finish(&mut self) -> Result<(Vec<Chunk>, Snapshot), CallError> {
        let result = self.instance.precopy_finish();
        self.instance.discard_effects();
        result
    }

    /// Drops the pre-copy session (the upgrade rolled back). A failure here is the instance
    /// trapping, which the next event finds.
    pub(crate) fn precopy_abort(&mut self) {
        if let Err(e) = self.instance.precopy_abort() {
            tracing::warn!("{} failed to drop its pre-copy session: {e}", self.app());
        }
        self.instance.discard_effects();
    }

    /// True if the live instance can move its state by pre-copy.
    pub(crate) fn precopies(&self) -> bool {
        self.instance.precopies()
    }

    /// Counts replacements of the instance (rebuild, restart, commit): a pre-copy session
    /// belongs to one instance, and ends if it is replaced.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Makes `state` (pre-copied chunks and the snapshot of the rest, or a full snapshot with
    /// no chunks), taken just now (monotonic time `mono`) with `live` open and `timers` armed,
    /// the checkpoint.
    pub(crate) fn set_checkpoint(
        &mut self,
        state: (Chunks, Snapshot),
        live: Vec<ConnInfo>,
        timers: Vec<(u64, u64)>,
        mono: u64,
    ) {
        self.recovery.set_checkpoint(state, live, timers, mono);
    }

    /// Makes `state`, built off the loop from the recovery state as of `mark`, the checkpoint
    /// (see [`crate::recovery::Recovery::advance_checkpoint`]); false if the journal moved on.
    pub(crate) fn advance_checkpoint(
        &mut self,
        mark: crate::recovery::JournalMark,
        state: (Chunks, Snapshot),
        base: crate::recovery::CheckpointBase,
    ) -> bool {
        self.recovery.advance_checkpoint(mark, state, base)
    }

    pub(crate) fn checkpoint_failed(&mut self) {
        self.recovery.checkpoint_failed();
    }

    /// Replaces the (trapped) instance by a fresh one brought to the journal's state, leaving
    /// out `skip` and whatever else traps on replay; the journal loses the same events.
    pub(crate) fn rebuild(
        &mut self,
        args: &[String],
        clock: &EventClock,
        skip: Option<Skip>,
    ) -> Result<RebuildReport, RebuildError> {
        // The trapped instance's memory goes first: with a guest near its memory limit, keeping
        // it through the rebuild would double the host's peak. An uninitialised instance holds
        // its place (never called: a failed rebuild is followed by a fresh restart).
        if let Ok(placeholder) = Instance::new(&self.version) {
            drop(std::mem::replace(&mut self.instance, placeholder));
        }
        self.generation += 1;
        let (instance, report) = self.recovery.rebuild(&self.version, args, clock, skip)?;
        self.instance = instance;
        Ok(report)
    }

    /// The last resort, when the journal cannot rebuild the state: a fresh instance of the same
    /// version with `init`'s state, and a fresh journal from monotonic time `mono`. The caller
    /// tells it about every open connection through [`Live::call`], so the journal records that
    /// too, and replaces the host's timers by what `init` asks for.
    pub(crate) fn restart_fresh(&mut self, args: &[String], mono: u64) -> Result<(), CallError> {
        let (instance, info) = recovery::start(&self.version, args)?;
        self.generation += 1;
        self.instance = instance;
        self.info = info;
        let dir = self.version.runtime.limits.checkpoint_dir.as_deref();
        self.recovery = Recovery::fresh(self.recovery.limit(), dir);
        self.recovery.anchor(mono);
        Ok(())
    }

    pub(crate) fn app(&self) -> AppVersion {
        AppVersion::from(&self.info)
    }

    pub(crate) fn info(&self) -> &AppInfo {
        &self.info
    }

    pub(crate) fn version(&self) -> &Arc<Version> {
        &self.version
    }

    pub(crate) fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Replays the journal into `instance`, which has just imported the checkpoint (the
    /// `--from-checkpoint` upgrade); returns the timers it believes armed and what it believes
    /// about its listeners.
    pub(crate) fn replay_journal(
        &self,
        instance: &mut Instance,
        clock: &EventClock,
    ) -> Result<recovery::Believed, CallError> {
        self.recovery.replay(instance, clock)
    }

    /// The simulator's `fault` step: the next event traps.
    pub(crate) fn fault_next_event(&mut self) {
        self.instance.fault_next_event();
    }
}
