// ioredis (npm) with its defaults against the kv server, through a hot swap the test makes in
// the middle of its work. Run by tests/e2e/real_clients.rs: `node ioredis_through_upgrade.js
// PORT` with NODE_PATH pointing at the installed modules. Prints READY in the middle of its
// work, waits for GO on stdin (sent after the swap), and prints DONE <acknowledged
// transactions> after checking nothing was lost; any error exits 1.
const Redis = require("ioredis");
const readline = require("readline");

const ROUNDS = 200;

async function main() {
  const port = Number(process.argv[2]);
  // No reconnection: a dropped connection must fail the test, not be papered over.
  const r = new Redis({ port, host: "127.0.0.1", lazyConnect: true, retryStrategy: () => null });
  await r.connect();
  const id = await r.client("ID");
  let done = 0;
  const round = async () => {
    // multi() pipelines MULTI ... EXEC, as ioredis users write transactions.
    const results = await r.multi().incr("node:n").rpush("node:log", done).hset("node:h", `f${done}`, done).exec();
    for (const [error] of results) if (error) throw error;
    done += 1;
    if (results[0][1] !== done) throw new Error(`INCR answered ${results[0][1]}, expected ${done}`);
  };
  while (done < ROUNDS) await round();
  const lines = readline.createInterface({ input: process.stdin });
  const go = new Promise((resolve) => lines.once("line", resolve));
  console.log("READY");
  // Keep working while the test swaps the server, until it says GO.
  let said = false;
  go.then(() => { said = true; });
  while (!said) await round();
  for (let i = 0; i < ROUNDS; i++) await round();
  lines.close();
  if ((await r.client("ID")) !== id) throw new Error("a new connection was opened");
  if (Number(await r.get("node:n")) !== done) throw new Error("an acknowledged INCR is missing");
  if ((await r.llen("node:log")) !== done) throw new Error("an acknowledged RPUSH is missing");
  r.disconnect();
  console.log(`DONE ${done}`);
}

main().catch((error) => { console.error(error); process.exit(1); });
