//! The `whisperer` binary as a user or the injector runs it, for what needs no root.

use std::process::Command;
use std::time::{Duration, Instant};

fn whisperer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_whisperer"))
}

#[test]
fn an_expired_deadline_exits_0_without_capturing() {
    let t0 = Instant::now();
    let out = whisperer()
        .args(["--interface", "any", "--out-dir", "/nonexistent"])
        .env("WHISPERER_DEADLINE", "2020-01-01T00:00:00Z")
        .env("WHISPERER_POD_NAME", "web-0")
        .env("WHISPERER_SOMETHING_NEW", "tolerated")
        .output()
        .expect("run whisperer");
    assert!(out.status.success(), "{out:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(out.stdout.is_empty());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("deadline has passed"), "{log}");
}

#[test]
fn a_bad_flag_value_names_the_flag() {
    let out = whisperer()
        .args(["--rotate-size", "lots"])
        .output()
        .expect("run whisperer");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rotate-size"), "{err}");
    assert!(err.contains("invalid size"), "{err}");
}

#[test]
fn help_lists_the_contract_flags() {
    let out = whisperer().arg("--help").output().expect("run whisperer");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--interface",
        "--filter",
        "--out-dir",
        "--rotate-size",
        "--rotate-every",
        "--keep",
        "--collector",
        "--control-interval",
        "--metrics-listen",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}
