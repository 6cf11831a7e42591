//! End-to-end: real components (the released ones frozen in releases/, the rest built from
//! guests/), real loopback sockets, a real Redis client, real upgrades. One binary; one module
//! per story.

mod backpressure;
mod canary;
mod catchup;
mod clients;
mod control;
mod converge;
mod docs;
mod fairness;
mod faults;
mod hot_swap;
mod iteration;
mod kv5;
mod large_requests;
mod limits;
mod memory;
mod precopy;
mod real_clients;
mod redis_server;
mod releases;
mod rollback;
mod sim;
mod snapshots;
mod transforms;
mod upgrade_faults;
