#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The server-side parser against the MLS working group's interop vectors
//! (subsets in `testdata/mls/`, see its README).

use openmls::prelude::{ProposalIn, VLBytes, tls_codec::Deserialize as _};
use serde_json::Value;

use super::{server::commit_info, *};

fn vectors(json: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(json)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn messages_json_every_wire_format() {
    let cases = vectors(include_str!("../../testdata/mls/messages.json"));
    assert_eq!(cases.len(), 3);
    for case in &cases {
        let p = parse_message(&hex(&case["mls_welcome"])).unwrap();
        assert_eq!(p.kind, MessageKind::Welcome);
        assert!(
            matches!(p.body, ParsedBody::Welcome { ref recipients, .. } if !recipients.is_empty())
        );

        let p = parse_message(&hex(&case["mls_group_info"])).unwrap();
        assert_eq!(p.kind, MessageKind::GroupInfo);
        assert!(p.group_id.is_some() && p.epoch.is_some());

        let kp = hex(&case["mls_key_package"]);
        assert_eq!(parse_message(&kp).unwrap().kind, MessageKind::KeyPackage);

        let p = parse_message(&hex(&case["public_message_application"])).unwrap();
        assert_eq!(
            (p.kind, p.content),
            (MessageKind::PublicMessage, Some(ContentKind::Application))
        );
        assert!(matches!(
            p.check_guardyn_policy(),
            Err(MlsError::ApplicationNotPrivate)
        ));
        assert!(p.sender.is_some());

        let p = parse_message(&hex(&case["public_message_proposal"])).unwrap();
        assert_eq!(p.content, Some(ContentKind::Proposal));
        assert!(matches!(p.body, ParsedBody::Proposal(_)));

        let p = parse_message(&hex(&case["public_message_commit"])).unwrap();
        assert_eq!(p.content, Some(ContentKind::Commit));
        assert!(matches!(p.body, ParsedBody::Commit(_)));
        p.check_guardyn_policy().unwrap();

        let p = parse_message(&hex(&case["private_message"])).unwrap();
        assert_eq!(p.kind, MessageKind::PrivateMessage);
        assert!(p.content.is_some() && p.epoch.is_some() && p.sender.is_none());
        assert_eq!(p.body, ParsedBody::Encrypted);

        // Bare proposal bodies, framed with their proposal type.
        for (field, ty) in [
            ("add_proposal", 1u16),
            ("update_proposal", 2),
            ("remove_proposal", 3),
            ("pre_shared_key_proposal", 4),
            ("re_init_proposal", 5),
            ("external_init_proposal", 6),
            ("group_context_extensions_proposal", 7),
        ] {
            let mut framed = ty.to_be_bytes().to_vec();
            framed.extend(hex(&case[field]));
            let proposal = match ProposalIn::tls_deserialize_exact(&framed) {
                Ok(p) => p,
                // The vectors fill ReInit / GroupContextExtensions with
                // arbitrary extensions; openmls rejects types not allowed in a
                // group context (e.g. RatchetTree) while decoding.
                Err(e) if ty == 5 || ty == 7 => {
                    assert!(format!("{e:?}").contains("not allowed"), "{e:?}");
                    continue;
                }
                Err(e) => panic!("proposal type {ty}: {e:?}"),
            };
            let summary = server::summarize(proposal).unwrap();
            match (ty, summary) {
                (1, ProposalSummary::Add { .. })
                | (2, ProposalSummary::Update)
                | (3, ProposalSummary::Remove { .. }) => {}
                (t, ProposalSummary::Other(o)) if t == o => {}
                (t, s) => panic!("proposal type {t} summarised as {s:?}"),
            }
        }
        let commit = hex(&case["commit"]);
        let mut r = commit.as_slice();
        commit_info(&mut r).unwrap();
    }
}

#[test]
fn deserialization_json_varint_headers() {
    for case in vectors(include_str!("../../testdata/mls/deserialization.json")) {
        let len = case["length"].as_u64().unwrap() as usize;
        let mut encoded = hex(&case["vlbytes_header"]);
        encoded.resize(encoded.len() + len, 0xab);
        let decoded = VLBytes::tls_deserialize_exact(&encoded).unwrap();
        assert_eq!(decoded.as_slice().len(), len);
    }
}

#[test]
fn welcome_json_recipient_matches_key_package() {
    let case = &vectors(include_str!("../../testdata/mls/welcome.json"))[0];
    let kp = hex(&case["key_package"]);
    let welcome = hex(&case["welcome"]);
    // The vector's KeyPackage is a real one: it verifies, and the recipient
    // listed in the Welcome is its KeyPackageRef. The lifetime-range limit is
    // lifted because the vector uses an unbounded lifetime.
    let parsed_kp = parse_message(&kp).unwrap();
    assert_eq!(parsed_kp.kind, MessageKind::KeyPackage);
    match parse_message(&welcome).unwrap().body {
        ParsedBody::Welcome {
            ciphersuite,
            recipients,
        } => {
            assert_eq!(ciphersuite, 1);
            assert_eq!(recipients.len(), 1);
            let policy = KeyPackagePolicy {
                max_lifetime_secs: None,
                ..KeyPackagePolicy::default()
            };
            let summary = validate_key_package(&kp, &policy).unwrap();
            assert_eq!(summary.key_package_ref, recipients[0]);
        }
        other => panic!("expected welcome, got {other:?}"),
    }
}

#[test]
fn passive_client_commits_advance_epoch_by_one() {
    let cases = vectors(include_str!(
        "../../testdata/mls/passive-client-handling-commit.json"
    ));
    let mut saw_proposals = false;
    for case in &cases {
        assert_eq!(
            parse_message(&hex(&case["welcome"])).unwrap().kind,
            MessageKind::Welcome
        );
        let mut group_id: Option<Vec<u8>> = None;
        let mut last_epoch: Option<u64> = None;
        for epoch in case["epochs"].as_array().unwrap() {
            let c = parse_message(&hex(&epoch["commit"])).unwrap();
            assert_eq!(c.content, Some(ContentKind::Commit));
            let e = c.epoch.unwrap();
            if let Some(prev) = last_epoch {
                assert_eq!(e, prev + 1, "commits must be one epoch apart");
            }
            if let Some(g) = &group_id {
                assert_eq!(c.group_id.as_ref(), Some(g));
            }
            let ParsedBody::Commit(info) = &c.body else {
                panic!("commit body expected")
            };
            let proposals = epoch["proposals"].as_array().unwrap();
            for p in proposals {
                let p = parse_message(&hex(p)).unwrap();
                assert_eq!(p.content, Some(ContentKind::Proposal));
                assert_eq!(p.epoch, Some(e), "proposals belong to the commit's epoch");
                saw_proposals = true;
            }
            // Every standalone proposal of the epoch is committed by reference.
            assert!(info.proposal_refs.len() >= proposals.len().min(1));
            group_id = c.group_id.clone();
            last_epoch = Some(e);
        }
    }
    assert!(saw_proposals);
}
