//! Subcommand implementations; `main.rs` only parses arguments and dispatches.

pub mod check;
pub mod demo;
pub mod demo_pods;
pub mod judge;
pub mod rbac;
pub mod run;
pub mod simulate;
pub mod status;

use std::process::ExitCode;

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code for "the input was judged bad" (invalid policy, rollback verdict).
pub const EXIT_FAILED: u8 = 1;
/// Exit code for usage or I/O errors.
pub const EXIT_ERROR: u8 = 2;
/// Exit code for an inconclusive verdict (no data, broken traffic split).
pub const EXIT_INCONCLUSIVE: u8 = 3;

/// The exit code of `canaryd judge` for a verdict (docs/judge.md).
pub fn verdict_exit(decision: crate::judge::Decision) -> ExitCode {
    use crate::judge::Decision;
    exit(match decision {
        Decision::Promote | Decision::Continue => EXIT_OK,
        Decision::Rollback => EXIT_FAILED,
        Decision::Inconclusive => EXIT_INCONCLUSIVE,
    })
}

/// Converts a numeric exit code.
pub fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
