//! Cases for [`crate::BlobStore`], durability across reopen included.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::join_all;

use super::harness::{BlobHarness, assert_invalid, ns};
use crate::{BlobStore, MAX_OBJECT_LEN, ObjectMeta};

/// A key prefix unique to this case and run, as a string.
fn prefix(case: &str) -> String {
    String::from_utf8(ns(case)).unwrap()
}

/// `len` bytes that differ from one offset to the next (and between seeds).
fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| u8::try_from((i * 31 + i / 251) % 251).unwrap() ^ seed)
        .collect::<Vec<u8>>()
        .into()
}

async fn get_all(blob: &dyn BlobStore, key: &str) -> Option<Bytes> {
    blob.get_range(key, 0..u64::MAX).await.unwrap()
}

fn listed(list: &[ObjectMeta]) -> Vec<(String, u64)> {
    list.iter().map(|m| (m.key.clone(), m.size)).collect()
}

pub async fn blob_put_get_ranges<H: BlobHarness + ?Sized>(h: &H) {
    let blob = h.open_blob().await;
    let p = prefix("blob_ranges");
    let key = format!("{p}obj");
    assert_eq!(
        blob.get_range(&key, 0..10).await.unwrap(),
        None,
        "a missing object reads None"
    );
    assert_eq!(
        blob.get_range(&key, 0..0).await.unwrap(),
        None,
        "an empty range of a missing object reads None"
    );
    blob.put(&key, Bytes::from_static(b"hello world"))
        .await
        .unwrap();
    let read = |r: std::ops::Range<u64>| {
        let (blob, key) = (blob.clone(), key.clone());
        async move { blob.get_range(&key, r).await.unwrap() }
    };
    assert_eq!(read(0..11).await.as_deref(), Some(&b"hello world"[..]));
    assert_eq!(read(0..5).await.as_deref(), Some(&b"hello"[..]));
    assert_eq!(read(6..11).await.as_deref(), Some(&b"world"[..]));
    assert_eq!(read(4..7).await.as_deref(), Some(&b"o w"[..]));
    assert_eq!(
        read(6..100).await.as_deref(),
        Some(&b"world"[..]),
        "a range past the end is truncated to the end"
    );
    assert_eq!(
        read(0..u64::MAX).await.as_deref(),
        Some(&b"hello world"[..]),
        "0..u64::MAX reads the whole object"
    );
    assert_eq!(
        read(11..20).await.as_deref(),
        Some(&b""[..]),
        "a range starting at the end reads empty"
    );
    assert_eq!(
        read(50..60).await.as_deref(),
        Some(&b""[..]),
        "a range starting past the end reads empty"
    );
    assert_eq!(
        read(3..3).await.as_deref(),
        Some(&b""[..]),
        "an empty range reads empty"
    );
    assert_eq!(read(11..11).await.as_deref(), Some(&b""[..]));
    assert_eq!(read(99..99).await.as_deref(), Some(&b""[..]));

    let empty = format!("{p}empty");
    blob.put(&empty, Bytes::new()).await.unwrap();
    assert_eq!(
        blob.get_range(&empty, 0..10).await.unwrap().as_deref(),
        Some(&b""[..]),
        "an empty object is an object, not absence"
    );
    assert_eq!(
        blob.get_range(&empty, 0..0).await.unwrap().as_deref(),
        Some(&b""[..])
    );
    assert_eq!(blob.size(&empty).await.unwrap(), Some(0));
}

pub async fn blob_size<H: BlobHarness + ?Sized>(h: &H) {
    let blob = h.open_blob().await;
    let p = prefix("blob_size");
    let key = format!("{p}a/b");
    assert_eq!(blob.size(&key).await.unwrap(), None, "missing object");
    blob.put(&key, pattern(1000, 1)).await.unwrap();
    assert_eq!(blob.size(&key).await.unwrap(), Some(1000));
    blob.put(&key, pattern(10, 2)).await.unwrap();
    assert_eq!(
        blob.size(&key).await.unwrap(),
        Some(10),
        "size must follow an overwrite"
    );
    assert_eq!(
        blob.size(&format!("{p}a")).await.unwrap(),
        None,
        "a key prefix is not an object"
    );
    blob.delete(&key).await.unwrap();
    assert_eq!(blob.size(&key).await.unwrap(), None, "size after delete");
}

pub async fn blob_overwrite_is_atomic<H: BlobHarness + ?Sized>(h: &H) {
    let blob = h.open_blob().await;
    let p = prefix("blob_overwrite");
    let key = format!("{p}obj");
    // Two versions of different lengths and contents: a reader must see one of them whole.
    let versions = [pattern(256 * 1024, 0xaa), pattern(300 * 1024 + 7, 0x55)];
    blob.put(&key, versions[0].clone()).await.unwrap();
    let writer = {
        let (blob, key, versions) = (blob.clone(), key.clone(), versions.clone());
        tokio::spawn(async move {
            for i in 1..=20 {
                blob.put(&key, versions[i % 2].clone()).await.unwrap();
            }
        })
    };
    let readers = (0..3).map(|_| {
        let (blob, key, versions) = (blob.clone(), key.clone(), versions.clone());
        tokio::spawn(async move {
            for _ in 0..20 {
                let got = get_all(blob.as_ref(), &key)
                    .await
                    .expect("an overwritten object never disappears");
                assert!(
                    got == versions[0] || got == versions[1],
                    "a reader saw a mix of two versions ({} bytes)",
                    got.len()
                );
            }
        })
    });
    for r in join_all(readers).await {
        r.unwrap();
    }
    writer.await.unwrap();
    assert_eq!(
        get_all(blob.as_ref(), &key).await,
        Some(versions[0].clone()),
        "the last put wins"
    );
    assert_eq!(
        listed(&blob.list(&p).await.unwrap()),
        vec![(key, versions[0].len() as u64)],
        "overwrites leave exactly one listed object"
    );
}

pub async fn blob_delete_is_idempotent<H: BlobHarness + ?Sized>(h: &H) {
    let blob = h.open_blob().await;
    let p = prefix("blob_delete");
    let key = format!("{p}x/y");
    blob.delete(&key).await.unwrap();
    blob.put(&key, Bytes::from_static(b"data")).await.unwrap();
    blob.put(&format!("{p}x/z"), Bytes::from_static(b"keep"))
        .await
        .unwrap();
    blob.delete(&key).await.unwrap();
    assert_eq!(blob.get_range(&key, 0..10).await.unwrap(), None);
    assert_eq!(blob.size(&key).await.unwrap(), None);
    blob.delete(&key).await.unwrap();
    assert_eq!(
        listed(&blob.list(&p).await.unwrap()),
        vec![(format!("{p}x/z"), 4)],
        "delete removes only its key"
    );
    blob.put(&key, Bytes::from_static(b"again")).await.unwrap();
    assert_eq!(
        get_all(blob.as_ref(), &key).await.as_deref(),
        Some(&b"again"[..]),
        "a deleted key can be written again"
    );
}

pub async fn blob_list_by_prefix<H: BlobHarness + ?Sized>(h: &H) {
    let blob = h.open_blob().await;
    let p = prefix("blob_list");
    // Byte order: '-' < '.' < '/' < '0' < 'A' < '_' < 'a'.
    let names = [
        "a", "a-b", "a.b", "b/c", "b/d/e", "b0", "bA", "b_", "ba", "c/d", "ca",
    ];
    // Insert in a scrambled order so that insertion order cannot pass for key order.
    for i in [7, 2, 9, 0, 5, 3, 10, 8, 1, 6, 4] {
        blob.put(&format!("{p}{}", names[i]), pattern(i + 1, 0))
            .await
            .unwrap();
    }
    let expect = |sel: &[usize]| -> Vec<(String, u64)> {
        sel.iter()
            .map(|&i| (format!("{p}{}", names[i]), i as u64 + 1))
            .collect()
    };
    let all = blob.list(&p).await.unwrap();
    assert_eq!(
        listed(&all),
        expect(&(0..names.len()).collect::<Vec<_>>()),
        "list returns every object under the prefix, in key order, with sizes"
    );
    assert_eq!(
        listed(&blob.list(&format!("{p}b")).await.unwrap()),
        expect(&[3, 4, 5, 6, 7, 8]),
        "a prefix is a key prefix, not only whole segments"
    );
    assert_eq!(
        listed(&blob.list(&format!("{p}b/")).await.unwrap()),
        expect(&[3, 4]),
        "a prefix ending in / lists the objects below it, nested ones included"
    );
    assert_eq!(
        listed(&blob.list(&format!("{p}a")).await.unwrap()),
        expect(&[0, 1, 2]),
    );
    assert_eq!(
        listed(&blob.list(&format!("{p}b/d/e")).await.unwrap()),
        expect(&[4]),
        "a whole key lists itself"
    );
    assert!(blob.list(&format!("{p}zz")).await.unwrap().is_empty());
    assert!(
        blob.list(&format!("{p}nothing/here/"))
            .await
            .unwrap()
            .is_empty(),
        "a prefix under no object lists nothing"
    );
    let everything = blob.list("").await.unwrap();
    let keys: Vec<&str> = everything.iter().map(|m| m.key.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(
        keys, sorted,
        "the empty prefix lists everything in key order"
    );
    for name in names {
        assert!(keys.contains(&format!("{p}{name}").as_str()));
    }
}

pub async fn blob_key_validation<H: BlobHarness + ?Sized>(h: &H) {
    let blob = h.open_blob().await;
    let p = prefix("blob_keys");
    let long_segment = "s".repeat(crate::MAX_BLOB_SEGMENT_LEN + 1);
    // The longest key: segments of 100 bytes, then the rest, up to the key limit.
    let mut longest = p.clone();
    while longest.len() + 101 < crate::MAX_BLOB_KEY_LEN {
        longest.push_str(&"k".repeat(100));
        longest.push('/');
    }
    longest.push_str(&"k".repeat(crate::MAX_BLOB_KEY_LEN - longest.len()));
    assert_eq!(longest.len(), crate::MAX_BLOB_KEY_LEN);
    let too_long = format!("{longest}k");
    let bad = [
        String::new(),
        "/abs".to_owned(),
        format!("{p}trailing/"),
        format!("{p}double//slash"),
        format!("{p}./dot"),
        format!("{p}../up"),
        format!("{p}.."),
        format!("{p}sp ace"),
        format!("{p}hash#1"),
        format!("{p}back\\slash"),
        format!("{p}caf\u{e9}"),
        format!("{p}nul\0"),
        format!("{p}{long_segment}"),
        too_long,
    ];
    for key in &bad {
        let what = format!("key {key:?}");
        assert_invalid(blob.put(key, Bytes::from_static(b"x")).await, &what);
        assert_invalid(blob.get_range(key, 0..1).await, &what);
        assert_invalid(blob.size(key).await, &what);
        assert_invalid(blob.delete(key).await, &what);
    }
    for prefix in ["/", "/abs", "sp ace", "a//", "../x", "hash#"] {
        assert_invalid(blob.list(prefix).await, &format!("prefix {prefix:?}"));
    }
    let valid = [
        format!("{p}Az09._-"),
        format!("{p}.hidden"),
        format!("{p}a/b/c/d/e/f"),
        format!("{p}{}", "m".repeat(crate::MAX_BLOB_SEGMENT_LEN)),
        longest,
    ];
    for key in &valid {
        blob.put(key, Bytes::from(key.clone())).await.unwrap();
        assert_eq!(
            get_all(blob.as_ref(), key).await.as_deref(),
            Some(key.as_bytes()),
            "valid key {key:?}"
        );
    }
    assert_eq!(blob.list(&p).await.unwrap().len(), valid.len());
}

pub async fn blob_concurrent_puts<H: BlobHarness + ?Sized>(h: &H) {
    let blob = h.open_blob().await;
    let p = prefix("blob_concurrent");
    // Different keys, several in directories created concurrently.
    let puts = (0..32u8).map(|i| {
        let (blob, key) = (blob.clone(), format!("{p}d{}/k{i:02}", i % 4));
        tokio::spawn(async move { blob.put(&key, pattern(1000 + usize::from(i), i)).await })
    });
    for r in join_all(puts).await {
        r.unwrap().unwrap();
    }
    let all = blob.list(&p).await.unwrap();
    assert_eq!(all.len(), 32, "every concurrent put must land");
    for i in 0..32u8 {
        let key = format!("{p}d{}/k{i:02}", i % 4);
        assert_eq!(
            get_all(blob.as_ref(), &key).await,
            Some(pattern(1000 + usize::from(i), i)),
            "content of {key}"
        );
    }
}

pub async fn blob_max_object_round_trip<H: BlobHarness + ?Sized>(h: &H) {
    let blob = h.open_blob().await;
    let p = prefix("blob_max");
    let key = format!("{p}big");
    let data = pattern(MAX_OBJECT_LEN, 7);
    blob.put(&key, data.clone()).await.unwrap();
    assert_eq!(blob.size(&key).await.unwrap(), Some(MAX_OBJECT_LEN as u64));
    let whole = blob
        .get_range(&key, 0..MAX_OBJECT_LEN as u64)
        .await
        .unwrap()
        .unwrap();
    assert!(whole == data, "a MAX_OBJECT_LEN object must round-trip");
    let mid = MAX_OBJECT_LEN as u64 / 2;
    let part = blob
        .get_range(&key, mid - 1000..mid + 1_048_576)
        .await
        .unwrap()
        .unwrap();
    assert!(
        part == data
            .slice(usize::try_from(mid).unwrap() - 1000..usize::try_from(mid).unwrap() + 1_048_576),
        "a 1 MiB range from the middle"
    );
    let tail = blob
        .get_range(&key, MAX_OBJECT_LEN as u64 - 10..MAX_OBJECT_LEN as u64 + 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tail, data.slice(MAX_OBJECT_LEN - 10..));
}

pub async fn blob_durability_across_reopen<H: BlobHarness + ?Sized>(h: &H) {
    let p = prefix("blob_durable");
    {
        let blob = h.open_blob().await;
        let puts = (0..16u8).map(|i| {
            let (blob, key) = (blob.clone(), format!("{p}n{}/k{i:02}", i % 3));
            tokio::spawn(async move { blob.put(&key, pattern(100, i)).await.unwrap() })
        });
        for r in join_all(puts).await {
            r.unwrap();
        }
        blob.put(&format!("{p}n1/k01"), Bytes::from_static(b"overwritten"))
            .await
            .unwrap();
        blob.delete(&format!("{p}n0/k00")).await.unwrap();
    }
    let blob: Arc<dyn BlobStore> = h.open_blob().await;
    let all = blob.list(&p).await.unwrap();
    assert_eq!(
        all.len(),
        15,
        "every acknowledged put (and the delete) must survive reopen"
    );
    assert_eq!(
        get_all(blob.as_ref(), &format!("{p}n1/k01"))
            .await
            .as_deref(),
        Some(&b"overwritten"[..]),
        "the overwrite must survive reopen"
    );
    assert_eq!(blob.size(&format!("{p}n0/k00")).await.unwrap(), None);
    for i in 2..16u8 {
        let key = format!("{p}n{}/k{i:02}", i % 3);
        assert_eq!(
            get_all(blob.as_ref(), &key).await,
            Some(pattern(100, i)),
            "{key}"
        );
    }
}
