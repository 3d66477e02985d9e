//! The CloudEvents 1.0 envelope (structured mode, JSON data) every Stockroom event and command travels in:
//! one type for whoever builds them (the store's outbox, the aggregator, the webhooks) and whoever reads them.

use serde::{Deserialize, Serialize};

pub const SPEC_VERSION: &str = "1.0";
pub const JSON: &str = "application/json";

/// `source` of what a Stockroom function sends: `//stockroom/<function>`.
pub fn source(function: &str) -> String {
    format!("//stockroom/{function}")
}

/// A CloudEvent with its `data` typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent<T> {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    pub data: T,
}

impl<T> CloudEvent<T> {
    /// A JSON event of type `ty` from `source`.
    pub fn new(ty: &str, id: impl Into<String>, source: impl Into<String>, data: T) -> Self {
        Self {
            specversion: SPEC_VERSION.to_owned(),
            id: id.into(),
            source: source.into(),
            ty: ty.to_owned(),
            subject: None,
            time: None,
            datacontenttype: Some(JSON.to_owned()),
            data,
        }
    }

    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn with_time(mut self, time: impl Into<String>) -> Self {
        self.time = Some(time.into());
        self
    }

    /// Without `datacontenttype` (a Pub/Sub message's event, where the message says it).
    pub fn without_content_type(mut self) -> Self {
        self.datacontenttype = None;
        self
    }
}

impl<T: Serialize> CloudEvent<T> {
    /// The event as JSON (structured mode).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}
