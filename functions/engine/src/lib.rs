//! The build hosts' side of the runtime: the Docker engine ([`docker`]), git ([`git`]), what a build leaves on its
//! worker ([`leftovers`]), the registry's HTTP API ([`registry`]) and the architecture-neutral tag published
//! through it ([`neutral_tag`]), which images a caller may name ([`image_access`]), one start of a build
//! ([`attempt`]) and the frame every build function is ([`builder`]).
//!
//! Split from [`artifacts_runtime`] so that the processes which never touch an engine or the registry's
//! API, the gateway and the `artifacts` command, link no Docker or registry-client code:
//! `cargo tree -p artifacts-gateway -e normal | grep bollard` shows nothing. The build functions, the
//! git trigger and the collector depend on this crate; the token service the registry trusts
//! (`artifacts_runtime::registry_auth`) stays in the runtime, since the gateway serves it.

pub mod attempt;
pub mod builder;
pub mod docker;
pub mod git;
pub mod image_access;
pub mod leftovers;
pub mod neutral_tag;
pub mod registry;
