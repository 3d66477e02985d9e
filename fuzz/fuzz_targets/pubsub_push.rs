//! `POST /pubsub/push`: the Pub/Sub push envelope, the CloudEvent its message carries (Pub/Sub binding attributes or a
//! structured event as the data), and the Stockroom command in it.
//!
//! Input: the request body. Checked besides "no panic":
//! - every refusal is a 4xx (a 5xx has Pub/Sub redeliver it until the subscription gives up);
//! - an accepted envelope written out again parses to the same message;
//! - the same bytes as an Eventarc `messagePublished` event's data give the same message (one parser, two doors);
//! - the input is also tried as a message's data, with and without `ce-type`, to reach the command decoder.

#![no_main]

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use stockroom_events::command;
use stockroom_fuzz::fingerprint;
use stockroom_runtime::ApiError;
use stockroom_runtime::events::{
    self, EventError, IncomingEvent, MESSAGE_PUBLISHED, PushMessage, envelope_of_message, parse_push,
};
use stockroom_stock_updates::commands;

fuzz_target!(|body: &[u8]| {
    let pushed = parse_push(body);
    let published = events::message_published(&IncomingEvent {
        specversion: events::SPEC_VERSION.into(),
        id: "fuzz-1".into(),
        source: "//pubsub.googleapis.com/projects/fuzz/topics/inventory-commands".into(),
        ty: MESSAGE_PUBLISHED.into(),
        subject: None,
        time: None,
        datacontenttype: Some("application/json".into()),
        dataschema: None,
        extensions: BTreeMap::new(),
        data: Some(Bytes::copy_from_slice(body)),
    });
    match (&pushed, &published) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "push and messagePublished disagree"),
        (Err(_), Err(_)) => {}
        _ => panic!("push gives {pushed:?}, messagePublished gives {published:?}"),
    }
    match pushed {
        Ok(message) => {
            let written = envelope(&message);
            let again = parse_push(&serde_json::to_vec(&written).unwrap());
            assert_eq!(again.as_ref(), Ok(&message), "round trip of {written}");
            handle(&message);
        }
        Err(e) => assert_client_error(e),
    }

    // The input as what a message carries: a structured CloudEvent, or a command under the Pub/Sub binding.
    let mut message = PushMessage {
        message_id: "fuzz-message".into(),
        publish_time: None,
        attributes: BTreeMap::new(),
        data: Bytes::copy_from_slice(body),
        ordering_key: None,
        subscription: Some("projects/fuzz/subscriptions/stock-updates".into()),
        delivery_attempt: Some(1),
    };
    handle(&message);
    let ty = command::ALL[(fingerprint(body) % command::ALL.len() as u64) as usize];
    message.attributes.insert("ce-type".into(), ty.into());
    handle(&message);
});

fn assert_client_error(e: EventError) {
    let shown = e.to_string();
    let status = ApiError::from(e).status();
    assert!(status.is_client_error(), "{shown} answers {status}");
}

/// stock-updates' `pubsub_push` up to the store.
fn handle(message: &PushMessage) {
    match envelope_of_message(message) {
        Ok(envelope) => {
            if let Err(e) = commands::decode(&envelope) {
                assert!(e.status().is_client_error(), "{e:?}");
            }
        }
        Err(e) => assert!(e.status().is_client_error(), "{e:?}"),
    }
}

/// The push envelope of `message`, camelCase as Pub/Sub writes it.
fn envelope(message: &PushMessage) -> Value {
    let mut m = Map::new();
    m.insert("messageId".into(), json!(message.message_id));
    if let Some(time) = &message.publish_time {
        m.insert("publishTime".into(), json!(time));
    }
    m.insert("attributes".into(), json!(message.attributes));
    m.insert("data".into(), json!(STANDARD.encode(&message.data)));
    if let Some(key) = &message.ordering_key {
        m.insert("orderingKey".into(), json!(key));
    }
    let mut envelope = Map::new();
    envelope.insert("message".into(), Value::Object(m));
    if let Some(subscription) = &message.subscription {
        envelope.insert("subscription".into(), json!(subscription));
    }
    if let Some(attempt) = message.delivery_attempt {
        envelope.insert("deliveryAttempt".into(), json!(attempt));
    }
    Value::Object(envelope)
}
