//! Where a pipelined statement goes: which connection (a *lane*) may take one more, and, with
//! adaptive pipelining, how deep each lane may be and how many lanes the pool fills.
//!
//! Fixed depth ([`PoolBuilder::pipeline`](crate::PoolBuilder::pipeline)): a statement goes to the
//! connection with the fewest in flight below the depth, skipping a connection that has finished
//! none of its statements for `pipeline_stall`.
//!
//! Adaptive ([`PoolBuilder::adaptive_pipelining`](crate::PoolBuilder::adaptive_pipelining)), like
//! a congestion controller, from what the pool measures as statements finish:
//!
//! * **Depth follows latency.** Each lane measures its service time (the time between two of its
//!   statements finishing while it stayed busy) and may hold as many statements as finish within
//!   a wait budget of eight unloaded round trips (the fastest a statement sent alone came back,
//!   over the last seconds; at least 500 µs, at most `pipeline_stall`). Fast statements pipeline
//!   deep (`SELECT 1` on loopback: 5–10 µs each, so the cap of 32); a lane whose statements take
//!   a millisecond holds one at a time, so nobody queues behind a slow statement.
//! * **Few lanes, filled.** A statement joins the fullest lane with room, and a new lane opens
//!   only when the lanes in use are full and fewer than the pool's *lane count*; otherwise it
//!   waits in the pool's queue, first come first served, for the next statement to finish.
//!   Statements that wait in the pool are not exposed to one backend's stall, and fewer busy
//!   backends compete less for the server's CPU: on the 2-core machine of the benchmark, 64
//!   callers on one lane of 32 ran 2.4× deadpool-postgres with a lower p99, two lanes of 32 the
//!   same throughput with a p99 four times higher.
//! * **The lane count follows throughput.** It starts at 1. While callers wait because the lanes
//!   are full, the pool tries one more lane for an epoch (100 ms, or longer until 200 statements
//!   finished) and keeps it only if statements per second rose by 25 %; it also tries one lane
//!   fewer and keeps that unless throughput fell by 10 %. A trial that does not pay is tried
//!   again after twice as many epochs as the last time (16 first, at most 256, about 26 s).
//! * **Stalled lanes are routed around.** A lane that has finished nothing for the wait budget
//!   takes no new statement, and neither it nor a lane held to one statement by slow ones counts
//!   against the lane count: new statements open other lanes instead of waiting behind it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::debug;

/// Most distinct statements the pool remembers as safe to pipeline (see [`Learned`]).
const LEARNED_STATEMENTS: usize = 1024;

/// Smallest wait budget: below it, ordinary scheduling hiccups of a loaded machine (a few hundred
/// microseconds) would mark lanes stalled.
const MIN_WAIT_BUDGET: Duration = Duration::from_micros(500);

/// The wait budget in unloaded round trips.
const BUDGET_ROUND_TRIPS: u32 = 8;

/// Shortest epoch over which throughput is compared. On the 2-core benchmark machine, shared
/// with other work, 50 ms epochs of the same setting differed by ±10 %; 100 ms by less.
const EPOCH: Duration = Duration::from_millis(100);

/// Fewest statements an epoch must count (a slow pool's epochs last longer).
const EPOCH_STATEMENTS: u64 = 200;

/// An epoch longer than this (the pool was quiet) is not compared.
const EPOCH_MAX: Duration = Duration::from_secs(1);

/// How long the fastest lone statement is remembered as the unloaded round trip: two windows of
/// this length.
const BASE_WINDOW: Duration = Duration::from_secs(2);

/// A trial of one more lane is kept when it raised statements per second by this factor: well
/// above the noise between epochs (100 ms epochs of one setting on the shared 2-core benchmark
/// machine ranged ±15 % around their mean), while a lane that adds a backend's worth of server
/// capacity gains far more.
const KEEP_MORE: f64 = 1.25;

/// A trial of one lane fewer is kept unless it lowered statements per second below this factor
/// (fewer lanes expose fewer statements to a backend's stall, so they win a tie).
const KEEP_FEWER: f64 = 0.90;

/// Epochs without a trial measured before the next trial starts.
const BASELINE_EPOCHS: u32 = 3;

/// Epochs a trial is measured over.
const TRIAL_EPOCHS: u32 = 2;

/// Epochs without a trial in one direction after the first trial in it failed; doubled by
/// every further failure, up to [`MAX_BACKOFF`]. A steady load that one more lane does not help
/// then spends two epochs in 256 (under 1 % of the time) finding that out again.
const FIRST_BACKOFF: u32 = 16;

/// The pool's first epochs, while connections warm up and statements are prepared, are no
/// baseline (the first of the benchmark's ran 30 % below the rest).
const WARM_UP_EPOCHS: u32 = 2;

/// Most epochs between two trials in one direction.
const MAX_BACKOFF: u32 = 256;

/// The statements seen to leave a connection idle when run alone from idle: only these are
/// pipelined (a statement that opens a transaction block would pull the statements sent after it
/// into the block). Learned from ReadyForQuery, never from SQL text.
///
/// With adaptive pipelining it also keeps how long each statement's latest lone run took, and
/// from the fastest lone run of any statement (the unloaded round trip) the *wait budget*: eight
/// round trips, at least 500 µs, at most `pipeline_stall`. A statement whose lone run took longer
/// than the budget runs on a connection of its own: it gains nothing from sharing one, and
/// statements sent behind it would wait, so concurrent long statements stretch the pool as
/// without pipelining.
#[derive(Debug)]
pub(crate) struct Learned {
    inner: Mutex<LearnedInner>,
    /// The wait budget in nanoseconds; 0 with a fixed depth (no limit on lone runs).
    budget_ns: AtomicU64,
    /// The budget's upper bound (`pipeline_stall`).
    stall: Duration,
}

#[derive(Debug, Default)]
struct LearnedInner {
    /// Statement text → its latest lone run, in nanoseconds.
    statements: HashMap<Box<str>, u64>,
    /// The fastest lone run recently.
    base: WindowedMin,
}

impl Learned {
    /// For a pool that pipelines adaptively (`adaptive`), or with a fixed depth; `stall` is
    /// `pipeline_stall`.
    pub(crate) fn new(adaptive: bool, stall: Duration) -> Learned {
        let budget = if adaptive {
            nanos(budget_from(None, stall))
        } else {
            0
        };
        Learned {
            inner: Mutex::default(),
            budget_ns: AtomicU64::new(budget),
            stall,
        }
    }

    /// Remembers that `sql`, run alone on an idle connection, left it idle, taking `took` (read
    /// at `now`).
    pub(crate) fn learn(&self, sql: &str, took: Duration, now: Instant) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = inner.statements.get_mut(sql) {
            *t = nanos(took);
        } else if inner.statements.len() < LEARNED_STATEMENTS {
            inner.statements.insert(sql.into(), nanos(took));
        }
        if self.budget_ns.load(Ordering::Relaxed) != 0 {
            inner.base.sample(now, took);
            let budget = budget_from(inner.base.get(), self.stall);
            self.budget_ns
                .store(nanos(budget).max(1), Ordering::Relaxed);
        }
    }

    /// Whether `sql` may be pipelined: seen to leave a connection idle and, with adaptive
    /// pipelining, not slower alone than the wait budget.
    pub(crate) fn shareable(&self, sql: &str) -> bool {
        let budget = self.budget_ns.load(Ordering::Relaxed);
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .statements
            .get(sql)
            .is_some_and(|&took| budget == 0 || took <= budget)
    }

    /// The wait budget with adaptive pipelining; `None` with a fixed depth.
    pub(crate) fn budget(&self) -> Option<Duration> {
        match self.budget_ns.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }
}

/// Eight unloaded round trips (`base`), within [`MIN_WAIT_BUDGET`] and `stall`.
fn budget_from(base: Option<Duration>, stall: Duration) -> Duration {
    base.map_or(MIN_WAIT_BUDGET, |b| b * BUDGET_ROUND_TRIPS)
        .clamp(MIN_WAIT_BUDGET, stall.max(MIN_WAIT_BUDGET))
}

/// One connection's pipeline, as the pool sees it while the connection is free.
#[derive(Debug, Default)]
pub(crate) struct Lane {
    /// When its pipeline last moved: its first statement was sent, or one finished.
    progress: Option<Instant>,
    /// Its service time, an exponentially weighted mean in nanoseconds (0: not measured yet).
    service_ns: u64,
}

impl Lane {
    /// Whether it has finished nothing for longer than `limit` while carrying statements.
    fn stalled(&self, now: Instant, limit: Duration) -> bool {
        self.progress
            .is_some_and(|p| now.saturating_duration_since(p) >= limit)
    }
}

/// A free connection as a candidate for one more pipelined statement.
pub(crate) struct Candidate<'a> {
    /// Pipelined statements on it now.
    pub(crate) shared: usize,
    /// Its pipeline's measurements.
    pub(crate) lane: &'a Lane,
    /// Whether it may take statements at all (idle as its server last reported, and a server the
    /// pool still serves).
    pub(crate) eligible: bool,
}

/// The pool's pipelining decisions and measurements (under the pool's lock).
#[derive(Debug, Default)]
pub(crate) struct Pipelining {
    /// Adaptive measurements and lane count; `None` with a fixed depth.
    adaptive: Option<Adaptive>,
}

impl Pipelining {
    /// Turns adaptive pipelining on.
    pub(crate) fn adaptive() -> Pipelining {
        Pipelining {
            adaptive: Some(Adaptive::default()),
        }
    }

    /// Which of `candidates` (the free connections, in the order exclusive checkouts prefer
    /// them) takes one more pipelined statement, if any: at most `depth` per connection, and
    /// none on a connection that has finished nothing for `stall` (with adaptive pipelining, the
    /// wait budget, which also sets each connection's depth).
    pub(crate) fn choose<'a, I>(
        &mut self,
        now: Instant,
        depth: usize,
        stall: Duration,
        candidates: I,
    ) -> Option<usize>
    where
        I: Iterator<Item = Candidate<'a>> + Clone,
    {
        match &mut self.adaptive {
            None => {
                let room = |c: &Candidate<'_>| {
                    c.eligible && c.shared < depth && (c.shared == 0 || !c.lane.stalled(now, stall))
                };
                // The fewest statements in flight; among equals, the first in exclusive order.
                candidates
                    .enumerate()
                    .filter(|(_, c)| room(c))
                    .min_by_key(|(_, c)| c.shared)
                    .map(|(i, _)| i)
            }
            Some(a) => a.choose(now, depth, stall, candidates),
        }
    }

    /// A statement was sent on `lane` (`shared` statements were on it before).
    pub(crate) fn sent(&mut self, now: Instant, lane: &mut Lane, shared: usize) {
        if shared == 0 {
            lane.progress = Some(now);
        }
    }

    /// A pipelined statement sent at `sent` finished on `lane` (`None` for a share handed over
    /// but never used).
    pub(crate) fn finished(&mut self, now: Instant, lane: &mut Lane, sent: Option<Instant>) {
        let previous = lane.progress.replace(now);
        let (Some(a), Some(sent)) = (&mut self.adaptive, sent) else {
            return;
        };
        // Its service time: since the lane last moved, or since it was sent if the lane was
        // idle in between.
        let since = previous.map_or(sent, |p| p.max(sent));
        let service = nanos(now.saturating_duration_since(since));
        lane.service_ns = ewma(lane.service_ns, service);
        a.service_ns = ewma(a.service_ns, service);
        a.count(now);
    }

    /// Whether the depths and the lane count are adaptive (then the pool does not grow for
    /// callers while free connections sit outside the lanes it chose to fill).
    pub(crate) fn is_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }
}

/// Measurements and state of adaptive pipelining.
#[derive(Debug)]
struct Adaptive {
    /// Service time over all lanes (ns), the estimate for a lane not measured yet.
    service_ns: u64,
    /// Lanes the pool fills before callers queue.
    lanes: usize,
    /// The epoch being counted.
    epoch: Epoch,
    /// The trial under way, if any.
    trial: Option<Trial>,
    /// Mean statements per second of the epochs since the lane count last changed.
    baseline: f64,
    /// How many epochs that mean covers.
    baseline_epochs: u32,
    /// Epochs judged so far, up to [`WARM_UP_EPOCHS`].
    warmed: u32,
    /// Epochs until one more lane may be tried, and the wait after a failed trial.
    more: Backoff,
    /// Epochs until one lane fewer may be tried, and the wait after a failed trial.
    fewer: Backoff,
}

impl Default for Adaptive {
    fn default() -> Adaptive {
        Adaptive {
            service_ns: 0,
            lanes: 1,
            epoch: Epoch::default(),
            trial: None,
            baseline: 0.0,
            baseline_epochs: 0,
            warmed: 0,
            more: Backoff::new(),
            fewer: Backoff::new(),
        }
    }
}

impl Adaptive {
    /// How many statements `lane` may carry: as many as finish within the wait budget.
    fn depth(&self, lane: &Lane, cap: usize, budget: Duration) -> usize {
        let service = if lane.service_ns > 0 {
            lane.service_ns
        } else {
            self.service_ns
        };
        if service == 0 {
            // Nothing measured yet: one at a time until a statement has finished.
            return 1;
        }
        let fits = nanos(budget) / service;
        usize::try_from(fits).unwrap_or(usize::MAX).clamp(1, cap)
    }

    fn choose<'a, I>(
        &mut self,
        now: Instant,
        cap: usize,
        budget: Duration,
        candidates: I,
    ) -> Option<usize>
    where
        I: Iterator<Item = Candidate<'a>> + Clone,
    {
        // A lane in use counts against the lane count unless it is stalled or held to one
        // statement (slow statements): those are routed around.
        let counted = |c: &Candidate<'_>| {
            c.eligible
                && c.shared > 0
                && !c.lane.stalled(now, budget)
                && self.depth(c.lane, cap, budget) > 1
        };
        let in_use = candidates.clone().filter(|c| counted(c)).count();
        // The fullest counted lane with room; with more counted lanes than the lane count (after
        // a route-around, or a trial of fewer lanes), only the fullest `lanes` take more, so the
        // others drain.
        let mut best: Option<(usize, usize)> = None;
        for (i, c) in candidates.clone().enumerate() {
            if !counted(&c) || c.shared >= self.depth(c.lane, cap, budget) {
                continue;
            }
            if in_use > self.lanes {
                let fuller = candidates
                    .clone()
                    .enumerate()
                    .filter(|(j, o)| {
                        counted(o) && (o.shared > c.shared || (o.shared == c.shared && *j < i))
                    })
                    .count();
                if fuller >= self.lanes {
                    continue;
                }
            }
            if best.is_none_or(|(_, n)| c.shared > n) {
                best = Some((i, c.shared));
            }
        }
        if let Some((i, _)) = best {
            return Some(i);
        }
        if in_use < self.lanes {
            // A new lane: the first free connection without statements in exclusive order (the
            // least recently used, as exclusive checkouts take). Not the one whose pipeline has
            // just drained: with one caller, sending each statement to the backend that answered
            // the last one more than doubled the median latency (select1 over TCP: 74 µs against
            // 30 µs), and with 64 callers throughput was the same either way (155,000/s). What
            // keeps backends from competing is how many lanes run at once, not which ones.
            if let Some(i) = candidates
                .clone()
                .enumerate()
                .filter(|(_, c)| c.eligible && c.shared == 0)
                .map(|(i, _)| i)
                .next()
            {
                return Some(i);
            }
        } else if candidates.clone().any(|c| c.eligible && c.shared == 0) {
            // The lane count, not the connections, holds the caller back.
            self.epoch.limited = true;
        }
        None
    }

    /// Counts a finished statement; at the end of an epoch, runs the lane-count trials.
    fn count(&mut self, now: Instant) {
        let Some(start) = self.epoch.start else {
            self.epoch = Epoch {
                start: Some(now),
                ..Epoch::default()
            };
            return;
        };
        self.epoch.done += 1;
        let elapsed = now.saturating_duration_since(start);
        if elapsed < EPOCH || self.epoch.done < EPOCH_STATEMENTS {
            if elapsed > EPOCH_MAX {
                // Too quiet to compare: start over (and undo a trial that could not be judged).
                if let Some(t) = self.trial.take() {
                    self.lanes = t.from;
                }
                self.baseline = 0.0;
                self.baseline_epochs = 0;
                self.epoch = Epoch {
                    start: Some(now),
                    ..Epoch::default()
                };
            }
            return;
        }
        let rate = self.epoch.done as f64 / elapsed.as_secs_f64();
        let limited = self.epoch.limited;
        self.epoch = Epoch {
            start: Some(now),
            ..Epoch::default()
        };
        self.judge(rate, limited);
    }

    /// One epoch's verdict: keep or undo the trial, or start the next one. A trial of one lane
    /// fewer first lets the lanes settle for an epoch (the lane given up drains); the mean of
    /// the next [`TRIAL_EPOCHS`] is compared with the mean of the epochs before the trial.
    fn judge(&mut self, rate: f64, limited: bool) {
        if let Some(t) = &mut self.trial {
            if !t.settled {
                t.settled = true;
                return;
            }
            let more = t.to > t.from;
            t.epochs += 1;
            t.rate += (rate - t.rate) / f64::from(t.epochs);
            // One more lane must show its gain in its first epoch already, or it is undone at
            // once: a failing trial costs one epoch (on the benchmark machine, epochs with a
            // second lane had the worse tail), and a lane that adds a backend's worth of
            // capacity shows it at once.
            let hopeless = more && t.rate < t.before * KEEP_MORE;
            if t.epochs < TRIAL_EPOCHS && !hopeless {
                return;
            }
            let rate = t.rate;
            let kept = if more {
                rate >= t.before * KEEP_MORE
            } else {
                rate >= t.before * KEEP_FEWER
            };
            let (from, before) = (t.from, t.before);
            self.trial = None;
            debug!(
                target: "momoko",
                from,
                to = self.lanes,
                kept,
                rate,
                before,
                "pipelining: lane-count trial judged"
            );
            let backoff = if more {
                &mut self.more
            } else {
                &mut self.fewer
            };
            if kept {
                backoff.reset();
                // The trial's epoch measured the lanes as they are now.
                self.baseline = rate;
                self.baseline_epochs = 1;
            } else {
                self.lanes = from;
                backoff.fail();
                self.baseline = 0.0;
                self.baseline_epochs = 0;
            }
            return;
        }
        if self.warmed < WARM_UP_EPOCHS {
            self.warmed += 1;
            return;
        }
        self.baseline_epochs += 1;
        self.baseline += (rate - self.baseline) / f64::from(self.baseline_epochs);
        self.more.tick();
        self.fewer.tick();
        if self.baseline_epochs < BASELINE_EPOCHS {
            return;
        }
        if limited && self.more.due() {
            self.start_trial(self.lanes + 1);
        } else if self.lanes > 1 && self.fewer.due() {
            self.start_trial(self.lanes - 1);
        }
    }

    fn start_trial(&mut self, to: usize) {
        self.trial = Some(Trial {
            from: self.lanes,
            to,
            before: self.baseline,
            // One more lane opens at once; one fewer needs its lane to drain first.
            settled: to > self.lanes,
            epochs: 0,
            rate: 0.0,
        });
        self.lanes = to;
    }
}

/// Statements finished in the current epoch, and whether the lane count held callers back.
#[derive(Debug, Default)]
struct Epoch {
    start: Option<Instant>,
    done: u64,
    limited: bool,
}

/// A change of the lane count on trial for one epoch.
#[derive(Debug)]
struct Trial {
    from: usize,
    to: usize,
    /// Statements per second before it.
    before: f64,
    /// Whether it is being measured (a trial of fewer lanes settles for an epoch first).
    settled: bool,
    /// Epochs measured since, and their mean statements per second.
    epochs: u32,
    rate: f64,
}

/// Epochs to wait before the next trial in one direction.
#[derive(Debug)]
struct Backoff {
    wait: u32,
    after_failure: u32,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            wait: 0,
            after_failure: 0,
        }
    }

    fn tick(&mut self) {
        self.wait = self.wait.saturating_sub(1);
    }

    fn due(&self) -> bool {
        self.wait == 0
    }

    fn fail(&mut self) {
        self.after_failure = if self.after_failure == 0 {
            FIRST_BACKOFF
        } else {
            (self.after_failure * 2).min(MAX_BACKOFF)
        };
        self.wait = self.after_failure;
    }

    fn reset(&mut self) {
        self.after_failure = 0;
        self.wait = 0;
    }
}

/// The smallest sample of the current window and the previous one (so an old minimum is
/// forgotten after one to two windows).
#[derive(Debug, Default)]
struct WindowedMin {
    since: Option<Instant>,
    current: Option<Duration>,
    previous: Option<Duration>,
}

impl WindowedMin {
    fn sample(&mut self, now: Instant, value: Duration) {
        match self.since {
            Some(s) if now.saturating_duration_since(s) < BASE_WINDOW => {}
            _ => {
                // A window without samples keeps the last known value.
                self.previous = self.current.take().or(self.previous);
                self.since = Some(now);
            }
        }
        self.current = Some(self.current.map_or(value, |c| c.min(value)));
    }

    fn get(&self) -> Option<Duration> {
        match (self.current, self.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// An exponentially weighted mean with weight 1/4 for the new sample (0: none yet).
fn ewma(mean: u64, sample: u64) -> u64 {
    if mean == 0 {
        sample.max(1)
    } else {
        (mean.saturating_mul(3).saturating_add(sample) / 4).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(service_us: u64) -> Lane {
        Lane {
            progress: None,
            service_ns: service_us * 1000,
        }
    }

    fn candidates<'a>(lanes: &'a [(usize, Lane)]) -> impl Iterator<Item = Candidate<'a>> + Clone {
        lanes.iter().map(|(shared, lane)| Candidate {
            shared: *shared,
            lane,
            eligible: true,
        })
    }

    const STALL: Duration = Duration::from_millis(5);
    /// The wait budget before any round trip is known.
    const BUDGET: Duration = MIN_WAIT_BUDGET;

    #[test]
    fn fixed_depth_takes_the_least_loaded() {
        let mut p = Pipelining::default();
        let now = Instant::now();
        let lanes = [(3, lane(5)), (1, lane(5)), (1, lane(5)), (4, lane(5))];
        assert_eq!(p.choose(now, 4, STALL, candidates(&lanes)), Some(1));
        let full = [(4, lane(5)), (4, lane(5))];
        assert_eq!(p.choose(now, 4, STALL, candidates(&full)), None);
    }

    #[test]
    fn adaptive_fills_one_lane_before_opening_another() {
        let mut p = Pipelining::adaptive();
        let now = Instant::now();
        // Fast statements: a lane with some in flight is filled, the idle ones stay idle.
        let lanes = [(0, lane(5)), (3, lane(5)), (0, lane(5))];
        assert_eq!(p.choose(now, 32, BUDGET, candidates(&lanes)), Some(1));
        // Full at the cap, lane count 1: the caller waits, and the epoch says it was held back.
        let lanes = [(0, lane(5)), (32, lane(5)), (0, lane(5))];
        assert_eq!(p.choose(now, 32, BUDGET, candidates(&lanes)), None);
        assert!(p.adaptive.as_ref().is_some_and(|a| a.epoch.limited));
        // Nothing in flight anywhere: the first free connection opens the lane.
        let lanes = [(0, lane(5)), (0, lane(5))];
        assert_eq!(p.choose(now, 32, BUDGET, candidates(&lanes)), Some(0));
    }

    #[test]
    fn slow_and_stalled_lanes_are_routed_around() {
        let mut p = Pipelining::adaptive();
        let now = Instant::now();
        // 2 ms statements: the budget (500 µs before any round trip is known) holds one.
        let lanes = [(1, lane(2000)), (0, lane(5))];
        assert_eq!(p.choose(now, 32, BUDGET, candidates(&lanes)), Some(1));
        // A lane that finished nothing for longer than the budget.
        let mut stuck = lane(5);
        stuck.progress = Some(now);
        let later = now + Duration::from_millis(1);
        let lanes = [(5, stuck), (0, lane(5))];
        assert_eq!(p.choose(later, 32, BUDGET, candidates(&lanes)), Some(1));
    }

    #[test]
    fn depth_follows_service_time() {
        let a = Adaptive::default();
        let budget = Duration::from_micros(800);
        assert_eq!(a.depth(&lane(5), 32, budget), 32);
        assert_eq!(a.depth(&lane(100), 32, budget), 8);
        assert_eq!(a.depth(&lane(5000), 32, budget), 1);
    }

    /// Runs `n` epochs at `rate`, held back or not.
    fn epochs(a: &mut Adaptive, n: usize, rate: f64, limited: bool) {
        for _ in 0..n {
            a.judge(rate, limited);
        }
    }

    #[test]
    fn lane_count_trials_keep_what_pays() {
        let mut a = Adaptive::default();
        // Warming up (slow): not a baseline.
        epochs(&mut a, 2, 10_000.0, true);
        // Baseline epochs held back by the lane count: one more lane is tried.
        epochs(&mut a, 2, 100_000.0, true);
        assert_eq!(a.lanes, 1);
        epochs(&mut a, 1, 100_000.0, true);
        assert_eq!(a.lanes, 2);
        // Measured over two epochs: +40 % keeps it.
        epochs(&mut a, 2, 140_000.0, true);
        assert_eq!(a.lanes, 2);
        // The kept trial's epochs count as a baseline epoch: two more, and one more lane again
        // (held back), which shows no gain in its first epoch: undone at once.
        epochs(&mut a, 2, 140_000.0, true);
        assert_eq!(a.lanes, 3);
        epochs(&mut a, 1, 120_000.0, true);
        assert_eq!(a.lanes, 2);
        // Not held back: one fewer is tried (an epoch to settle, two measured), and kept when
        // throughput barely moved.
        epochs(&mut a, 3, 140_000.0, false);
        assert_eq!(a.lanes, 1);
        epochs(&mut a, 1, 80_000.0, false);
        epochs(&mut a, 2, 130_000.0, false);
        assert_eq!(a.lanes, 1);
        // One more is tried again once its backoff (16 baseline epochs) has passed; it must
        // gain 25 % in its first epoch and over both.
        let waited = (1..=FIRST_BACKOFF)
            .find(|_| {
                a.judge(130_000.0, true);
                a.lanes == 2
            })
            .expect("tried again within the backoff");
        assert!(waited > 10, "not before the backoff: after {waited} epochs");
        epochs(&mut a, 1, 170_000.0, true);
        assert_eq!(a.lanes, 2, "+31 % in the first epoch: measured once more");
        epochs(&mut a, 1, 130_000.0, true);
        assert_eq!(a.lanes, 1, "+15 % over both is noise");
    }

    #[test]
    fn failed_trials_wait_longer_each_time() {
        let mut b = Backoff::new();
        assert!(b.due());
        let waited = |b: &mut Backoff| {
            let mut n = 0;
            while !b.due() {
                b.tick();
                n += 1;
            }
            n
        };
        b.fail();
        assert_eq!(waited(&mut b), FIRST_BACKOFF);
        b.fail();
        assert_eq!(waited(&mut b), FIRST_BACKOFF * 2);
        for _ in 0..10 {
            b.fail();
        }
        assert_eq!(waited(&mut b), MAX_BACKOFF);
        b.reset();
        assert!(b.due());
    }

    #[test]
    fn learned_statements_and_the_wait_budget() {
        let t0 = Instant::now();
        let fixed = Learned::new(false, STALL);
        assert!(!fixed.shareable("SELECT 1"), "not seen yet");
        fixed.learn("SELECT pg_sleep(1)", Duration::from_secs(1), t0);
        assert!(
            fixed.shareable("SELECT pg_sleep(1)"),
            "a fixed depth pipelines any duration"
        );
        assert_eq!(fixed.budget(), None);

        let adaptive = Learned::new(true, STALL);
        assert_eq!(adaptive.budget(), Some(MIN_WAIT_BUDGET));
        adaptive.learn("SELECT 1", Duration::from_micros(100), t0);
        assert_eq!(adaptive.budget(), Some(Duration::from_micros(800)));
        adaptive.learn("SELECT pg_sleep(1)", Duration::from_secs(1), t0);
        assert!(adaptive.shareable("SELECT 1"));
        assert!(
            !adaptive.shareable("SELECT pg_sleep(1)"),
            "slower alone than the budget: exclusive"
        );
        // A lone run over a slow network: the budget follows, up to pipeline_stall.
        let far = Learned::new(true, STALL);
        far.learn("SELECT 1", Duration::from_millis(2), t0);
        assert_eq!(far.budget(), Some(STALL));
        assert!(far.shareable("SELECT 1"));
    }

    #[test]
    fn windowed_min_forgets_old_samples() {
        let mut w = WindowedMin::default();
        let t0 = Instant::now();
        w.sample(t0, Duration::from_micros(30));
        w.sample(t0 + Duration::from_millis(10), Duration::from_micros(50));
        assert_eq!(w.get(), Some(Duration::from_micros(30)));
        w.sample(t0 + BASE_WINDOW, Duration::from_micros(60));
        assert_eq!(w.get(), Some(Duration::from_micros(30)));
        w.sample(t0 + BASE_WINDOW * 2, Duration::from_micros(70));
        assert_eq!(w.get(), Some(Duration::from_micros(60)));
    }
}
