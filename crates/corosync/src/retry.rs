//! Retrying calls that corosync answers with `CS_ERR_TRY_AGAIN` (flow control, or a
//! membership change in progress), with a bounded exponential backoff.

use super::error::{check, CsError, Error, Result};
use cpg_sys as sys;
use std::time::{Duration, Instant};

const FIRST_PAUSE: Duration = Duration::from_millis(1);
const LONGEST_PAUSE: Duration = Duration::from_millis(100);

/// Calls `f` until it returns something other than `CS_ERR_TRY_AGAIN`, sleeping 1 ms, 2 ms, …
/// (at most 100 ms) in between, for at most `budget`. Blocks the calling thread.
pub(crate) fn retry(call: &'static str, budget: Duration, mut f: impl FnMut() -> sys::cs_error_t) -> Result<()> {
    let start = Instant::now();
    let mut pause = FIRST_PAUSE;
    loop {
        let code = f();
        if CsError::from_raw(code) != Some(CsError::TryAgain) {
            return check(call, code);
        }
        let waited = start.elapsed();
        if waited >= budget {
            return Err(Error::StillBusy { call, waited_ms: waited.as_millis() as u64 });
        }
        std::thread::sleep(pause.min(budget - waited));
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_try_again_then_succeeds() {
        let mut calls = 0;
        let r = retry("cpg_join", Duration::from_secs(5), || {
            calls += 1;
            if calls < 4 {
                sys::CS_ERR_TRY_AGAIN
            } else {
                sys::CS_OK
            }
        });
        assert!(r.is_ok());
        assert_eq!(calls, 4);
    }

    #[test]
    fn other_errors_are_not_retried() {
        let mut calls = 0;
        let r = retry("cpg_join", Duration::from_secs(5), || {
            calls += 1;
            sys::CS_ERR_EXIST
        });
        assert_eq!(r.unwrap_err().code(), Some(CsError::Exist));
        assert_eq!(calls, 1);
    }

    #[test]
    fn gives_up_after_the_budget() {
        let mut calls = 0;
        let r = retry("cpg_mcast_joined", Duration::from_millis(20), || {
            calls += 1;
            sys::CS_ERR_TRY_AGAIN
        });
        match r {
            Err(Error::StillBusy { call, waited_ms }) => {
                assert_eq!(call, "cpg_mcast_joined");
                assert!(waited_ms >= 20);
            }
            other => panic!("expected StillBusy, got {other:?}"),
        }
        assert!(calls > 1);
    }
}
