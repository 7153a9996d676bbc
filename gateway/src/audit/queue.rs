//! The hand-off from request handlers to the writer thread.
//!
//! A profile of the keep-alive path showed std's bounded channel waking
//! the writer (a futex call under the channel's waker mutex, often
//! contended) for every record: about 9 % of popgate's CPU. Here a record
//! whose sender waits (an access record) unparks the writer, which costs an
//! atomic swap when the writer is already awake and a futex wake only when
//! it sleeps; a record nobody waits for (an outcome) never wakes it and is
//! picked up with the next batch or on the writer's tick.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

struct Shared<T> {
    jobs: Mutex<Vec<T>>,
    /// The writer, once it runs; wakes go nowhere before that, and the
    /// writer looks at the queue before it first sleeps.
    writer: OnceLock<Thread>,
    /// The sending side is gone: the writer drains what is queued and ends.
    closed: AtomicBool,
}

/// Why a record was not queued.
#[derive(Debug)]
pub(super) enum Refused<T> {
    /// `limit` records are already waiting.
    Full(T),
    Closed(T),
}

/// The one sending side; dropping it ends the writer after a last drain.
pub(super) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

pub(super) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

pub(super) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        jobs: Mutex::new(Vec::new()),
        writer: OnceLock::new(),
        closed: AtomicBool::new(false),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

impl<T> Sender<T> {
    /// Queues a record someone waits for and wakes the writer. Refused when
    /// `limit` records are already queued, so a stalled disk turns into
    /// refusals instead of unbounded memory.
    pub(super) fn send(&self, job: T, limit: usize) -> Result<(), Refused<T>> {
        {
            let mut jobs = self.lock();
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(Refused::Closed(job));
            }
            if jobs.len() >= limit {
                return Err(Refused::Full(job));
            }
            jobs.push(job);
        }
        self.wake();
        Ok(())
    }

    /// Queues a record nobody waits for, without waking the writer. Not
    /// bounded: each follows an access record that was already written, so
    /// there are never more than the requests in flight.
    pub(super) fn send_lazy(&self, job: T) -> Result<(), Refused<T>> {
        let mut jobs = self.lock();
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Refused::Closed(job));
        }
        jobs.push(job);
        Ok(())
    }

    fn wake(&self) {
        if let Some(writer) = self.shared.writer.get() {
            writer.unpark();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        // A panic while holding the lock cannot leave the Vec half-pushed.
        self.shared
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.wake();
    }
}

/// What the writer got from one wait.
pub(super) enum Received {
    /// `batch` holds records (in the order they were queued).
    Jobs,
    /// Nothing came within the timeout.
    Idle,
    /// Nothing is queued and the sender is gone.
    Closed,
}

impl<T> Receiver<T> {
    /// Moves everything queued into `batch` (which must be empty), waiting
    /// up to `timeout` for something to arrive. Must be called from the one
    /// writer thread.
    pub(super) fn recv(&self, batch: &mut Vec<T>, timeout: Duration) -> Received {
        let _ = self.shared.writer.set(std::thread::current());
        if self.take(batch) {
            return Received::Jobs;
        }
        if self.shared.closed.load(Ordering::Acquire) {
            // The sender may have queued its last records just before closing.
            return if self.take(batch) {
                Received::Jobs
            } else {
                Received::Closed
            };
        }
        std::thread::park_timeout(timeout);
        if self.take(batch) {
            Received::Jobs
        } else if self.shared.closed.load(Ordering::Acquire) {
            Received::Closed
        } else {
            Received::Idle
        }
    }

    fn take(&self, batch: &mut Vec<T>) -> bool {
        let mut jobs = self
            .shared
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Swapping keeps both vectors' capacity: no allocation per batch.
        std::mem::swap(&mut *jobs, batch);
        !batch.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_arrive_in_order_and_a_full_queue_refuses() {
        let (tx, rx) = channel();
        tx.send(1, 3).expect("room");
        tx.send_lazy(2).expect("open");
        tx.send(3, 3).expect("room");
        assert!(matches!(tx.send(4, 3), Err(Refused::Full(4))));
        let mut batch = Vec::new();
        assert!(matches!(
            rx.recv(&mut batch, Duration::from_millis(1)),
            Received::Jobs
        ));
        assert_eq!(batch, [1, 2, 3]);
    }

    #[test]
    fn a_waiting_writer_wakes_for_a_record_and_ends_after_the_sender() {
        let (tx, rx) = channel::<u32>();
        let writer = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut batch = Vec::new();
            loop {
                match rx.recv(&mut batch, Duration::from_secs(30)) {
                    Received::Jobs => got.append(&mut batch),
                    Received::Idle => {}
                    Received::Closed => return got,
                }
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        let t = std::time::Instant::now();
        tx.send(7, 10).expect("room");
        tx.send_lazy(8).expect("open");
        drop(tx);
        let got = writer.join().expect("writer ends");
        // Woken, not timed out after 30 s; the lazy record drained on close.
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(got, [7, 8]);
    }
}
