//! What the unit tests of several modules share.

use cf_allowlist_backend::Ranges;

/// Ranges from their text; panics on a typo in the test.
pub fn ranges(list: &[&str]) -> Ranges {
    list.iter().map(|text| text.parse().unwrap()).collect()
}
