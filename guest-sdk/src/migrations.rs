//! Older state versions a release accepts, each with the Rust function that converts it.

use serde::de::DeserializeOwned;

type Step<S> = Box<dyn Fn(&[u8]) -> Result<S, String>>;

/// The state versions a release can read besides its own, each with a conversion.
///
/// ```ignore
/// fn migrations() -> Migrations<Self> {
///     Migrations::none().from::<v1::State>(1, Kv::from_v1)
/// }
/// ```
pub struct Migrations<S> {
    steps: Vec<(u32, Step<S>)>,
}

impl<S: 'static> std::fmt::Debug for Migrations<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrations").field("from", &self.versions()).finish()
    }
}

impl<S: 'static> Migrations<S> {
    /// No older version is accepted.
    pub fn none() -> Self {
        Self { steps: Vec::new() }
    }

    /// Accept state version `version`, whose serialized type is `Old`, converting it with
    /// `convert`. `Old` must match the older release's state type field for field.
    pub fn from<Old: DeserializeOwned + 'static>(
        self,
        version: u32,
        convert: fn(Old) -> S,
    ) -> Self {
        self.step(version, move |old: Old| Ok(convert(old)))
    }

    /// Like [`Migrations::from`], for a conversion that can refuse: its error aborts the import,
    /// and so rolls the upgrade back with the old version still serving.
    pub fn from_fallible<Old: DeserializeOwned + 'static>(
        self,
        version: u32,
        convert: fn(Old) -> Result<S, String>,
    ) -> Self {
        self.step(version, convert)
    }

    fn step<Old: DeserializeOwned + 'static>(
        mut self,
        version: u32,
        convert: impl Fn(Old) -> Result<S, String> + 'static,
    ) -> Self {
        self.steps.push((
            version,
            Box::new(move |bytes| {
                let old: Old = postcard::from_bytes(bytes)
                    .map_err(|e| format!("state version {version} does not decode: {e}"))?;
                convert(old)
            }),
        ));
        self
    }

    /// The older versions accepted, in the order they were added.
    pub fn versions(&self) -> Vec<u32> {
        self.steps.iter().map(|(v, _)| *v).collect()
    }

    /// Converts `bytes` written at `version`, or `None` if that version is not accepted.
    pub fn run(&self, version: u32, bytes: &[u8]) -> Option<Result<S, String>> {
        self.steps.iter().find(|(v, _)| *v == version).map(|(_, step)| step(bytes))
    }
}
