//! The subscription scan over a columnar log: which positions a reader gets.

/// Positions `start..length`, in order, for which `matches` holds, stopping at
/// `limit` of them (`limit` 0 gives none). `matches` may fail with the caller's
/// error, which ends the scan.
pub fn select<E>(
    length: usize,
    start: usize,
    limit: usize,
    mut matches: impl FnMut(usize) -> Result<bool, E>,
) -> Result<Vec<usize>, E> {
    let mut positions = Vec::new();
    if limit == 0 {
        return Ok(positions);
    }
    for index in start..length {
        if matches(index)? {
            positions.push(index);
            if positions.len() == limit {
                break;
            }
        }
    }
    Ok(positions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn even(index: usize) -> Result<bool, ()> {
        Ok(index.is_multiple_of(2))
    }

    #[test]
    fn selects_in_order_from_start_up_to_limit() {
        assert_eq!(select(10, 3, 100, even), Ok(vec![4, 6, 8]));
        assert_eq!(select(10, 0, 2, even), Ok(vec![0, 2]));
        assert_eq!(select(10, 0, 0, even), Ok(vec![]));
        assert_eq!(select(10, 11, 5, even), Ok(vec![]));
        assert_eq!(select(0, 0, 5, even), Ok(vec![]));
    }

    #[test]
    fn errors_end_the_scan() {
        let mut asked = Vec::new();
        let result = select(10, 0, 5, |index| {
            asked.push(index);
            if index == 2 {
                Err("unreadable")
            } else {
                Ok(true)
            }
        });
        assert_eq!(result, Err("unreadable"));
        assert_eq!(asked, vec![0, 1, 2]);
    }
}
