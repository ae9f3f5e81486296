//! Method + path -> route resolution. Must never panic; errors must be 4xx.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (method, path) = input;
    if let Err(e) = ember_api::router::resolve(method, path) {
        let status = e.status().as_u16();
        assert!((400..500).contains(&status), "{status}");
    }
});
