//! Shared test support: a local stand-in for Slack's incoming webhooks.
#![allow(dead_code)]

pub mod metrics;
pub mod slack;
