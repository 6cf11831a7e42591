"""redis-py's pipeline as its users write it: `SET v` with a 1 KiB value, then 400,000 `GET v`
sent in one go before a single reply is read (redis-py writes the whole pipeline, then reads).

Run by tests/e2e/real_clients.rs: `python redis_py_pipeline.py PORT`. Prints `DONE <replies>`
after checking that every reply is the value; any error is a traceback and exit 1. A host that
stops reading makes the write block: redis-py's retries stretch its 60 s socket timeout to many
minutes, so the whole run is bounded at 120 s (the pipeline takes seconds).
"""

import signal
import sys

import redis

PORT = int(sys.argv[1])
signal.alarm(120)
GETS = 400_000
VALUE = b"v" * 1024

r = redis.Redis(port=PORT, socket_timeout=60)
r.set("v", VALUE)
pipe = r.pipeline(transaction=False)
for _ in range(GETS):
    pipe.get("v")
replies = pipe.execute()
assert len(replies) == GETS, f"{len(replies)} replies to {GETS} GETs"
wrong = sum(1 for reply in replies if reply != VALUE)
assert wrong == 0, f"{wrong} of {GETS} replies are not the value"
print(f"DONE {len(replies)}", flush=True)
