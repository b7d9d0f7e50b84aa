//! Runtime attachment: the `Attachment` custom resource and its ephemeral-container
//! reconciler. (Being built; see issue 5.)

mod args;

pub use args::ReconcilerArgs;
