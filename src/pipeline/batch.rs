//! Group commit for the workers' writes. Every step run writes the store a few times — the
//! claim, the store-only steps' whole runs, the end of a step whose effect happened outside
//! (a provider call, an email) — and each used to be a transaction and a commit of its own.
//! Commits are what a store does a few thousand of per second, and the contended rows (a
//! SKU's stock, the invoice counter) stay locked until the commit: one commit per invoice
//! makes the invoice series a queue of commits.
//!
//! So a worker process sends those writes here, and a batch loop runs whatever is waiting in
//! one transaction and answers each caller after the commit. A write in a batch behaves as
//! it does alone: a claim that finds nothing claims nothing, a finish whose lease was lost
//! writes nothing. A batch that cannot go through as a whole — an error, a lease lost after
//! a step wrote its effect, a step that wants its own transaction (no stock left) — is
//! rolled back and every write in it runs alone, as it would without batching, so one bad
//! step never fails the others.
//!
//! Inside the transaction the writes are made set-based, a statement for many rows: one
//! claims every step the batch claims, each store-only kind runs all its steps of the batch
//! at once (one read of their orders' items, one insert of their ledger rows, …), one
//! finishes every step, and a handful move every order on. Statements that name every row
//! are not kept prepared (their text varies with the batch), but one statement for 30 rows
//! costs the database far less than 30 round trips.
//!
//! The rows every batch contends for — a SKU's stock, the invoice counter — are written last,
//! once per batch, right before the commit (`steps::tail`): the steps leave their stock
//! decrements and unnumbered invoices there, and the flush deducts each SKU's total (in SKU
//! order, so batches never deadlock) and takes every number the batch needs in one counter
//! update. Those locks are held for a few statements and one commit per batch, not per step.

use std::sync::{Arc, OnceLock, Weak};

use jobs::{StepError, StepKind, Wake};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::Engine;
use crate::steps::send_receipt::{self, SentEmail};
use crate::steps::tail::Tail;
use crate::steps::{self as step_code, StepResult};
use crate::store::steps::{self, Lease};
use crate::store::{StoreError, Tx};

/// The most writes one transaction takes.
const MAX_BATCH: usize = 64;
/// Batch loops per process: one can run statements while another waits for its commit.
const LOOPS: usize = 2;

/// A step's write.
enum Work {
    /// A store-only step's whole run.
    Run(Lease),
    /// The end of a step whose effect happened outside the store.
    Finish {
        lease: Lease,
        outcome: String,
        email: Option<SentEmail>,
    },
}

enum Job {
    Claim {
        step_id: i64,
        reply: oneshot::Sender<Result<Option<Lease>, StoreError>>,
    },
    Step {
        work: Box<Work>,
        reply: oneshot::Sender<StepResult>,
    },
}

/// The way into this process's batch loops. Every write also works without them (an
/// engine whose workers are not running): alone, in a transaction of its own.
#[derive(Debug, Default)]
pub struct Batcher {
    jobs: OnceLock<mpsc::UnboundedSender<Job>>,
}

impl Batcher {
    /// Starts the batch loops of `engine` (once; they end with the engine).
    pub fn start(engine: &Arc<Engine>) {
        let (tx, rx) = mpsc::unbounded_channel();
        if engine.batcher.jobs.set(tx).is_err() {
            return;
        }
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..LOOPS {
            tokio::spawn(run(Arc::downgrade(engine), rx.clone()));
        }
    }

    /// Gives `job` to the batch loops; back if none runs.
    fn send(&self, job: Job) -> Option<Job> {
        match self.jobs.get() {
            Some(jobs) => jobs.send(job).err().map(|e| e.0),
            None => Some(job),
        }
    }

    /// Claims a step (see [`crate::store::Store::claim`]).
    pub async fn claim(&self, e: &Engine, step_id: i64) -> Result<Option<Lease>, StoreError> {
        let (reply, answer) = oneshot::channel();
        if self.send(Job::Claim { step_id, reply }).is_none() {
            // No answer: the loop went away mid-batch (the runtime is stopping).
            return answer
                .await
                .unwrap_or_else(|_| Err(StoreError::Other("step writer stopped".into())));
        }
        claim_alone(e, step_id).await
    }

    /// Runs a claimed store-only step.
    pub async fn run(&self, e: &Engine, lease: &Lease) -> StepResult {
        self.step(e, Work::Run(lease.clone())).await
    }

    /// Marks a claimed step done with `outcome` and moves its order on (see
    /// [`super::complete`]); with `email`, records in the same commit that it was sent.
    pub async fn finish(
        &self,
        e: &Engine,
        lease: &Lease,
        outcome: String,
        email: Option<SentEmail>,
    ) -> StepResult {
        let work = Work::Finish {
            lease: lease.clone(),
            outcome,
            email,
        };
        self.step(e, work).await
    }

    async fn step(&self, e: &Engine, work: Work) -> StepResult {
        let (reply, answer) = oneshot::channel();
        let work = Box::new(work);
        match self.send(Job::Step { work, reply }) {
            // No answer: as above. What the batch committed holds; a write made again
            // finds the step no longer leased to it.
            None => answer
                .await
                .unwrap_or_else(|_| Err(StepError::Transient("step writer stopped".into()))),
            Some(Job::Step { work, .. }) => alone(e, &work).await,
            Some(Job::Claim { .. }) => Ok(Vec::new()),
        }
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

async fn run(engine: Weak<Engine>, rx: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            jobs.push(first);
            while jobs.len() < MAX_BATCH
                && let Ok(j) = rx.try_recv()
            {
                jobs.push(j);
            }
        }
        let Some(e) = engine.upgrade() else {
            return;
        };
        batch(&e, jobs).await;
    }
}

/// Runs `jobs` in one transaction, or each alone if that fails.
async fn batch(e: &Engine, jobs: Vec<Job>) {
    if jobs.len() > 1
        && let Some(outcomes) = together(e, &jobs).await
    {
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            match (job, outcome) {
                (Job::Claim { reply, .. }, Outcome::Claimed(l)) => {
                    drop(reply.send(Ok(l.map(|l| *l))))
                }
                (Job::Step { reply, .. }, Outcome::Ran(w)) => drop(reply.send(Ok(w))),
                // Each outcome comes from its own job's kind of write.
                _ => {}
            }
        }
        return;
    }
    for job in jobs {
        match job {
            Job::Claim { step_id, reply } => drop(reply.send(claim_alone(e, step_id).await)),
            Job::Step { work, reply } => {
                if let Work::Run(l) | Work::Finish { lease: l, .. } = &*work
                    && let Some(c) = &l.chain
                {
                    // A claim made by a batch that was rolled back is no claim.
                    *c.next.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                drop(reply.send(alone(e, &work).await));
            }
        }
    }
}

enum Outcome {
    Claimed(Option<Box<Lease>>),
    Ran(Vec<Wake>),
}

/// All of `jobs` in one transaction; `None` if it was rolled back. The writes to the steps
/// table are made for the whole batch at once — one statement claims every step claimed,
/// one finishes every step finished, a handful move every order on — and between them each
/// store-only step runs its own statements.
async fn together(e: &Engine, jobs: &[Job]) -> Option<Vec<Outcome>> {
    let mut tx = e.store.begin().await.ok()?;
    let mut tail = Tail::default();
    let claims: Vec<i64> = jobs
        .iter()
        .filter_map(|j| match j {
            Job::Claim { step_id, .. } => Some(*step_id),
            Job::Step { .. } => None,
        })
        .collect();
    let mut claimed = steps::claim_many(&mut tx, &claims, e.config.queue.lease_ms, &e.worker)
        .await
        .ok()?;
    // The store-only steps' runs, each kind's all at once.
    let runs: Vec<&Lease> = jobs
        .iter()
        .filter_map(|j| match j {
            Job::Step { work, .. } => match &**work {
                Work::Run(lease) => Some(lease),
                Work::Finish { .. } => None,
            },
            Job::Claim { .. } => None,
        })
        .collect();
    let mut ran: Vec<(i64, String)> = Vec::with_capacity(runs.len());
    for kind in StepKind::ALL {
        let of_kind: Vec<&Lease> = runs
            .iter()
            .copied()
            .filter(|l| StepKind::parse(&l.step.kind) == Some(kind))
            .collect();
        if of_kind.is_empty() {
            continue;
        }
        let outcomes = apply(e, &mut tx, kind, &of_kind, &mut tail).await.ok()?;
        ran.extend(of_kind.iter().map(|l| l.step.id).zip(outcomes));
    }
    // Per step job: its lease, its outcome, and (a finish) the email it sent.
    let mut done: Vec<(&Lease, String, Option<&SentEmail>)> = Vec::new();
    for job in jobs {
        let Job::Step { work, .. } = job else {
            continue;
        };
        done.push(match &**work {
            Work::Run(lease) => {
                // None: a kind that is not store-only; alone, it fails as such.
                let i = ran.iter().position(|r| r.0 == lease.step.id)?;
                (lease, ran.swap_remove(i).1, None)
            }
            Work::Finish {
                lease,
                outcome,
                email,
            } => (lease, outcome.clone(), email.as_ref()),
        });
    }
    let rows: Vec<(&Lease, &str)> = done.iter().map(|d| (d.0, d.1.as_str())).collect();
    let finished = steps::finish_many(&mut tx, &rows).await.ok()?;
    // A store-only step whose lease was lost must not keep what it wrote: all alone, then.
    // A finish whose lease was lost writes nothing (its effect happened outside anyway).
    let mut moved = Vec::new();
    for (lease, _, email) in &done {
        if finished.contains(&lease.step.id) {
            moved.push(*lease);
            if let Some(m) = email {
                send_receipt::record(&mut tx, m).await.ok()?;
            }
        } else if runs.iter().any(|r| r.step.id == lease.step.id) {
            return None;
        } else {
            tracing::warn!(
                step_id = lease.step.id,
                "lease lost before commit; nothing recorded"
            );
        }
    }
    let mut wakes = step_code::advance(&mut tx, &moved).await.ok()?.into_iter();
    if !tail.flush(e, &mut tx).await.ok()? {
        return None;
    }
    if let Err(err) = tx.commit().await {
        tracing::warn!(error = %err, "step batch commit failed; making its writes one by one");
        return None;
    }
    let mut out = Vec::with_capacity(jobs.len());
    let mut done = done.into_iter();
    for job in jobs {
        out.push(match job {
            Job::Claim { step_id, .. } => Outcome::Claimed(
                claimed
                    .iter()
                    .position(|l| l.step.id == *step_id)
                    .map(|i| Box::new(claimed.swap_remove(i))),
            ),
            Job::Step { .. } => {
                let finished_now = done
                    .next()
                    .is_some_and(|(l, ..)| finished.contains(&l.step.id));
                Outcome::Ran(if finished_now {
                    wakes.next().unwrap_or_default()
                } else {
                    Vec::new()
                })
            }
        });
    }
    Some(out)
}

async fn claim_alone(e: &Engine, step_id: i64) -> Result<Option<Lease>, StoreError> {
    e.store
        .claim(step_id, e.config.queue.lease_ms, &e.worker)
        .await
}

/// A finish: the step, then the email record; a lost lease writes neither.
async fn finish_in(
    tx: &mut Tx,
    lease: &Lease,
    outcome: &str,
    email: &Option<SentEmail>,
) -> StepResult {
    let Some(wake) = step_code::finish(tx, lease, outcome).await? else {
        return Ok(Vec::new());
    };
    if let Some(m) = email {
        send_receipt::record(tx, m).await?;
    }
    Ok(wake)
}

/// The runs of store-only steps of `kind` in `tx`: each one's outcome.
async fn apply(
    e: &Engine,
    tx: &mut Tx,
    kind: StepKind,
    leases: &[&Lease],
    tail: &mut Tail,
) -> Result<Vec<String>, StepError> {
    step_code::of(kind).run_batch(e, tx, leases, tail).await
}

/// One step's write in a transaction of its own.
async fn alone(e: &Engine, work: &Work) -> StepResult {
    let mut tx = e.store.begin().await?;
    let wake = match work {
        Work::Finish {
            lease,
            outcome,
            email,
        } => finish_in(&mut tx, lease, outcome, email).await?,
        Work::Run(lease) => {
            let mut tail = Tail::default();
            let kind = StepKind::parse(&lease.step.kind).ok_or_else(|| {
                StepError::Permanent(format!("unknown step kind {:?}", lease.step.kind))
            })?;
            let outcome = apply(e, &mut tx, kind, &[lease], &mut tail)
                .await?
                .swap_remove(0);
            let Some(wake) = step_code::finish(&mut tx, lease, &outcome).await? else {
                tx.rollback().await.map_err(StoreError::from)?;
                return Ok(Vec::new());
            };
            if !tail.flush(e, &mut tx).await? {
                // The step's own way out (no stock left: the refund path), in a transaction
                // of its own.
                tx.rollback().await.map_err(StoreError::from)?;
                return step_code::of(kind).refused(e, lease).await;
            }
            wake
        }
    };
    tx.commit().await.map_err(StoreError::from)?;
    Ok(wake)
}
