//! Attachments: encrypted upload through MediaService, delivery in an E2EE message,
//! verified download.

use guardyn_sdk::{Event, SdkError};
use rand::Rng as _;

use super::support::*;

const MIB: usize = 1024 * 1024;

/// Every object the server's blob store holds, concatenated in key order.
async fn stored_bytes(server: &guardyn_testkit::TestServer) -> Vec<u8> {
    let blob = server.stores().blob;
    let mut out = Vec::new();
    for object in blob.list("").await.unwrap() {
        let data = blob
            .get_range(&object.key, 0..object.size)
            .await
            .unwrap()
            .unwrap();
        out.extend_from_slice(&data);
    }
    out
}

#[tokio::test]
async fn a_20_mib_file_travels_encrypted_and_arrives_byte_identical() {
    let server = server().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;

    let mut plain = vec![0u8; 20 * MIB + 12_345];
    rand::rng().fill_bytes(&mut plain);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("holiday photos.bin");
    std::fs::write(&src, &plain).unwrap();

    let attachment = alice.upload_file(&src, "application/x-test").await.unwrap();
    assert_eq!(attachment.plaintext_size, plain.len() as u64);
    assert_eq!(attachment.file_name, "holiday photos.bin");
    assert!(!format!("{attachment:?}").contains(&format!("{:?}", &attachment.key[..])));
    alice
        .send_attachment(bob.account_id(), &attachment)
        .await
        .unwrap();

    // The server holds exactly the ciphertext: right size and digest, no plaintext in it.
    let stored = stored_bytes(&server).await;
    assert_eq!(stored.len() as u64, attachment.size);
    assert_eq!(
        <sha2::Sha256 as sha2::Digest>::digest(&stored).as_slice(),
        attachment.sha256.as_slice()
    );
    for at in [0, 5 * MIB + 3, plain.len() - 64] {
        let sample = &plain[at..at + 32];
        assert!(
            !stored.windows(32).any(|w| w == sample),
            "plaintext at {at} found in the stored blob"
        );
    }

    // Bob receives the attachment in an ordinary message and decrypts it.
    let received = bob
        .sync()
        .await
        .unwrap()
        .into_iter()
        .find_map(|e| match e {
            Event::Message(m) => m.attachment,
            _ => None,
        })
        .expect("an attachment message");
    assert_eq!(received, attachment);
    let mut out = Vec::new();
    let n = bob.download(&received, &mut out).await.unwrap();
    assert_eq!(n, plain.len() as u64);
    assert!(out == plain, "downloaded bytes differ");

    // To a path: renamed into place after the checks; an existing file is not replaced.
    let saved = dir.path().join(received.safe_file_name());
    assert!(bob.download_to_path(&received, &saved).await.is_err());
    let saved = dir.path().join("copy.bin");
    bob.download_to_path(&received, &saved).await.unwrap();
    assert!(std::fs::read(&saved).unwrap() == plain);

    // A wrong key (or digest) fails, and no partial file is left behind.
    let mut wrong = received.clone();
    wrong.key[0] ^= 1;
    let bad = dir.path().join("bad.bin");
    let err = bob.download_to_path(&wrong, &bad).await.unwrap_err();
    assert!(matches!(err, SdkError::Corrupt(_)), "{err}");
    let mut wrong = received.clone();
    wrong.sha256[0] ^= 1;
    let err = bob.download_to_path(&wrong, &bad).await.unwrap_err();
    assert!(matches!(err, SdkError::Corrupt(_)), "{err}");
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["copy.bin", "holiday photos.bin"]);
}

#[tokio::test]
async fn small_and_empty_files_and_group_attachments() {
    let server = server().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;

    for body in [Vec::new(), b"hello attachment".to_vec()] {
        let attachment = alice
            .upload_reader(
                std::io::Cursor::new(body.clone()),
                "../../x.txt",
                "text/plain",
            )
            .await
            .unwrap();
        assert_eq!(attachment.safe_file_name(), "x.txt");
        alice
            .send_attachment(bob.account_id(), &attachment)
            .await
            .unwrap();
        let mut inbox = bob.listen().await.unwrap();
        let m = next_message(&mut inbox).await;
        drop(inbox);
        assert!(m.body.is_empty());
        let got = m.attachment.expect("attachment");
        let mut out = Vec::new();
        bob.download(&got, &mut out).await.unwrap();
        assert_eq!(out, body);
    }

    // Plain messages still arrive without an attachment.
    alice.send(bob.account_id(), b"text").await.unwrap();
    let events = bob.sync().await.unwrap();
    assert_eq!(bodies(&events), vec!["text"]);
    assert!(events.iter().all(|e| match e {
        Event::Message(m) => m.attachment.is_none(),
        _ => true,
    }));

    // In a group.
    let group = alice.create_group().await.unwrap();
    alice
        .add_to_group(&group, &[bob.account_id()])
        .await
        .unwrap();
    let attachment = alice
        .upload_reader(std::io::Cursor::new(vec![7u8; 70_000]), "g.bin", "")
        .await
        .unwrap();
    alice
        .send_group_attachment(&group, &attachment)
        .await
        .unwrap();
    let got = bob
        .sync()
        .await
        .unwrap()
        .into_iter()
        .find_map(|e| match e {
            Event::GroupMessage { message, .. } => message.attachment,
            _ => None,
        })
        .expect("group attachment");
    let mut out = Vec::new();
    bob.download(&got, &mut out).await.unwrap();
    assert_eq!(out, vec![7u8; 70_000]);
}
