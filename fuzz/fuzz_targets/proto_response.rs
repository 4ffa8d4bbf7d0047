//! The client's side of the wire (dlm.so, virtdlm): a response body.
//! Properties: no panic; every response that decodes survives encode -> decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::{self, FrameError};

fuzz_target!(|data: &[u8]| {
    let Ok(resp) = proto::decode_response(data) else { return };
    let frame = match proto::encode(&resp) {
        Ok(f) => f,
        Err(FrameError::TooLarge(_)) => return,
        Err(e) => panic!("a decoded response does not encode: {e}"),
    };
    let back = proto::read_frame(&mut &frame[..]).expect("own frame reads back");
    assert_eq!(proto::decode_response(&back).expect("own frame decodes"), resp);
});
