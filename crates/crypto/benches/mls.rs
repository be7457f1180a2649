//! MLS application message encrypt / decrypt in a 100-member group.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use guardyn_crypto::mls::{Group, MlsClient, Received};

const MEMBERS: usize = 100;
const PLAINTEXT: [u8; 1024] = [0x42; 1024];

struct Fixture {
    a: MlsClient,
    group_a: Group,
    b: MlsClient,
    group_b: Group,
    c: MlsClient,
    group_c: Group,
}

fn setup() -> Fixture {
    let a = MlsClient::new(b"bench:a").unwrap();
    let b = MlsClient::new(b"bench:b").unwrap();
    let c = MlsClient::new(b"bench:c").unwrap();
    let mut kps = vec![
        b.create_key_package().unwrap(),
        c.create_key_package().unwrap(),
    ];
    // The remaining members only need KeyPackages: they never process messages.
    for i in kps.len()..MEMBERS - 1 {
        let other = MlsClient::new(format!("bench:{i}").as_bytes()).unwrap();
        kps.push(other.create_key_package().unwrap());
    }
    let mut group_a = Group::create(&a, b"bench-group").unwrap();
    let refs: Vec<&[u8]> = kps.iter().map(Vec::as_slice).collect();
    let bundle = group_a.add_members(&a, &refs).unwrap();
    group_a.merge_pending_commit(&a).unwrap();
    let welcome = bundle.welcome.unwrap();
    let tree = group_a.ratchet_tree().unwrap();
    let group_b = Group::join_from_welcome(&b, &welcome, Some(&tree)).unwrap();
    let group_c = Group::join_from_welcome(&c, &welcome, Some(&tree)).unwrap();
    assert_eq!(group_a.members().len(), MEMBERS);
    Fixture {
        a,
        group_a,
        b,
        group_b,
        c,
        group_c,
    }
}

fn bench(c: &mut Criterion) {
    let mut f = setup();
    let mut g = c.benchmark_group("mls_100_members");
    g.bench_function("encrypt_1KiB", |bench| {
        bench.iter(|| f.group_a.encrypt(&f.a, &PLAINTEXT).unwrap());
    });
    // A separate sender (C) so A's encrypt loop never pushes B's receive
    // ratchet beyond its forward-distance limit.
    g.bench_function("decrypt_1KiB", |bench| {
        bench.iter_batched(
            || f.group_c.encrypt(&f.c, &PLAINTEXT).unwrap(),
            |ct| match f.group_b.process_message(&f.b, &ct).unwrap() {
                Received::Application { plaintext, .. } => plaintext,
                other => panic!("unexpected {other:?}"),
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
