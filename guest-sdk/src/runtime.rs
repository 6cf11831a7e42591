//! The glue between the generated bindings and an app's [`Server`]: per-connection input
//! buffers, the snapshot layout, and migrations on import. Used through [`crate::export!`].

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

use bindings::tasuki::server::types::{AppInfo, ConnInfo, Section, SectionSpec, Snapshot};

/// A connection as the SDK tracks it.
#[derive(Debug)]
struct Conn {
    info: ConnInfo,
    /// Bytes received and not yet consumed by the app.
    input: Vec<u8>,
}

/// One app instance: its state, its connections, the output of the event in progress.
#[derive(Debug)]
pub struct Runtime<S> {
    server: S,
    ctx: Ctx,
    conns: BTreeMap<ConnId, Conn>,
    version: &'static str,
}

impl<S: Server> Runtime<S> {
    /// A fresh instance of release `version`.
    pub fn new(version: &'static str) -> Self {
        Self { server: S::default(), ctx: Ctx::default(), conns: BTreeMap::new(), version }
    }

    fn finish_event(&mut self) {
        for conn in self.ctx.flush() {
            self.conns.remove(&conn);
        }
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
        self.conns.insert(info.id, Conn { info, input: Vec::new() });
        self.finish_event();
    }

    /// `app.on-data`.
    pub fn on_data(&mut self, conn: ConnId, data: Vec<u8>) {
        let Some(slot) = self.conns.get_mut(&conn) else {
            // The host never sends data for a connection it did not announce; if it does, the
            // bytes have no owner and are dropped rather than trapping the whole instance.
            return;
        };
        let mut input = std::mem::take(&mut slot.input);
        if input.is_empty() {
            input = data;
        } else {
            input.extend_from_slice(&data);
        }
        let consumed = self.server.on_data(&mut self.ctx, conn, &input).min(input.len());
        input.drain(..consumed);
        if let Some(slot) = self.conns.get_mut(&conn) {
            slot.input = input;
        }
        self.finish_event();
    }

    /// `app.on-disconnect`.
    pub fn on_disconnect(&mut self, conn: ConnId) {
        self.server.on_disconnect(&mut self.ctx, conn);
        self.conns.remove(&conn);
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
        let state = postcard::to_allocvec(&self.server)
            .map_err(|e| format!("state of `{}` does not encode: {e}", S::NAME))?;
        let pending: Vec<(ConnId, &[u8])> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.input.is_empty())
            .map(|(id, c)| (*id, c.input.as_slice()))
            .collect();
        let conns = postcard::to_allocvec(&pending)
            .map_err(|e| format!("connection input does not encode: {e}"))?;
        Ok(Snapshot {
            app: S::NAME.to_string(),
            app_version: self.version.to_string(),
            sections: vec![
                Section { name: S::NAME.to_string(), version: S::STATE_VERSION, bytes: state },
                Section {
                    name: CONNS_SECTION.to_string(),
                    version: CONNS_SECTION_VERSION,
                    bytes: conns,
                },
            ],
        })
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
        let mut server = None;
        let mut pending: Vec<(ConnId, Vec<u8>)> = Vec::new();
        for section in snapshot.sections {
            if section.name == S::NAME {
                server = Some(decode_state::<S>(&section)?);
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
        let fresh = std::mem::replace(&mut self.server, server);
        self.server.resumed(&mut self.ctx, fresh);
        self.finish_event();
        Ok(())
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
