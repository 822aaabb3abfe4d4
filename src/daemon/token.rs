//! Bearer tokens read from files (the alert webhook's and the read token of
//! `/v1/rollouts`), checked at start-up and re-read when the file changes, so
//! a rotated Secret takes effect without a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use subtle::ConstantTimeEq;

/// Shortest token accepted: 16 bytes is 128 bits of a random token, the
/// least a guess over the network must not find.
pub const MIN_TOKEN_BYTES: usize = 16;

/// How often a token file is read again for rotation. Kubernetes updates a
/// mounted Secret by swapping a symlink, which file watchers miss; reading a
/// few bytes every few seconds does not.
pub const TOKEN_RECHECK: Duration = Duration::from_secs(5);

/// Why a token file is refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be read.
    #[error("{path}: cannot read the token file: {source}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is empty or only white space: every request would match it.
    #[error("{path}: the token file is empty (or only white space); the endpoint would be open")]
    Empty {
        /// The file.
        path: String,
    },
    /// The token is too short to withstand guessing.
    #[error("{path}: the token has {len} bytes; at least {MIN_TOKEN_BYTES} are required")]
    TooShort {
        /// The file.
        path: String,
        /// Its length after trimming.
        len: usize,
    },
}

/// Reads and checks a token file; surrounding white space (a trailing
/// newline) is not part of the token.
pub fn read_token(path: &Path) -> Result<Vec<u8>, TokenError> {
    let shown = path.display().to_string();
    let raw = std::fs::read(path).map_err(|source| TokenError::Unreadable {
        path: shown.clone(),
        source,
    })?;
    let token = raw.trim_ascii();
    if token.is_empty() {
        return Err(TokenError::Empty { path: shown });
    }
    if token.len() < MIN_TOKEN_BYTES {
        return Err(TokenError::TooShort {
            path: shown,
            len: token.len(),
        });
    }
    Ok(token.to_vec())
}

/// A token from a file, current as of the last successful read.
#[derive(Debug)]
pub struct TokenFile {
    /// `None` for a fixed token that is never re-read.
    path: Option<PathBuf>,
    current: RwLock<Vec<u8>>,
}

impl TokenFile {
    /// Reads `path` once; fails as [`read_token`] does.
    pub fn open(path: &Path) -> Result<Self, TokenError> {
        Ok(TokenFile {
            path: Some(path.to_path_buf()),
            current: RwLock::new(read_token(path)?),
        })
    }

    /// A token given in memory (embedding, tests); never re-read. An empty
    /// one accepts nothing.
    pub fn fixed(token: &[u8]) -> Self {
        TokenFile {
            path: None,
            current: RwLock::new(token.to_vec()),
        }
    }

    /// Whether `presented` is the current token, compared in constant time so
    /// the comparison does not leak how much of it matched.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let current = match self.current.read() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        // An empty token is never stored (see `read_token`), so "" never passes.
        !current.is_empty() && bool::from(presented.ct_eq(&current))
    }

    /// Reads the file again. A changed valid token replaces the current one;
    /// an invalid file keeps the current one (a half-written rotation must
    /// not open or lock the endpoint) and is reported.
    pub fn reload(&self) -> Result<bool, TokenError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let next = read_token(path)?;
        let mut current = match self.current.write() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *current == next {
            return Ok(false);
        }
        *current = next;
        Ok(true)
    }

    /// Re-reads the file every [`TOKEN_RECHECK`] until `shutdown`, logging
    /// rotations and refused contents (once per distinct problem).
    pub async fn follow(
        &self,
        what: &'static str,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let Some(path) = &self.path else {
            return;
        };
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(TOKEN_RECHECK);
        let mut last_problem: Option<String> = None;
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            match self.reload() {
                Ok(true) => {
                    tracing::info!(token = what, path = %path.display(), "Token file changed; using the new token.");
                    last_problem = None;
                }
                Ok(false) => last_problem = None,
                Err(e) => {
                    let text = e.to_string();
                    if last_problem.as_deref() != Some(&text) {
                        tracing::warn!(token = what, error = %text, "Token file refused; keeping the previous token.");
                        last_problem = Some(text);
                    }
                }
            }
        }
    }
}

/// Why the daemon refuses its listening configuration.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExposureError {
    /// Listening beyond loopback with the webhook on but no token.
    #[error("--listen {0} is not a loopback address and the alert webhook has no --alert-token-file: give a token file, listen on 127.0.0.1, or pass --no-alert-webhook")]
    OpenWebhook(SocketAddr),
}

/// Refuses a listener that others can reach while the alert webhook is on
/// without a token (pure; checked before anything starts).
pub fn check_exposure(
    listen: SocketAddr,
    has_alert_token: bool,
    webhook_off: bool,
) -> Result<(), ExposureError> {
    if listen.ip().is_loopback() || has_alert_token || webhook_off {
        Ok(())
    } else {
        Err(ExposureError::OpenWebhook(listen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn empty_short_and_unreadable_files_are_refused_with_their_path() {
        let empty = file(" \n\t\n");
        let err = read_token(empty.path()).unwrap_err();
        assert!(matches!(err, TokenError::Empty { .. }), "{err}");
        assert!(err
            .to_string()
            .contains(&empty.path().display().to_string()));
        let short = file("fifteen-bytes!!\n");
        assert!(matches!(
            read_token(short.path()).unwrap_err(),
            TokenError::TooShort { len: 15, .. }
        ));
        let err = read_token(Path::new("/nonexistent/token")).unwrap_err();
        assert!(matches!(err, TokenError::Unreadable { .. }), "{err}");
        assert_eq!(
            read_token(file("sixteen-bytes!!!\n").path()).unwrap(),
            b"sixteen-bytes!!!"
        );
    }

    #[test]
    fn a_rotated_token_replaces_the_old_one_and_a_bad_rotation_keeps_it() {
        let f = file("first-token-0123456789");
        let token = TokenFile::open(f.path()).unwrap();
        assert!(token.accepts(b"first-token-0123456789"));
        assert!(!token.accepts(b""));
        std::fs::write(f.path(), "second-token-0123456789\n").unwrap();
        assert!(token.reload().unwrap());
        assert!(!token.accepts(b"first-token-0123456789"));
        assert!(token.accepts(b"second-token-0123456789"));
        std::fs::write(f.path(), "").unwrap();
        assert!(token.reload().is_err());
        assert!(token.accepts(b"second-token-0123456789"), "kept");
        assert!(!token.accepts(b""), "never open");
    }

    #[test]
    fn only_loopback_may_run_the_webhook_without_a_token() {
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let local6: SocketAddr = "[::1]:8080".parse().unwrap();
        assert_eq!(
            check_exposure(public, false, false),
            Err(ExposureError::OpenWebhook(public))
        );
        assert!(check_exposure(public, true, false).is_ok());
        assert!(check_exposure(public, false, true).is_ok());
        assert!(check_exposure(local, false, false).is_ok());
        assert!(check_exposure(local6, false, false).is_ok());
    }
}
