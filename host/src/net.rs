//! `tasuki:server/net`: the guest queues bytes and closes; the dispatcher applies them after the
//! call returns. The guest never touches a socket.

use crate::bindings::tasuki::server::net;
use crate::store::{Effect, InstanceState};

impl net::Host for InstanceState {
    fn send(&mut self, conn: u64, data: Vec<u8>) {
        self.effects.push(Effect::Send(conn, data));
    }

    fn close(&mut self, conn: u64) {
        self.effects.push(Effect::Close(conn));
    }
}
