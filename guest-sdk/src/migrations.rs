//! Older state versions a release accepts, each with the Rust function that converts it.

use serde::de::DeserializeOwned;

type Step<S> = Box<dyn Fn(&[u8]) -> Result<S, String>>;

/// The state versions a release can read besides its own, each with a conversion.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tasuki_guest::{ConnId, Ctx, Migrations, Server};
///
/// /// Release 1's state, frozen as it shipped: postcard needs the old type field for field.
/// mod v1 {
///     #[derive(Default, serde::Serialize, serde::Deserialize)]
///     pub struct State {
///         pub hits: u32,
///     }
/// }
///
/// /// Release 2 counts in 64 bits and remembers the last client.
/// #[derive(Default, Serialize, Deserialize)]
/// struct Counter {
///     hits: u64,
///     last: Option<ConnId>,
/// }
///
/// impl Server for Counter {
///     const NAME: &'static str = "counter";
///     const STATE_VERSION: u32 = 2;
///     fn on_data(&mut self, _: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
///         (self.hits, self.last) = (self.hits + 1, Some(conn));
///         input.len()
///     }
///     fn migrations() -> Migrations<Self> {
///         Migrations::none()
///             .from::<v1::State>(1, |old| Counter { hits: old.hits.into(), last: None })
///     }
/// }
///
/// // Release 1's exported state reads as release 2's.
/// # impl Server for v1::State {
/// #     const NAME: &'static str = "counter";
/// #     const STATE_VERSION: u32 = 1;
/// #     fn on_data(&mut self, _: &mut Ctx, _: ConnId, input: &[u8]) -> usize {
/// #         self.hits += 1;
/// #         input.len()
/// #     }
/// # }
/// let mut host = tasuki_guest::testing::TestHost::<v1::State>::new();
/// let a = host.connect();
/// host.send(a, "hit");
/// let host = host.upgrade::<Counter>().expect("release 2 reads version 1");
/// assert_eq!((host.server().hits, host.server().last), (1, None));
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
