//! Snapshot decoding, where an agent meets what the controller (or anyone who reaches its
//! stream) sends: any bytes through protobuf decoding and validation.
//!
//! Nothing may panic; a snapshot that decodes re-encodes to bytes that decode to the same
//! snapshot.

#![no_main]

use libfuzzer_sys::fuzz_target;
use novaedge_snapshot::ConfigSnapshot;

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = ConfigSnapshot::decode(data) {
        let again = ConfigSnapshot::decode(&snapshot.encode_to_vec())
            .expect("a re-encoded snapshot decodes");
        assert_eq!(again, snapshot);
    }
});
