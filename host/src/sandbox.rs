//! What a guest may reach beyond its own memory and its connections: host directories
//! (`--dir`) and environment variables (`--env`). Nothing by default, and never the network.

use std::path::PathBuf;

/// A host directory a guest may use, given with `--dir HOST[::GUEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
}

impl std::str::FromStr for Preopen {
    type Err = String;

    /// `HOST` (seen by the guest at the same path) or `HOST::GUEST`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, guest) = s.split_once("::").unwrap_or((s, s));
        if host.is_empty() || guest.is_empty() {
            return Err(format!("`{s}` is not HOST or HOST::GUEST"));
        }
        Ok(Self { host: host.into(), guest: guest.into() })
    }
}

/// What a guest may reach beyond its own memory. Empty by default: no files, no environment,
/// and never the network (guests speak to clients only through the host's `net`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    pub dirs: Vec<Preopen>,
    pub env: Vec<(String, String)>,
}
