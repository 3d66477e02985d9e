//! What the fuzz targets share: reading a fuzz input as an HTTP request, so that the seed corpus can hold real
//! requests byte for byte (`../shared/fixtures/requests/**/*.http`) and stay readable.

use http::{HeaderMap, HeaderName, HeaderValue};

/// An input as `head CRLF CRLF body` (or LF LF): header lines, the first being the request line when it has no
/// `:`. Without a blank line the whole input is the body and there are no headers.
pub fn request(input: &[u8]) -> (HeaderMap, &[u8]) {
    let crlf = find(input, b"\r\n\r\n").map(|at| (at, at + 4));
    let lf = find(input, b"\n\n").map(|at| (at, at + 2));
    let split = match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    };
    match split {
        Some((head_end, body_start)) => (headers(&input[..head_end]), &input[body_start..]),
        None => (HeaderMap::new(), input),
    }
}

/// Header lines as a server would keep them: names lowercased, values without surrounding blanks, repeated
/// headers kept in order. Lines that are no valid header (the request line among them) are dropped, as a
/// server would have refused them before any handler ran.
pub fn headers(head: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], trim_blanks(&line[colon + 1..]));
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(name, value);
        }
    }
    map
}

fn trim_blanks(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// CloudEvents HTTP binding 3.1.3.2: space, `"`, `%` and everything outside printable ASCII percent-encoded.
pub fn percent_encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b' ' | b'"' | b'%' => format!("%{b:02X}"),
            0x21..=0x7e => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A cheap, stable choice from the input (FNV-1a), for decisions a target makes per input.
pub fn fingerprint(input: &[u8]) -> u64 {
    input.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
