//! The subscription filter over a columnar log: which positions a reader gets.

/// What a subscription reads; a `None` criterion matches everything.
#[derive(Clone, Debug, Default)]
pub struct Criteria<'a> {
    pub aggregate_type_id: Option<i64>,
    pub aggregate_id: Option<i64>,
    /// Sorted, without duplicates (see [`Criteria::event_types`]).
    pub event_type_ids: Option<&'a [i64]>,
}

impl Criteria<'_> {
    /// Sort and deduplicate an event-type set so `matches` can binary-search it.
    pub fn event_types(mut ids: Vec<i64>) -> Vec<i64> {
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Whether one event passes every criterion.
    #[inline]
    pub fn matches(&self, aggregate_type_id: i64, aggregate_id: i64, event_type_id: i64) -> bool {
        self.aggregate_type_id.is_none_or(|wanted| wanted == aggregate_type_id)
            && self.aggregate_id.is_none_or(|wanted| wanted == aggregate_id)
            && self
                .event_type_ids
                .is_none_or(|wanted| match wanted.len() {
                    0..=8 => wanted.contains(&event_type_id),
                    _ => wanted.binary_search(&event_type_id).is_ok(),
                })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_criterion_must_match() {
        let types = Criteria::event_types(vec![9, 3, 3]);
        assert_eq!(types, vec![3, 9]);
        let criteria = Criteria {
            aggregate_type_id: Some(1),
            aggregate_id: None,
            event_type_ids: Some(&types),
        };
        assert!(criteria.matches(1, 42, 9));
        assert!(!criteria.matches(2, 42, 9));
        assert!(!criteria.matches(1, 42, 4));
        assert!(Criteria::default().matches(5, 6, 7));
        let none = Criteria { event_type_ids: Some(&[]), ..Criteria::default() };
        assert!(!none.matches(1, 1, 1), "an empty type set matches nothing");
    }

    #[test]
    fn large_type_sets_are_searched() {
        let types = Criteria::event_types((0..100).map(|i| i * 2).collect());
        let criteria = Criteria { event_type_ids: Some(&types), ..Criteria::default() };
        assert!(criteria.matches(0, 0, 198));
        assert!(!criteria.matches(0, 0, 199));
    }
}
