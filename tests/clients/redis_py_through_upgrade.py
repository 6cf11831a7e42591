"""redis-py with its defaults (RESP3, HELLO, CLIENT SETINFO, MULTI/EXEC pipelines) against the
kv server, sync and asyncio at once, through a hot swap the test makes in the middle.

Run by tests/e2e/real_clients.rs: `python redis_py_through_upgrade.py PORT`. It prints `READY`
once both clients have done work, and the test upgrades the server and writes `GO` on stdin;
each client keeps working throughout, on the connection it opened first. It exits 0 after
checking that no acknowledged write was lost and that every connection still speaks RESP3,
printing `DONE <acknowledged transactions>`; any error is a traceback and exit 1.
"""

import asyncio
import sys
import threading

import redis
import redis.asyncio

PORT = int(sys.argv[1])
# Transactions each client runs before READY and after GO: enough to be in the middle of
# work when the upgrade comes.
ROUNDS = 200

ready = [threading.Event(), threading.Event()]
go = threading.Event()
errors = []
acknowledged = {}


def parse_client_info(info):
    """CLIENT INFO's fields, whether redis-py parsed the line already or not."""
    if isinstance(info, dict):
        return {key: str(value) for key, value in info.items()}
    if isinstance(info, bytes):
        info = info.decode()
    return dict(field.split("=", 1) for field in info.split())


def client_info(r):
    return parse_client_info(r.execute_command("CLIENT INFO"))


def sync_worker():
    # Defaults: protocol 3 in redis-py 8, so the connection opens with HELLO 3.
    r = redis.Redis(port=PORT, single_connection_client=True)
    before = client_info(r)
    assert before["resp"] == "3", before
    assert before["lib-name"].startswith("redis-py"), before
    done = 0
    while True:
        # pipeline() wraps the commands in MULTI/EXEC by default.
        with r.pipeline() as p:
            p.incr("sync:n")
            p.rpush("sync:log", done)
            p.hset("sync:h", f"f{done}", done)
            n, length, _ = p.execute()
        done += 1
        assert n == done and length == done, (n, length, done)
        if done == ROUNDS:
            ready[0].set()
            go.wait()
        if go.is_set() and done >= 2 * ROUNDS:
            break
    # Optimistic locking: WATCH, read, MULTI, write, EXEC.
    def increment(pipe):
        value = int(pipe.get("sync:n"))
        pipe.multi()
        pipe.set("sync:n", value + 1)
    r.transaction(increment, "sync:n")
    done += 1
    after = client_info(r)
    assert after["id"] == before["id"], "the same connection throughout"
    assert after["resp"] == "3", after
    assert r.hgetall("sync:h")[b"f0"] == b"0"
    assert int(r.get("sync:n")) == done
    assert r.llen("sync:log") == done - 1
    acknowledged["sync"] = done
    r.close()


async def async_work():
    r = redis.asyncio.Redis(port=PORT, single_connection_client=True)
    before = parse_client_info(await r.execute_command("CLIENT INFO"))
    assert before["resp"] == "3", before
    done = 0
    while True:
        async with r.pipeline(transaction=True) as p:
            p.incr("async:n")
            p.lpush("async:l", done)
            n, length = await p.execute()
        done += 1
        assert n == done and length == done, (n, length, done)
        if done == ROUNDS:
            ready[1].set()
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
        if go.is_set() and done >= 2 * ROUNDS:
            break
    after = parse_client_info(await r.execute_command("CLIENT INFO"))
    assert after["id"] == before["id"], "the same connection throughout"
    assert after["resp"] == "3", after
    assert int(await r.get("async:n")) == done
    acknowledged["async"] = done
    await r.aclose()


def async_worker():
    asyncio.run(async_work())


def guarded(work):
    def run():
        try:
            work()
        except BaseException as error:  # reported by the main thread
            errors.append(repr(error))
            for event in ready:
                event.set()
    return run


threads = [threading.Thread(target=guarded(w)) for w in (sync_worker, async_worker)]
for thread in threads:
    thread.start()
for event in ready:
    event.wait()
if errors:
    print("ERROR", errors, flush=True)
    go.set()
    sys.exit(1)
print("READY", flush=True)
line = sys.stdin.readline()
assert line.strip() == "GO", line
go.set()
for thread in threads:
    thread.join()
if errors:
    print("ERROR", errors, flush=True)
    sys.exit(1)
print("DONE", acknowledged["sync"] + acknowledged["async"], flush=True)
