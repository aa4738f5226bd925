#![no_main]

use libfuzzer_sys::fuzz_target;
use sipauth_sip::{parse_challenge, parse_credentials};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(c) = parse_credentials(s) {
            assert!(c.nc.is_none() || c.qop.is_some() || c.nc.is_some());
        }
        if let Ok(c) = parse_challenge(s) {
            assert!(c.qop.iter().all(|q| !q.is_empty()));
        }
    }
});
