//! Recovery: a checkpoint of the live instance's state plus a journal of every event since, so
//! that an instance that traps is rebuilt to the state it had just before the event that trapped.
//!
//! A trap (a guest panic, a missed deadline, an allocation past the memory cap) leaves the
//! instance unusable: wasmtime refuses to enter it again, and its memory may be half-updated.
//! Between two events, though, an instance's state is a pure function of its last checkpoint and
//! the events since, and every event went through the dispatcher. So the dispatcher journals each
//! event that completed — its kind, connection, bytes and the time the guest saw — and on a trap
//! starts a fresh instance of the same version, imports the checkpoint and replays the journal
//! with output discarded (the clients already have their replies). The faulting event is the only
//! thing lost, and its connection is closed.
//!
//! Checkpoints come for free at every upgrade (the snapshot that crossed), and otherwise are taken
//! when the journal outgrows the last checkpoint (and [`CHECKPOINT_MIN`]): at most about one
//! export per byte of input. If exports keep failing, the journal grows to the `journal` limit and
//! then protection is dropped, loudly; a trap after that restarts the app with fresh state.

use crate::bindings::{ConnInfo, Snapshot};
use crate::clock::EventClock;
use crate::instance::{CallError, Instance, snapshot_bytes};
use crate::limits::CHECKPOINT_MIN;
use crate::upgrade;
use crate::version::Version;
use std::ops::Range;

/// One event that completed, as the guest saw it.
#[derive(Debug)]
enum Event {
    Connect(ConnInfo),
    Data(u64, Range<usize>),
    Disconnect(u64),
    Timer(u64),
}

/// The state an instance can be rebuilt from.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    pub(crate) snapshot: Snapshot,
    /// Connections open when it was taken.
    pub(crate) live: Vec<ConnInfo>,
    /// When it was taken, ms since the Unix epoch.
    pub(crate) at_unix_ms: u64,
}

/// The last checkpoint and every event since.
#[derive(Debug)]
pub(crate) struct Journal {
    checkpoint: Option<Checkpoint>,
    /// Each event with the wall-clock time (ns) the guest saw.
    events: Vec<(u64, Event)>,
    /// The bytes of every `Data` event, back to back.
    data: Vec<u8>,
    /// Journal size at which the next checkpoint is due.
    checkpoint_at: usize,
    /// Bytes beyond which protection is dropped; 0 means off.
    limit: usize,
    /// False once the journal overflowed: a rebuild would miss events.
    complete: bool,
}

/// Approximate bytes an event costs besides its data.
const EVENT_OVERHEAD: usize = std::mem::size_of::<(u64, Event)>();

impl Journal {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            checkpoint: None,
            events: Vec::new(),
            data: Vec::new(),
            checkpoint_at: CHECKPOINT_MIN,
            limit,
            complete: limit > 0,
        }
    }

    fn push(&mut self, at: u64, event: Event) {
        if !self.complete {
            return;
        }
        self.events.push((at, event));
        if self.len() > self.limit {
            tracing::error!(
                "recovery journal passed its limit of {} bytes because checkpoints keep failing; \
                 a trap from now on loses the app's state",
                self.limit
            );
            self.events = Vec::new();
            self.data = Vec::new();
            self.complete = false;
        }
    }

    pub(crate) fn connect(&mut self, at: u64, conn: &ConnInfo) {
        self.push(at, Event::Connect(conn.clone()));
    }

    pub(crate) fn data(&mut self, at: u64, conn: u64, bytes: &[u8]) {
        if !self.complete {
            return;
        }
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.push(at, Event::Data(conn, start..self.data.len()));
    }

    pub(crate) fn disconnect(&mut self, at: u64, conn: u64) {
        self.push(at, Event::Disconnect(conn));
    }

    pub(crate) fn timer(&mut self, at: u64, id: u64) {
        self.push(at, Event::Timer(id));
    }

    /// Bytes held by events since the checkpoint.
    pub(crate) fn len(&self) -> usize {
        self.data.len() + self.events.len() * EVENT_OVERHEAD
    }

    pub(crate) fn events(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.complete
    }

    pub(crate) fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// True when a checkpoint would pay for itself.
    pub(crate) fn wants_checkpoint(&self) -> bool {
        self.limit > 0 && self.len() >= self.checkpoint_at
    }

    /// Starts over from `snapshot`, taken with `live` open.
    pub(crate) fn set_checkpoint(&mut self, snapshot: Snapshot, live: Vec<ConnInfo>) {
        let bytes = snapshot_bytes(&snapshot) as usize;
        self.checkpoint_at = bytes.max(CHECKPOINT_MIN);
        self.checkpoint =
            Some(Checkpoint { snapshot, live, at_unix_ms: crate::status::now_unix_ms() });
        self.events.clear();
        self.data.clear();
        self.complete = self.limit > 0;
    }

    /// An export for a checkpoint was refused: try again after twice as much input.
    pub(crate) fn checkpoint_refused(&mut self) {
        self.checkpoint_at = self.checkpoint_at.saturating_mul(2);
    }

    /// A fresh instance of `version` brought to the journal's state: the checkpoint, then every
    /// event since.
    pub(crate) fn rebuild(
        &self,
        version: &Version,
        args: &[String],
        clock: &EventClock,
    ) -> Result<Instance, CallError> {
        let (mut instance, _) = upgrade::start(version, args)?;
        if let Some(checkpoint) = &self.checkpoint {
            instance.import_state(&checkpoint.snapshot, &checkpoint.live)?;
        }
        self.replay(&mut instance, clock)?;
        Ok(instance)
    }

    /// Feeds every journaled event to `instance`, discarding what it sends: the clients
    /// already have it.
    pub(crate) fn replay(
        &self,
        instance: &mut Instance,
        clock: &EventClock,
    ) -> Result<(), CallError> {
        instance.discard_effects();
        for (at, event) in &self.events {
            clock.freeze_at(*at);
            match event {
                Event::Connect(conn) => instance.on_connect(conn)?,
                Event::Data(conn, range) => instance.on_data(*conn, &self.data[range.clone()])?,
                Event::Disconnect(conn) => instance.on_disconnect(*conn)?,
                Event::Timer(id) => instance.on_timer(*id)?,
            }
            instance.discard_effects();
        }
        Ok(())
    }
}
