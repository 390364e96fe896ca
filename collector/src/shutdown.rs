//! Shutdown the mini-redis way: a signal is a `watch` channel whose [`Trigger`] is dropped,
//! never sent on. Every holder of a [`Shutdown`] sees it at once (threads by asking
//! [`Shutdown::is_shutdown`] at the top of their loop, tasks by awaiting
//! [`Shutdown::recv`]), and no flag can be set by one party and missed by another.
//!
//! The service (`service::run`) uses one signal from outside (SIGTERM, ctrl-c) and then
//! stops its parts in a fixed order by awaiting each and dropping the trigger of the next
//! stage: see the order written there.

use tokio::sync::watch;

/// Dropping it (the last clone of it) signals every [`Shutdown`] made with it.
#[derive(Debug)]
pub struct Trigger {
    _sender: watch::Sender<()>,
}

/// The listening side of a shutdown signal; cheap to clone, one per thread or task.
#[derive(Clone, Debug)]
pub struct Shutdown {
    receiver: watch::Receiver<()>,
}

/// A new signal: drop the [`Trigger`] to shut down every clone of the [`Shutdown`].
pub fn channel() -> (Trigger, Shutdown) {
    let (sender, receiver) = watch::channel(());
    (Trigger { _sender: sender }, Shutdown { receiver })
}

impl Shutdown {
    /// Whether the trigger is gone. Never blocks: what threads check at each pass.
    pub fn is_shutdown(&self) -> bool {
        self.receiver.has_changed().is_err()
    }

    /// Waits until the trigger is gone.
    pub async fn recv(&mut self) {
        // Nothing is ever sent: `changed` returns only with the error that the sender dropped.
        while self.receiver.changed().await.is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clone_sees_the_trigger_dropped_and_nothing_before() {
        let (trigger, shutdown) = channel();
        let mut waiting = shutdown.clone();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        assert!(!shutdown.is_shutdown());
        let pending = runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_millis(20), waiting.recv()).await.is_err()
        });
        assert!(pending, "recv returned before the trigger was dropped");
        drop(trigger);
        assert!(shutdown.is_shutdown());
        runtime.block_on(waiting.recv());
    }
}
