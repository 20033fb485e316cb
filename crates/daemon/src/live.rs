//! A setting that a reload may replace while services read it: each reader takes the
//! value current when it starts (one stream, one policy), and later streams see the new.

use std::sync::{Arc, RwLock};

/// A shared, replaceable value; clones share it.
#[derive(Debug, Default)]
pub struct Live<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Live<T> {
    pub fn new(value: T) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The value now.
    pub fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the value for every later [`Live::get`].
    pub fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
    }
}

impl<T> From<T> for Live<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_taken_stays_while_later_readers_see_the_new_one() {
        let live = Live::new(1);
        let clone = live.clone();
        let taken = live.get();
        clone.set(2);
        assert_eq!((*taken, *live.get()), (1, 2));
    }
}
