//! Policy: the entitlement catalog and Cedar policies.

pub mod catalog;
