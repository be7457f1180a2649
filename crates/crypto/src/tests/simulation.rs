//! Randomised conversations: 1,000 messages in both directions with random interleaving,
//! reordering and loss. Every delivered message must decrypt to what was sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

use super::responder;
use crate::{Error, IdentityKeyPair, RatchetMessage, Session, initiate, respond};

struct InFlight {
    bytes: Vec<u8>,
    plaintext: Vec<u8>,
}

fn deliver(to: &mut Session, m: &InFlight, delivered: &mut Vec<Vec<u8>>) {
    let msg = RatchetMessage::from_bytes(&m.bytes).unwrap();
    assert_eq!(&to.decrypt(&msg).unwrap()[..], &m.plaintext[..]);
    delivered.push(m.bytes.clone());
}

fn run(seed: u64, messages: usize, loss_percent: u32) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut bob = responder(rng.random_bool(0.5), rng.random_bool(0.3));
    let (mut a, initial) = initiate(&IdentityKeyPair::generate(), &bob.bundle, b"start").unwrap();
    let (mut b, _) = respond(&bob.identity, &mut bob.store, &initial).unwrap();
    // [to b, to a]
    let mut queues: [Vec<InFlight>; 2] = [Vec::new(), Vec::new()];
    let mut delivered: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut sent = 0usize;
    let mut turn = 0usize;
    while sent < messages || queues.iter().any(|q| !q.is_empty()) {
        // Bursts in one direction, switching at random: exercises both long chains and ratchets.
        if rng.random_ratio(1, 8) {
            turn ^= 1;
        }
        let action = rng.random_range(0..10u32);
        if sent < messages && action < 5 {
            let mut plaintext = vec![0u8; rng.random_range(0..64)];
            rng.fill_bytes(&mut plaintext);
            let sender = if turn == 0 { &mut a } else { &mut b };
            let bytes = sender.encrypt(&plaintext).unwrap().to_bytes();
            sent += 1;
            if rng.random_range(0..100) >= loss_percent {
                queues[turn].push(InFlight { bytes, plaintext });
            }
        } else {
            let dir = rng.random_range(0..2usize);
            if queues[dir].is_empty() {
                continue;
            }
            // Random element: reordering. swap_remove keeps this O(1).
            let idx = rng.random_range(0..queues[dir].len());
            let m = queues[dir].swap_remove(idx);
            let receiver = if dir == 0 { &mut b } else { &mut a };
            deliver(receiver, &m, &mut delivered[dir]);
        }
    }
    // Replays of already-delivered messages are refused and leave the sessions usable. The
    // latest one is recognised as a duplicate; one from a chain older than the remembered
    // ratchet keys simply fails to authenticate.
    for (dir, receiver) in [(0, &mut b), (1, &mut a)] {
        if let Some(latest) = delivered[dir].last() {
            let msg = RatchetMessage::from_bytes(latest).unwrap();
            assert_eq!(receiver.decrypt(&msg).unwrap_err(), Error::DuplicateMessage);
        }
        for old in delivered[dir].iter().step_by(97) {
            assert!(
                receiver
                    .decrypt(&RatchetMessage::from_bytes(old).unwrap())
                    .is_err()
            );
        }
    }
    let m = a.encrypt(b"final").unwrap();
    assert_eq!(&b.decrypt(&m).unwrap()[..], b"final");
    let m = b.encrypt(b"final reply").unwrap();
    assert_eq!(&a.decrypt(&m).unwrap()[..], b"final reply");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn thousand_messages_with_interleaving_reordering_and_loss(
        seed in any::<u64>(),
        loss in 0u32..10,
    ) {
        run(seed, 1000, loss);
    }

    /// Whatever gap a message creates, it either decrypts or is rejected with TooManySkipped,
    /// and a rejection changes nothing.
    #[test]
    fn skip_bound_is_exact(gap in 0u32..40) {
        let config = crate::RatchetConfig { max_skip: 20, max_skipped_total: 100 };
        let mut bob = responder(false, false);
        let (mut a, initial) =
            crate::initiate_with_config(&IdentityKeyPair::generate(), &bob.bundle, b"x", config)
                .unwrap();
        let (mut b, _) =
            crate::respond_with_config(&bob.identity, &mut bob.store, &initial, config).unwrap();
        for _ in 0..gap {
            a.encrypt(b"lost").unwrap();
        }
        let m = a.encrypt(b"arrives").unwrap();
        match b.decrypt(&m) {
            Ok(pt) => {
                prop_assert!(gap <= 20);
                prop_assert_eq!(&pt[..], b"arrives");
            }
            Err(e) => {
                prop_assert!(gap > 20);
                prop_assert_eq!(e, Error::TooManySkipped { requested: u64::from(gap), limit: 20 });
                prop_assert_eq!(b.skipped_key_count(), 0);
            }
        }
    }
}
