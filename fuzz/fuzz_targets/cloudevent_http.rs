//! `POST /events`: the CloudEvents HTTP binding (binary, structured and batched modes) and what the handlers make of
//! an event (Eventarc's Pub/Sub and Cloud Storage payloads, a Stockroom command), plus legacy background events.
//!
//! Input: an HTTP request, `head CRLF CRLF body` (see `stockroom_fuzz::request`); with no blank line, the whole input
//! is a structured-mode body. Checked besides "no panic":
//! - refusing batches changes nothing but batches;
//! - every refusal is a 4xx (a 5xx would have Eventarc redeliver a bad request for days);
//! - an accepted event, written again in structured mode (`data_base64`) and, where its attributes allow, in binary
//!   mode, parses to the same event; JSON data written as a `data` member parses to the same JSON value.

#![no_main]

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use stockroom_fuzz::{percent_encoded, request};
use stockroom_runtime::ApiError;
use stockroom_runtime::events::{
    self, EventError, IncomingEvent, MESSAGE_PUBLISHED, envelope_of_message, parse_cloudevents,
};
use stockroom_stock_updates::commands;

fuzz_target!(|input: &[u8]| {
    let (mut headers, body) = request(input);
    if headers.is_empty() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/cloudevents+json"));
    }
    let single = parse_cloudevents(&headers, body, false);
    let batched = parse_cloudevents(&headers, body, true);
    match (&single, &batched) {
        (Err(EventError::BatchNotAccepted), _) => {}
        _ => assert_eq!(single, batched, "allowing batches changed a request that is no batch"),
    }
    match batched {
        Ok(events) => events.iter().for_each(check_event),
        Err(e) => assert_client_error(e),
    }
    // The Functions Framework's legacy shape: only ever a body.
    match events::legacy_event(body) {
        Ok(event) => check_event(&event),
        Err(e) => assert_client_error(e),
    }
});

fn assert_client_error(e: EventError) {
    let shown = e.to_string();
    let status = ApiError::from(e).status();
    assert!(status.is_client_error(), "{shown} answers {status}");
}

/// What the handlers do with an event, and the round trips.
fn check_event(event: &IncomingEvent) {
    assert_eq!(event.specversion, events::SPEC_VERSION);
    assert!(!event.id.is_empty() && !event.source.is_empty() && !event.ty.is_empty());

    let structured = structured_form(event);
    let again = parse_cloudevents(&structured_headers(), &serde_json::to_vec(&structured).unwrap(), false);
    assert_eq!(again.as_deref(), Ok(std::slice::from_ref(event)), "structured round trip of {structured:?}");

    if let Some((headers, body)) = binary_form(event) {
        let again = parse_cloudevents(&headers, &body, false);
        let mut expected = event.clone();
        expected.data = expected.data.filter(|data| !data.is_empty());
        assert_eq!(again, Ok(vec![expected]), "binary round trip of {headers:?}");
    }

    let json = event.data_json("data");
    // (`"data": null` means no data in the JSON event format, so JSON `null` data has no such form.)
    if let Some(value) = json.as_ref().ok().filter(|value| !value.is_null()) {
        let mut with_json = structured_form(event);
        with_json.remove("data_base64");
        with_json.insert("data".into(), value.clone());
        let again = parse_cloudevents(&structured_headers(), &serde_json::to_vec(&with_json).unwrap(), false);
        let again = again.unwrap_or_else(|e| panic!("{with_json:?}: {e}"));
        assert_eq!(again[0].data_json("data").as_ref(), Ok(value), "JSON data round trip of {with_json:?}");
    }

    // The handlers (stock-updates' inbound.rs): Pub/Sub's and Storage's payloads, then the command.
    if event.ty == MESSAGE_PUBLISHED {
        match events::message_published(event) {
            Ok(message) => {
                if let Ok(envelope) = envelope_of_message(&message) {
                    decode(&envelope);
                }
            }
            Err(e) => assert_client_error(e),
        }
    } else if let Err(e) = events::storage_object(event) {
        assert_client_error(e);
    }
    if commands::is_command(&event.ty)
        && let Ok(data) = json
    {
        decode(&events::Envelope { ty: event.ty.clone(), source: event.source.clone(), id: event.id.clone(), data });
    }
}

fn decode(envelope: &events::Envelope) {
    if let Err(e) = commands::decode(envelope) {
        assert!(e.status().is_client_error(), "{e:?}");
    }
}

fn structured_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/cloudevents+json"));
    headers
}

/// The event in the JSON event format, its data as `data_base64`.
fn structured_form(event: &IncomingEvent) -> Map<String, Value> {
    let mut members: Map<String, Value> = attributes(event).into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    if let Some(data) = &event.data {
        members.insert("data_base64".into(), Value::String(STANDARD.encode(data)));
    }
    members
}

/// The event in binary mode, when its `datacontenttype` can be a Content-Type that does not say structured.
fn binary_form(event: &IncomingEvent) -> Option<(HeaderMap, Vec<u8>)> {
    let mut headers = HeaderMap::new();
    for (name, value) in attributes(event) {
        if name == "datacontenttype" {
            let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            if essence.starts_with("application/cloudevents") || !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
                return None;
            }
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(&value).ok()?);
        } else {
            let name = HeaderName::from_bytes(format!("ce-{name}").as_bytes()).expect("an attribute name");
            headers.insert(name, HeaderValue::from_str(&percent_encoded(&value)).expect("percent-encoded"));
        }
    }
    Some((headers, event.data.as_deref().map(<[u8]>::to_vec).unwrap_or_default()))
}

fn attributes(event: &IncomingEvent) -> BTreeMap<String, String> {
    let mut all = event.extensions.clone();
    let optional = [
        ("subject", &event.subject),
        ("time", &event.time),
        ("datacontenttype", &event.datacontenttype),
        ("dataschema", &event.dataschema),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            all.insert(name.into(), value.clone());
        }
    }
    for (name, value) in [("specversion", &event.specversion), ("id", &event.id), ("source", &event.source)] {
        all.insert(name.into(), value.clone());
    }
    all.insert("type".into(), event.ty.clone());
    all
}
