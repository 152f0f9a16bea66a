//! What a transaction's store-only steps leave for its very end (see `pipeline::batch`):
//! writes to the rows every batch contends for (a SKU's stock, the invoice counter), made
//! once per transaction right before the commit so those locks are held for a few
//! statements and one commit, not per step.
//!
//! Each step kind keeps its own part ([`Tail::part`]) and says how to write it
//! ([`Deferred::flush`]); the executor flushes the parts and knows none of them by name.

use std::any::Any;

use async_trait::async_trait;

use crate::Engine;
use crate::store::{StoreError, Tx};

/// One step kind's writes for the end of a transaction, gathered over its steps.
#[async_trait]
pub trait Deferred: Any + Send + Sync {
    /// Parts flush in this order, lowest first: one that can find the transaction must roll
    /// back (no stock left) goes before one that only writes.
    fn rank(&self) -> u8;

    /// Makes the writes. False when the transaction must roll back (each of its steps then
    /// runs alone).
    async fn flush(&self, e: &Engine, tx: &mut Tx) -> Result<bool, StoreError>;
}

/// The parts of one transaction's end.
#[derive(Default)]
pub struct Tail {
    parts: Vec<Box<dyn Deferred>>,
}

impl Tail {
    /// The part of type `T`, made empty the first time a step asks for it.
    pub fn part<T: Deferred + Default>(&mut self) -> &mut T {
        let at = match self.parts.iter().position(|p| (&**p as &dyn Any).is::<T>()) {
            Some(at) => at,
            None => {
                self.parts.push(Box::new(T::default()));
                self.parts.len() - 1
            }
        };
        (&mut *self.parts[at] as &mut dyn Any)
            .downcast_mut::<T>()
            .expect("the part found is of this type")
    }

    /// Writes every part, in rank order; false when the transaction must roll back.
    pub async fn flush(&mut self, e: &Engine, tx: &mut Tx) -> Result<bool, StoreError> {
        self.parts.sort_by_key(|p| p.rank());
        for p in &self.parts {
            if !p.flush(e, tx).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
