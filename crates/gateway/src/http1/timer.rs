//! One timer for many deadlines that come one after another: a connection's head reads, or
//! its upstream exchanges.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// A tokio timer armed and dropped per request cost about a tenth of a proxied request's
/// instructions. This one stays armed; it is moved only when it fires before the deadline in
/// force (at most once per timeout period) or when a deadline comes earlier than the one it is
/// set for (a timeout lowered through `/config`).
#[derive(Default)]
pub struct LazyTimer {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl LazyTimer {
    /// Whether `deadline` has passed; if not, the task is woken by then at the latest.
    pub fn poll_passed(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        while sleep.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return true;
            }
            sleep.as_mut().reset(deadline);
        }
        false
    }

    /// Runs `fut` until it ends (`Some`) or `deadline` passes (`None`).
    pub async fn run_until<F: Future>(&mut self, deadline: Instant, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if self.poll_passed(cx, deadline) { Poll::Ready(None) } else { Poll::Pending }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_lazy_timer_serves_deadlines_that_move_later_and_earlier() {
        let mut timer = LazyTimer::default();
        let start = Instant::now();
        assert_eq!(timer.run_until(start + Duration::from_secs(10), async { 7 }).await, Some(7));
        // Earlier than the timer is set for (a timeout lowered): it passes then, not at 10 s.
        let passed = timer.run_until(start + Duration::from_secs(1), std::future::pending::<()>()).await;
        assert_eq!(passed, None);
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
        // Later than the timer fired: the work ends first.
        let slept = timer.run_until(start + Duration::from_secs(5), tokio::time::sleep(Duration::from_secs(2))).await;
        assert_eq!(slept, Some(()));
        let passed = timer.run_until(start + Duration::from_secs(4), std::future::pending::<()>()).await;
        assert_eq!(passed, None);
        assert_eq!(Instant::now() - start, Duration::from_secs(4));
    }
}
