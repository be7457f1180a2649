#![allow(clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use x509_parser::prelude::*;

use super::*;

fn pems(path: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read(path).expect("read pem");
    Pem::iter_from_buffer(&text)
        .map(|p| p.expect("pem block").contents)
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn init_issue_produce_a_chain_to_the_root_with_private_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    init(dir.path()).expect("init");
    assert_eq!(mode(&dir.path().join("root.key")), 0o600);
    assert_eq!(mode(&dir.path().join("intermediate.key")), 0o600);
    assert!(
        init(dir.path()).is_err(),
        "a second init must not replace the CA"
    );

    let issued = issue(
        dir.path(),
        "auth-0",
        &["auth.mesh".into(), "10.1.2.3".into()],
        90,
    )
    .expect("issue");
    assert_eq!(mode(&issued.key), 0o600);
    let chain = pems(&issued.chain);
    assert_eq!(chain.len(), 2, "leaf then intermediate");
    let root = pems(&root_path(dir.path())).remove(0);
    let (_, leaf) = X509Certificate::from_der(&chain[0]).expect("leaf");
    let (_, inter) = X509Certificate::from_der(&chain[1]).expect("intermediate");
    let (_, root) = X509Certificate::from_der(&root).expect("root");
    leaf.verify_signature(Some(inter.public_key()))
        .expect("the intermediate signed the leaf");
    inter
        .verify_signature(Some(root.public_key()))
        .expect("the root signed the intermediate");
    assert!(inter.is_ca() && root.is_ca() && !leaf.is_ca());
    let eku = leaf
        .extended_key_usage()
        .expect("eku")
        .expect("eku present")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    assert_eq!(hex(leaf.raw_serial()), issued.serial);
    let found = existing(dir.path(), "auth-0").expect("existing");
    assert_eq!(
        found.sans,
        vec!["auth.mesh".to_owned(), "10.1.2.3".to_owned()]
    );
    assert!(issue(dir.path(), "../escape", &[], 1).is_err());
    assert!(issue(dir.path(), "root", &[], 1).is_err());
}

#[test]
fn rotate_renews_only_within_the_window_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    init(dir.path()).expect("init");
    let first = issue(dir.path(), "svc", &["svc.mesh".into()], 90).expect("issue");
    match rotate(dir.path(), "svc", 30, 90, false).expect("rotate") {
        Rotation::NotDue { .. } => {}
        Rotation::Renewed(_) => panic!("90 days left is outside a 30-day window"),
    }
    assert_eq!(
        existing(dir.path(), "svc").expect("read").serial,
        first.serial
    );
    let Rotation::Renewed(due) = rotate(dir.path(), "svc", 100, 90, false).expect("rotate") else {
        panic!("90 days left is within a 100-day window");
    };
    assert_ne!(due.serial, first.serial);
    let Rotation::Renewed(forced) = rotate(dir.path(), "svc", 0, 90, true).expect("rotate") else {
        panic!("--force renews");
    };
    let now = existing(dir.path(), "svc").expect("read");
    assert_eq!(now.serial, forced.serial);
    assert_eq!(now.sans, vec!["svc.mesh".to_owned()], "SANs carried over");
    // No temporary files are left behind by the atomic writes.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn revoke_lists_the_serial_in_a_crl_signed_by_the_intermediate() {
    let dir = tempfile::tempdir().expect("tempdir");
    init(dir.path()).expect("init");
    let a = issue(dir.path(), "a", &[], 90).expect("issue");
    let b = issue(dir.path(), "b", &[], 90).expect("issue");
    assert_eq!(revoke(dir.path(), "a").expect("by name"), a.serial);
    let colons: Vec<String> = b
        .serial
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect();
    assert_eq!(
        revoke(dir.path(), &colons.join(":")).expect("by serial"),
        b.serial
    );
    assert!(revoke(dir.path(), "not-a-name-or-serial").is_err());

    let crl_der = pems(&crl_path(dir.path())).remove(0);
    let (_, crl) = CertificateRevocationList::from_der(&crl_der).expect("crl");
    let inter = pems(&dir.path().join("intermediate.pem")).remove(0);
    let (_, inter) = X509Certificate::from_der(&inter).expect("intermediate");
    crl.verify_signature(inter.public_key())
        .expect("the intermediate signed the CRL");
    let listed: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| hex(r.raw_serial()))
        .collect();
    assert_eq!(listed, vec![a.serial, b.serial]);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
