//! Where a sample's slot goes in a deque kept in ascending slot order.

use std::collections::VecDeque;

/// The position of the first item whose `key` is not below `index` (as
/// `VecDeque::partition_point`), in `items` with distinct keys in ascending order. The back is checked first: a device's samples arrive mostly
/// in the order of its clock, so nearly every sample belongs in the newest slot or a new
/// one after it, and the binary search (over a ring that wraps) was a visible part of the
/// collector's cost per frame.
pub(crate) fn position<T>(items: &VecDeque<T>, index: u64, key: impl Fn(&T) -> u64) -> usize {
    match items.back().map(&key) {
        Some(last) if last < index => items.len(),
        Some(last) if last == index => items.len() - 1,
        _ => items.partition_point(|item| key(item) < index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_partition_point() {
        let items: VecDeque<u64> = [3, 5, 6, 9].into_iter().collect();
        for index in 0..12 {
            assert_eq!(position(&items, index, |v| *v), items.partition_point(|v| *v < index), "index {index}");
        }
        assert_eq!(position(&VecDeque::<u64>::new(), 4, |v| *v), 0);
    }
}
