//! The Whisperer: a capture agent for one pod's network namespace.
//!
//! The capture thread ([`capture`]) reads frames from libpcap, writes them to rotated pcapng
//! files ([`pcapng`], [`rotate`]) and feeds TCP segments to the flow table ([`flows`]), which
//! reassembles each direction ([`stream`]) and parses HTTP/1.x ([`http`]) into records
//! ([`record`]). Records cross a bounded channel to the async side ([`emit`]), which adds the
//! names of both ends ([`names`]) and writes JSON lines. [`control`] asks the injector whether
//! to keep running; [`contract`] is the one place that knows the injector's env variables.

pub mod capture;
pub mod cli;
pub mod contract;
pub mod control;
pub mod decode;
pub mod emit;
pub mod flows;
pub mod http;
pub mod metrics;
pub mod names;
pub mod pcapng;
pub mod ready;
pub mod record;
pub mod rotate;
pub mod run;
pub mod size;
pub mod stream;

/// Nanoseconds since the Unix epoch, as captured.
pub type Ts = u64;
