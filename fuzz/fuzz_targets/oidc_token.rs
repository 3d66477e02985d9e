//! `Authorization: Bearer <id token>` on `/events`, `/pubsub/push` and the jobs: the bearer header, the JWT's header
//! and claims, the signature and the claims' judgement, with the signing key published in a JWKS read by the
//! service's own JWKS reader (no network: `OidcVerifier::verify_with_keys`).
//!
//! Input, as lines:
//! 1. the JOSE header, as JSON (`{"alg":"RS256","kid":"fuzz-k1"}`);
//! 2. the claims, as JSON;
//! 3. the signature: empty or `sign` (the published key), `other` (an unpublished key, same `kid`), `tamper`
//!    (signed, then the claims changed), or anything else, used as the signature segment as it is;
//! 4. optionally, what goes before the token instead of `Bearer `.
//!
//! An input of fewer than three lines is the whole `Authorization` value. Checked besides "no panic": a token is
//! accepted only if (checked here, without jsonwebtoken) its signature verifies under the published key, its
//! header says RS256 and the published `kid`, its `aud`, `iss`, `email`, `email_verified`, `exp` and `nbf` are as
//! configured, and the claims returned are the token's.

#![no_main]

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};
use sha2::Sha256;
use stockroom_runtime::oidc::{self, OidcConfig, OidcError, OidcVerifier};

const AUDIENCE: &str = "https://stockroom-events-abc123-ew.a.run.app/pubsub/push";
const PUSHER: &str = "pubsub-push@stockroom-prod.iam.gserviceaccount.com";
const KID: &str = "fuzz-k1";

struct World {
    verifier: OidcVerifier,
    published: Arc<DecodingKey>,
    public: RsaPublicKey,
    signer: EncodingKey,
    impostor: EncodingKey,
}

/// Keys minted once from fixed seeds, so that a run replays. 512 bits: nothing here depends on a key's size, and
/// every input is signed afresh (with 1024-bit keys, a quarter as many executions per second). Fuzzing only; not a
/// key anything trusts.
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let mint = |seed| RsaPrivateKey::new(&mut rand::rngs::StdRng::seed_from_u64(seed), 512).expect("a key");
        let encoding = |key: &RsaPrivateKey| EncodingKey::from_rsa_der(key.to_pkcs1_der().expect("DER").as_bytes());
        let (google, impostor) = (mint(1), mint(2));
        let jwks = json!({"keys": [{
            "kty": "RSA", "alg": "RS256", "use": "sig", "kid": KID,
            "n": URL_SAFE_NO_PAD.encode(google.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(google.e().to_bytes_be()),
        }]});
        let keys = oidc::signing_keys(&serde_json::to_vec(&jwks).unwrap()).expect("the JWKS is read");
        let config = OidcConfig::new(AUDIENCE, vec![PUSHER.to_owned()]);
        World {
            verifier: OidcVerifier::new(config, reqwest::Client::new()),
            published: keys[KID].clone(),
            public: google.to_public_key(),
            signer: encoding(&google),
            impostor: encoding(&impostor),
        }
    })
}

fuzz_target!(|input: &[u8]| {
    let world = world();
    let Some(authorization) = authorization(world, input) else { return };
    // The middleware passes on only what `HeaderValue::to_str` gives.
    if HeaderValue::from_str(&authorization).map_or(true, |v| v.to_str().is_err()) {
        return;
    }
    let verdict =
        world.verifier.verify_with_keys(Some(&authorization), |kid| (kid == KID).then(|| world.published.clone()));
    match verdict {
        Ok(claims) => {
            let token = authorization.split_once(' ').expect("a scheme").1.trim();
            let payload = accepted(world, token);
            assert_eq!(payload["email"].as_str().map(str::to_ascii_lowercase), Some(claims.email.to_ascii_lowercase()));
            assert_eq!(payload["sub"].as_str(), Some(claims.sub.as_str()));
            assert_eq!(payload["iss"].as_str(), Some(claims.iss.as_str()));
            assert_eq!(payload["exp"].as_u64(), Some(claims.exp));
            assert_eq!(claims.aud, AUDIENCE);
        }
        Err(e) => assert_ne!(e, OidcError::JwksUnavailable, "no JWKS is fetched here"),
    }
});

/// The `Authorization` value the input describes.
fn authorization(world: &World, input: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(input).ok()?;
    let lines: Vec<&str> = text.splitn(4, '\n').collect();
    let [header, claims, signature, rest @ ..] = lines.as_slice() else { return Some(text.to_owned()) };
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let sign = |key| jsonwebtoken::crypto::sign(signing_input.as_bytes(), key, Algorithm::RS256).expect("signed");
    let token = match signature.trim_end_matches('\r') {
        "" | "sign" => format!("{signing_input}.{}", sign(&world.signer)),
        "other" => format!("{signing_input}.{}", sign(&world.impostor)),
        "tamper" => {
            let changed =
                format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(format!("{claims} ")));
            format!("{changed}.{}", sign(&world.signer))
        }
        verbatim => format!("{signing_input}.{verbatim}"),
    };
    let scheme = rest.first().map_or("Bearer ", |s| s.trim_end_matches(['\r', '\n']));
    Some(format!("{scheme}{token}"))
}

/// Checks, without jsonwebtoken, everything an accepted token must be; its claims.
fn accepted(world: &World, token: &str) -> Value {
    let segments: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = segments.as_slice() else {
        panic!("accepted a token of {} parts", segments.len())
    };
    let signature = URL_SAFE_NO_PAD.decode(signature).expect("accepted a signature that is not base64url");
    let signature = Signature::try_from(signature.as_slice()).expect("an RSA signature");
    let signing_input = format!("{header}.{payload}");
    VerifyingKey::<Sha256>::new(world.public.clone())
        .verify(signing_input.as_bytes(), &signature)
        .expect("accepted a token the published key did not sign");

    let json = |segment: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).expect("base64url")).expect("JSON")
    };
    let (header, claims) = (json(header), json(payload));
    assert_eq!(header["alg"], "RS256", "{header}");
    assert_eq!(header["kid"], KID, "{header}");
    let aud_ok = match &claims["aud"] {
        Value::String(aud) => aud == AUDIENCE,
        Value::Array(auds) => auds.iter().any(|aud| aud == AUDIENCE),
        _ => false,
    };
    assert!(aud_ok, "accepted for another audience: {claims}");
    assert!(oidc::GOOGLE_ISSUERS.iter().any(|iss| claims["iss"] == *iss), "accepted from another issuer: {claims}");
    assert!(claims["email"].as_str().is_some_and(|e| e.eq_ignore_ascii_case(PUSHER)), "{claims}");
    assert_eq!(claims["email_verified"], true, "{claims}");
    let now = jsonwebtoken::get_current_timestamp();
    let leeway = 60;
    assert!(claims["exp"].as_u64().is_some_and(|exp| exp + leeway >= now), "accepted expired: {claims}");
    if let Some(nbf) = claims.get("nbf") {
        assert!(nbf.as_u64().is_some_and(|nbf| nbf <= now + leeway), "accepted before nbf: {claims}");
    }
    claims
}
