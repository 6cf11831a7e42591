"""A keyspace written, or checked, through redis-py with its defaults (RESP3, pipelines).

Run by tests/e2e/kv5.rs: `python redis_py_keyspace.py PORT write N` writes N string keys and a
list, a hash, a set and a sorted set; `python redis_py_keyspace.py PORT check N` reads every one
back — value, deadline, members — and that there is nothing else. Keys and values have lengths
on both sides of the 22 bytes kv 5 keeps in place (0 to 69 bytes). Prints `DONE <keys>`; any
difference is an assertion naming the key, and exit 1.
"""

import signal
import sys

import redis

PORT = int(sys.argv[1])
MODE = sys.argv[2]
N = int(sys.argv[3])
signal.alarm(120)

# A deadline far in the future (2100-01-01) for every fifth key: nothing expires during a run.
FAR = 4_102_444_800_000
BATCH = 1000


def key(i):
    return f"key:{i:0{1 + i % 30}d}"


def value(i):
    return (f"{i}:" * 40)[: i % 70].encode()


def deadline(i):
    return FAR + i if i % 5 == 0 else -1


MEMBERS = [f"m{i}" * (1 + i % 12) for i in range(100)]

r = redis.Redis(port=PORT, socket_timeout=60)
if MODE == "write":
    pipe = r.pipeline(transaction=False)
    for i in range(N):
        if deadline(i) > 0:
            pipe.set(key(i), value(i), pxat=deadline(i))
        else:
            pipe.set(key(i), value(i))
        if i % BATCH == BATCH - 1:
            pipe.execute()
    pipe.rpush("list", *[value(i) for i in range(100)])
    pipe.hset("hash", mapping={m: value(i) for i, m in enumerate(MEMBERS)})
    pipe.sadd("set", *MEMBERS)
    pipe.zadd("zset", {m: i / 4 for i, m in enumerate(MEMBERS)})
    pipe.pexpireat("zset", FAR)
    pipe.execute()
elif MODE == "check":
    assert r.dbsize() == N + 4, f"{r.dbsize()} keys, written {N + 4}"
    for start in range(0, N, BATCH):
        ids = range(start, min(start + BATCH, N))
        pipe = r.pipeline(transaction=False)
        for i in ids:
            pipe.get(key(i))
            pipe.pexpiretime(key(i))
        got = pipe.execute()
        for n, i in enumerate(ids):
            assert got[2 * n] == value(i), f"{key(i)}: {got[2 * n]!r}, written {value(i)!r}"
            assert got[2 * n + 1] == deadline(i), f"{key(i)}: deadline {got[2 * n + 1]}"
    assert r.lrange("list", 0, -1) == [value(i) for i in range(100)], "list"
    assert r.hgetall("hash") == {m.encode(): value(i) for i, m in enumerate(MEMBERS)}, "hash"
    assert r.smembers("set") == {m.encode() for m in MEMBERS}, "set"
    zset = [tuple(pair) for pair in r.zrange("zset", 0, -1, withscores=True)]
    assert zset == [(m.encode(), i / 4) for i, m in enumerate(MEMBERS)], "zset"
    assert r.pexpiretime("zset") == FAR, "zset's deadline"
else:
    sys.exit(f"unknown mode {MODE}")
print(f"DONE {N}", flush=True)
