//! The sequence rules a context's batch must meet before any I/O: per aggregate,
//! sequences are contiguous, start right after the sequence the context knows for
//! that aggregate (when it knows one), and none is below 1.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A multiplicative hash for integer ids: ids are not attacker-chosen hash-flooding
/// material here (one batch of one context), and SipHash would cost more than
/// the whole rest of the check.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_i64(&mut self, value: i64) {
        self.0 = (value as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        // Fold the well-mixed high bits into the low bits the table indexes by.
        self.0 ^ (self.0 >> 32)
    }
}

/// Why a batch was refused: the first offending pair, in batch order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// `sequence` is below 1.
    BelowOne { aggregate_id: i64, sequence: i64 },
    /// `sequence` does not follow `previous` (a duplicate, a gap or a step back).
    NotFollowing { aggregate_id: i64, sequence: i64, previous: i64 },
}

impl Violation {
    /// The aggregate and sequence at fault.
    pub fn pair(&self) -> (i64, i64) {
        match *self {
            Violation::BelowOne { aggregate_id, sequence } | Violation::NotFollowing { aggregate_id, sequence, .. } => {
                (aggregate_id, sequence)
            }
        }
    }

    /// The `SequenceError` message, word for word the Python twin's.
    pub fn message(&self) -> String {
        match *self {
            Violation::BelowOne { aggregate_id, sequence } => {
                format!("aggregate {aggregate_id}: sequence {sequence} is below 1")
            }
            Violation::NotFollowing { aggregate_id, sequence, previous } => format!(
                "aggregate {aggregate_id}: sequence {sequence} does not follow {previous} (expected {})",
                i128::from(previous) + 1
            ),
        }
    }
}

/// Outcome of [`validate`]: the batch is fine, breaks a rule, or the lookup of a
/// known sequence failed with the caller's error `E`.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid<E> {
    Rule(Violation),
    Lookup(E),
}

/// Check the `(aggregate id, sequence)` pairs in batch order. `pairs` may fail
/// with the caller's error `E` (a value it cannot read); `known(i)` gives the
/// sequence the context knows for the aggregate of pair `i`, and is asked once
/// per aggregate, at its first pair.
pub fn validate<E>(
    pairs: impl IntoIterator<Item = Result<(i64, i64), E>>,
    mut known: impl FnMut(usize) -> Result<Option<i64>, E>,
) -> Result<(), Invalid<E>> {
    // The last sequence seen per aggregate; None while the aggregate may start anywhere.
    let mut last: HashMap<i64, Option<i64>, BuildHasherDefault<IdHasher>> = HashMap::default();
    for (index, pair) in pairs.into_iter().enumerate() {
        let (aggregate_id, sequence) = pair.map_err(Invalid::Lookup)?;
        if sequence < 1 {
            return Err(Invalid::Rule(Violation::BelowOne { aggregate_id, sequence }));
        }
        let previous = match last.entry(aggregate_id) {
            Entry::Occupied(mut entry) => entry.insert(Some(sequence)),
            Entry::Vacant(entry) => {
                entry.insert(Some(sequence));
                known(index).map_err(Invalid::Lookup)?
            }
        };
        if let Some(previous) = previous {
            if i128::from(sequence) != i128::from(previous) + 1 {
                return Err(Invalid::Rule(Violation::NotFollowing { aggregate_id, sequence, previous }));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ids: &[i64], seqs: &[i64], known: &[(i64, i64)]) -> Result<(), Violation> {
        let known: HashMap<i64, i64> = known.iter().copied().collect();
        let pairs = ids.iter().zip(seqs).map(|(&id, &seq)| Ok((id, seq)));
        validate::<()>(pairs, |i| Ok(known.get(&ids[i]).copied())).map_err(|e| match e {
            Invalid::Rule(v) => v,
            Invalid::Lookup(()) => unreachable!(),
        })
    }

    #[test]
    fn contiguous_batches_pass() {
        assert_eq!(check(&[], &[], &[]), Ok(()));
        assert_eq!(check(&[1, 1, 2, 1, 2], &[1, 2, 5, 3, 6], &[(2, 4)]), Ok(()));
        assert_eq!(check(&[7], &[40], &[]), Ok(()), "an unknown aggregate may start anywhere");
    }

    #[test]
    fn below_one_is_refused() {
        let v = check(&[3], &[0], &[]).unwrap_err();
        assert_eq!(v, Violation::BelowOne { aggregate_id: 3, sequence: 0 });
        assert_eq!(v.message(), "aggregate 3: sequence 0 is below 1");
    }

    #[test]
    fn gaps_duplicates_and_stale_starts_are_refused() {
        assert_eq!(
            check(&[1, 1], &[1, 3], &[]).unwrap_err().message(),
            "aggregate 1: sequence 3 does not follow 1 (expected 2)"
        );
        assert_eq!(check(&[1, 2, 1], &[1, 1, 1], &[]).unwrap_err().pair(), (1, 1));
        assert_eq!(
            check(&[5], &[3], &[(5, 3)]).unwrap_err(),
            Violation::NotFollowing { aggregate_id: 5, sequence: 3, previous: 3 }
        );
    }

    #[test]
    fn expected_sequence_does_not_overflow() {
        let v = check(&[1], &[1], &[(1, i64::MAX)]).unwrap_err();
        assert!(v.message().ends_with("(expected 9223372036854775808)"));
    }

    #[test]
    fn known_is_asked_once_per_aggregate_and_errors_pass_through() {
        let mut asked = Vec::new();
        let ids = [1, 1, 2, 1];
        let pairs = ids.iter().zip([1, 2, 1, 3]).map(|(&id, seq)| Ok((id, seq)));
        validate::<()>(pairs, |i| {
            asked.push(ids[i]);
            Ok(None)
        })
        .unwrap();
        assert_eq!(asked, vec![1, 2]);
        assert_eq!(validate([Ok((1, 1))], |_| Err("boom")), Err(Invalid::Lookup("boom")));
        assert_eq!(validate([Ok((1, 1)), Err("unreadable")], |_| Ok(None)), Err(Invalid::Lookup("unreadable")));
    }
}
