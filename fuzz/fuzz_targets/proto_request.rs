//! The daemon's side of the wire: a frame off the socket, then a request body.
//! Properties: no panic; a frame never claims more than MAX_FRAME nor more than was sent;
//! every request that decodes survives encode -> read_frame -> decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::{self, FrameError};

fuzz_target!(|data: &[u8]| {
    match proto::read_frame(&mut &data[..]) {
        Ok(body) => assert!(body.len() <= proto::MAX_FRAME && body.len() + 4 <= data.len()),
        Err(FrameError::TooLarge(n)) => assert!(n > proto::MAX_FRAME),
        Err(_) => {}
    }
    for body in [data, data.get(4..).unwrap_or_default()] {
        let Ok(req) = proto::decode_request(body) else { continue };
        assert_eq!(req.v, proto::PROTOCOL_VERSION);
        let _ = req.op.is_read_only();
        let frame = match proto::encode(&req) {
            Ok(f) => f,
            Err(FrameError::TooLarge(_)) => continue,
            Err(e) => panic!("a decoded request does not encode: {e}"),
        };
        let back = proto::read_frame(&mut &frame[..]).expect("own frame reads back");
        assert_eq!(proto::decode_request(&back).expect("own frame decodes"), req);
    }
});
