//! The demo service (`canaryd demo-app`) and its load generator (`canaryd demo-load`).
