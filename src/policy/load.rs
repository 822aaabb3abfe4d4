//! Reading policy files: size limit, UTF-8, YAML node tree, then validation.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_saphyr::{DefaultMessageFormatter, Location, MessageFormatter, Spanned};

use super::error::{PolicyError, PolicyErrors};
use super::set::Claims;
use super::tree::Node;
use super::types::Policy;
use super::validate::{located, validate, Validated};

/// Largest policy file accepted, checked before reading.
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// Parses and validates one policy from YAML text; `file` is used in messages.
pub fn parse_str(src: &str, file: &Path) -> Result<Policy, PolicyErrors> {
    parse_validated(src, file).map(|v| v.policy)
}

/// Reads, parses and validates one policy file.
pub fn load_file(path: &Path) -> Result<Policy, PolicyErrors> {
    load_validated(path).map(|v| v.policy)
}

/// Loads policy files and directories (every `*.yaml`/`*.yml` directly in a
/// directory, sorted by name). Reports every error of every file, and a second
/// policy for a namespace/Deployment that already has one.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<Policy>, PolicyErrors> {
    let mut errors = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for p in paths {
        if p.is_dir() {
            match policy_files_in(p) {
                Ok(found) if found.is_empty() => errors.push(PolicyError::whole_file(
                    p,
                    "no policy files (*.yaml, *.yml) in this directory",
                )),
                Ok(found) => files.extend(found),
                Err(e) => errors.push(PolicyError::whole_file(
                    p,
                    format!("cannot list directory: {e}"),
                )),
            }
        } else {
            files.push(p.clone());
        }
    }
    // The same file named twice (e.g. a directory and a file in it) is loaded once.
    let mut unique: Vec<(PathBuf, PathBuf)> = Vec::new();
    for f in files {
        let key = fs::canonicalize(&f).unwrap_or_else(|_| f.clone());
        if !unique.iter().any(|(k, _)| *k == key) {
            unique.push((key, f));
        }
    }

    let mut policies: Vec<Policy> = Vec::new();
    let mut claims = Claims::default();
    for (_, f) in unique {
        match load_validated(&f) {
            Ok(v) => match claims.claim(&f, &v.policy, v.deployment_at) {
                Ok(()) => policies.push(v.policy),
                Err(e) => errors.push(e),
            },
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(policies)
    } else {
        Err(PolicyErrors(errors))
    }
}

fn policy_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if is_policy_file_name(&path) && path.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Whether a directory entry is read as a policy file: `*.yaml` or `*.yml`.
pub fn is_policy_file_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e == "yaml" || e == "yml")
}

fn too_large(file: &Path, size: u64) -> PolicyError {
    PolicyError::whole_file(
        file,
        format!(
            "file is {size} bytes; policy files are limited to {MAX_POLICY_BYTES} bytes (1 MiB)"
        ),
    )
}

/// Reads, parses and validates one policy file, keeping where it names its
/// Deployment.
pub fn load_validated(path: &Path) -> Result<Validated, PolicyErrors> {
    let bytes = read_policy_bytes(path)?;
    parse_validated_bytes(&bytes, path)
}

/// Reads one policy file's bytes, within [`MAX_POLICY_BYTES`].
pub fn read_policy_bytes(path: &Path) -> Result<Vec<u8>, PolicyErrors> {
    let meta = fs::metadata(path)
        .map_err(|e| PolicyError::whole_file(path, format!("cannot read file: {e}")))?;
    if meta.is_dir() {
        return Err(
            PolicyError::whole_file(path, "expected a policy file, found a directory").into(),
        );
    }
    if meta.len() > MAX_POLICY_BYTES {
        return Err(too_large(path, meta.len()).into());
    }
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(MAX_POLICY_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| PolicyError::whole_file(path, format!("cannot read file: {e}")))?;
    // The file may have grown since the size check.
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(too_large(path, bytes.len() as u64).into());
    }
    Ok(bytes)
}

/// Parses and validates one policy from a file's bytes (UTF-8 YAML); `file`
/// is used in messages.
pub fn parse_validated_bytes(bytes: &[u8], file: &Path) -> Result<Validated, PolicyErrors> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            // Valid prefix, so this cannot fail; the fallback only avoids a panic path.
            let prefix = std::str::from_utf8(good).unwrap_or("");
            let line = prefix.matches('\n').count() + 1;
            let column = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            return Err(PolicyError {
                file: file.to_path_buf(),
                line,
                column,
                path: String::new(),
                message: "expected UTF-8 YAML text, found an invalid byte".into(),
            }
            .into());
        }
    };
    parse_validated(text, file)
}

const EMPTY: &str =
    "file has no YAML document; expected a policy mapping with service, namespace, deployment and analysis";

/// Parses and validates one policy from YAML text, keeping where it names
/// its Deployment; `file` is used in messages.
pub fn parse_validated(src: &str, file: &Path) -> Result<Validated, PolicyErrors> {
    if src.len() as u64 > MAX_POLICY_BYTES {
        return Err(too_large(file, src.len() as u64).into());
    }
    if src.trim().is_empty() {
        return Err(PolicyError::whole_file(file, EMPTY).into());
    }
    // The only serde pass is schema-free, so it stops only at YAML syntax
    // errors; unknown keys, duplicate keys and values of the wrong kind are
    // found while reading the tree, all of them. Non-finite numbers are kept
    // so that the validator rejects them with a field path.
    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
    let tree: Spanned<Node> =
        serde_saphyr::from_str_with_options(src, options).map_err(|e| yaml_error(file, &e))?;
    match &tree.value {
        Node::Map(_) => {}
        Node::Null => return Err(PolicyError::whole_file(file, EMPTY).into()),
        other => {
            return Err(located(
                file,
                tree.referenced,
                "",
                format!(
                    "expected a mapping of policy fields at the top level, found {}",
                    other.kind_name()
                ),
            )
            .into())
        }
    }
    validate(&tree, src, file)
}

/// Converts a serde-saphyr error (YAML syntax, several documents, budgets)
/// into a located policy error.
fn yaml_error(file: &Path, e: &serde_saphyr::Error) -> PolicyError {
    use serde_saphyr::Error as E;
    let mut e = e.without_snippet();
    if let E::AliasError { error, .. } = e {
        e = error.without_snippet();
    }
    let at = e.location().unwrap_or(Location::UNKNOWN);
    let message = match e {
        E::MultipleDocuments { .. } => {
            "expected one YAML document per policy file, found several".into()
        }
        other => format!(
            "invalid YAML: {}",
            one_line(&DefaultMessageFormatter.format_message(other))
        ),
    };
    located(file, at, "", message)
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}
