//! Where a whole-state transfer's time goes: a host holding KEYS keys (no client load) is
//! upgraded once to warm it up, then again under `perf record -g`; every sample is put in one
//! part of the transfer by its frames, and the shares are written to a raw file beside the
//! upgrade's own export and import times.
//!
//! The host runs with `TASUKI_PERFMAP=1`, so the guest's functions have names: encode and
//! decode (serde, postcard), the map (insert, hashing, growing), the guest's allocator. A
//! kernel sample is charged to whoever touched the memory: the guest (fresh pages of its linear
//! memory) or the host's copy across the boundary (lifting the snapshot out of the old instance,
//! lowering it into the new one).

use crate::load::{self, LoadArgs};
use crate::raw::Raw;
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tasuki::control::Response;

#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// The `tasuki` binary.
    #[arg(long)]
    tasuki: PathBuf,
    /// The app, upgraded to itself.
    #[arg(long)]
    app: PathBuf,
    /// One more argument for `tasuki run`. Repeat.
    #[arg(long = "host-arg", allow_hyphen_values = true)]
    host_args: Vec<String>,
    /// What is upgraded, in words, for the report.
    #[arg(long)]
    label: String,
    #[arg(long)]
    keys: u64,
    /// A directory for the control socket, the perf data and the host's log.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    out: PathBuf,
}

/// The parts of a transfer a sample can belong to, in the order the report lists them.
pub const PARTS: [(&str, &str); 9] = [
    ("encode", "guest: encode (serde, postcard)"),
    ("decode", "guest: decode (serde, postcard)"),
    ("map", "guest: map insert, hashing, growth"),
    ("alloc", "guest: allocator (malloc, free)"),
    ("guest_other", "guest: other"),
    ("guest_faults", "guest: first touch of fresh linear memory (kernel)"),
    ("copy", "host: copy across the boundary (lift, lower, their page faults)"),
    ("host_other", "host: other"),
    ("drop", "host: dropping the old instance (after the commit)"),
];

/// Which part one sample (its frames, innermost first, as `perf script -F ip,sym,dso` prints
/// them) belongs to.
fn classify(frames: &[&str]) -> &'static str {
    let is_kernel = |f: &&str| f.contains("kernel.kallsyms");
    let is_guest = |f: &str| f.contains("[JIT]") || f.contains("perf-");
    let Some(first) = frames.first() else { return "host_other" };
    if frames.iter().any(|f| f.contains("drop_slow") || f.contains("munmap")) {
        return "drop";
    }
    let user = frames.iter().find(|f| !is_kernel(f)).copied().unwrap_or("");
    let is_copy = |f: &str| {
        f.contains("memmove")
            || f.contains("memcpy")
            || f.contains("linear_lift")
            || f.contains("linear_store")
            || f.contains("lower_list")
    };
    if is_kernel(first) {
        return if is_guest(user) {
            "guest_faults"
        } else if is_copy(user) {
            "copy"
        } else {
            "host_other"
        };
    }
    if !is_guest(first) {
        return if is_copy(first) { "copy" } else { "host_other" };
    }
    // `ADDRESS SYMBOL (DSO)`
    let sym = first.split_whitespace().nth(1).unwrap_or("").to_ascii_lowercase();
    let allocator = ["malloc", "free", "dlmalloc", "dlfree", "realloc", "calloc"];
    let allocator_shims = ["rust_alloc", "rdl_alloc", "rust_dealloc", "rdl_dealloc", "realloc"];
    if allocator.contains(&sym.as_str())
        || allocator_shims.iter().any(|s| sym.contains(s))
        || sym.contains("no_alloc_shim")
    {
        "alloc"
    } else if ["indexmap", "hashbrown", "hash", "insert", "memcmp"].iter().any(|s| sym.contains(s))
    {
        "map"
    } else if sym.contains("deserialize") || sym.contains("visit") || sym.contains("2de") {
        "decode"
    } else if sym.contains("serializ") || sym.contains("3ser") || sym.contains("postcard") {
        "encode"
    } else {
        "guest_other"
    }
}

struct Host(Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

pub fn run(args: &ProfileArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let control = args.dir.join("profile.sock");
    let data = args.dir.join("transfer.perf");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let app = std::fs::canonicalize(&args.app)
        .with_context(|| format!("{} not found", args.app.display()))?;
    let _ = std::fs::remove_file(&control);
    let host = Host(
        Command::new(&args.tasuki)
            .arg("run")
            .arg(&app)
            .args(["--listen", &addr])
            .arg("--control")
            .arg(&control)
            .args(&args.host_args)
            .env("TASUKI_LOG", "warn")
            .env("TASUKI_PERFMAP", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(args.dir.join("profile-host.log"))?)
            .spawn()
            .with_context(|| format!("starting {}", args.tasuki.display()))?,
    );
    crate::wait_ready(&addr, Duration::from_secs(30))?;
    eprintln!("  {}", load::run(&LoadArgs { addr, keys: args.keys, value_size: 16 })?);
    let upgrade = || match tasuki::host::request_upgrade(&control, &app, Default::default()) {
        Ok(Response::Upgraded(report)) => Ok(report),
        Ok(other) => bail!("the upgrade failed: {other:?}"),
        Err(e) => bail!("the upgrade failed: {e}"),
    };
    upgrade()?; // compiles nothing (the app is cached) but warms the host and the allocator
    std::thread::sleep(Duration::from_millis(300));

    let mut perf = Command::new("perf")
        .args(["record", "-g", "-F", "4000", "-p", &host.0.id().to_string(), "-o"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf record")?;
    std::thread::sleep(Duration::from_millis(500));
    let report = upgrade()?;
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill").args(["-INT", &perf.id().to_string()]).status();
    perf.wait()?;
    drop(host);

    let script = Command::new("perf")
        .args(["script", "-F", "ip,sym,dso", "-i"])
        .arg(&data)
        .stderr(Stdio::null())
        .output()
        .context("running perf script")?;
    let text = String::from_utf8_lossy(&script.stdout);
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut samples = 0;
    for sample in text.split("\n\n") {
        let frames: Vec<&str> = sample.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        if frames.is_empty() {
            continue;
        }
        samples += 1;
        *counts.entry(classify(&frames)).or_default() += 1;
    }
    if samples == 0 {
        bail!("perf recorded no samples of the host");
    }
    let mut raw = Raw::default();
    raw.set("label", &args.label);
    raw.set("keys", args.keys);
    raw.set("samples", samples);
    raw.set("state_bytes", report.state_bytes);
    let us = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e6);
    raw.set("pause_us", us(report.pause));
    raw.set("export_us", us(report.export));
    raw.set("import_us", us(report.import));
    for (part, _) in PARTS {
        raw.set(&format!("samples_{part}"), counts.get(part).copied().unwrap_or(0));
    }
    crate::write_raw(&args.out, &raw)?;
    eprintln!("  {samples} samples; pause {}", tasuki_ms(report.pause));
    Ok(())
}

fn tasuki_ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::classify;

    #[test]
    fn samples_are_charged_to_the_part_that_ran() {
        let guest = "7f00 _ZN9hashbrown3map28HashMap6insert17h6d8 ([JIT] tid 1)";
        assert_eq!(classify(&[guest]), "map");
        let fault = "ffff exc_page_fault ([kernel.kallsyms])";
        assert_eq!(classify(&[fault, guest]), "guest_faults");
        let copy = "55aa __memmove_avx512_unaligned_erms (/usr/lib/libc.so.6)";
        assert_eq!(classify(&[fault, copy]), "copy");
        assert_eq!(classify(&[copy]), "copy");
        let malloc = "7f01 malloc ([JIT] tid 1)";
        assert_eq!(classify(&[malloc]), "alloc");
        let entry = "7f04 _ZN5kv_v22db1_73_$LT$impl$u20$serde_core..ser..Serialize$u20$for$u20$kv_v2..db..Entry$GT$9serialize17h7 ([JIT] tid 1)";
        assert_eq!(classify(&[entry]), "encode");
        let decode =
            "7f02 _ZN182_$LT$serde_core..de..impls..VecVisitor$GT$9visit_seq17h1 ([JIT] tid 1)";
        assert_eq!(classify(&[decode]), "decode");
        let encode = "7f03 _ZN10serde_core3ser10Serializer11collect_seq17h6 ([JIT] tid 1)";
        assert_eq!(classify(&[encode]), "encode");
    }
}
