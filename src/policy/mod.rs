//! Policy files: located node tree → raw types → `validate()` (collects every
//! error) → typed [`Policy`].
//!
//! Entry points: [`parse_str`], [`load_file`] and [`load_paths`]. Every problem
//! is a [`PolicyError`] located as `file:line:column: field.path: message`.

pub mod defaults;
mod error;
mod load;
mod raw;
mod set;
mod tree;
mod types;
mod validate;
mod values;

pub use defaults::{default_metrics, DEFAULT_ALPHA, DEFAULT_MIN_REQUESTS_PER_STEP};
pub use error::{PolicyError, PolicyErrors};
pub use load::{
    is_policy_file_name, load_file, load_paths, load_validated, parse_str, parse_validated,
    parse_validated_bytes, read_policy_bytes, MAX_POLICY_BYTES,
};
pub(crate) use set::Claims;
pub use set::{PolicySet, Target};
pub use types::*;
pub use validate::{Validated, MAX_METRIC_NAME_BYTES};
pub use values::{window_increase_calls, WindowIncreaseCall, WINDOW_INCREASE};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    #[test]
    fn default_metrics_validate_as_templates() {
        let m = default_metrics();
        assert_eq!(m.len(), 2);
        let MetricKind::Errors { errors, total } = &m[0].kind else {
            panic!("errors metric expected");
        };
        assert_eq!(
            errors.0,
            r#"sum(window_increase(http_requests_total{namespace="{{namespace}}",pod=~"{{podRegex}}",code=~"5.."}))"#
        );
        assert_eq!(
            total.0,
            r#"sum(window_increase(http_requests_total{namespace="{{namespace}}",pod=~"{{podRegex}}"}))"#
        );
        let MetricKind::Latency { buckets } = &m[1].kind else {
            panic!("latency metric expected");
        };
        assert_eq!(
            buckets.0,
            r#"sum by (le) (window_increase(http_request_duration_seconds_bucket{namespace="{{namespace}}",pod=~"{{podRegex}}"}))"#
        );
        for t in [errors, total, buckets] {
            assert!(values::check_template(&t.0).is_empty(), "{}", t.0);
            assert_eq!(
                window_increase_calls(&t.0).map(|c| c.len()),
                Ok(1),
                "{}",
                t.0
            );
        }
        assert!(m[0].critical && !m[1].critical);
        assert_eq!((m[0].min_effect, m[1].min_effect), (0.5, 0.1));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_str(&text, Path::new("fuzz.yaml"));
        }

        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,300}") {
            let _ = parse_str(&s, Path::new("fuzz.yaml"));
        }

        #[test]
        fn yaml_like_strings_never_panic(
            s in "(service|namespace|analysis|strategy|steps|size|weight|observe|prometheus|url|metrics|- |: |\\{|\\}|\\[|\\]|\"|'|&a|\\*a|\\n|  |[0-9]{1,3}%?|[a-z]{1,4}|\\{\\{podRegex\\}\\}){0,60}"
        ) {
            let _ = parse_str(&s, Path::new("fuzz.yaml"));
        }

        #[test]
        fn valid_policies_survive_field_deletion(cut in 0usize..1200, len in 0usize..40) {
            let src = include_str!("../../policies/shop.yaml");
            let cut = cut.min(src.len());
            let end = (cut + len).min(src.len());
            if src.is_char_boundary(cut) && src.is_char_boundary(end) {
                let mutated = format!("{}{}", &src[..cut], &src[end..]);
                match parse_str(&mutated, Path::new("shop.yaml")) {
                    Ok(_) => {}
                    Err(e) => prop_assert!(!e.is_empty()),
                }
            }
        }
    }
}
