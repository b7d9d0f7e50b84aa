//! The pods of a pass: which generation each gets (`generations`), what to do with each
//! (`plan`), sending the patches (`batch`, `patcher`) under the rate limit (`ratelimit`), and
//! the back-off after failures (`backoff`). Shared by Attachments and the backstop.

pub mod backoff;
pub mod batch;
pub mod generations;
pub mod patcher;
pub mod plan;
pub mod ratelimit;
