//! The fuzz corpus as plain tests: every committed seed (fuzz/corpus/<target>/)
//! and every crash turned regression (fuzz/regressions/<target>/) goes through
//! the same property checks the fuzz targets run, on stable, so a machine
//! without a nightly toolchain still checks them. See fuzz/README.md.

/// Also the independent XFCC and DN readers of the identity tests.
#[path = "../../fuzz/checks.rs"]
pub(crate) mod checks;

#[path = "../../fuzz/checks_pp2.rs"]
mod checks_pp2;

use std::path::Path;

/// Runs `check` on every file of the target's corpus and regression folders;
/// names each failing file. Returns how many files ran.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let p = e.expect("readable corpus folder").path();
            if p.is_file() {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).expect("readable corpus file");
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            failed.push(f.strip_prefix(&root).unwrap_or(f).display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} {target} inputs break a property: {failed:#?}",
        failed.len(),
        files.len()
    );
    assert!(!files.is_empty(), "no corpus files for {target}");
    files.len()
}

#[test]
fn the_request_head_corpus_replays_without_a_property_violation() {
    replay("request_head", checks::request_head);
}

#[test]
fn the_response_head_corpus_replays_without_a_property_violation() {
    replay("response_head", checks::response_head);
}

#[test]
fn the_chunked_corpus_replays_without_a_property_violation() {
    replay("chunked", checks::chunked);
}

#[test]
fn the_path_corpus_replays_without_a_property_violation() {
    replay("path", checks::path);
}

#[test]
fn the_xfcc_corpus_replays_without_a_property_violation() {
    replay("xfcc", checks::xfcc);
}

#[test]
fn the_proxy_protocol_corpus_replays_without_a_property_violation() {
    replay("proxy_protocol", checks_pp2::proxy_protocol);
}
