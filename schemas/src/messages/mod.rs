//! Every message of the contract, one module per kind of thing. The same types serve the gateway, the
//! functions and Rust clients; `export-json-schemas` writes their JSON Schema into `schemas/json/` for
//! everyone else.

pub mod build;
pub mod component;
pub mod image;
pub mod keys;
pub mod manage;
pub mod push;
pub mod reply;
pub mod secrets;
pub mod submission;
