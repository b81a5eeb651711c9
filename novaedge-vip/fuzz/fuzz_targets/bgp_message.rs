//! Feeds arbitrary bytes to the BGP message decoder, with and without 4-octet AS numbers.
//! Whatever decodes must re-encode to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use novaedge_vip::bgp::msg::Codec;

fuzz_target!(|data: &[u8]| {
    for four_octet_as in [true, false] {
        let codec = Codec { four_octet_as };
        let mut rest = data;
        // A stream may hold several messages back to back.
        while let Ok(Some((msg, n))) = codec.decode(rest) {
            assert!(n > 0 && n <= rest.len());
            let again = codec.encode(&msg);
            assert_eq!(codec.decode(&again), Ok(Some((msg, again.len()))));
            rest = &rest[n..];
        }
    }
});
