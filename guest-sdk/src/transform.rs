//! Transformers: a plain Rust function from one version of a state section to the next, exported
//! as a component of the `tasuki:server/transformer` world with [`crate::export_transform!`].
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! /// kv 1's state, frozen: values without deadlines.
//! #[derive(Deserialize)]
//! pub struct V1 {
//!     entries: tasuki_guest::Map<Vec<u8>, Vec<u8>>,
//! }
//!
//! /// kv 2's state: each value with an optional deadline (Unix ms).
//! #[derive(Serialize)]
//! pub struct V2 {
//!     entries: tasuki_guest::Map<Vec<u8>, (Vec<u8>, Option<u64>)>,
//! }
//!
//! struct KvV1ToV2;
//!
//! impl tasuki_guest::Transform for KvV1ToV2 {
//!     const NAME: &'static str = "kv-v1-to-v2";
//!     const SECTION: &'static str = "kv";
//!     const FROM: u32 = 1;
//!     const TO: u32 = 2;
//!     type Old = V1;
//!     type New = V2;
//!     fn transform(old: V1) -> Result<V2, String> {
//!         // `convert`, not a loop: in a pre-copied upgrade it runs on each chunk as it crosses.
//!         Ok(V2 { entries: old.entries.convert(|_, value| Ok((value, None)))? })
//!     }
//! }
//!
//! tasuki_guest::export_transform!(KvV1ToV2);
//! # use tasuki_guest::Transform;
//! # let mut entries = tasuki_guest::Map::new();
//! # entries.insert(b"k".to_vec(), b"v".to_vec());
//! # let v2 = KvV1ToV2::transform(V1 { entries }).unwrap();
//! # assert_eq!(v2.entries.get(&b"k".to_vec()), Some(&(b"v".to_vec(), None)));
//! ```
//!
//! The host hands a transformer only the section it names, at version `FROM`; every other
//! section passes around it untouched. One component may rewrite several sections (a release
//! that changed its app state and its sessions together): give each its own [`Transform`] and
//! list them all, `export_transform!(StateV1ToV2, SessionsV2ToV3)`; the component is named
//! after the first, and each rewrites its own section. The sessions of [`crate::Ctx::session`]
//! are the section [`crate::SESSIONS_SECTION`], read and written as
//! [`crate::session::Sessions`] of the old and new session types. A transformer has no clock, no randomness, no files: it is
//! a pure function, run under a memory cap and a deadline.

use serde::Serialize;
use serde::de::DeserializeOwned;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "tasuki:server/transformer",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "tasuki_guest::transform::bindings",
        runtime_path: "tasuki_guest::runtime::wit_bindgen_rt",
    });
}

use crate::precopy::{self, Mode, PRECOPY_SECTION};
use bindings::tasuki::server::types::{Chunk, Section, SectionStep, Snapshot, TransformInfo};

/// A conversion of one state section from one version to the next.
pub trait Transform: 'static {
    /// The transformer's name, shown in upgrade reports and errors (`kv-v1-to-v2`).
    const NAME: &'static str;
    /// The section it rewrites (an app's state section is named after the app).
    const SECTION: &'static str;
    /// The version it reads.
    const FROM: u32;
    /// The version it writes.
    const TO: u32;
    /// The section's type at `FROM`: a frozen copy of the old release's type.
    type Old: DeserializeOwned;
    /// The section's type at `TO`.
    type New: Serialize;

    /// The conversion. An `Err` rolls the upgrade back with this text.
    ///
    /// For an upgrade to be pre-copied through this transformer, convert each
    /// [`crate::Map`] of `Old` with [`crate::Map::convert`]: the conversion then runs on each
    /// entry as its chunk crosses, before the pause, and this function itself sees the maps as
    /// references. Reading a reference's entries panics (the upgrade rolls back).
    fn transform(old: Self::Old) -> Result<Self::New, String>;
}

/// What one [`Transform`] of a component does, for its `describe`.
#[doc(hidden)]
pub fn step<T: Transform>() -> SectionStep {
    SectionStep { name: T::SECTION.to_string(), from_version: T::FROM, to_version: T::TO }
}

/// The `describe` export of a component of one [`Transform`].
#[doc(hidden)]
pub fn describe<T: Transform>() -> TransformInfo {
    TransformInfo { name: T::NAME.to_string(), steps: vec![step::<T>()] }
}

/// The `transform` export of a component of one [`Transform`].
#[doc(hidden)]
pub fn run<T: Transform>(snapshot: Snapshot) -> Result<Snapshot, String> {
    run_all(snapshot, &[sections::<T>])
}

/// The `transform-chunks` export of a component of one [`Transform`].
#[doc(hidden)]
pub fn run_chunks<T: Transform>(chunks: Vec<Chunk>) -> Result<Vec<Chunk>, String> {
    self::chunks::<T>(chunks)
}

/// Rewrites the sections of a whole snapshot one [`Transform`] does.
#[doc(hidden)]
pub type Sections = fn(Vec<Section>, bool) -> Result<Vec<Section>, String>;

/// Rewrites the pre-copied chunks one [`Transform`] does.
#[doc(hidden)]
pub type Chunks = fn(Vec<Chunk>) -> Result<Vec<Chunk>, String>;

/// Decodes `bytes` as `T::Old`, transforms it, and encodes the result.
fn rewrite<T: Transform>(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let old: T::Old = postcard::from_bytes(bytes).map_err(|e| {
        format!("{}: section `{}` version {} does not decode: {e}", T::NAME, T::SECTION, T::FROM)
    })?;
    let new = T::transform(old).map_err(|e| format!("{}: {e}", T::NAME))?;
    postcard::to_allocvec(&new).map_err(|e| {
        format!("{}: section `{}` version {} does not encode: {e}", T::NAME, T::SECTION, T::TO)
    })
}

/// Rewrites `T::SECTION` at `T::FROM` among `sections`; `precopied` at the end of a pre-copy,
/// when the maps are references to the chunks this instance rewrote.
#[doc(hidden)]
pub fn sections<T: Transform>(
    sections: Vec<Section>,
    precopied: bool,
) -> Result<Vec<Section>, String> {
    let mut out = Vec::with_capacity(sections.len());
    for section in sections {
        if section.name != T::SECTION || section.version != T::FROM {
            out.push(section);
            continue;
        }
        let bytes = if precopied {
            precopy::with_mode(Mode::Reference, || rewrite::<T>(&section.bytes))?
        } else {
            rewrite::<T>(&section.bytes)?
        };
        out.push(Section { name: section.name, version: T::TO, bytes });
    }
    Ok(out)
}

/// The `transform` export: `snapshot` through each of a component's transforms in turn.
#[doc(hidden)]
pub fn run_all(snapshot: Snapshot, steps: &[Sections]) -> Result<Snapshot, String> {
    let precopied = snapshot.sections.iter().any(|s| s.name == PRECOPY_SECTION);
    let mut sections = Ok(snapshot.sections);
    for step in steps {
        sections = sections.and_then(|s| step(s, precopied));
    }
    if precopied {
        precopy::reset_reader();
    }
    Ok(Snapshot { app: snapshot.app, app_version: snapshot.app_version, sections: sections? })
}

/// The `transform-chunks` export: `chunks` through each of a component's transforms in turn.
#[doc(hidden)]
pub fn run_chunks_all(chunks: Vec<Chunk>, steps: &[Chunks]) -> Result<Vec<Chunk>, String> {
    steps.iter().try_fold(chunks, |chunks, step| step(chunks))
}

/// Rewrites the chunks of `T::SECTION` at `T::FROM` among `chunks`.
#[doc(hidden)]
pub fn chunks<T: Transform>(chunks: Vec<Chunk>) -> Result<Vec<Chunk>, String> {
    let mut out = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        if chunk.section != T::SECTION || chunk.version != T::FROM {
            out.push(chunk);
            continue;
        }
        let Some((&kind, body)) = chunk.bytes.split_first() else { continue };
        let bytes = match kind {
            precopy::SKELETON => {
                let (skeleton, streams) =
                    precopy::register_skeleton(Mode::Rewrite, body, |skeleton| {
                        let old: T::Old = postcard::from_bytes(skeleton).map_err(|e| {
                            format!("a skeleton of `{}` does not decode: {e}", T::SECTION)
                        })?;
                        let new = T::transform(old)?;
                        precopy::collect_references();
                        let bytes =
                            precopy::with_mode(Mode::Reference, || postcard::to_allocvec(&new))
                                .map_err(|e| format!("a skeleton does not encode: {e}"))?;
                        Ok((bytes, precopy::references()))
                    })
                    .map_err(|e| format!("{}: {e}", T::NAME))?;
                precopy::skeleton_chunk(&streams, &skeleton)
            }
            precopy::RECORDS => {
                precopy::rewrite_records(body).map_err(|e| format!("{}: {e}", T::NAME))?
            }
            other => {
                return Err(format!("{}: a pre-copied chunk of unknown kind {other}", T::NAME));
            }
        };
        out.push(Chunk { section: chunk.section, version: T::TO, bytes });
    }
    Ok(out)
}

/// Exports a [`Transform`], or several that rewrite different sections, as one
/// `tasuki:server/transformer` component named after the first. Use it once, in the
/// transformer's `cdylib` crate: `tasuki_guest::export_transform!(KvV1ToV2);`.
#[macro_export]
macro_rules! export_transform {
    ($transform:ty $(, $more:ty)* $(,)?) => {
        const _: () = {
            use $crate::transform::bindings::exports::tasuki::server::transform as __export;
            use $crate::transform::bindings::tasuki::server::types as __types;

            struct __TasukiTransform;

            impl __export::Guest for __TasukiTransform {
                fn describe() -> __types::TransformInfo {
                    __types::TransformInfo {
                        name: <$transform as $crate::Transform>::NAME.to_string(),
                        steps: ::std::vec![
                            $crate::transform::step::<$transform>()
                            $(, $crate::transform::step::<$more>())*
                        ],
                    }
                }
                fn transform(
                    snapshot: __types::Snapshot,
                ) -> ::core::result::Result<__types::Snapshot, ::std::string::String> {
                    $crate::transform::run_all(
                        snapshot,
                        &[
                            $crate::transform::sections::<$transform> as $crate::transform::Sections
                            $(, $crate::transform::sections::<$more>)*
                        ],
                    )
                }
            }

            impl $crate::transform::bindings::exports::tasuki::server::transform_chunks::Guest
                for __TasukiTransform
            {
                fn transform_chunks(
                    chunks: ::std::vec::Vec<__types::Chunk>,
                ) -> ::core::result::Result<::std::vec::Vec<__types::Chunk>, ::std::string::String>
                {
                    $crate::transform::run_chunks_all(
                        chunks,
                        &[
                            $crate::transform::chunks::<$transform> as $crate::transform::Chunks
                            $(, $crate::transform::chunks::<$more>)*
                        ],
                    )
                }
            }

            $crate::__export_transformer_impl!(
                __TasukiTransform with_types_in $crate::transform::bindings
            );
        };
    };
}
