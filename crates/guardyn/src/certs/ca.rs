//! The mesh certificate authority on disk: an offline root, an intermediate that signs service
//! certificates and the CRL, and one certificate chain + key per service or instance.
//!
//! Layout of the CA directory (what `init`, `issue`, `rotate` and `revoke` read and write):
//! `root.pem`/`root.key` (the trust anchor every verifier loads as its CA; the key signs only
//! the intermediate and can be moved offline after `init`), `intermediate.pem`/`.key`,
//! `crl.pem` (signed by the intermediate), `revoked.json` (what the CRL lists), and
//! `<name>.pem` (leaf then intermediate) with `<name>.key` per issued certificate.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::files::{KEY_MODE, PUBLIC_MODE, read_text, write_atomic};

const ROOT_DAYS: i64 = 3650;
const INTERMEDIATE_DAYS: i64 = 1825;
/// The CRL's nextUpdate; `revoke` (or `crl` refresh on any revoke) publishes a new one.
const CRL_DAYS: i64 = 30;
const RESERVED: [&str; 4] = ["root", "intermediate", "crl", "revoked"];

/// Paths of one issued certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub chain: PathBuf,
    pub key: PathBuf,
    /// Serial number, lowercase hex.
    pub serial: String,
    pub not_after: OffsetDateTime,
}

/// What `rotate` did.
#[derive(Debug)]
pub enum Rotation {
    Renewed(Issued),
    /// Not within the renewal window yet.
    NotDue {
        not_after: OffsetDateTime,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Revoked {
    crl_number: u64,
    entries: Vec<RevokedEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RevokedEntry {
    serial: String,
    revoked_at: i64,
}

pub fn root_path(dir: &Path) -> PathBuf {
    dir.join("root.pem")
}

pub fn crl_path(dir: &Path) -> PathBuf {
    dir.join("crl.pem")
}

/// Create the root and the intermediate, and an empty CRL. Refuses to overwrite a CA.
pub fn init(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    if root_path(dir).exists() {
        bail!("{} already holds a CA (root.pem)", dir.display());
    }
    let now = OffsetDateTime::now_utc();
    let root_key = KeyPair::generate()?;
    let mut root = ca_params("Guardyn Mesh Root CA", 1);
    root.not_before = now - Duration::minutes(5);
    root.not_after = now + Duration::days(ROOT_DAYS);
    let root_cert = root.self_signed(&root_key)?;
    let root_issuer = Issuer::new(root, &root_key);

    let inter_key = KeyPair::generate()?;
    let mut inter = ca_params("Guardyn Mesh Intermediate CA", 0);
    inter.not_before = now - Duration::minutes(5);
    inter.not_after = now + Duration::days(INTERMEDIATE_DAYS);
    inter.use_authority_key_identifier_extension = true;
    let inter_cert = inter.signed_by(&inter_key, &root_issuer)?;

    write_atomic(
        &dir.join("root.key"),
        root_key.serialize_pem().as_bytes(),
        KEY_MODE,
    )?;
    write_atomic(
        &dir.join("intermediate.key"),
        inter_key.serialize_pem().as_bytes(),
        KEY_MODE,
    )?;
    write_atomic(
        &dir.join("intermediate.pem"),
        inter_cert.pem().as_bytes(),
        PUBLIC_MODE,
    )?;
    write_crl(dir, &Revoked::default())?;
    // Last: its presence is what marks the directory as an initialised CA.
    write_atomic(&root_path(dir), root_cert.pem().as_bytes(), PUBLIC_MODE)?;
    Ok(())
}

fn ca_params(common_name: &str, path_len: u8) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Guardyn");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// A positive 127-bit serial whose DER form is exactly these 16 bytes (first byte 0x40..0x7f),
/// so the hex we print is the hex verifiers and CRLs show.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("certificate name {name:?}: use 1-64 of [A-Za-z0-9._-], not starting with '.'");
    }
    if RESERVED.contains(&name) {
        bail!("certificate name {name:?} is reserved for the CA's own files");
    }
    Ok(())
}

fn intermediate(dir: &Path) -> anyhow::Result<(String, KeyPair)> {
    let pem = read_text(&dir.join("intermediate.pem"))?;
    let key = KeyPair::from_pem(&read_text(&dir.join("intermediate.key"))?)
        .context("intermediate.key")?;
    Ok((pem, key))
}

/// Issue `<name>.pem` (leaf + intermediate) and `<name>.key`, valid for `days`, for the
/// given SANs (IP addresses or DNS names; `name` itself when none), usable as server and as
/// client (mutual TLS between services).
pub fn issue(dir: &Path, name: &str, sans: &[String], days: u32) -> anyhow::Result<Issued> {
    check_name(name)?;
    let sans = if sans.is_empty() {
        vec![name.to_owned()]
    } else {
        sans.to_vec()
    };
    let (inter_pem, inter_key) = intermediate(dir)?;
    let issuer = Issuer::from_ca_cert_pem(&inter_pem, &inter_key)
        .context("intermediate.pem is not a certificate")?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(s.clone().try_into().with_context(
                || format!("SAN {s:?} is not a DNS name or IP address"),
            )?)),
        })
        .collect::<anyhow::Result<_>>()?;
    params.distinguished_name = self::name(name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::Sha256;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(i64::from(days));
    let serial = random_serial();
    params.serial_number = Some(serial.clone());
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    let issued = Issued {
        chain: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        serial: hex(serial.as_ref()),
        not_after: params.not_after,
    };
    // Key first, then the chain: a server reloading between the two sees a mismatched pair,
    // refuses it and keeps serving the old one until the chain arrives.
    write_atomic(&issued.key, key.serialize_pem().as_bytes(), KEY_MODE)?;
    write_atomic(
        &issued.chain,
        format!("{}{}", cert.pem(), inter_pem).as_bytes(),
        PUBLIC_MODE,
    )?;
    Ok(issued)
}

/// What `rotate` and `revoke` need from an issued certificate.
#[derive(Debug)]
pub struct Existing {
    pub serial: String,
    pub not_after: OffsetDateTime,
    pub sans: Vec<String>,
}

/// Read the leaf (first certificate) of `<name>.pem`.
pub fn existing(dir: &Path, name: &str) -> anyhow::Result<Existing> {
    check_name(name)?;
    let path = dir.join(format!("{name}.pem"));
    let text = read_text(&path)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for general in &ext.value.general_names {
            match general {
                x509_parser::extensions::GeneralName::DNSName(d) => sans.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).map(IpAddr::from).ok(),
                        16 => <[u8; 16]>::try_from(*b).map(IpAddr::from).ok(),
                        _ => None,
                    };
                    sans.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    Ok(Existing {
        serial: hex(cert.raw_serial()),
        not_after: OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())?,
        sans,
    })
}

/// Renew `<name>` with the same SANs and a new key when it expires within `window_days`
/// (or always with `force`); both files are replaced atomically.
pub fn rotate(
    dir: &Path,
    name: &str,
    window_days: u32,
    days: u32,
    force: bool,
) -> anyhow::Result<Rotation> {
    let current = existing(dir, name)?;
    let due = current.not_after - Duration::days(i64::from(window_days));
    if !force && OffsetDateTime::now_utc() < due {
        return Ok(Rotation::NotDue {
            not_after: current.not_after,
        });
    }
    Ok(Rotation::Renewed(issue(dir, name, &current.sans, days)?))
}

/// Revoke by certificate name (`<name>.pem` in the CA directory) or serial (hex, colons
/// allowed), then publish a new `crl.pem`. Returns the revoked serial.
pub fn revoke(dir: &Path, target: &str) -> anyhow::Result<String> {
    let serial = if check_name(target).is_ok() && dir.join(format!("{target}.pem")).is_file() {
        existing(dir, target)?.serial
    } else {
        let hex: String = target
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        if hex.is_empty() || hex.len() % 2 == 1 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!("{target:?} is neither an issued certificate's name nor a hex serial number");
        }
        hex
    };
    let path = dir.join("revoked.json");
    let mut revoked: Revoked = if path.is_file() {
        serde_json::from_str(&read_text(&path)?).context("revoked.json")?
    } else {
        Revoked::default()
    };
    if !revoked.entries.iter().any(|e| e.serial == serial) {
        revoked.entries.push(RevokedEntry {
            serial: serial.clone(),
            revoked_at: OffsetDateTime::now_utc().unix_timestamp(),
        });
    }
    revoked.crl_number += 1;
    write_crl(dir, &revoked)?;
    Ok(serial)
}

fn write_crl(dir: &Path, revoked: &Revoked) -> anyhow::Result<()> {
    let (inter_pem, inter_key) = intermediate(dir)?;
    let issuer = Issuer::from_ca_cert_pem(&inter_pem, &inter_key)
        .context("intermediate.pem is not a certificate")?;
    let now = OffsetDateTime::now_utc();
    let revoked_certs = revoked
        .entries
        .iter()
        .map(|e| {
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&unhex(&e.serial)?),
                revocation_time: OffsetDateTime::from_unix_timestamp(e.revoked_at)?,
                reason_code: None,
                invalidity_date: None,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let crl = CertificateRevocationListParams {
        this_update: now - Duration::minutes(5),
        next_update: now + Duration::days(CRL_DAYS),
        crl_number: SerialNumber::from(revoked.crl_number.max(1)),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)?;
    write_atomic(
        &dir.join("revoked.json"),
        serde_json::to_string_pretty(revoked)?.as_bytes(),
        PUBLIC_MODE,
    )?;
    write_atomic(&crl_path(dir), crl.pem()?.as_bytes(), PUBLIC_MODE)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> anyhow::Result<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .with_context(|| format!("bad serial {s:?} in revoked.json"))
        })
        .collect()
}
