//! `placeOrder` in batches on PostgreSQL ([`commerce_core::orders::batch`]).
//!
//! Each request prices its order itself; the writers then place the orders that are waiting
//! together in one transaction (at most [`MAX_ORDERS`]). Under load an order costs the
//! database a share of a batch's dozen statements instead of its own dozen; alone, an order
//! waits for nothing and is a batch of one. Two writers run, so one batch is gathered while
//! the other is written. A writer announces its batch's orders (stock and status) in the
//! order it placed them, before answering their requests. An order whose variant another
//! transaction holds (the other writer's batch, a large order, a stock change) waits, holding
//! no connection, and is tried again after a pause (2 ms, doubling while it stays held, up to
//! 4 ms), at most half a batch of such orders at a time so the orders behind them keep
//! flowing, until it is placed or its request is gone. An
//! order a batch does not place for good (short of stock, a repeat, a failed batch) is placed
//! alone by its request, which answers and announces it as ever.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use commerce_core::orders::batch::{Batched, MAX_ORDERS, PricedOrder, place_batch};
use commerce_core::orders::service::Placed;
use sea_orm::DatabaseConnection;

use crate::bus::EventBus;
use crate::graphql::orders::announce_on;
use crate::metrics::{ORDER_BATCH_SIZE, ORDERS_PLACED_ALONE_TOTAL};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;

/// Batches written at once.
const WRITERS: usize = 2;
/// How long a writer waits before it tries again orders whose variants were held (doubled
/// after each try that placed none of them, up to [`MAX_BUSY_PAUSE`]).
const BUSY_PAUSE: Duration = Duration::from_millis(2);
const MAX_BUSY_PAUSE: Duration = Duration::from_millis(4);

type Waiting = (PricedOrder, oneshot::Sender<Option<Placed>>);

pub struct OrderBatches {
    queue: mpsc::Sender<Waiting>,
}

impl OrderBatches {
    /// The writers (tasks of the current runtime; they end with the last handle). They
    /// announce what they placed on `bus`.
    pub fn new(db: DatabaseConnection, bus: EventBus) -> Self {
        let (queue, waiting) = mpsc::channel::<Waiting>(4 * MAX_ORDERS);
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..WRITERS {
            tokio::spawn(write_batches(db.clone(), bus.clone(), waiting.clone()));
        }
        Self { queue }
    }

    /// Places `order` in the next batch: what placing did (announced already), or `None`
    /// when the caller must place it alone.
    pub async fn place(&self, order: PricedOrder) -> Option<Placed> {
        if !order.batchable() {
            return None;
        }
        let (reply, answer) = oneshot::channel();
        self.queue.send((order, reply)).await.ok()?;
        answer.await.ok().flatten()
    }
}

async fn write_batches(
    db: DatabaseConnection,
    bus: EventBus,
    waiting: Arc<Mutex<mpsc::Receiver<Waiting>>>,
) {
    // Orders whose variants another transaction held: tried again from `busy_due` on, at
    // most half a batch at a time, so the orders behind them keep flowing. Each fruitless
    // try doubles the pause (up to MAX_BUSY_PAUSE).
    let mut busy: VecDeque<Waiting> = VecDeque::new();
    let mut busy_pause = BUSY_PAUSE;
    let mut busy_due = Instant::now();
    loop {
        let mut batch: Vec<Waiting> = Vec::new();
        if !busy.is_empty() && Instant::now() >= busy_due {
            let retried = busy.len().min(MAX_ORDERS / 2);
            batch.extend(busy.drain(..retried));
        }
        let retried = batch.len();
        // With orders to retry, more are taken only if the other writer is not waiting for
        // the queue (it holds it while it waits).
        let queue = if !batch.is_empty() {
            waiting.try_lock().ok()
        } else if busy.is_empty() {
            Some(waiting.lock().await)
        } else {
            // The other writer may hold the queue while it waits for an order: wait for it
            // only until the held orders are due.
            match tokio::time::timeout_at(busy_due, waiting.lock()).await {
                Ok(queue) => Some(queue),
                Err(_) => continue,
            }
        };
        if let Some(mut waiting) = queue {
            if batch.is_empty() {
                let first = if busy.is_empty() {
                    waiting.recv().await
                } else {
                    // Or until the held orders are due.
                    match tokio::time::timeout_at(busy_due, waiting.recv()).await {
                        Ok(first) => first,
                        Err(_) => continue,
                    }
                };
                let Some(first) = first else {
                    return;
                };
                batch.push(first);
            }
            while batch.len() < MAX_ORDERS {
                match waiting.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        // An order whose request is gone is not placed.
        batch.retain(|(_, reply)| !reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (orders, replies): (Vec<PricedOrder>, Vec<_>) = batch.into_iter().unzip();
        match place_batch(&db, &orders).await {
            Ok(answers) => {
                // In the batch's order: each order's levels carry the versions its own
                // reservations gave them, and a subscriber takes a level's versions in order.
                for answer in &answers {
                    if let Batched::Placed(placed) = answer {
                        announce_on(&bus, &placed.details, &placed.change);
                    }
                }
                let (mut placed, mut alone, mut retried_placed) = (0_u64, 0_u64, false);
                let mut held = false;
                for (index, ((order, reply), answer)) in
                    orders.into_iter().zip(replies).zip(answers).enumerate()
                {
                    match answer {
                        Batched::Placed(done) => {
                            placed += 1;
                            retried_placed |= index < retried;
                            let _ = reply.send(Some(*done));
                        }
                        Batched::Alone => {
                            alone += 1;
                            let _ = reply.send(None);
                        }
                        Batched::Busy => {
                            held = true;
                            busy.push_back((order, reply));
                        }
                    }
                }
                if placed > 0 {
                    metrics::histogram!(ORDER_BATCH_SIZE).record(placed as f64);
                }
                metrics::counter!(ORDERS_PLACED_ALONE_TOTAL, "reason" => "batch").increment(alone);
                if held {
                    busy_pause = match retried_placed {
                        true => BUSY_PAUSE,
                        false if retried > 0 => (busy_pause * 2).min(MAX_BUSY_PAUSE),
                        false => busy_pause,
                    };
                    busy_due = Instant::now() + busy_pause;
                }
            }
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    orders = orders.len(),
                    "placing orders in a batch failed; each is placed alone"
                );
                metrics::counter!(ORDERS_PLACED_ALONE_TOTAL, "reason" => "failed")
                    .increment(replies.len() as u64);
                for reply in replies {
                    let _ = reply.send(None);
                }
            }
        }
    }
}
