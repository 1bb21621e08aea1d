//! The network faces of memhost: thin adapters over `crate::service`. No
//! business rules live here.

pub mod listener;
pub mod mcp;
pub mod rest;
