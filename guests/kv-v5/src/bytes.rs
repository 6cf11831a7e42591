//! [`Bytes`]: a byte string that keeps up to [`INLINE`] bytes in place, and a longer one on the
//! heap. The keyspace's keys and string values are `Bytes`.
//!
//! Why: most keys and many values are short (`key:000000000001` is 16 bytes), and a `Vec<u8>`
//! spends its 12 bytes (on `wasm32`) on a pointer to an allocation of its own, which costs the
//! allocator's header and rounding besides the bytes. A `Bytes` is 24 bytes, the same as two
//! `Vec` headers, and a short string costs nothing more.
//!
//! It encodes exactly as a `Vec<u8>` does (postcard: the length, then the bytes), so it can take
//! a `Vec<u8>`'s place in a state type without changing the state's bytes; it hashes, compares
//! and orders as the `[u8]` it holds.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// The longest string kept in place.
pub(crate) const INLINE: usize = 22;

/// A byte string, in place up to [`INLINE`] bytes.
#[derive(Clone)]
pub(crate) enum Bytes {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Vec<u8>),
}

#[cfg(target_pointer_width = "32")]
const _: () = assert!(size_of::<Bytes>() == 24);

impl Bytes {
    /// An empty string.
    pub(crate) const fn new() -> Self {
        Self::Inline { len: 0, bytes: [0; INLINE] }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(bytes) => bytes,
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Inline { len, .. } => usize::from(*len),
            Self::Heap(bytes) => bytes.len(),
        }
    }

    /// Bytes it holds on the heap (0 in place): what `MEMORY USAGE` adds to its slot.
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Self::Inline { .. } => 0,
            Self::Heap(bytes) => bytes.capacity(),
        }
    }

    /// Makes it hold `bytes`: in place if they fit, else reusing its heap buffer unless that
    /// would keep far more memory than the new value needs (a large value overwritten by a
    /// smaller one).
    pub(crate) fn set(&mut self, bytes: &[u8]) {
        match self {
            Self::Heap(buffer)
                if bytes.len() > INLINE && buffer.capacity() <= 2 * bytes.len() + 64 =>
            {
                buffer.clear();
                buffer.extend_from_slice(bytes);
            }
            _ => *self = Self::from(bytes),
        }
    }

    /// Runs `edit` on the string as a vector (`APPEND`, `SETRANGE`, `INCR`), then keeps the
    /// result in place if it fits.
    pub(crate) fn edit<R>(&mut self, edit: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let mut buffer = match std::mem::take(self) {
            Self::Inline { len, bytes } => {
                let mut buffer = Vec::with_capacity(INLINE);
                buffer.extend_from_slice(&bytes[..usize::from(len)]);
                buffer
            }
            Self::Heap(buffer) => buffer,
        };
        let result = edit(&mut buffer);
        *self =
            if buffer.len() <= INLINE { Self::from(buffer.as_slice()) } else { Self::Heap(buffer) };
        result
    }
}

impl Default for Bytes {
    fn default() -> Self {
        Self::new()
    }
}

impl From<&[u8]> for Bytes {
    fn from(slice: &[u8]) -> Self {
        match u8::try_from(slice.len()) {
            Ok(len) if slice.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..slice.len()].copy_from_slice(slice);
                Self::Inline { len, bytes }
            }
            _ => Self::Heap(slice.to_vec()),
        }
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(vec: Vec<u8>) -> Self {
        if vec.len() <= INLINE { Self::from(vec.as_slice()) } else { Self::Heap(vec) }
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(bytes: Bytes) -> Self {
        match bytes {
            Bytes::Heap(vec) => vec,
            inline => inline.as_slice().to_vec(),
        }
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Bytes {}

impl PartialOrd for Bytes {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bytes {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

/// As `[u8]` hashes, so that a map keyed by `Bytes` is searched with a `&[u8]`.
impl Hash for Bytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.as_slice().escape_ascii())
    }
}

/// As a `Vec<u8>` encodes in postcard: the length, then the bytes.
impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.as_slice())
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Read;
        impl<'de> Visitor<'de> for Read {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes::from(bytes))
            }
            fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes::from(bytes))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(byte) = seq.next_element()? {
                    bytes.push(byte);
                }
                Ok(Bytes::from(bytes))
            }
        }
        deserializer.deserialize_bytes(Read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// Every length around the inline bound encodes, hashes and compares as a `Vec<u8>`.
    #[test]
    fn behaves_as_a_vec_of_its_bytes() {
        let state = crate::db::FixedState::default();
        for len in [0, 1, 15, 16, INLINE - 1, INLINE, INLINE + 1, 100, 300] {
            let vec: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let bytes = Bytes::from(vec.as_slice());
            assert_eq!(matches!(bytes, Bytes::Inline { .. }), len <= INLINE, "{len}");
            assert_eq!(bytes.as_slice(), vec.as_slice());
            let encoded = postcard::to_allocvec(&bytes).unwrap();
            assert_eq!(encoded, postcard::to_allocvec(&vec).unwrap(), "{len}");
            let back: Bytes = postcard::from_bytes(&encoded).unwrap();
            assert_eq!(back, bytes);
            assert_eq!(state.hash_one(&bytes), state.hash_one(vec.as_slice()));
            assert_eq!(Vec::from(bytes), vec);
        }
    }

    /// An edit moves the string to the heap and back as its length crosses the bound.
    #[test]
    fn edits_and_sets_cross_the_inline_bound() {
        let mut bytes = Bytes::from(b"abc".as_slice());
        bytes.edit(|v| v.extend_from_slice(&[b'x'; 30]));
        assert!(matches!(bytes, Bytes::Heap(_)));
        assert_eq!(bytes.len(), 33);
        bytes.edit(|v| v.truncate(5));
        assert!(matches!(bytes, Bytes::Inline { .. }));
        assert_eq!(bytes.as_slice(), b"abcxx");
        bytes.set(&[1; 40]);
        assert_eq!(bytes.heap_bytes(), 40);
        bytes.set(&[2; 30]);
        assert_eq!((bytes.as_slice(), bytes.heap_bytes()), ([2; 30].as_slice(), 40));
        bytes.set(b"small");
        assert_eq!((bytes.as_slice(), bytes.heap_bytes()), (b"small".as_slice(), 0));
        bytes.set(&[3; 1000]);
        bytes.set(&[4; 100]);
        assert_eq!(bytes.heap_bytes(), 100, "a large buffer is not kept for a small value");
    }
}
