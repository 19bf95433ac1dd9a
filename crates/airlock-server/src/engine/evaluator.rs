//! Policy evaluation on a fixed pool of threads, one per core, shared by live and shadow
//! decisions.
//!
//! Rego is CPU work: run on the async workers it would stall every other session's requests
//! while a slow policy runs. tokio's blocking pool is the wrong home too: it starts a thread per
//! waiting evaluation (up to 512), so under load dozens of threads time-slice two cores, each
//! evaluation pays a hand-off to a thread that may be cold, and CPU per decision rose by up to
//! half at 64 concurrent requesters (docs/BENCHMARKS.md). Here evaluations queue for as many
//! threads as the machine has cores, which is all the parallelism CPU-bound work can use.
//!
//! A panic in an evaluation is caught on its thread and answered as a failed policy (a deny);
//! the thread carries on with the next evaluation.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};

use airlock_core::PolicyFailure;
use airlock_core::pipeline::PolicyAnswer;
use airlock_policy::{Evaluation, Policy};
use serde_json::Value;

type Job = Box<dyn FnOnce() + Send>;

/// The pool's queue; its threads start on first use and live as long as the process.
fn queue() -> &'static crossbeam_channel::Sender<Job> {
    static QUEUE: OnceLock<crossbeam_channel::Sender<Job>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (sender, receiver) = crossbeam_channel::unbounded::<Job>();
        let threads = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        for n in 0..threads {
            let receiver = receiver.clone();
            let started = std::thread::Builder::new().name(format!("airlock-policy-{n}")).spawn(move || {
                for job in receiver {
                    job();
                }
            });
            if let Err(e) = started {
                tracing::error!(error = %e, "a policy evaluation thread did not start");
            }
        }
        sender
    })
}

/// Evaluates `input` against `policy` on the pool; gives the input back for journaling. A
/// failure of any kind (compile, time limit, panic, no thread to run it) is a failed policy,
/// which the pipeline turns into a deny.
pub(crate) async fn evaluate(policy: Arc<Policy>, input: Value) -> (PolicyAnswer, Value) {
    let revision = policy.revision().to_string();
    let (reply, answer) = tokio::sync::oneshot::channel::<(Result<Evaluation, String>, Value)>();
    let job: Job = Box::new(move || {
        let eval = std::panic::catch_unwind(AssertUnwindSafe(|| policy.evaluate(&input))).map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "policy evaluation panicked".into())
        });
        let _ = reply.send((eval, input));
    });
    let stopped = |message: String| {
        let output = Err(PolicyFailure::Stopped { message });
        (PolicyAnswer { output, revision: revision.clone(), eval_us: 0 }, Value::Null)
    };
    if queue().send(job).is_err() {
        return stopped("no policy evaluation thread is running".into());
    }
    match answer.await {
        Ok((Ok(eval), input)) => {
            (PolicyAnswer { output: eval.output, revision: revision.clone(), eval_us: eval.eval_us }, input)
        }
        Ok((Err(panic), _)) => stopped(format!("policy evaluation panicked: {panic}")),
        Err(_) => stopped("the policy evaluation thread went away".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rego: &str) -> Arc<Policy> {
        let dir = std::env::temp_dir();
        Arc::new(
            Policy::from_sources(&dir, vec![("p.rego".into(), rego.into())], &Default::default())
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    #[tokio::test]
    async fn many_evaluations_at_once_all_get_their_own_answer() {
        let p = policy(
            "package airlock\nimport rego.v1\ndeny contains {\"rule\": \"N\", \"msg\": sprintf(\"%d\", [input.n])} if input.n > 0\n",
        );
        let answers =
            futures::future::join_all((1..=64).map(|n| evaluate(p.clone(), serde_json::json!({"n": n})))).await;
        for (n, (answer, input)) in (1..=64).zip(answers) {
            assert_eq!(input["n"], n);
            let output = answer.output.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(output.deny[0]["msg"], n.to_string());
        }
    }
}
