//! Policy files: raw serde types → `validate()` (collects every error) → typed [`Policy`].

mod types;

pub use types::*;
