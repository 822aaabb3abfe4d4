//! Harnesses shared by the two test binaries, `local` and `cluster`: real
//! Prometheus and Alertmanager processes on loopback, the sandbox's control
//! plane, a `canaryd run` child process and played pods. Each binary uses a
//! different subset, hence the `dead_code` allowance.
#![allow(dead_code, unused_imports)]

pub mod alertmanager;
pub mod cluster;
pub mod daemon;
pub mod pods;
pub mod prom;
