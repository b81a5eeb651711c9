//! Manifests as `novaedge run` reads them: any text through the YAML reader and the translator.
//!
//! Nothing may panic, whatever the text. The translator reports every problem as a diagnostic
//! and never produces a snapshot that fails validation (it says "internal translation error"
//! when it does, which is a bug). A valid snapshot survives the wire: encoded and decoded, it
//! is the same snapshot.
//!
//! Seed it with the repository's YAML: `fuzz/run.sh manifests` does.

#![no_main]

use libfuzzer_sys::fuzz_target;
use novaedge_k8s::objects::parse_yaml;
use novaedge_k8s::{TranslateOptions, translate};
use novaedge_snapshot::ConfigSnapshot;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (objects, _) = parse_yaml(text, None);
    let translation = translate(&objects, &TranslateOptions::default());
    for d in &translation.diagnostics {
        let d = d.to_string();
        assert!(!d.contains("internal translation error"), "{d}");
    }
    let bytes = translation.snapshot.encode_to_vec();
    let decoded = ConfigSnapshot::decode(&bytes).expect("a translated snapshot decodes");
    assert_eq!(decoded, translation.snapshot);
});
