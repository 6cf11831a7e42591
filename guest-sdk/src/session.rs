//! Per-connection sessions: a typed value per connection, kept by the SDK, that crosses an
//! upgrade with its connection and is migrated like the app state.
//!
//! A protocol whose connections carry state between requests (an FTP login and working
//! directory, a chosen protocol version, a transaction under way) keeps it in a session rather
//! than in a map keyed by connection id inside the app state: the SDK makes it when the app
//! first asks for it, drops it when the connection goes (after [`crate::Server::on_disconnect`]),
//! drops those of connections that closed while an upgrade was in its pause, and transfers
//! the rest in a section of its own, `tasuki.sessions`, at the session type's
//! [`Session::VERSION`]. A release that changes the session's shape bumps that version and
//! says how to read the old one in [`Session::migrations`], as for the app state; the host
//! refuses, before anything is stopped, an upgrade to a release that cannot read the sessions
//! the running one keeps.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tasuki_guest::frame::{Framing, Lines};
//! use tasuki_guest::{ConnId, Ctx, Server, Session, SessionType};
//!
//! /// What a connection of this server remembers between lines: who logged in.
//! #[derive(Default, Serialize, Deserialize)]
//! struct Login {
//!     user: Option<String>,
//! }
//!
//! impl Session for Login {
//!     const VERSION: u32 = 1;
//! }
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Greeter;
//!
//! const LINES: Lines = Lines::new(256);
//!
//! impl Server for Greeter {
//!     const NAME: &'static str = "greeter";
//!     const STATE_VERSION: u32 = 1;
//!
//!     fn session_type() -> Option<SessionType> {
//!         Some(SessionType::of::<Login>())
//!     }
//!
//!     fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
//!         let Ok(Some(line)) = LINES.next(input) else { return 0 };
//!         let text = String::from_utf8_lossy(line.payload).into_owned();
//!         // The session and the context together: the closure gets both.
//!         ctx.with_session(conn, |ctx, login: &mut Login| match text.strip_prefix("USER ") {
//!             Some(name) => {
//!                 login.user = Some(name.to_string());
//!                 ctx.send(conn, b"ok\n");
//!             }
//!             None => {
//!                 let who = login.user.as_deref().unwrap_or("stranger");
//!                 ctx.send(conn, format!("hello, {who}\n").as_bytes());
//!             }
//!         });
//!         line.consumed
//!     }
//! }
//!
//! let mut host = tasuki_guest::testing::TestHost::<Greeter>::new();
//! let (a, b) = (host.connect(), host.connect());
//! host.send(a, "USER ada\n");
//! host.send(a, "hi\n");
//! host.send(b, "hi\n");
//! assert_eq!(host.read_string(a), "ok\nhello, ada\n");
//! assert_eq!(host.read_string(b), "hello, stranger\n");
//! // A session crosses an upgrade with its connection.
//! let mut host = host.upgrade::<Greeter>().expect("same release");
//! host.send(a, "hi\n");
//! assert_eq!(host.read_string(a), "hello, ada\n");
//! ```

use crate::{ConnId, Ctx, Migrations};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::any::{Any, TypeId};
use std::collections::{BTreeMap, BTreeSet};

/// A per-connection session type: serialized with postcard into the `tasuki.sessions` section,
/// so, as for the app state, its shape is its version.
pub trait Session: Serialize + DeserializeOwned + Default + 'static {
    /// The version of the session encoding this release writes. Bump it whenever the
    /// serialized shape changes, and add a migration from the old one.
    const VERSION: u32;

    /// Older session versions this release can read, and how (a frozen copy of each old type,
    /// as for [`crate::Server::migrations`]). A running release's sessions at a version not
    /// listed make the host refuse the upgrade before it starts.
    fn migrations() -> Migrations<Self> {
        Migrations::none()
    }
}

/// The session type a release keeps, as [`crate::Server::session_type`] names it: what the SDK
/// needs to make, transfer and migrate sessions without knowing the type elsewhere.
#[derive(Clone, Copy)]
pub struct SessionType {
    type_id: fn() -> TypeId,
    type_name: &'static str,
    version: u32,
    accepts: fn() -> Vec<u32>,
    new_map: fn() -> Box<dyn Any>,
    encode: fn(&dyn Any) -> Result<Vec<u8>, String>,
    decode: Decode,
    remove: fn(&mut dyn Any, ConnId),
    retain: fn(&mut dyn Any, &dyn Fn(ConnId) -> bool),
    len: fn(&dyn Any) -> usize,
}

impl std::fmt::Debug for SessionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionType")
            .field("type", &self.type_name)
            .field("version", &self.version)
            .finish()
    }
}

/// Reads a `tasuki.sessions` section written at a version into a session map.
type Decode = fn(u32, &[u8]) -> Result<Box<dyn Any>, String>;

/// The sessions of one release: connection id to session.
type Map<T> = BTreeMap<ConnId, T>;

fn map<T: 'static>(map: &dyn Any) -> &Map<T> {
    map.downcast_ref().expect("a session map holds its own type")
}

fn map_mut<T: 'static>(map: &mut dyn Any) -> &mut Map<T> {
    map.downcast_mut().expect("a session map holds its own type")
}

impl SessionType {
    /// Sessions of type `T`.
    pub fn of<T: Session>() -> Self {
        Self {
            type_id: TypeId::of::<T>,
            type_name: std::any::type_name::<T>(),
            version: T::VERSION,
            accepts: || {
                let mut accepts = vec![T::VERSION];
                accepts.extend(T::migrations().versions());
                accepts
            },
            new_map: || Box::new(Map::<T>::new()),
            encode: |sessions| {
                let records = map::<T>(sessions)
                    .iter()
                    .map(|(&id, session)| Ok((id, postcard::to_allocvec(session)?)))
                    .collect::<Result<Vec<(ConnId, Vec<u8>)>, postcard::Error>>()
                    .map_err(|e| format!("a session does not encode: {e}"))?;
                postcard::to_allocvec(&records).map_err(|e| format!("sessions do not encode: {e}"))
            },
            decode: |version, bytes| {
                let records: Vec<(ConnId, Vec<u8>)> = postcard::from_bytes(bytes)
                    .map_err(|e| format!("section `tasuki.sessions` does not decode: {e}"))?;
                let migrations = (version != T::VERSION).then(T::migrations);
                let mut sessions = Map::<T>::new();
                for (id, bytes) in records {
                    let session = match &migrations {
                        None => postcard::from_bytes(&bytes).map_err(|e| {
                            format!("the session of connection {id} does not decode: {e}")
                        })?,
                        Some(migrations) => match migrations.run(version, &bytes) {
                            Some(result) => result.map_err(|e| {
                                format!("the session of connection {id} does not migrate: {e}")
                            })?,
                            None => {
                                return Err(format!(
                                    "sessions are version {version}; this release reads \
                                     versions {:?}",
                                    T::migrations().versions()
                                ));
                            }
                        },
                    };
                    sessions.insert(id, session);
                }
                Ok(Box::new(sessions))
            },
            remove: |sessions, conn| {
                map_mut::<T>(sessions).remove(&conn);
            },
            retain: |sessions, keep| map_mut::<T>(sessions).retain(|&id, _| keep(id)),
            len: |sessions| map::<T>(sessions).len(),
        }
    }

    /// The version sessions are written at.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The versions this release reads: its own, then those it migrates.
    pub fn accepts(&self) -> Vec<u32> {
        (self.accepts)()
    }
}

/// The `tasuki.sessions` section ([`crate::SESSIONS_SECTION`]) as a value: each connection's
/// session, by connection id. For a transformer that rewrites sessions from one release's
/// shape to the next (`type Old = Sessions<v1::Conn>`), since the section is not the sessions
/// themselves: postcard's sequence of `(connection id, the session's own postcard bytes)`, so
/// that one session that does not decode names its connection.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tasuki_guest::session::Sessions;
///
/// #[derive(Serialize, Deserialize)]
/// struct V1 {
///     user: String,
/// }
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct V2 {
///     user: String,
///     idle_ms: u64,
/// }
///
/// let old = Sessions(vec![(7, V1 { user: "ada".into() })]);
/// let bytes = postcard::to_allocvec(&old).unwrap();
/// let read: Sessions<V1> = postcard::from_bytes(&bytes).unwrap();
/// let new = read.convert(|_, s| Ok(V2 { user: s.user, idle_ms: 0 })).unwrap();
/// assert_eq!(new.0, vec![(7, V2 { user: "ada".into(), idle_ms: 0 })]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sessions<T>(pub Vec<(ConnId, T)>);

impl<T> Sessions<T> {
    /// Each session converted by `f` (given its connection id); the first error, prefixed with
    /// the connection it came from.
    pub fn convert<U>(
        self,
        mut f: impl FnMut(ConnId, T) -> Result<U, String>,
    ) -> Result<Sessions<U>, String> {
        self.0
            .into_iter()
            .map(|(id, session)| {
                f(id, session).map(|s| (id, s)).map_err(|e| format!("connection {id}: {e}"))
            })
            .collect::<Result<_, _>>()
            .map(Sessions)
    }
}

impl<T: Serialize> Serialize for Sessions<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for (id, session) in &self.0 {
            let bytes = postcard::to_allocvec(session)
                .map_err(|e| S::Error::custom(format!("the session of connection {id}: {e}")))?;
            seq.serialize_element(&(id, bytes))?;
        }
        seq.end()
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Sessions<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let records = Vec::<(ConnId, Vec<u8>)>::deserialize(deserializer)?;
        records
            .into_iter()
            .map(|(id, bytes)| {
                postcard::from_bytes(&bytes).map(|s| (id, s)).map_err(|e| {
                    D::Error::custom(format!("the session of connection {id} does not decode: {e}"))
                })
            })
            .collect::<Result<_, _>>()
            .map(Sessions)
    }
}

/// The sessions of the instance, kept in its [`Ctx`] so that the app reaches them from any
/// event; typed by the [`SessionType`] the app named.
pub(crate) struct Store {
    kind: SessionType,
    /// A `Map<T>` of the app's session type.
    sessions: Box<dyn Any>,
    /// Connections whose session is lent to a [`Ctx::with_session`] closure right now.
    lent: Vec<ConnId>,
    /// Connections the app made a session for in this event: dropped at its end unless the
    /// connection is open (the app asked for one of a connection that has gone).
    made: Vec<ConnId>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("kind", &self.kind)
            .field("sessions", &(self.kind.len)(&*self.sessions))
            .finish()
    }
}

impl Store {
    pub(crate) fn new(kind: SessionType) -> Self {
        Self { sessions: (kind.new_map)(), kind, lent: Vec::new(), made: Vec::new() }
    }

    pub(crate) fn kind(&self) -> SessionType {
        self.kind
    }

    pub(crate) fn is_empty(&self) -> bool {
        (self.kind.len)(&*self.sessions) == 0
    }

    /// The `tasuki.sessions` section's bytes.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, String> {
        (self.kind.encode)(&*self.sessions)
    }

    /// Replaces every session with those of a section written at `version`, keeping those of
    /// the connections in `live`. On error nothing changes.
    pub(crate) fn import(
        &mut self,
        version: u32,
        bytes: &[u8],
        live: &BTreeSet<ConnId>,
    ) -> Result<(), String> {
        let mut sessions = (self.kind.decode)(version, bytes)?;
        (self.kind.retain)(&mut *sessions, &|id| live.contains(&id));
        self.sessions = sessions;
        Ok(())
    }

    /// Drops `conn`'s session.
    pub(crate) fn remove(&mut self, conn: ConnId) {
        (self.kind.remove)(&mut *self.sessions, conn);
    }

    /// Drops the sessions made in this event for connections `open` says are not open.
    pub(crate) fn settle(&mut self, open: &dyn Fn(ConnId) -> bool) {
        for conn in std::mem::take(&mut self.made) {
            if !open(conn) {
                self.remove(conn);
            }
        }
    }

    fn unlent(&self, conn: ConnId, asked: &str) {
        if self.lent.contains(&conn) {
            panic!(
                "{asked}({conn}): the session is lent to a Ctx::with_session closure; use the \
                 closure's argument"
            );
        }
    }

    fn typed<T: Session>(&mut self, asked: &str) -> &mut Map<T> {
        if (self.kind.type_id)() != TypeId::of::<T>() {
            panic!(
                "{asked}::<{}>: this app keeps sessions of type {} (Server::session_type)",
                std::any::type_name::<T>(),
                self.kind.type_name
            );
        }
        map_mut::<T>(&mut *self.sessions)
    }
}

fn store_of<'a>(ctx: &'a mut Ctx, asked: &str) -> &'a mut Store {
    match ctx.sessions.as_mut() {
        Some(store) => store,
        None => panic!(
            "{asked}: this app keeps no sessions; name its session type in \
             Server::session_type (`Some(SessionType::of::<MySession>())`)"
        ),
    }
}

impl Ctx {
    /// `conn`'s session, made with `T::default()` if it has none yet (a new connection, or one
    /// that came across an upgrade from a release that kept no sessions). Panics, trapping the
    /// event, if `T` is not the type [`crate::Server::session_type`] names, or while the
    /// session is lent to a [`Ctx::with_session`] closure (use the closure's argument).
    ///
    /// A session asked for a connection that is not open (it closed, or never was) is dropped
    /// when the event ends.
    pub fn session<T: Session>(&mut self, conn: ConnId) -> &mut T {
        let store = store_of(self, "Ctx::session");
        store.unlent(conn, "Ctx::session");
        if !store.typed::<T>("Ctx::session").contains_key(&conn) {
            store.made.push(conn);
        }
        store.typed::<T>("Ctx::session").entry(conn).or_default()
    }

    /// Runs `f` with the context and `conn`'s session together (made as [`Ctx::session`]
    /// makes it), so that a handler can read and change the session while it queues output;
    /// returns what `f` returns. While `f` runs the session is out of the SDK's hands:
    /// [`Ctx::sessions`] does not list it, and [`Ctx::session`] for it panics. Panics as
    /// [`Ctx::session`] does.
    pub fn with_session<T: Session, R>(
        &mut self,
        conn: ConnId,
        f: impl FnOnce(&mut Ctx, &mut T) -> R,
    ) -> R {
        let store = store_of(self, "Ctx::with_session");
        store.unlent(conn, "Ctx::with_session");
        let mut session = match store.typed::<T>("Ctx::with_session").remove(&conn) {
            Some(session) => session,
            None => {
                store.made.push(conn);
                T::default()
            }
        };
        store.lent.push(conn);
        let result = f(self, &mut session);
        let store = store_of(self, "Ctx::with_session");
        store.lent.retain(|&c| c != conn);
        store.typed::<T>("Ctx::with_session").insert(conn, session);
        result
    }

    /// Every connection's session that exists, by connection id (for a sweep over all of them:
    /// an idle timeout, a per-user count). Panics as [`Ctx::session`] does.
    pub fn sessions<T: Session>(&mut self) -> impl Iterator<Item = (ConnId, &mut T)> {
        store_of(self, "Ctx::sessions")
            .typed::<T>("Ctx::sessions")
            .iter_mut()
            .map(|(&id, s)| (id, s))
    }
}

#[cfg(test)]
mod tests;
