//! Heap allocations of one admission answer in steady state, counted by a global allocator
//! that only this test binary installs (one test, so no other thread allocates meanwhile).

mod support;

use std::alloc::System;
use std::sync::Arc;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use whisperer_injector::engine::Settings;
use whisperer_injector::webhook::{answer_into, PodSecurityLevels, Prepared};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// What one full injection of the shipped profile into the 3.7 KB fixture may cost. The
/// allocations left are the pod reader's (names, annotations, owner references, the typed
/// `Pod` the engine reads); the answer itself (decision, patch, base64, review) allocates
/// nothing once its buffers are warm.
const MAX_ALLOCATIONS_PER_ANSWER: usize = 40;

#[test]
fn an_injection_answer_allocates_only_for_the_pod_it_reads() {
    let settings = Settings::new(
        Arc::new(support::manifests::shipped_config()),
        "whisperer-system",
    );
    let prepared = Prepared::new(Arc::new(settings));
    let review: serde_json::Value = serde_json::from_slice(
        &std::fs::read(support::manifests::repo(
            "tests/fixtures/review-pod-3k7.json",
        ))
        .expect("fixture"),
    )
    .expect("json");
    let body = serde_json::to_vec(&review).expect("compact");
    let levels = PodSecurityLevels::default();
    let mut out = Vec::with_capacity(16 * 1024);
    let answer = |out: &mut Vec<u8>| {
        out.clear();
        answer_into(&body, &prepared, &levels, out).expect("answer")
    };
    // Warm: the thread's patch buffer grows to its size once.
    for _ in 0..10 {
        answer(&mut out);
    }
    let first = out.clone();
    let runs = 200;
    let region = Region::new(GLOBAL);
    for _ in 0..runs {
        let labels = answer(&mut out);
        assert_eq!(labels.reason, "none");
    }
    let change = region.change();
    assert_eq!(out, first, "the same answer every time");
    let answer_text = String::from_utf8_lossy(&out);
    assert!(
        answer_text.contains(r#""patchType":"JSONPatch""#),
        "{answer_text}"
    );
    let per_answer = (change.allocations + change.reallocations) as f64 / runs as f64;
    println!(
        "{per_answer:.1} allocations per answer ({} allocations, {} reallocations, {} bytes in {runs} answers)",
        change.allocations, change.reallocations, change.bytes_allocated
    );
    assert!(
        per_answer <= MAX_ALLOCATIONS_PER_ANSWER as f64,
        "{per_answer} allocations per answer"
    );
}
