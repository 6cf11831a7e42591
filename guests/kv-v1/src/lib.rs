use tasuki_guest::{ConnId, Ctx, Server};
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Kv { n: u64 }
impl Server for Kv {
    const NAME: &'static str = "kv";
    const STATE_VERSION: u32 = 1;
    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        ctx.send(conn, input);
        input.len()
    }
}
tasuki_guest::export!(Kv);
