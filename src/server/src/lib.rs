//! The jit broker: just-in-time privileged access for AWS and Entra ID.
//!
//! Layers, outside in: [`http`] (thin handlers) → [`service`] (use-cases) →
//! [`domain`] (pure rules) and [`policy`] (Cedar), with [`store`] holding all
//! SQL and [`providers`] every cloud call. [`scheduler`] runs durable jobs.

pub mod checkpoint;
pub mod clock;
#[cfg(feature = "aws")]
pub mod cloud;
pub mod config;
pub mod domain;
mod fifo;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod providers;
pub mod scheduler;
pub mod secrets;
pub mod server;
pub mod service;
pub mod store;
