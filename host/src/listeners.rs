//! `tasuki:server/listeners`: listening sockets an app opens while it runs (FTP's passive data
//! ports, RFC 959 `PASV` and RFC 2428 `EPSV`), and what the host and a rebuilt instance believe
//! about them.
//!
//! The guest only asks; the dispatcher opens (or refuses) after the call returns and answers
//! with the `listening.on-listening` event, which the journal keeps. The sockets are the host's,
//! like connections: an upgrade, a rollback or a recovery leaves them open, and the new or
//! rebuilt instance accepts on them. Which ports an app may take, and how many, is the
//! operator's ([`Policy`]: `--data-ports`, `--max-listeners`).

use crate::bindings::tasuki::server::listeners;
use crate::limits::Limits;
use crate::store::{Effect, InstanceState};
use std::collections::BTreeSet;
use std::ops::RangeInclusive;

pub use crate::bindings::tasuki::server::types::ListenError;

impl listeners::Host for InstanceState {
    fn listen(&mut self, id: u64, port: u16) {
        self.effects.push(Effect::Listen(id, port));
    }

    fn unlisten(&mut self, id: u64) {
        self.effects.push(Effect::Unlisten(id));
    }
}

/// Where a run-time listener's port comes from when the app asks for port 0 in the
/// simulator, which has no system to pick one: the first of IANA's dynamic ports (RFC 6335).
pub const VIRTUAL_FIRST_PORT: u16 = 49152;

/// The operator's bounds on run-time listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `--max-listeners`.
    pub max: usize,
    /// `--data-ports`; `None`: port 0 only.
    pub ports: Option<RangeInclusive<u16>>,
}

impl Policy {
    /// The bounds `tasuki run` was given (`--max-listeners`, `--data-ports`).
    pub fn from_limits(limits: &Limits) -> Self {
        Self { max: limits.max_listeners, ports: limits.data_ports.clone() }
    }

    /// Refuses a request for listener `id` on `port` when `open` names every listener open
    /// now: past the limit, an id in use, or a port the operator does not allow.
    pub fn check(&self, id: u64, port: u16, open: &BTreeSet<u64>) -> Result<(), ListenError> {
        if open.contains(&id) {
            return Err(ListenError::IdInUse);
        }
        if open.len() >= self.max {
            return Err(ListenError::Limit(u32::try_from(self.max).unwrap_or(u32::MAX)));
        }
        match &self.ports {
            _ if port == 0 => Ok(()),
            Some(range) if range.contains(&port) => Ok(()),
            Some(range) => Err(ListenError::NotAllowed(format!(
                "port {port} is outside --data-ports {}-{}; ask for one of those, or 0 for any",
                range.start(),
                range.end()
            ))),
            None => Err(ListenError::NotAllowed(format!(
                "port {port}: without --data-ports the host opens only port 0 (a free port the \
                 system picks)"
            ))),
        }
    }
}

/// A listener error in one sentence, for the host's log.
pub fn describe(error: &ListenError) -> String {
    match error {
        ListenError::Limit(max) => {
            format!("{max} listeners are open, the most the host allows (--max-listeners)")
        }
        ListenError::NotAllowed(why) => format!("not allowed: {why}"),
        ListenError::InUse(why) => format!("in use: {why}"),
        ListenError::IdInUse => "the id names a listener open already".into(),
        ListenError::Failed(why) => format!("failed: {why}"),
        ListenError::Lost(why) => format!("lost: {why}"),
    }
}

/// What an instance believes about its listeners, from what it asked and was answered: the
/// recovery state keeps it with the checkpoint and follows the journal, so that after a rebuild
/// the host closes the listeners the rebuilt instance does not know of (a request left out of
/// the replay with a culprit's input, or one whose answer trapped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ListenerBook {
    /// Asked for, not answered yet.
    asked: BTreeSet<u64>,
    /// Answered as open, not closed since.
    open: BTreeSet<u64>,
}

impl ListenerBook {
    /// Takes in a request the instance made (other effects are not the book's).
    pub(crate) fn apply(&mut self, effect: &Effect) {
        match *effect {
            Effect::Listen(id, _) if !self.open.contains(&id) => {
                self.asked.insert(id);
            }
            Effect::Unlisten(id) => {
                self.open.remove(&id);
            }
            _ => {}
        }
    }

    /// The instance was told the answer for `id`.
    pub(crate) fn answered(&mut self, id: u64, result: &Result<String, ListenError>) {
        self.asked.remove(&id);
        match result {
            Ok(_) => {
                self.open.insert(id);
            }
            // An id in use leaves the listener open under it.
            Err(ListenError::IdInUse) => {}
            Err(_) => {
                self.open.remove(&id);
            }
        }
    }

    /// The instance was told every listener is gone.
    pub(crate) fn lost(&mut self) {
        self.asked.clear();
        self.open.clear();
    }

    /// True if the instance believes `id` open.
    pub(crate) fn is_open(&self, id: u64) -> bool {
        self.open.contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_refuses_with_a_reason() {
        let open: BTreeSet<u64> = [1, 2].into();
        let policy = Policy { max: 2, ports: Some(50000..=50010) };
        assert!(matches!(policy.check(3, 0, &open), Err(ListenError::Limit(2))));
        assert!(matches!(policy.check(1, 0, &open), Err(ListenError::IdInUse)));
        let policy = Policy { max: 3, ports: Some(50000..=50010) };
        assert!(policy.check(3, 0, &open).is_ok());
        assert!(policy.check(3, 50005, &open).is_ok());
        match policy.check(3, 22, &open) {
            Err(ListenError::NotAllowed(why)) => assert!(why.contains("50000-50010"), "{why}"),
            other => panic!("{other:?}"),
        }
        let any = Policy { max: 3, ports: None };
        assert!(any.check(3, 0, &open).is_ok());
        assert!(matches!(any.check(3, 8080, &open), Err(ListenError::NotAllowed(_))));
    }

    #[test]
    fn the_book_follows_requests_and_answers() {
        let mut book = ListenerBook::default();
        book.apply(&Effect::Listen(1, 0));
        book.apply(&Effect::Listen(2, 0));
        assert!(!book.is_open(1));
        book.answered(1, &Ok("127.0.0.1:5".into()));
        book.answered(2, &Err(ListenError::InUse("x".into())));
        assert!(book.is_open(1) && !book.is_open(2));
        book.apply(&Effect::Unlisten(1));
        assert!(!book.is_open(1));
        book.answered(3, &Ok("127.0.0.1:6".into()));
        book.lost();
        assert!(!book.is_open(3));
    }
}
