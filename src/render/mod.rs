//! PURE renderers: a [`crate::engine::Plan`] becomes an RFC 6902 JSON patch (webhook,
//! offline `inject`) or an `EphemeralContainer` (reconciler).

mod ephemeral;
mod patch;
mod spliced;

pub use ephemeral::ephemeral_container;
pub use patch::{json_patch, pointer_escape, PatchOp, ANNOTATION_DEFAULT_CONTAINER};
pub use spliced::Fragments;
