//! "Did you mean …?": the closest valid name to a mistyped one.

/// The candidate closest to `typed`, if it is close enough to be a plausible typo.
///
/// Closeness is the Damerau–Levenshtein distance (a swap of two letters counts once); a
/// candidate qualifies within a third of the longer name's length (at least 1) and when not
/// every letter of the longer name would change (`aa` suggests `a`; `x` does not suggest
/// `a`); one that differs only in case always does.
pub fn did_you_mean<'a>(
    typed: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = typed.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != typed)
        .map(|c| {
            let distance = if c.to_lowercase() == lower {
                0
            } else {
                strsim::damerau_levenshtein(&lower, &c.to_lowercase())
            };
            (distance, c)
        })
        .filter(|(distance, c)| {
            let (a, b) = (typed.chars().count(), c.chars().count());
            *distance <= (a.max(b) / 3).max(1) && *distance < a.max(b)
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn a_swapped_pair_of_letters_is_found() {
        assert_eq!(
            did_you_mean("depnds_on", ["depends_on", "description"]),
            Some("depends_on")
        );
        assert_eq!(
            did_you_mean("retires", ["retries", "timeout"]),
            Some("retries")
        );
    }

    #[test]
    fn a_name_far_from_every_candidate_gets_no_suggestion() {
        assert_eq!(did_you_mean("banana", ["depends_on", "retries"]), None);
    }

    #[test]
    fn a_doubled_letter_finds_the_short_name() {
        assert_eq!(did_you_mean("aa", ["a", "b"]), Some("a"));
    }

    #[test]
    fn one_letter_names_are_not_suggested_for_other_one_letter_names() {
        assert_eq!(did_you_mean("x", ["a", "b"]), None);
    }

    #[test]
    fn case_only_differences_are_suggested() {
        assert_eq!(
            did_you_mean("All_Success", ["all_success", "all_failed"]),
            Some("all_success")
        );
    }
}
