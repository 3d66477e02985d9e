//! The event receivers against the upstream fixtures in `../shared/fixtures`, used as they are: the Functions
//! Framework conformance pairs, google-cloudevents examples and test data, whole recorded requests, and the
//! CloudEvents conformance YAML cases rendered in their mode; then the refusals the spec requires.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use stockroom_runtime::ApiError;
use stockroom_runtime::events::{
    EventError, IncomingEvent, MESSAGE_PUBLISHED, OBJECT_FINALIZED, PushMessage, StorageObject, legacy_event,
    message_published, parse_cloudevents, parse_push, storage_object,
};

// ---------------------------------------------------------------------------------------------------------------
// Reading the fixtures

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|name| name.to_str()).unwrap_or_default()
}

/// The files in `dir` whose names end with `suffix`, sorted.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file() && file_name(path).ends_with(suffix))
        .collect();
    files.sort();
    files
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap_or_else(|e| panic!("{}: {e}", next.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

// ---------------------------------------------------------------------------------------------------------------
// Building requests and reading results

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|e| panic!("header {name:?}: {e}"));
        let value = HeaderValue::from_str(value).unwrap_or_else(|e| panic!("header value {value:?}: {e}"));
        map.append(name, value);
    }
    map
}

fn structured() -> HeaderMap {
    headers(&[("content-type", "application/cloudevents+json")])
}

fn one_event(headers: &HeaderMap, body: &[u8], context: &str) -> IncomingEvent {
    let mut events = parse_cloudevents(headers, body, false).unwrap_or_else(|e| panic!("{context}: {e}"));
    assert_eq!(events.len(), 1, "{context}: one event");
    events.remove(0)
}

fn data_json(event: &IncomingEvent) -> Value {
    let data = event.data.as_deref().expect("the event has data");
    serde_json::from_slice(data).unwrap_or_else(|e| panic!("the data of {} is not JSON: {e}", event.id))
}

fn text_of(value: &Value, name: &str) -> Option<String> {
    value.get(name).and_then(Value::as_str).map(str::to_owned)
}

const ATTRIBUTES: [&str; 8] =
    ["specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema"];

fn attribute(event: &IncomingEvent, name: &str) -> Option<String> {
    match name {
        "specversion" => Some(event.specversion.clone()),
        "id" => Some(event.id.clone()),
        "source" => Some(event.source.clone()),
        "type" => Some(event.ty.clone()),
        "subject" => event.subject.clone(),
        "time" => event.time.clone(),
        "datacontenttype" => event.datacontenttype.clone(),
        "dataschema" => event.dataschema.clone(),
        other => event.extensions.get(other).cloned(),
    }
}

/// An event has exactly the context attributes and extensions of a CloudEvent in the JSON format.
fn assert_attributes_are(event: &IncomingEvent, expected: &Value, context: &str) {
    for name in ATTRIBUTES {
        assert_eq!(attribute(event, name), text_of(expected, name), "{context}: {name}");
    }
    let extensions: BTreeMap<String, String> = expected
        .as_object()
        .expect("a CloudEvent in the JSON format is an object")
        .iter()
        .filter(|(name, _)| !ATTRIBUTES.contains(&name.as_str()) && *name != "data" && *name != "data_base64")
        .map(|(name, value)| (name.clone(), value.as_str().map_or_else(|| value.to_string(), str::to_owned)))
        .collect();
    assert_eq!(event.extensions, extensions, "{context}: extensions");
}

/// The listed attributes (of a request's `expect`) are the event's.
fn assert_attributes_include(event: &IncomingEvent, expected: &Value, context: &str) {
    for (name, value) in expected.as_object().expect("attributes are an object") {
        assert_eq!(attribute(event, name).as_deref(), value.as_str(), "{context}: {name}");
    }
}

/// A decoded Pub/Sub message against the `message` object it came from, decoded independently.
fn assert_message_is(message: &PushMessage, expected: &Value, context: &str) {
    let id = text_of(expected, "messageId").or_else(|| text_of(expected, "message_id"));
    assert_eq!(Some(message.message_id.clone()), id, "{context}: messageId");
    let publish_time = text_of(expected, "publishTime").or_else(|| text_of(expected, "publish_time"));
    assert_eq!(message.publish_time, publish_time, "{context}: publishTime");
    let attributes: BTreeMap<String, String> = expected
        .get("attributes")
        .and_then(Value::as_object)
        .map(|attributes| attributes.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().into())).collect())
        .unwrap_or_default();
    assert_eq!(message.attributes, attributes, "{context}: attributes");
    let data = STANDARD.decode(text_of(expected, "data").unwrap_or_default()).expect("fixture data is base64");
    assert_eq!(message.data.as_ref(), data.as_slice(), "{context}: data");
    assert_eq!(message.ordering_key, text_of(expected, "orderingKey"), "{context}: orderingKey");
}

/// A decoded storage object against the `StorageObjectData` it came from; int64 fields as their decimal text.
fn assert_object_is(object: &StorageObject, expected: &Value, context: &str) {
    let int64 = |name: &str| match expected.get(name) {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    assert_eq!(Some(object.bucket.clone()), text_of(expected, "bucket"), "{context}: bucket");
    assert_eq!(Some(object.name.clone()), text_of(expected, "name"), "{context}: name");
    assert_eq!(Some(object.generation.clone()), int64("generation"), "{context}: generation");
    assert_eq!(object.metageneration, int64("metageneration"), "{context}: metageneration");
    assert_eq!(object.size, int64("size"), "{context}: size");
    assert_eq!(object.content_type, text_of(expected, "contentType"), "{context}: contentType");
    assert_eq!(object.md5_hash, text_of(expected, "md5Hash"), "{context}: md5Hash");
    assert_eq!(object.crc32c, text_of(expected, "crc32c"), "{context}: crc32c");
    assert_eq!(object.time_created, text_of(expected, "timeCreated"), "{context}: timeCreated");
    assert_eq!(object.updated, text_of(expected, "updated"), "{context}: updated");
}

/// The typed payload of a Pub/Sub or Storage event decodes to what its data says.
fn assert_payload_decodes(event: &IncomingEvent, expected_data: &Value, context: &str) {
    if event.ty == MESSAGE_PUBLISHED {
        let message = message_published(event).unwrap_or_else(|e| panic!("{context}: {e}"));
        assert_message_is(&message, &expected_data["message"], context);
        assert_eq!(message.subscription, text_of(&data_json(event), "subscription"), "{context}: subscription");
    } else {
        assert_eq!(event.ty, OBJECT_FINALIZED, "{context}: a type this suite knows");
        let object = storage_object(event).unwrap_or_else(|e| panic!("{context}: {e}"));
        assert_object_is(&object, expected_data, context);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// (1) gcp-events: Functions Framework conformance pairs

fn functions_framework() -> PathBuf {
    fixtures().join("gcp-events/functions-framework-conformance")
}

#[test]
fn every_functions_framework_cloudevent_input_decodes_to_its_output() {
    let dir = functions_framework();
    let inputs = files_ending(&dir, "-cloudevent-input.json");
    assert!(inputs.len() >= 4, "the conformance inputs are there: {inputs:?}");
    for input in inputs {
        let name = file_name(&input).trim_end_matches("-cloudevent-input.json");
        let expected = read_json(&dir.join(format!("{name}-cloudevent-output.json")));
        let event = one_event(&structured(), &read(&input), name);
        assert_attributes_are(&event, &expected, name);
        // The data is kept as sent, every member of it.
        let sent = read_json(&input)["data"].clone();
        let mut got = data_json(&event);
        assert_eq!(got, sent, "{name}: data as sent");
        // Upstream keeps one CloudEvent output per name for both of its inputs, and the legacy input cannot carry
        // a subscription, so the Pub/Sub outputs have none while the CloudEvent inputs do: compare without it.
        if expected["data"].get("subscription").is_none()
            && let Some(data) = got.as_object_mut()
        {
            data.remove("subscription");
        }
        assert_eq!(got, expected["data"], "{name}: data as upstream's output says");
        assert_payload_decodes(&event, &expected["data"], name);
    }
}

#[test]
fn every_functions_framework_legacy_event_converts_to_the_cloudevent_output() {
    // The `-legacy-output*` files are what a background function is handed, in the same legacy shape as the
    // inputs, so they must convert to the same CloudEvent as well.
    let dir = functions_framework();
    let legacy: Vec<PathBuf> =
        files_ending(&dir, ".json").into_iter().filter(|path| file_name(path).contains("-legacy-")).collect();
    assert!(legacy.len() >= 8, "the legacy fixtures are there: {legacy:?}");
    let mut compared = 0;
    for file in legacy {
        let context = file_name(&file);
        let event = legacy_event(&read(&file)).unwrap_or_else(|e| panic!("{context}: {e}"));
        let name = context.split("-legacy-").next().unwrap_or_default();
        let output = dir.join(format!("{name}-cloudevent-output.json"));
        if output.exists() {
            let expected = read_json(&output);
            assert_attributes_are(&event, &expected, context);
            assert_eq!(data_json(&event), expected["data"], "{context}: data");
            assert_payload_decodes(&event, &expected["data"], context);
            compared += 1;
        }
    }
    assert!(compared >= 8, "every legacy fixture has a CloudEvent output to compare with");
}

// ---------------------------------------------------------------------------------------------------------------
// (1) gcp-events: google-cloudevents examples and test data

fn google_cloudevents() -> PathBuf {
    fixtures().join("gcp-events/google-cloudevents")
}

/// An Eventarc event carrying `data` as binary mode delivers it.
fn eventarc_event(ty: &str, data: Vec<u8>) -> IncomingEvent {
    let mut headers = headers(&[
        ("ce-specversion", "1.0"),
        ("ce-id", "1234"),
        ("ce-source", "//eventarc.test"),
        ("ce-type", ty),
        ("content-type", "application/json"),
    ]);
    headers.insert("ce-time", HeaderValue::from_static("2021-02-05T04:06:14.109Z"));
    one_event(&headers, &data, ty)
}

struct Message {
    file: &'static str,
    data: &'static [u8],
    attributes: &'static [(&'static str, &'static str)],
    ordering_key: Option<&'static str>,
    subscription: &'static str,
}

const MESSAGES: [Message; 5] = [
    Message {
        file: "examples/binary/pubsub/MessagePublishedData-complex.json",
        data: b"test message 3",
        attributes: &[("attr1", "attr1-value")],
        ordering_key: Some("ordering-key"),
        subscription: "projects/test-project/subscriptions/my-subscription",
    },
    Message {
        file: "examples/binary/pubsub/MessagePublishedData-simple.json",
        data: &[1, 2, 3, 4],
        attributes: &[],
        ordering_key: None,
        subscription: "projects/test-project/subscriptions/my-subscription",
    },
    Message {
        file: "testdata/google/events/cloud/pubsub/v1/MessagePublishedData-binary.json",
        data: &[1, 2, 3, 4],
        attributes: &[],
        ordering_key: None,
        subscription: "projects/my-project/subscriptions/my-subscription",
    },
    Message {
        file: "testdata/google/events/cloud/pubsub/v1/MessagePublishedData-duplicatedFields.json",
        data: &[1, 2, 3, 4],
        attributes: &[],
        ordering_key: None,
        subscription: "projects/my-project/subscriptions/my-subscription",
    },
    Message {
        file: "testdata/google/events/cloud/pubsub/v1/MessagePublishedData-text.json",
        data: b"test message 3",
        attributes: &[("attr1", "attr1-value")],
        ordering_key: None,
        subscription: "projects/my-project/subscriptions/my-subscription",
    },
];

fn assert_message(message: &PushMessage, want: &Message) {
    let attributes: BTreeMap<String, String> =
        want.attributes.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let context = want.file;
    assert_eq!(message.message_id, "message-id", "{context}");
    assert_eq!(message.publish_time.as_deref(), Some("2021-02-05T04:06:14.109Z"), "{context}");
    assert_eq!(message.data.as_ref(), want.data, "{context}");
    assert_eq!(message.attributes, attributes, "{context}");
    assert_eq!(message.ordering_key.as_deref(), want.ordering_key, "{context}");
    assert_eq!(message.subscription.as_deref(), Some(want.subscription), "{context}");
    assert_eq!(message.delivery_attempt, None, "{context}");
}

struct Object {
    file: &'static str,
    bucket: &'static str,
    name: &'static str,
    generation: &'static str,
    metageneration: &'static str,
    size: &'static str,
    content_type: &'static str,
    md5_hash: &'static str,
    crc32c: &'static str,
    time_created: &'static str,
    updated: &'static str,
}

const OBJECTS: [Object; 4] = [
    Object {
        file: "examples/binary/storage/StorageObjectData-complex.json",
        bucket: "sample-bucket",
        name: "MyFile",
        generation: "96883251",
        metageneration: "1",
        size: "0",
        content_type: "text/plain",
        md5_hash: "xrX0h3SqCoeoKidv+GvlBw==",
        crc32c: "AAAAAA==",
        time_created: "2020-05-06T15:14:15.917Z",
        updated: "1970-09-15T14:05:26.975Z",
    },
    Object {
        file: "examples/binary/storage/StorageObjectData-simple.json",
        bucket: "sample-bucket",
        name: "folder/Test.cs",
        generation: "1587627537231057",
        metageneration: "1",
        size: "352",
        content_type: "text/plain",
        md5_hash: "kF8MuJ5+CTJxvyhHS1xzRg==",
        crc32c: "rTVTeQ==",
        time_created: "2020-04-23T07:38:57.230Z",
        updated: "2020-04-23T07:38:57.230Z",
    },
    Object {
        file: "testdata/google/events/cloud/storage/v1/StorageObjectData-complex.json",
        bucket: "sample-bucket",
        name: "MyFile",
        generation: "96883251",
        metageneration: "1",
        size: "0",
        content_type: "esse commodo",
        md5_hash: "xrX0h3SqCoeoKidv+GvlBw==",
        crc32c: "AAAAAA==",
        time_created: "2020-05-06T15:14:15.917Z",
        updated: "1970-09-15T14:05:26.975Z",
    },
    Object {
        file: "testdata/google/events/cloud/storage/v1/StorageObjectData-simple.json",
        bucket: "some-bucket",
        name: "folder/Test.cs",
        generation: "1587627537231057",
        metageneration: "1",
        size: "352",
        content_type: "text/plain",
        md5_hash: "kF8MuJ5+CTJxvyhHS1xzRg==",
        crc32c: "rTVTeQ==",
        time_created: "2020-04-23T07:38:57.230Z",
        updated: "2020-04-23T07:38:57.230Z",
    },
];

fn assert_object(object: &StorageObject, want: &Object) {
    let expected = StorageObject {
        bucket: want.bucket.into(),
        name: want.name.into(),
        generation: want.generation.into(),
        metageneration: Some(want.metageneration.into()),
        size: Some(want.size.into()),
        content_type: Some(want.content_type.into()),
        md5_hash: Some(want.md5_hash.into()),
        crc32c: Some(want.crc32c.into()),
        time_created: Some(want.time_created.into()),
        updated: Some(want.updated.into()),
    };
    assert_eq!(object, &expected, "{}", want.file);
}

const STRUCTURED_PUBSUB: &str = "examples/structured/pubsub/MessagePublishedData.json";
const STRUCTURED_STORAGE: &str = "examples/structured/storage/StorageObjectDataWorkflows.json";

#[test]
fn every_google_cloudevents_message_published_data_decodes() {
    for want in &MESSAGES {
        let event = eventarc_event(MESSAGE_PUBLISHED, read(&google_cloudevents().join(want.file)));
        let message = message_published(&event).unwrap_or_else(|e| panic!("{}: {e}", want.file));
        assert_message(&message, want);
    }
}

#[test]
fn every_google_cloudevents_storage_object_data_decodes_with_int64_as_strings() {
    for want in &OBJECTS {
        let event = eventarc_event(OBJECT_FINALIZED, read(&google_cloudevents().join(want.file)));
        let object = storage_object(&event).unwrap_or_else(|e| panic!("{}: {e}", want.file));
        assert_object(&object, want);
    }
}

#[test]
fn the_structured_google_cloudevents_examples_decode() {
    let pubsub = one_event(&structured(), &read(&google_cloudevents().join(STRUCTURED_PUBSUB)), STRUCTURED_PUBSUB);
    assert_eq!(pubsub.id, "3103425958877813");
    assert_eq!(pubsub.source, "//pubsub.googleapis.com/projects/test-project/topics/my-topic");
    assert_eq!(pubsub.time.as_deref(), Some("2021-02-05T04:06:14.109Z"));
    assert!(pubsub.extensions.is_empty());
    let message = message_published(&pubsub).expect("a Pub/Sub message");
    assert_message(&message, &Message { file: STRUCTURED_PUBSUB, ..MESSAGES[0] });

    let storage = one_event(&structured(), &read(&google_cloudevents().join(STRUCTURED_STORAGE)), STRUCTURED_STORAGE);
    assert_eq!(storage.id, "1234567");
    assert_eq!(storage.ty, OBJECT_FINALIZED);
    assert_eq!(storage.source, "//storage.googleapis.com/projects/_/buckets/sample-bucket");
    assert_eq!(storage.subject.as_deref(), Some("objects/MyFile"));
    assert_eq!(storage.time.as_deref(), Some("2021-11-25T21:04:32.279744Z"));
    let bucket_extension = BTreeMap::from([("bucket".to_owned(), "sample-bucket".to_owned())]);
    assert_eq!(storage.extensions, bucket_extension);
    let object = storage_object(&storage).expect("a storage object");
    assert_object(&object, &Object { file: STRUCTURED_STORAGE, updated: "2021-11-25T21:04:32.279744Z", ..OBJECTS[0] });
}

#[test]
fn every_google_cloudevents_fixture_is_checked() {
    let checked: Vec<&str> = MESSAGES
        .iter()
        .map(|m| m.file)
        .chain(OBJECTS.iter().map(|o| o.file))
        .chain([STRUCTURED_PUBSUB, STRUCTURED_STORAGE])
        .collect();
    for file in files_under(&google_cloudevents()) {
        assert!(checked.contains(&file.as_str()), "{file} is not checked by any test");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// (2) Whole recorded requests

struct HttpRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// An HTTP/1.1 request as bytes: request line, header lines and an empty line (each ending CRLF), then the body.
fn parse_http(bytes: &[u8], context: &str) -> HttpRequest {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("{context}: no CRLFCRLF"));
    let head = std::str::from_utf8(&bytes[..end]).unwrap_or_else(|e| panic!("{context}: {e}"));
    let mut lines = head.split("\r\n");
    let request_line: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    let [method, target, version] = request_line[..] else { panic!("{context}: bad request line {request_line:?}") };
    assert_eq!(version, "HTTP/1.1", "{context}");
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("{context}: bad header {line:?}"));
            (name.to_owned(), value.trim_matches([' ', '\t']).to_owned())
        })
        .collect();
    HttpRequest { method: method.into(), target: target.into(), headers, body: bytes[end + 4..].to_vec() }
}

fn the_first_v1_yaml_case() -> ConformanceCase {
    conformance_cases().into_iter().find(|case| case.origin == "v1.yaml #1").expect("v1.yaml's binary case")
}

#[test]
fn every_recorded_request_is_accepted_with_the_expected_attributes() {
    let mut checked = 0;
    for folder in ["requests/eventarc", "requests/cloudevents"] {
        let dir = fixtures().join(folder);
        for description in files_ending(&dir, ".request.json") {
            let name = file_name(&description).trim_end_matches(".request.json").to_owned();
            let context = format!("{folder}/{name}");
            let description = read_json(&description);
            let request = parse_http(&read(&dir.join(format!("{name}.http"))), &context);

            // The .http file and the .request.json + .body pair say the same.
            assert_eq!(Some(request.method.clone()), text_of(&description, "method"), "{context}: method");
            assert_eq!(Some(request.target.clone()), text_of(&description, "target"), "{context}: target");
            let listed: Vec<(String, String)> =
                serde_json::from_value(description["headers"].clone()).expect("headers are [name, value] pairs");
            assert_eq!(request.headers, listed, "{context}: headers");
            let body_file = text_of(&description, "body_file").expect("body_file");
            assert_eq!(request.body, read(&dir.join(body_file)), "{context}: body");
            assert_eq!(Some(hex::encode(Sha256::digest(&request.body))), text_of(&description, "body_sha256"));
            assert_eq!(Some(request.body.len() as u64), description["body_len"].as_u64(), "{context}: body_len");

            let mut headers = HeaderMap::new();
            for (name, value) in &request.headers {
                let name = HeaderName::from_bytes(name.as_bytes()).expect("a header name");
                headers.append(name, HeaderValue::from_str(value).expect("a header value"));
            }
            let event = one_event(&headers, &request.body, &context);
            check_expectations(&event, &request, &description["expect"], &context);
            if event.ty == MESSAGE_PUBLISHED || event.ty == OBJECT_FINALIZED {
                assert_payload_decodes(&event, &data_json(&event), &context);
            }
            if name.starts_with("conformance-yaml-v1-binary") {
                // Rendered from v1.yaml's binary case: the same attributes and data.
                let case = the_first_v1_yaml_case();
                for (attribute_name, value) in &case.attributes {
                    assert_eq!(attribute(&event, attribute_name).as_ref(), Some(value), "{context}: {attribute_name}");
                }
                assert_eq!(event.extensions, case.extensions, "{context}: extensions");
                assert_eq!(event.data.as_deref(), case.data.as_deref().map(str::as_bytes), "{context}: data");
            }
            checked += 1;
        }
    }
    assert!(checked >= 9, "the recorded requests are there");
}

/// Every key of a request's `expect`; an unknown key fails, so that no new expectation goes unchecked.
fn check_expectations(event: &IncomingEvent, request: &HttpRequest, expect: &Value, context: &str) {
    for (key, want) in expect.as_object().expect("expect is an object") {
        match key.as_str() {
            "attributes" | "ce" => assert_attributes_include(event, want, context),
            "ce.subject" => assert_eq!(event.subject.as_deref(), want.as_str(), "{context}: subject"),
            "data_json" => assert_eq!(&data_json(event), want, "{context}: data"),
            "extensions" => {
                let extensions: BTreeMap<String, String> =
                    serde_json::from_value(want.clone()).expect("extensions are strings");
                assert_eq!(event.extensions, extensions, "{context}: extensions");
            }
            "transport_extension_user_agent" => {
                // A transport header, not an event attribute: it is no extension of the event.
                let user_agent = request.headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("user-agent"));
                assert_eq!(user_agent.map(|(_, value)| value.as_str()), want.as_str(), "{context}: User-Agent");
                assert!(event.extensions.values().all(|value| Some(value.as_str()) != want.as_str()), "{context}");
            }
            "data.message.data_decoded_utf8" => {
                let message = message_published(event).unwrap_or_else(|e| panic!("{context}: {e}"));
                assert_eq!(std::str::from_utf8(&message.data).ok(), want.as_str(), "{context}: message data");
            }
            "data.message.data_decoded_hex" => {
                let message = message_published(event).unwrap_or_else(|e| panic!("{context}: {e}"));
                assert_eq!(Some(hex::encode(&message.data).as_str()), want.as_str(), "{context}: message data");
            }
            "object_identity" => {
                let object = storage_object(event).unwrap_or_else(|e| panic!("{context}: {e}"));
                let identity = format!("{}/{}#{}", object.bucket, object.name, object.generation);
                let wanted = want.as_str().and_then(|text| text.split(" = ").nth(1));
                assert_eq!(Some(identity.as_str()), wanted, "{context}: object identity");
            }
            "int64_fields_as_json_strings" => {
                let object = storage_object(event).unwrap_or_else(|e| panic!("{context}: {e}"));
                let data = data_json(event);
                for field in want.as_array().expect("a list of fields") {
                    let field = field.as_str().unwrap_or_default();
                    let decoded = match field {
                        "generation" => Some(object.generation.clone()),
                        "metageneration" => object.metageneration.clone(),
                        "size" => object.size.clone(),
                        other => panic!("{context}: int64 field {other} is not decoded"),
                    };
                    assert!(data[field].is_string(), "{context}: {field} is a JSON string in the body");
                    assert_eq!(decoded, text_of(&data, field), "{context}: {field}");
                }
            }
            // Prose for people.
            "note" | "dedup_key" => {}
            other => panic!("{context}: expectation {other:?} is not checked by this test"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// (3) The CloudEvents conformance YAML cases, rendered in their mode and parsed back

#[derive(Debug, Clone)]
struct ConformanceCase {
    origin: String,
    /// `binary` or `structured`; a case without one is rendered both ways.
    mode: Option<String>,
    attributes: BTreeMap<String, String>,
    extensions: BTreeMap<String, String>,
    transport: Vec<(String, String)>,
    data: Option<String>,
}

fn yaml_scalar(value: &serde_norway::Value) -> String {
    match value {
        serde_norway::Value::String(text) => text.clone(),
        serde_norway::Value::Number(n) => n.to_string(),
        serde_norway::Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn conformance_cases() -> Vec<ConformanceCase> {
    use serde_norway::Value as Yaml;
    let mut cases = Vec::new();
    for file in files_ending(&fixtures().join("cloudevents-conformance"), ".yaml") {
        let text = String::from_utf8(read(&file)).expect("YAML is UTF-8");
        for (index, document) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let origin = format!("{} #{}", file_name(&file), index + 1);
            let case = Yaml::deserialize(document).unwrap_or_else(|e| panic!("{origin}: {e}"));
            let mut attributes = BTreeMap::new();
            let mut extensions = BTreeMap::new();
            let context = case.get("ContextAttributes").and_then(Yaml::as_mapping).expect("ContextAttributes");
            for (name, value) in context {
                let name = yaml_scalar(name);
                if name == "Extensions" {
                    for (extension, value) in value.as_mapping().expect("Extensions is a mapping") {
                        // Upstream writes an extension as a literal block scalar (`|`), which ends in a line feed; an
                        // attribute may not hold control characters (see the refusal test below), so the line feed is
                        // dropped, as requests/cloudevents/conformance-yaml-v1-binary-extensions does.
                        let value = yaml_scalar(value);
                        extensions
                            .insert(yaml_scalar(extension), value.strip_suffix('\n').unwrap_or(&value).to_owned());
                    }
                } else {
                    attributes.insert(name, yaml_scalar(value));
                }
            }
            let transport = case
                .get("TransportExtensions")
                .and_then(Yaml::as_mapping)
                .map(|headers| headers.iter().map(|(k, v)| (yaml_scalar(k), yaml_scalar(v))).collect())
                .unwrap_or_default();
            cases.push(ConformanceCase {
                origin,
                mode: case.get("Mode").map(yaml_scalar),
                attributes,
                extensions,
                transport,
                data: case.get("Data").map(yaml_scalar),
            });
        }
    }
    cases
}

/// Binding 3.1.3.2: space, `"`, `%` and everything outside printable ASCII are percent-encoded (UTF-8 bytes).
fn percent_encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b' ' | b'"' | b'%' => format!("%{b:02X}"),
            0x21..=0x7e => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn is_json(content_type: Option<&String>) -> bool {
    content_type.is_none_or(|t| stockroom_runtime::events::is_json_media_type(t))
}

/// The case as a binary-mode request: `ce-` headers, Content-Type, the data as the body.
fn render_binary(case: &ConformanceCase) -> (HeaderMap, Vec<u8>) {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (name, value) in case.attributes.iter().chain(&case.extensions) {
        if name == "datacontenttype" {
            pairs.push(("Content-Type".into(), value.clone()));
        } else {
            pairs.push((format!("ce-{name}"), percent_encoded(value)));
        }
    }
    pairs.extend(case.transport.iter().cloned());
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    (headers(&pairs), case.data.clone().unwrap_or_default().into_bytes())
}

/// The case as a structured-mode request: one JSON object; JSON data as a JSON value, other data as a string.
fn render_structured(case: &ConformanceCase) -> (HeaderMap, Vec<u8>) {
    let mut event: Map<String, Value> =
        case.attributes.iter().chain(&case.extensions).map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    if let Some(data) = &case.data {
        let as_json = is_json(case.attributes.get("datacontenttype")).then(|| serde_json::from_str(data).ok());
        event.insert("data".into(), as_json.flatten().unwrap_or_else(|| Value::String(data.clone())));
    }
    let mut pairs = vec![("content-type".to_owned(), "application/cloudevents+json".to_owned())];
    pairs.extend(case.transport.iter().cloned());
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    (headers(&pairs), serde_json::to_vec(&Value::Object(event)).expect("JSON"))
}

#[test]
fn every_conformance_case_round_trips_in_its_mode() {
    let cases = conformance_cases();
    assert!(cases.len() >= 8, "the conformance cases are there");
    let mut round_trips = 0;
    for case in &cases {
        let modes: &[&str] = match case.mode.as_deref() {
            Some("binary") => &["binary"],
            Some("structured") => &["structured"],
            None => &["binary", "structured"],
            Some(other) => panic!("{}: unknown mode {other}", case.origin),
        };
        for &mode in modes {
            let context = format!("{} in {mode} mode", case.origin);
            let (headers, body) = if mode == "binary" { render_binary(case) } else { render_structured(case) };
            let event = one_event(&headers, &body, &context);
            for name in ATTRIBUTES {
                assert_eq!(attribute(&event, name).as_ref(), case.attributes.get(name), "{context}: {name}");
            }
            assert_eq!(event.extensions, case.extensions, "{context}: extensions");
            let sent = case.data.as_deref().map(str::as_bytes);
            let got = event.data.as_deref();
            let as_json = |bytes: Option<&[u8]>| bytes.and_then(|b| serde_json::from_slice::<Value>(b).ok());
            if is_json(case.attributes.get("datacontenttype")) && as_json(sent).is_some() {
                // Structured mode carries JSON data as a JSON value: the same value, not the same bytes.
                assert_eq!(as_json(got), as_json(sent), "{context}: data");
            } else {
                assert_eq!(got, sent, "{context}: data");
            }
            round_trips += 1;
        }
    }
    assert_eq!(round_trips, 14, "2 cases of v1.yaml in their mode, 6 of v1_minimum.yaml in both");
}

// ---------------------------------------------------------------------------------------------------------------
// (4) What the spec requires refused, and the binding's finer points

const BINARY: [(&str, &str); 5] = [
    ("ce-specversion", "1.0"),
    ("ce-id", "a-1"),
    ("ce-source", "/stockroom/test"),
    ("ce-type", "dev.stockroom.test"),
    ("content-type", "application/json"),
];

/// The valid binary-mode headers, less `without`, plus `extra`.
fn binary_headers(without: &[&str], extra: &[(&str, &str)]) -> HeaderMap {
    let pairs: Vec<(&str, &str)> =
        BINARY.iter().copied().filter(|(name, _)| !without.contains(name)).chain(extra.iter().copied()).collect();
    headers(&pairs)
}

fn structured_body(changes: Value) -> Vec<u8> {
    let mut event = json!({
        "specversion": "1.0", "id": "a-1", "source": "/stockroom/test", "type": "dev.stockroom.test",
        "datacontenttype": "application/json", "data": {"sku": "A"}
    });
    for (name, value) in changes.as_object().expect("changes are an object") {
        if value == &json!("<absent>") {
            event.as_object_mut().map(|event| event.remove(name));
        } else {
            event[name] = value.clone();
        }
    }
    serde_json::to_vec(&event).expect("JSON")
}

fn refusal(headers: &HeaderMap, body: &[u8]) -> EventError {
    match parse_cloudevents(headers, body, false) {
        Ok(events) => panic!("accepted {events:?}"),
        Err(e) => e,
    }
}

#[test]
fn binary_and_structured_modes_accept_a_valid_event() {
    let event = one_event(&binary_headers(&[], &[]), br#"{"sku":"A"}"#, "binary");
    assert_eq!((event.id.as_str(), event.ty.as_str()), ("a-1", "dev.stockroom.test"));
    assert_eq!(event.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(event.data.as_deref(), Some(&br#"{"sku":"A"}"#[..]));
    let event = one_event(&structured(), &structured_body(json!({})), "structured");
    assert_eq!(event.source, "/stockroom/test");
    assert_eq!(data_json(&event), json!({"sku": "A"}));
}

#[test]
fn missing_or_empty_required_attributes_are_refused() {
    for name in ["specversion", "id", "source", "type"] {
        let header = format!("ce-{name}");
        let missing = refusal(&binary_headers(&[header.as_str()], &[]), b"{}");
        assert_eq!(missing, EventError::MissingAttribute(name), "binary without {name}");
        let empty = refusal(&binary_headers(&[header.as_str()], &[(header.as_str(), "")]), b"{}");
        assert_eq!(empty, EventError::MissingAttribute(name), "binary with an empty {name}");
        for value in [json!("<absent>"), json!(""), Value::Null] {
            let refused = refusal(&structured(), &structured_body(json!({ name: value })));
            assert_eq!(refused, EventError::MissingAttribute(name), "structured with {name} {value}");
            assert_eq!((refused.code(), status(&refused)), ("missing_attribute", StatusCode::BAD_REQUEST));
        }
    }
}

#[test]
fn only_specversion_1_0_is_accepted() {
    for version in ["0.3", "2.0", "1", "1.0.2"] {
        let refused = refusal(&binary_headers(&["ce-specversion"], &[("ce-specversion", version)]), b"{}");
        assert_eq!(refused, EventError::UnsupportedSpecVersion(version.into()));
        assert_eq!(refused.code(), "unsupported_specversion");
        let refused = refusal(&structured(), &structured_body(json!({ "specversion": version })));
        assert_eq!(refused, EventError::UnsupportedSpecVersion(version.into()));
    }
    let refused = refusal(&structured(), &structured_body(json!({ "specversion": 1.0 })));
    assert_eq!(refused.code(), "invalid_attribute", "a number is not the string \"1.0\"");
}

#[test]
fn a_ce_datacontenttype_header_is_refused_in_binary_mode() {
    let refused = refusal(&binary_headers(&[], &[("ce-datacontenttype", "application/json")]), b"{}");
    assert_eq!((refused.code(), status(&refused)), ("datacontenttype_header", StatusCode::BAD_REQUEST));
}

#[test]
fn data_and_data_base64_together_are_refused() {
    let refused = refusal(&structured(), &structured_body(json!({ "data_base64": "AQIDBA==" })));
    assert_eq!(refused, EventError::DataAndDataBase64);
    assert_eq!(refused.code(), "data_and_data_base64");
}

#[test]
fn a_batch_is_refused_unless_batches_are_allowed() {
    let batch = headers(&[("content-type", "application/cloudevents-batch+json")]);
    let first: Value = serde_json::from_slice(&structured_body(json!({}))).expect("JSON");
    let second: Value = serde_json::from_slice(&structured_body(json!({ "id": "a-2" }))).expect("JSON");
    let body = serde_json::to_vec(&json!([first, second])).expect("JSON");
    let refused = parse_cloudevents(&batch, &body, false).expect_err("a batch is refused");
    assert_eq!((refused.code(), status(&refused)), ("batch_not_accepted", StatusCode::UNSUPPORTED_MEDIA_TYPE));
    let events = parse_cloudevents(&batch, &body, true).expect("a batch is taken when allowed");
    assert_eq!(events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a-1", "a-2"]);
    let not_an_array = parse_cloudevents(&batch, &structured_body(json!({})), true).expect_err("not an array");
    assert_eq!(not_an_array.code(), "malformed_event");
}

#[test]
fn malformed_json_in_structured_mode_is_refused() {
    for body in [&b"{\"specversion\": \"1.0\","[..], b"", b"not json", b"{\"id\": \"a\"} trailing"] {
        let refused = refusal(&structured(), body);
        assert_eq!((refused.code(), status(&refused)), ("malformed_json", StatusCode::BAD_REQUEST), "{body:?}");
    }
    for body in [&b"[]"[..], b"\"event\"", b"null"] {
        assert_eq!(refusal(&structured(), body).code(), "malformed_event", "{body:?}");
    }
}

#[test]
fn extension_names_must_be_lowercase_alphanumeric() {
    for name in ["myExt", "MYEXT", "my_ext", "my-ext"] {
        let refused = refusal(&structured(), &structured_body(json!({ name: "x" })));
        assert_eq!(refused, EventError::InvalidAttributeName(name.into()), "structured {name}");
    }
    for header in ["ce-my_ext", "ce-my.ext", "ce-", "ce-data"] {
        let refused = refusal(&binary_headers(&[], &[(header, "x")]), b"{}");
        assert_eq!(refused.code(), "invalid_attribute_name", "{header}");
    }
    // Longer than 20 characters is advice to producers, not a reason to refuse.
    let long = "averyveryverylongextensionname2";
    let event = one_event(&structured(), &structured_body(json!({ long: "x" })), "long name");
    assert_eq!(event.extensions.get(long).map(String::as_str), Some("x"));
}

#[test]
fn ce_header_names_are_case_insensitive() {
    let event = one_event(
        &headers(&[
            ("CE-SpecVersion", "1.0"),
            ("Ce-Id", "a-1"),
            ("CE-SOURCE", "/s"),
            ("ce-Type", "t"),
            ("CE-MyExtension", "v"),
        ]),
        b"",
        "mixed case",
    );
    assert_eq!((event.id.as_str(), event.source.as_str(), event.ty.as_str()), ("a-1", "/s", "t"));
    assert_eq!(event.extensions.get("myextension").map(String::as_str), Some("v"));
    assert_eq!((event.data, event.datacontenttype), (None, None), "no body, no Content-Type: no data");
}

#[test]
fn a_repeated_ce_header_is_refused() {
    let refused = refusal(&binary_headers(&[], &[("ce-id", "a-2")]), b"{}");
    assert_eq!(refused, EventError::DuplicateAttribute("id".into()));
}

#[test]
fn ce_header_values_are_percent_decoded() {
    let event = one_event(
        &binary_headers(
            &["ce-source"],
            &[("ce-source", "%2Fmycontext%2Fsub"), ("ce-subject", "caf%C3%A9%20%22x%22"), ("ce-ext", "100%25")],
        ),
        b"{}",
        "percent-encoded",
    );
    assert_eq!(event.source, "/mycontext/sub");
    assert_eq!(event.subject.as_deref(), Some("café \"x\""));
    assert_eq!(event.extensions.get("ext").map(String::as_str), Some("100%"));
    for bad in ["%zz", "%4", "50%", "%C3"] {
        let refused = refusal(&binary_headers(&[], &[("ce-subject", bad)]), b"{}");
        assert_eq!(refused.code(), "invalid_attribute", "{bad}");
    }
}

#[test]
fn the_structured_media_type_is_matched_case_insensitively_with_parameters() {
    for content_type in [
        "APPLICATION/CloudEvents+JSON; charset=utf-8",
        "application/cloudevents+json;charset=UTF-8",
        " Application/CloudEvents+Json ",
    ] {
        let event = one_event(&headers(&[("content-type", content_type)]), &structured_body(json!({})), content_type);
        assert_eq!(event.datacontenttype.as_deref(), Some("application/json"), "{content_type}");
        assert_eq!(data_json(&event), json!({"sku": "A"}));
    }
    let avro = refusal(&headers(&[("content-type", "application/cloudevents+avro")]), b"{}");
    assert_eq!((avro.code(), status(&avro)), ("unsupported_event_format", StatusCode::UNSUPPORTED_MEDIA_TYPE));
}

#[test]
fn time_must_be_rfc_3339() {
    for time in ["yesterday", "2018-04-05", "2018-04-05T03:56:24", "05/04/2018 03:56"] {
        let refused = refusal(&binary_headers(&[], &[("ce-time", time)]), b"{}");
        assert_eq!(refused.code(), "invalid_attribute", "{time}");
    }
    let time = "2018-04-05T03:56:24.123456+02:00";
    let event = one_event(&structured(), &structured_body(json!({ "time": time })), time);
    assert_eq!(event.time.as_deref(), Some(time), "kept as sent");
}

#[test]
fn control_characters_in_attribute_values_are_refused() {
    let refused = refusal(&binary_headers(&[], &[("ce-subject", "a%0Ab")]), b"{}");
    assert_eq!(refused.code(), "invalid_attribute");
    // v1.yaml's extension as upstream writes it, with the block scalar's line feed.
    let refused = refusal(&structured(), &structured_body(json!({ "comexampleextension2": "{\"othervalue\": 5}\n" })));
    assert_eq!(refused.code(), "invalid_attribute");
}

#[test]
fn optional_attributes_when_present_are_not_empty() {
    for name in ["subject", "datacontenttype", "dataschema"] {
        let refused = refusal(&structured(), &structured_body(json!({ name: "" })));
        assert_eq!(refused.code(), "invalid_attribute", "{name}");
    }
}

#[test]
fn structured_data_is_decoded_by_its_content_type() {
    let base64 =
        json!({ "data": "<absent>", "data_base64": "AQIDBA==", "datacontenttype": "application/octet-stream" });
    let event = one_event(&structured(), &structured_body(base64), "data_base64");
    assert_eq!(event.data.as_deref(), Some(&[1u8, 2, 3, 4][..]));
    let text = json!({ "data": "Hello, 🌎!", "datacontenttype": "text/plain; charset=utf-8" });
    let event = one_event(&structured(), &structured_body(text), "text");
    assert_eq!(event.data.as_deref(), Some("Hello, 🌎!".as_bytes()), "text data is the string itself");
    let json_string = json!({ "data": "Hello" });
    let event = one_event(&structured(), &structured_body(json_string), "a JSON string");
    assert_eq!(event.data.as_deref(), Some(&b"\"Hello\""[..]), "JSON data is its JSON text");
    let no_data = one_event(&structured(), &structured_body(json!({ "data": "<absent>" })), "no data");
    assert_eq!(no_data.data, None);
    let bad = refusal(&structured(), &structured_body(json!({ "data": "<absent>", "data_base64": "!!" })));
    assert_eq!(bad.code(), "invalid_attribute");
}

#[test]
fn structured_extensions_keep_numbers_and_booleans_as_their_json_text() {
    let event = one_event(&structured(), &structured_body(json!({ "count": 5, "flag": true, "gone": null })), "types");
    let expected = BTreeMap::from([("count".to_owned(), "5".to_owned()), ("flag".to_owned(), "true".to_owned())]);
    assert_eq!(event.extensions, expected);
    let refused = refusal(&structured(), &structured_body(json!({ "nested": {"a": 1} })));
    assert_eq!(refused.code(), "invalid_attribute");
    let refused = refusal(&structured(), &structured_body(json!({ "id": 5 })));
    assert_eq!(refused.code(), "invalid_attribute", "context attributes are strings");
}

// Pub/Sub push and Eventarc payloads

fn push_body(message: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({ "message": message, "subscription": "projects/p/subscriptions/s" })).expect("JSON")
}

#[test]
fn a_push_envelope_decodes_with_camel_or_snake_case_fields() {
    let body = serde_json::to_vec(&json!({
        "message": {
            "data": "eyJza3UiOiJBIn0=", "attributes": {"kind": "adjust"},
            "message_id": "m-1", "messageId": "m-1", "publish_time": "2024-01-02T03:04:05.123456789Z",
            "ordering_key": "A"
        },
        "subscription": "projects/p/subscriptions/s",
        "deliveryAttempt": 3
    }))
    .expect("JSON");
    let message = parse_push(&body).expect("a push message");
    assert_eq!(
        message,
        PushMessage {
            message_id: "m-1".into(),
            publish_time: Some("2024-01-02T03:04:05.123456789Z".into()),
            attributes: BTreeMap::from([("kind".to_owned(), "adjust".to_owned())]),
            data: br#"{"sku":"A"}"#.to_vec().into(),
            ordering_key: Some("A".into()),
            subscription: Some("projects/p/subscriptions/s".into()),
            delivery_attempt: Some(3),
        }
    );
    let no_data = parse_push(&push_body(json!({ "messageId": "m-2", "orderingKey": "" }))).expect("no data");
    assert_eq!((no_data.data.len(), no_data.ordering_key, no_data.delivery_attempt), (0, None, None));
    let url_safe = parse_push(&push_body(json!({ "messageId": "m-3", "data": "-_8" }))).expect("URL-safe base64");
    assert_eq!(url_safe.data.as_ref(), &[0xfb, 0xff]);
}

#[test]
fn a_push_envelope_without_message_id_is_refused() {
    for message in [json!({ "data": "AQID" }), json!({ "data": "AQID", "messageId": "" })] {
        let refused = parse_push(&push_body(message)).expect_err("no messageId");
        assert_eq!((refused.code(), status(&refused)), ("missing_message_id", StatusCode::BAD_REQUEST));
    }
}

#[test]
fn bad_base64_in_pubsub_data_is_refused() {
    for data in [json!("not base64!"), json!("AQI=D"), json!(42)] {
        let refused = parse_push(&push_body(json!({ "messageId": "m", "data": data }))).expect_err("bad data");
        assert_eq!(refused.code(), "invalid_message_data", "{data}");
    }
    let event = eventarc_event(MESSAGE_PUBLISHED, push_body(json!({ "messageId": "m", "data": "%%%" })));
    assert_eq!(message_published(&event).expect_err("bad data").code(), "invalid_message_data");
}

#[test]
fn a_malformed_push_envelope_is_refused() {
    assert_eq!(parse_push(b"{").expect_err("not JSON").code(), "malformed_json");
    for envelope in [json!({ "subscription": "s" }), json!({ "message": "m" }), json!([1])] {
        let body = serde_json::to_vec(&envelope).expect("JSON");
        assert_eq!(parse_push(&body).expect_err("no message").code(), "malformed_data", "{envelope}");
    }
    let disagreeing = push_body(json!({ "messageId": "m-1", "message_id": "m-2" }));
    let refused = parse_push(&disagreeing).expect_err("two ids");
    assert_eq!(refused, EventError::ConflictingFields { camel: "messageId", snake: "message_id" });
    let attribute = push_body(json!({ "messageId": "m", "attributes": { "n": 1 } }));
    assert_eq!(parse_push(&attribute).expect_err("a number attribute").code(), "malformed_data");
    let late = push_body(json!({ "messageId": "m", "publishTime": "noon" }));
    assert_eq!(parse_push(&late).expect_err("a bad publishTime").code(), "malformed_data");
}

#[test]
fn typed_payloads_refuse_events_of_another_type() {
    let storage = eventarc_event(OBJECT_FINALIZED, b"{}".to_vec());
    let refused = message_published(&storage).expect_err("not a Pub/Sub event");
    assert_eq!((refused.code(), status(&refused)), ("unexpected_event_type", StatusCode::UNPROCESSABLE_ENTITY));
    let pubsub = eventarc_event(MESSAGE_PUBLISHED, push_body(json!({ "messageId": "m" })));
    assert_eq!(storage_object(&pubsub).expect_err("not a storage event").code(), "unexpected_event_type");
}

#[test]
fn a_storage_object_needs_bucket_name_and_a_whole_generation() {
    let object = json!({ "bucket": "b", "name": "counts.csv", "generation": "7" });
    for (field, value) in
        [("bucket", Value::Null), ("name", json!("")), ("generation", json!("7a")), ("size", json!(1.5))]
    {
        let mut data = object.clone();
        data[field] = value;
        let event = eventarc_event(OBJECT_FINALIZED, serde_json::to_vec(&data).expect("JSON"));
        assert_eq!(storage_object(&event).expect_err("refused").code(), "malformed_data", "{field}");
    }
    let mut headers = binary_headers(&["content-type", "ce-type"], &[("ce-type", OBJECT_FINALIZED)]);
    headers.insert("content-type", HeaderValue::from_static("text/csv"));
    let csv = one_event(&headers, b"sku,location,on_hand", "csv");
    assert_eq!(storage_object(&csv).expect_err("not JSON").code(), "malformed_data");
    let empty = one_event(&binary_headers(&["ce-type"], &[("ce-type", OBJECT_FINALIZED)]), b"", "no data");
    assert_eq!(storage_object(&empty).expect_err("no data").code(), "missing_data");
}

#[test]
fn legacy_events_of_other_services_are_refused() {
    let firestore = json!({
        "context": { "eventId": "e", "timestamp": "2020-01-02T15:04:05Z",
                     "eventType": "providers/cloud.firestore/eventTypes/document.write", "resource": "projects/p" },
        "data": {}
    });
    let refused = legacy_event(&serde_json::to_vec(&firestore).expect("JSON")).expect_err("firestore");
    assert_eq!(refused.code(), "unsupported_legacy_event");
    assert_eq!(legacy_event(b"{\"data\": {}}").expect_err("no context").code(), "malformed_data");
}

#[test]
fn every_error_has_a_snake_case_code_and_becomes_its_answer() {
    let errors = [
        EventError::MissingAttribute("id"),
        EventError::UnsupportedSpecVersion("0.3".into()),
        EventError::InvalidAttribute { name: "time".into(), reason: "r".into() },
        EventError::InvalidAttributeName("myExt".into()),
        EventError::DuplicateAttribute("id".into()),
        EventError::DataContentTypeHeader,
        EventError::DataAndDataBase64,
        EventError::MalformedJson("x".into()),
        EventError::MalformedEvent("x".into()),
        EventError::InvalidContentType("x".into()),
        EventError::BatchNotAccepted,
        EventError::UnsupportedEventFormat("application/cloudevents+avro".into()),
        EventError::MissingData,
        EventError::MalformedData { what: "w", reason: "r".into() },
        EventError::InvalidMessageData("x".into()),
        EventError::MissingMessageId,
        EventError::ConflictingFields { camel: "messageId", snake: "message_id" },
        EventError::UnexpectedEventType { expected: MESSAGE_PUBLISHED, got: "t".into() },
        EventError::UnsupportedLegacyEvent("t".into()),
    ];
    for error in errors {
        let code = error.code();
        assert!(
            !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{code}"
        );
        assert!(!error.to_string().is_empty(), "{code} has a message");
        let status = status(&error);
        assert_eq!(ApiError::from(error).into_response().status(), status, "{code}");
    }
}

/// The status an event error is answered with (the mapping lives in `stockroom_runtime::http`).
fn status(e: &EventError) -> StatusCode {
    stockroom_runtime::ApiError::from(e.clone()).status()
}
