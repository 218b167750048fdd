//! Receives waiting on an empty queue, which a send hands its new messages to directly
//! (decision 0028): the send writes them already received, in its own transaction, and
//! the waiting receive returns them without a transaction of its own.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hookbridge_core::ports::ReceivedMessage;
use tokio::sync::oneshot;

/// The receives waiting on one queue, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    next_ticket: AtomicU64,
    offers: Mutex<Vec<Offer>>,
}

/// A waiting receive's offer to take up to `max` messages.
#[derive(Debug)]
struct Offer {
    ticket: u64,
    max: usize,
    hand: oneshot::Sender<Vec<ReceivedMessage>>,
}

/// A waiting receive's side of its offer.
pub(crate) struct Offered {
    /// Names the offer to [`Waiting::withdraw`].
    pub(crate) ticket: u64,
    /// Where a send that claims the offer hands its messages; closed unanswered if the
    /// send's write fails.
    pub(crate) handed: oneshot::Receiver<Vec<ReceivedMessage>>,
}

/// The offers one send took: it hands each its messages once they are committed.
#[derive(Debug, Default)]
pub(crate) struct Claim {
    /// What each claimed receive is waiting on; dropped, they send it looking again.
    hands: Vec<oneshot::Sender<Vec<ReceivedMessage>>>,
    /// How many messages each offer takes, in the order of `hands`.
    pub(crate) maxes: Vec<usize>,
}

impl Waiting {
    /// Offers to take up to `max` messages from the next send.
    pub(crate) fn offer(&self, max: usize) -> Offered {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (hand, handed) = oneshot::channel();
        let mut offers = self.lock();
        // A receive dropped while it waited leaves its offer; this is where a queue no
        // send ever claims from sheds them.
        offers.retain(|o| !o.hand.is_closed());
        offers.push(Offer { ticket, max, hand });
        Offered { ticket, handed }
    }

    /// Takes an offer back. `false` if a send has already claimed it: its messages are
    /// then on their way (or the send failed and dropped its hand), and the receive must
    /// wait for them, as they are written received and no other receive will get them
    /// before their visibility timeout.
    pub(crate) fn withdraw(&self, ticket: u64) -> bool {
        let mut offers = self.lock();
        let before = offers.len();
        offers.retain(|o| o.ticket != ticket);
        offers.len() < before
    }

    /// Claims the oldest offers, until they take `messages` between them. An offer whose
    /// receive has gone (its future dropped) is discarded, not claimed.
    pub(crate) fn claim(&self, messages: usize) -> Claim {
        let mut claim = Claim::default();
        if messages == 0 {
            return claim;
        }
        let mut offers = self.lock();
        offers.retain(|o| !o.hand.is_closed());
        let mut taken = 0;
        let mut claimed = 0;
        while claimed < offers.len() && taken < messages {
            taken += offers[claimed].max;
            claimed += 1;
        }
        for o in offers.drain(..claimed) {
            claim.maxes.push(o.max);
            claim.hands.push(o.hand);
        }
        claim
    }

    /// How many receives are waiting.
    #[cfg(test)]
    pub(crate) fn offers(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Offer>> {
        self.offers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Claim {
    /// Hands each claimed receive its messages (`handed`, in the order of [`Claim::maxes`]),
    /// an empty batch telling it to look for itself. A receive that went away after it was
    /// claimed leaves its messages in flight: they are received again after their
    /// visibility timeout, as a received message whose handler crashed is.
    pub(crate) fn hand(self, handed: Vec<Vec<ReceivedMessage>>) {
        for (hand, messages) in self.hands.into_iter().zip(handed) {
            if let Err(lost) = hand.send(messages)
                && !lost.is_empty()
            {
                tracing::warn!(
                    count = lost.len(),
                    "a receive went away after it was handed messages; they are received again after their visibility timeout"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offers are claimed oldest first, only as many as the messages need, and an offer
    /// whose receive has gone is passed over.
    #[test]
    fn a_send_claims_the_oldest_live_offers_it_needs() {
        let waiting = Waiting::default();
        let gone = waiting.offer(10);
        let first = waiting.offer(2);
        let second = waiting.offer(3);
        let third = waiting.offer(5);
        drop(gone.handed);
        let claim = waiting.claim(4);
        assert_eq!(claim.maxes, [2, 3]);
        assert!(!waiting.withdraw(first.ticket) && !waiting.withdraw(second.ticket), "claimed");
        assert!(waiting.withdraw(third.ticket), "not needed, so still offered");
        assert!(waiting.claim(1).maxes.is_empty(), "nothing left offered");
    }
}
