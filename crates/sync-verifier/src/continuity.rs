//! Continuity of one stream of one symbol, pure and clock-free: aggregate ids step by 1,
//! kline open times by the interval. A record past the next expected key opens a gap; a
//! record inside a gap fills it; a gap heals when every key in it arrived. The contiguous
//! watermark is the last key before which nothing is missing.

/// One hole: keys `first..=last` (in steps) were missing when it opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The ledger row, once stored (0 before).
    pub id: i64,
    pub first: i64,
    pub last: i64,
    /// The parts still missing, ordered and disjoint.
    pub missing: Vec<(i64, i64)>,
}

impl Gap {
    pub fn new(first: i64, last: i64) -> Self {
        Self {
            id: 0,
            first,
            last,
            missing: vec![(first, last)],
        }
    }

    /// Keys still missing.
    pub fn missing_count(&self, step: i64) -> i64 {
        self.missing
            .iter()
            .map(|(a, b)| b.saturating_sub(*a) / step + 1)
            .fold(0, i64::saturating_add)
    }

    /// Removes `key`; whether it was missing.
    fn fill(&mut self, key: i64, step: i64) -> bool {
        let Some(i) = self
            .missing
            .iter()
            .position(|(a, b)| *a <= key && key <= *b)
        else {
            return false;
        };
        let (a, b) = self.missing.remove(i);
        if let Some(after) = key.checked_add(step).filter(|n| *n <= b) {
            self.missing.insert(i, (after, b));
        }
        if let Some(before) = key.checked_sub(step).filter(|n| a <= *n) {
            self.missing.insert(i, (a, before));
        }
        true
    }
}

/// What one record did to the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The first record ever seen of this stream.
    Started,
    /// The next expected record.
    Advanced,
    /// A gap opened before this record.
    GapOpened(Gap),
    /// The record filled part of the gap that starts at `gap_first`.
    Filled { gap_first: i64 },
    /// The record filled the last missing key of the gap.
    Healed(Gap),
    /// Seen before (or older than everything tracked).
    Duplicate,
}

/// Continuity state of one (symbol, stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuity {
    pub step: i64,
    /// The newest key seen.
    pub max_seen: Option<i64>,
    pub gaps: Vec<Gap>,
}

impl Continuity {
    pub fn new(step: i64) -> Self {
        Self {
            step,
            max_seen: None,
            gaps: Vec::new(),
        }
    }

    /// Resumes from stored state.
    pub fn resume(step: i64, max_seen: Option<i64>, gaps: Vec<Gap>) -> Self {
        Self {
            step,
            max_seen,
            gaps,
        }
    }

    /// The last key before which nothing is missing.
    pub fn watermark(&self) -> Option<i64> {
        match self
            .gaps
            .iter()
            .filter_map(|g| g.missing.first())
            .map(|(a, _)| *a)
            .min()
        {
            Some(first_missing) => Some(first_missing - self.step),
            None => self.max_seen,
        }
    }

    /// Takes one record's key (keys are ids or times checked to be non-negative; the
    /// arithmetic still never overflows).
    pub fn observe(&mut self, key: i64) -> Effect {
        let Some(max) = self.max_seen else {
            self.max_seen = Some(key);
            return Effect::Started;
        };
        let Some(next) = max.checked_add(self.step) else {
            return self.fill(key); // nothing can follow the largest key
        };
        if key == next {
            self.max_seen = Some(key);
            return Effect::Advanced;
        }
        if key > next {
            self.max_seen = Some(key);
            let gap = Gap::new(next, key - self.step);
            self.gaps.push(gap.clone());
            return Effect::GapOpened(gap);
        }
        self.fill(key)
    }

    fn fill(&mut self, key: i64) -> Effect {
        let step = self.step;
        let Some(i) = self.gaps.iter_mut().position(|g| g.fill(key, step)) else {
            return Effect::Duplicate;
        };
        if self.gaps[i].missing.is_empty() {
            return Effect::Healed(self.gaps.remove(i));
        }
        Effect::Filled {
            gap_first: self.gaps[i].first,
        }
    }

    /// Keys missing between the watermark and `head` (the exchange's newest key, when
    /// known): the gaps' missing keys plus what lies beyond the newest key seen.
    pub fn missing_to(&self, head: Option<i64>) -> i64 {
        let gaps: i64 = self
            .gaps
            .iter()
            .map(|g| g.missing_count(self.step))
            .fold(0, i64::saturating_add);
        let beyond = match (head, self.max_seen) {
            (Some(h), Some(m)) => (h.saturating_sub(m) / self.step).max(0),
            _ => 0,
        };
        gaps.saturating_add(beyond)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_records_advance_the_watermark() {
        let mut s = Continuity::new(1);
        assert_eq!(s.observe(10), Effect::Started);
        assert_eq!(s.observe(11), Effect::Advanced);
        assert_eq!(s.watermark(), Some(11));
        assert_eq!(s.observe(11), Effect::Duplicate);
        assert_eq!(s.observe(3), Effect::Duplicate);
    }

    #[test]
    fn a_hole_opens_a_gap_that_heals_out_of_order() {
        let mut s = Continuity::new(1);
        s.observe(10);
        assert_eq!(s.observe(15), Effect::GapOpened(Gap::new(11, 14)));
        assert_eq!(s.watermark(), Some(10));
        assert_eq!(s.missing_to(Some(20)), 4 + 5);
        assert_eq!(s.missing_to(None), 4);
        assert_eq!(s.missing_to(Some(i64::MIN)), 4, "an old head adds nothing");
        assert_eq!(s.observe(13), Effect::Filled { gap_first: 11 });
        assert_eq!(s.gaps[0].missing, vec![(11, 12), (14, 14)]);
        assert_eq!(s.observe(13), Effect::Duplicate);
        s.observe(11);
        s.observe(14);
        assert_eq!(s.watermark(), Some(11));
        let Effect::Healed(g) = s.observe(12) else {
            panic!("not healed")
        };
        assert_eq!((g.first, g.last), (11, 14));
        assert_eq!(s.watermark(), Some(15));
        assert!(s.gaps.is_empty());
    }

    #[test]
    fn kline_open_times_step_by_the_interval() {
        let mut s = Continuity::new(60_000);
        s.observe(0);
        assert_eq!(s.observe(60_000), Effect::Advanced);
        assert_eq!(
            s.observe(240_000),
            Effect::GapOpened(Gap::new(120_000, 180_000))
        );
        assert_eq!(s.gaps[0].missing_count(60_000), 2);
        assert_eq!(s.missing_to(Some(300_000)), 2 + 1);
    }

    #[test]
    fn keys_at_the_edge_of_i64_never_overflow() {
        let mut s = Continuity::new(1);
        s.observe(i64::MAX - 1);
        assert_eq!(s.observe(i64::MAX), Effect::Advanced);
        assert_eq!(s.observe(i64::MAX), Effect::Duplicate);
        assert_eq!(s.missing_to(Some(i64::MAX)), 0);
        let mut k = Continuity::new(60_000);
        k.observe(0);
        assert!(matches!(k.observe(i64::MAX - 7), Effect::GapOpened(_)));
        assert!(
            k.missing_to(Some(i64::MAX)) > 0,
            "a huge gap counts, saturated"
        );
        let mut g = Gap::new(0, i64::MAX);
        assert!(g.fill(i64::MAX, 1) && g.fill(0, 1));
        assert_eq!(g.missing, vec![(1, i64::MAX - 1)]);
    }

    #[test]
    fn two_gaps_heal_independently_and_the_watermark_follows_the_oldest() {
        let mut s = Continuity::new(1);
        s.observe(1);
        s.observe(5); // gap 2..4
        s.observe(9); // gap 6..8
        assert_eq!(s.watermark(), Some(1));
        for k in 2..=4 {
            s.observe(k);
        }
        assert_eq!(s.watermark(), Some(5));
        for k in 6..=8 {
            s.observe(k);
        }
        assert_eq!(s.watermark(), Some(9));
    }
}
