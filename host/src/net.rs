//! `tasuki:server/net`: the guest queues bytes, closes, and asks to be told when a connection
//! can take more; the dispatcher applies them after the call returns. The guest never touches a
//! socket.

use crate::bindings::tasuki::server::net;
use crate::store::{Effect, InstanceState};
use tracing::warn;

impl net::Host for InstanceState {
    /// Queues `data`, unless the call has queued as much as one call may: the connection is
    /// then cut off at once (the bytes are dropped, not held until the call returns).
    fn send(&mut self, conn: u64, data: Vec<u8>) {
        if self.cut_off.contains(&conn) {
            return;
        }
        let total = self.call_output.saturating_add(data.len());
        if total > self.call_output_limit {
            warn!(
                conn,
                "closing connection {conn}: the app queued {total} bytes of output in one call, \
                 over the limit of {} bytes (32 x --output-buffer, at least 256 MiB)",
                self.call_output_limit
            );
            self.cut_off.push(conn);
            self.effects.push(Effect::CutOff(conn));
            return;
        }
        self.call_output = total;
        self.effects.push(Effect::Send(conn, data));
    }

    fn close(&mut self, conn: u64) {
        self.effects.push(Effect::Close(conn));
    }

    fn notify_writable(&mut self, conn: u64) {
        self.effects.push(Effect::NotifyWritable(conn));
    }
}
