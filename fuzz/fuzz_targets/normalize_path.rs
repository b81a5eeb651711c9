//! Path normalisation on arbitrary input: never panics, and every accepted
//! path comes out canonical (a fixed point, no empty or dot segments, ASCII,
//! no encoded unreserved characters, no encoded slashes unless kept).

#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use novaedge_router::{EncodedSlashes, normalize_path};

fuzz_target!(|path: &str| {
    for policy in [
        EncodedSlashes::Reject,
        EncodedSlashes::Keep,
        EncodedSlashes::Decode,
    ] {
        let Ok(normalised) = normalize_path(path, policy) else {
            continue;
        };
        match normalize_path(&normalised, policy) {
            Ok(Cow::Borrowed(again)) => assert_eq!(again, normalised),
            other => panic!("{path:?} -> {normalised:?} -> {other:?}"),
        }
        assert!(
            normalised.starts_with('/') && normalised.is_ascii(),
            "{normalised:?}"
        );
        assert!(!normalised.contains("//"), "{normalised:?}");
        for segment in normalised.split('/') {
            let name = segment.split(';').next().unwrap_or_default();
            assert!(name != "." && name != "..", "{normalised:?}");
        }
        if policy != EncodedSlashes::Keep {
            assert!(
                !normalised.contains("%2F")
                    && !normalised.contains("%5C")
                    && !normalised.contains('\\')
            );
        }
        for escape in normalised.split('%').skip(1) {
            let value = u8::from_str_radix(escape.get(..2).expect("two digits"), 16).expect("hex");
            assert!(
                value != 0 && !(value.is_ascii_alphanumeric() || b"-._~".contains(&value)),
                "{normalised:?}"
            );
        }
    }
});
