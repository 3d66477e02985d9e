//! The JWKS document the OIDC verifier fetches (`oidc::signing_keys`) and the `Cache-Control` that says how long to
//! keep it (`oidc::max_age`): bytes from the network, read before any token is checked.
//!
//! Input: a `Cache-Control` value, a newline, the JWKS body (with no newline, the whole input is both). Checked besides
//! "no panic": every key kept is an RSA key published under that `kid`, and a `max-age` read is one the value spells.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use stockroom_runtime::oidc;

fuzz_target!(|input: &[u8]| {
    let (line, jwks) = match input.iter().position(|&b| b == b'\n') {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (input, input),
    };
    if let Ok(keys) = oidc::signing_keys(jwks) {
        assert!(!keys.is_empty());
        let document: Value = serde_json::from_slice(jwks).expect("a JWKS that was read is JSON");
        let published = document["keys"].as_array().expect("a JWKS that was read has keys");
        for kid in keys.keys() {
            assert!(!kid.is_empty());
            let jwk = published.iter().find(|jwk| jwk["kid"] == kid.as_str() && jwk["kty"] == "RSA");
            assert!(jwk.is_some(), "kept {kid:?}, which is no RSA key in {document}");
        }
    }
    if let Ok(cache_control) = std::str::from_utf8(line)
        && let Some(seconds) = oidc::max_age(cache_control)
    {
        assert!(cache_control.to_ascii_lowercase().contains("max-age"), "{cache_control:?}");
        assert!(cache_control.contains(&seconds.to_string()) || cache_control.contains('+'), "{cache_control:?}");
    }
});
