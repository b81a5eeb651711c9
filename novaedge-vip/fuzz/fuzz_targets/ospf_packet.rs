//! Feeds arbitrary bytes to the OSPFv2 packet decoder. Whatever decodes must re-encode to
//! bytes that decode to the same packet (the checksum is recomputed, so a packet with a
//! corrupted checksum never decodes in the first place), and every LSA body it carries must
//! either fail to decode or re-encode to bytes that decode to the same body. The LSA
//! checksum routines must not panic on any LSA.
#![no_main]

use libfuzzer_sys::fuzz_target;
use novaedge_vip::ospf::packet::{Body, LsaBody, Packet, lsa_checksum, lsa_checksum_ok};

fuzz_target!(|data: &[u8]| {
    // The checksum of arbitrary LSA-sized input never panics.
    if data.len() >= 20 {
        let _ = lsa_checksum(data);
        let _ = lsa_checksum_ok(data);
    }
    let Ok(packet) = Packet::decode(data) else {
        return;
    };
    let again = packet.encode().expect("a decoded packet encodes");
    assert_eq!(Packet::decode(&again).as_ref(), Ok(&packet));
    if let Body::LsUpdate(lsas) = &packet.body {
        for lsa in lsas {
            let _ = lsa.checksum_ok();
            if let Ok(body) = lsa.body() {
                let mut bytes = Vec::new();
                body.encode(&mut bytes).expect("a decoded body encodes");
                assert_eq!(LsaBody::decode(lsa.header().ls_type, &bytes), Ok(body));
            }
        }
    }
});
