//! Transformers: a plain Rust function from one version of a state section to the next, exported
//! as a component of the `tasuki:server/transformer` world with [`crate::export_transform!`].
//!
//! ```ignore
//! struct KvV1ToV2;
//! impl tasuki_guest::Transform for KvV1ToV2 {
//!     const NAME: &'static str = "kv-v1-to-v2";
//!     const SECTION: &'static str = "kv";
//!     const FROM: u32 = 1;
//!     const TO: u32 = 2;
//!     type Old = v1::State;
//!     type New = v2::State;
//!     fn transform(old: v1::State) -> Result<v2::State, String> { Ok(old.into()) }
//! }
//! tasuki_guest::export_transform!(KvV1ToV2);
//! ```
//!
//! The host hands a transformer only the section it names, at version `FROM`; every other
//! section passes around it untouched. A transformer has no clock, no randomness, no files: it is
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

use bindings::tasuki::server::types::{Section, SectionStep, Snapshot, TransformInfo};

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
    fn transform(old: Self::Old) -> Result<Self::New, String>;
}

#[doc(hidden)]
pub fn describe<T: Transform>() -> TransformInfo {
    TransformInfo {
        name: T::NAME.to_string(),
        steps: vec![SectionStep {
            name: T::SECTION.to_string(),
            from_version: T::FROM,
            to_version: T::TO,
        }],
    }
}

#[doc(hidden)]
pub fn run<T: Transform>(snapshot: Snapshot) -> Result<Snapshot, String> {
    let mut sections = Vec::with_capacity(snapshot.sections.len());
    for section in snapshot.sections {
        if section.name != T::SECTION || section.version != T::FROM {
            sections.push(section);
            continue;
        }
        let old: T::Old = postcard::from_bytes(&section.bytes).map_err(|e| {
            format!(
                "{}: section `{}` version {} does not decode: {e}",
                T::NAME,
                T::SECTION,
                T::FROM
            )
        })?;
        let new = T::transform(old).map_err(|e| format!("{}: {e}", T::NAME))?;
        let bytes = postcard::to_allocvec(&new).map_err(|e| {
            format!("{}: section `{}` version {} does not encode: {e}", T::NAME, T::SECTION, T::TO)
        })?;
        sections.push(Section { name: section.name, version: T::TO, bytes });
    }
    Ok(Snapshot { app: snapshot.app, app_version: snapshot.app_version, sections })
}

/// Exports a [`Transform`] as a `tasuki:server/transformer` component. Use it once, in the
/// transformer's `cdylib` crate: `tasuki_guest::export_transform!(KvV1ToV2);`.
#[macro_export]
macro_rules! export_transform {
    ($transform:ty) => {
        const _: () = {
            use $crate::transform::bindings::exports::tasuki::server::transform as __export;
            use $crate::transform::bindings::tasuki::server::types as __types;

            struct __TasukiTransform;

            impl __export::Guest for __TasukiTransform {
                fn describe() -> __types::TransformInfo {
                    $crate::transform::describe::<$transform>()
                }
                fn transform(
                    snapshot: __types::Snapshot,
                ) -> ::core::result::Result<__types::Snapshot, ::std::string::String> {
                    $crate::transform::run::<$transform>(snapshot)
                }
            }

            $crate::__export_transformer_impl!(
                __TasukiTransform with_types_in $crate::transform::bindings
            );
        };
    };
}
