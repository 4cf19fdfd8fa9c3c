//! Shared test support: a local stand-in for Slack's incoming webhooks and a generic HTTP
//! receiver.
#![allow(dead_code)]

pub mod alerts;
pub mod apiserver;
pub mod browser;
pub mod certs;
pub mod klaxon;
pub mod metrics;
pub mod process;
pub mod receiver;
pub mod redis;
pub mod slack;
pub mod smtp;
pub mod tmpfs;
pub mod trickle;
