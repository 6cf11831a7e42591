//! The glue between the generated bindings and an app's [`Server`]: per-connection input
//! buffers and how input is offered, the snapshot layout, and migrations on import. Used through
//! [`crate::export!`], and by [`crate::testing::TestHost`] with a recorder in place of the host.

use crate::ctx::TimerOp;
use crate::precopy::{self, Mode, PRECOPY_SECTION, Passed};
use crate::{CONNS_SECTION, CONNS_SECTION_VERSION, ConnId, Ctx, Server};
use std::collections::BTreeMap;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "tasuki:server/server",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "tasuki_guest::runtime::bindings",
        runtime_path: "tasuki_guest::runtime::wit_bindgen_rt",
    });
}
#[doc(hidden)]
pub use wit_bindgen::rt as wit_bindgen_rt;

use bindings::tasuki::server::types::{
    AppInfo, Chunk, ConnInfo, PrecopyBatch, Section, SectionSpec, Snapshot,
};

/// Where an instance's requests go when an event returns: the host's `net` and `timers` imports
/// in a component ([`Imports`]), a recorder in a native test.
pub trait HostCalls {
    /// `net.send`: queue `bytes` (never empty) for `conn`.
    fn send(&mut self, conn: ConnId, bytes: Vec<u8>);
    /// `net.close`: close `conn` after its output.
    fn close(&mut self, conn: ConnId);
    /// `timers.set`: arm timer `id` to fire after `after_ms` milliseconds.
    fn set_timer(&mut self, id: u64, after_ms: u64);
    /// `timers.cancel`.
    fn cancel_timer(&mut self, id: u64);
}

/// The host's imports: what a component's requests go to.
#[derive(Debug, Default)]
pub struct Imports;

impl HostCalls for Imports {
    fn send(&mut self, conn: ConnId, bytes: Vec<u8>) {
        bindings::tasuki::server::net::send(conn, &bytes);
    }
    fn close(&mut self, conn: ConnId) {
        bindings::tasuki::server::net::close(conn);
    }
    fn set_timer(&mut self, id: u64, after_ms: u64) {
        bindings::tasuki::server::timers::set(id, after_ms);
    }
    fn cancel_timer(&mut self, id: u64) {
        bindings::tasuki::server::timers::cancel(id);
    }
}

/// A connection as the SDK tracks it.
#[derive(Debug)]
struct Conn {
    info: ConnInfo,
    /// Bytes received and not yet consumed by the app.
    input: Vec<u8>,
}

/// One app instance: its state, its connections, the output of the event in progress, and
/// where its requests go (`H`).
#[derive(Debug)]
pub struct Runtime<S, H = Imports> {
    server: S,
    ctx: Ctx,
    conns: BTreeMap<ConnId, Conn>,
    /// Bytes of unconsumed input over all of `conns`.
    unconsumed: usize,
    version: &'static str,
    host: H,
}

impl<S: Server> Runtime<S> {
    /// A fresh instance of release `version`, in a component.
    pub fn new(version: &'static str) -> Self {
        Self::with_host(version, Imports)
    }
}

impl<S: Server, H: HostCalls> Runtime<S, H> {
    /// A fresh instance of release `version` whose requests go to `host`.
    pub fn with_host(version: &'static str, host: H) -> Self {
        Self {
            server: S::default(),
            ctx: Ctx::default(),
            conns: BTreeMap::new(),
            unconsumed: 0,
            version,
            host,
        }
    }

    /// Hands what the event asked for to the host: output, then timers, then closes (whose
    /// connections the SDK forgets with their unconsumed input).
    fn finish_event(&mut self) {
        let requests = self.ctx.take_requests();
        for (conn, bytes) in requests.out {
            if !bytes.is_empty() {
                self.host.send(conn, bytes);
            }
        }
        for op in requests.timers {
            match op {
                TimerOp::Set(id, after_ms) => self.host.set_timer(id, after_ms),
                TimerOp::Cancel(id) => self.host.cancel_timer(id),
            }
        }
        for conn in requests.closes {
            self.host.close(conn);
            self.forget(conn);
        }
    }

    /// Drops `conn` and its unconsumed input.
    fn forget(&mut self, conn: ConnId) {
        if let Some(slot) = self.conns.remove(&conn) {
            self.unconsumed -= slot.input.len();
        }
    }

    /// Closes the connections whose unconsumed input passes the host's bounds: `conn` if it
    /// alone holds more than [`crate::host::input_limit`], then the one holding the most while
    /// all together hold more than [`crate::host::input_total`]. Each is told (through
    /// [`Server::on_input_limit`]) and said in the host's log.
    fn enforce_input_limits(&mut self, conn: ConnId) {
        let limit = usize::try_from(crate::host::input_limit()).unwrap_or(usize::MAX);
        let total = usize::try_from(crate::host::input_total()).unwrap_or(usize::MAX);
        let held = self.conns.get(&conn).map_or(0, |c| c.input.len());
        if limit > 0 && held > limit {
            self.cut_off(
                conn,
                format!("{held} bytes of unconsumed input, over --query-buffer ({limit} bytes)"),
            );
        }
        while total > 0 && self.unconsumed > total {
            let Some((&largest, slot)) = self.conns.iter().max_by_key(|(_, c)| c.input.len())
            else {
                break;
            };
            let held = slot.input.len();
            self.cut_off(
                largest,
                format!(
                    "the most unconsumed input ({held} bytes) while all connections hold {}, \
                     over half of --max-state ({total} bytes)",
                    self.unconsumed
                ),
            );
        }
    }

    fn cut_off(&mut self, conn: ConnId, why: String) {
        eprintln!("{} {}: closing connection {conn}: {why}", S::NAME, self.version);
        self.server.on_input_limit(&mut self.ctx, conn);
        self.ctx.close(conn);
        self.forget(conn);
    }

    /// `app.init`.
    pub fn init(&mut self, args: Vec<String>) -> Result<(), String> {
        let result = self.server.init(&mut self.ctx, &args);
        self.finish_event();
        result
    }

    /// `app.on-connect`.
    pub fn on_connect(&mut self, info: ConnInfo) {
        self.server.on_connect(&mut self.ctx, &info);
        let id = info.id;
        self.forget(id);
        self.conns.insert(id, Conn { info, input: Vec::new() });
        self.finish_event();
    }

    /// `app.on-data`: offers the connection's unconsumed input followed by `data` to
    /// [`Server::on_data`], and offers what is left again at once for as long as each call
    /// consumes something, input remains and the app has not closed the connection. An app can
    /// then take one message per call: a pipeline of them in one read is answered whole, not
    /// one message per arrival of more bytes.
    pub fn on_data(&mut self, conn: ConnId, data: Vec<u8>) {
        let Some(slot) = self.conns.get_mut(&conn) else {
            // The host never sends data for a connection it did not announce; if it does, the
            // bytes have no owner and are dropped rather than trapping the whole instance.
            return;
        };
        let mut input = std::mem::take(&mut slot.input);
        self.unconsumed -= input.len();
        if input.is_empty() {
            input = data;
        } else {
            input.extend_from_slice(&data);
        }
        // Consumed bytes are dropped once, at the end: an app taking a byte per call must not
        // make the event quadratic in its input.
        let mut consumed = 0;
        loop {
            let rest = &input[consumed..];
            let taken = self.server.on_data(&mut self.ctx, conn, rest).min(rest.len());
            consumed += taken;
            if taken == 0 || consumed == input.len() || self.ctx.is_closing(conn) {
                break;
            }
        }
        // What is left behind a close goes with the connection: it is not input the app kept,
        // so no input limit applies to it (the app would be told of a limit after its goodbye).
        if !self.ctx.is_closing(conn)
            && let Some(slot) = self.conns.get_mut(&conn)
        {
            input.drain(..consumed);
            self.unconsumed += input.len();
            slot.input = input;
            self.enforce_input_limits(conn);
        }
        self.finish_event();
    }

    /// `app.on-disconnect`.
    pub fn on_disconnect(&mut self, conn: ConnId) {
        self.server.on_disconnect(&mut self.ctx, conn);
        self.forget(conn);
        self.finish_event();
    }

    /// `app.on-timer`.
    pub fn on_timer(&mut self, id: u64) {
        self.server.on_timer(&mut self.ctx, id);
        self.finish_event();
    }

    /// `state.describe`.
    pub fn describe(&self) -> AppInfo {
        let mut accepts = vec![S::STATE_VERSION];
        accepts.extend(S::migrations().versions());
        AppInfo {
            name: S::NAME.to_string(),
            version: self.version.to_string(),
            sections: vec![
                SectionSpec { name: S::NAME.to_string(), version: S::STATE_VERSION, accepts },
                SectionSpec {
                    name: CONNS_SECTION.to_string(),
                    version: CONNS_SECTION_VERSION,
                    accepts: vec![CONNS_SECTION_VERSION],
                },
            ],
        }
    }

    /// `state.export-state`.
    pub fn export_state(&self) -> Result<Snapshot, String> {
        self.server.export_ready()?;
        let state = self.encode_state()?;
        self.snapshot(state, Vec::new())
    }

    fn encode_state(&self) -> Result<Vec<u8>, String> {
        postcard::to_allocvec(&self.server)
            .map_err(|e| format!("state of `{}` does not encode: {e}", S::NAME))
    }

    /// The snapshot of `state` (the app's section), the connections' unconsumed input, and
    /// `extra` sections.
    fn snapshot(&self, state: Vec<u8>, extra: Vec<Section>) -> Result<Snapshot, String> {
        let pending: Vec<(ConnId, &[u8])> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.input.is_empty())
            .map(|(id, c)| (*id, c.input.as_slice()))
            .collect();
        let conns = postcard::to_allocvec(&pending)
            .map_err(|e| format!("connection input does not encode: {e}"))?;
        let mut sections = vec![
            Section { name: S::NAME.to_string(), version: S::STATE_VERSION, bytes: state },
            Section {
                name: CONNS_SECTION.to_string(),
                version: CONNS_SECTION_VERSION,
                bytes: conns,
            },
        ];
        sections.extend(extra);
        Ok(Snapshot { app: S::NAME.to_string(), app_version: self.version.to_string(), sections })
    }

    /// `precopy.begin`.
    pub fn precopy_begin(&mut self) -> Result<(), String> {
        self.server.export_ready()?;
        precopy::begin_session();
        Ok(())
    }

    /// `precopy.next`.
    pub fn precopy_next(&self, max_bytes: u64) -> Result<PrecopyBatch, String> {
        let budget = usize::try_from(max_bytes.max(1)).unwrap_or(usize::MAX);
        let passed = precopy::pass(budget, || self.encode_state())?;
        let pending = passed.pending;
        Ok(PrecopyBatch { chunks: chunks::<S>(passed), pending })
    }

    /// `precopy.finish`: the rest of the records, and the snapshot whose state section is the
    /// skeleton (marked by a [`PRECOPY_SECTION`]). Ends the session.
    pub fn precopy_finish(&self) -> Result<(Vec<Chunk>, Snapshot), String> {
        self.server.export_ready()?;
        let passed = precopy::pass(usize::MAX, || self.encode_state())?;
        let skeleton = passed.skeleton.clone();
        let chunks = chunks::<S>(passed);
        precopy::end_session();
        let marker = Section { name: PRECOPY_SECTION.to_string(), version: 1, bytes: Vec::new() };
        Ok((chunks, self.snapshot(skeleton, vec![marker])?))
    }

    /// `precopy.abort`.
    pub fn precopy_abort(&mut self) {
        precopy::end_session();
    }

    /// `precopy.import-chunks`: registers the streams each skeleton names and builds them from
    /// the records.
    pub fn import_chunks(&mut self, chunks: Vec<Chunk>) -> Result<(), String> {
        for chunk in chunks {
            if chunk.section != S::NAME {
                return Err(format!(
                    "a pre-copied chunk of section `{}`, which `{}` {} does not have",
                    chunk.section,
                    S::NAME,
                    self.version
                ));
            }
            let Some((&kind, body)) = chunk.bytes.split_first() else { continue };
            match kind {
                precopy::SKELETON => {
                    let (name, version) = (chunk.section, chunk.version);
                    let result = precopy::register_skeleton(Mode::Register, body, |skeleton| {
                        let section = Section { name, version, bytes: skeleton.to_vec() };
                        decode_state::<S>(&section).map(drop)
                    });
                    if let Err(e) = result {
                        precopy::reset_reader();
                        return Err(e);
                    }
                }
                precopy::RECORDS => {
                    if let Err(e) = precopy::apply_records(body) {
                        // Whatever follows (a full transfer, or nothing) starts clean.
                        precopy::reset_reader();
                        return Err(e);
                    }
                }
                other => return Err(format!("a pre-copied chunk of unknown kind {other}")),
            }
        }
        Ok(())
    }

    /// `state.import-state`. On error nothing of this instance changes.
    pub fn import_state(&mut self, snapshot: Snapshot, live: Vec<ConnInfo>) -> Result<(), String> {
        if snapshot.app != S::NAME {
            return Err(format!(
                "the snapshot is of app `{}` {}, this is `{}` {}",
                snapshot.app,
                snapshot.app_version,
                S::NAME,
                self.version
            ));
        }
        let precopied = snapshot.sections.iter().any(|s| s.name == PRECOPY_SECTION);
        let mut server = None;
        let mut pending: Vec<(ConnId, Vec<u8>)> = Vec::new();
        for section in snapshot.sections {
            if section.name == S::NAME {
                server = Some(if precopied {
                    precopy::resolve(|| decode_state::<S>(&section))?
                } else {
                    decode_state::<S>(&section)?
                });
            } else if section.name == PRECOPY_SECTION {
                continue;
            } else if section.name == CONNS_SECTION {
                if section.version != CONNS_SECTION_VERSION {
                    return Err(format!(
                        "section `{CONNS_SECTION}` is version {}, this release reads {CONNS_SECTION_VERSION}",
                        section.version
                    ));
                }
                pending = postcard::from_bytes(&section.bytes)
                    .map_err(|e| format!("section `{CONNS_SECTION}` does not decode: {e}"))?;
            } else {
                return Err(format!(
                    "section `{}` (version {}) is not known to `{}` {}; importing would lose it",
                    section.name,
                    section.version,
                    S::NAME,
                    self.version
                ));
            }
        }
        let server =
            server.ok_or_else(|| format!("the snapshot has no `{}` state section", S::NAME))?;

        let mut pending: BTreeMap<ConnId, Vec<u8>> = pending.into_iter().collect();
        self.conns = live
            .into_iter()
            .map(|info| {
                let input = pending.remove(&info.id).unwrap_or_default();
                (info.id, Conn { info, input })
            })
            .collect();
        self.unconsumed = self.conns.values().map(|c| c.input.len()).sum();
        let fresh = std::mem::replace(&mut self.server, server);
        self.server.resumed(&mut self.ctx, fresh);
        self.finish_event();
        Ok(())
    }

    /// The app's state.
    pub(crate) fn server(&self) -> &S {
        &self.server
    }

    /// The app's state, to change between events (tests).
    pub(crate) fn server_mut(&mut self) -> &mut S {
        &mut self.server
    }

    /// Where the requests go.
    pub(crate) fn host_mut(&mut self) -> &mut H {
        &mut self.host
    }

    /// Pins the clock the app reads through [`Ctx::now_ms`] (a native test's).
    pub(crate) fn set_clock(&mut self, ms: Option<u64>) {
        self.ctx.set_clock(ms);
    }

    /// Bytes `conn` sent that the app has not consumed; 0 for a connection it does not know.
    pub(crate) fn unconsumed(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.input.len())
    }

    /// The connections the app knows, as `import-state`'s `live` lists them.
    pub(crate) fn live(&self) -> Vec<ConnInfo> {
        self.conns.values().map(|c| c.info.clone()).collect()
    }

    /// What the app knows of `conn`.
    pub fn conn_info(&self, conn: ConnId) -> Option<&ConnInfo> {
        self.conns.get(&conn).map(|c| &c.info)
    }
}

fn decode_state<S: Server>(section: &Section) -> Result<S, String> {
    if section.version == S::STATE_VERSION {
        return postcard::from_bytes(&section.bytes).map_err(|e| {
            format!(
                "state section `{}` version {} does not decode: {e}",
                section.name, section.version
            )
        });
    }
    match S::migrations().run(section.version, &section.bytes) {
        Some(result) => result,
        None => {
            let mut accepts = vec![S::STATE_VERSION];
            accepts.extend(S::migrations().versions());
            Err(format!(
                "state section `{}` is version {}; this release reads versions {accepts:?}",
                section.name, section.version
            ))
        }
    }
}

/// A pass's chunks: the skeleton first if the reader must learn of a new stream, then the
/// records.
fn chunks<S: Server>(passed: Passed) -> Vec<Chunk> {
    let chunk = |kind: u8, body: &[u8]| {
        let mut bytes = Vec::with_capacity(body.len() + 1);
        bytes.push(kind);
        bytes.extend_from_slice(body);
        Chunk { section: S::NAME.to_string(), version: S::STATE_VERSION, bytes }
    };
    let mut chunks = Vec::new();
    if passed.new_streams {
        let bytes = precopy::skeleton_chunk(&passed.streams, &passed.skeleton);
        chunks.push(Chunk { section: S::NAME.to_string(), version: S::STATE_VERSION, bytes });
    }
    if !passed.records.is_empty() {
        chunks.push(chunk(precopy::RECORDS, &passed.records));
    }
    chunks
}
