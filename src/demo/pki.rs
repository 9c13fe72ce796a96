//! A small rcgen PKI for `mtlsgate demo` and the tests: a CA, server and
//! partner certificates, CRLs. Generated at run time; nothing is committed.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use std::cell::Cell;
use time::{Duration, OffsetDateTime};

pub use rcgen::Error;

/// A certificate and its key, PEM-encoded.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
    pub serial: u64,
}

/// What a partner (client) certificate says. `dn` entries go in the order given.
#[derive(Clone, Default)]
pub struct ClientSpec {
    pub dn: Vec<(DnType, String)>,
    /// More subject attributes with their ASN.1 string type chosen (tests).
    pub dn_values: Vec<(DnType, rcgen::DnValue)>,
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    /// Valid from 10 days ago until yesterday.
    pub expired: bool,
    /// Server-auth EKU only, so a client verifier must refuse it.
    pub server_eku_only: bool,
    pub rsa: bool,
    /// Valid from an hour ago until this long from now (default: a year).
    pub lifetime: Option<Duration>,
}

impl ClientSpec {
    pub fn named(cn: &str) -> Self {
        ClientSpec {
            dn: vec![(DnType::CommonName, cn.to_string())],
            ..Default::default()
        }
    }
    pub fn uri(mut self, u: &str) -> Self {
        self.uris.push(u.to_string());
        self
    }
}

pub struct Ca {
    pub cert_pem: String,
    pub der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    next_serial: Cell<u64>,
}

fn key(rsa: bool) -> Result<KeyPair, Error> {
    if rsa {
        KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
    } else {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
    }
}

fn validity(p: &mut CertificateParams, expired: bool) {
    let now = OffsetDateTime::now_utc();
    if expired {
        p.not_before = now - Duration::days(10);
        p.not_after = now - Duration::days(1);
    } else {
        p.not_before = now - Duration::hours(1);
        p.not_after = now + Duration::days(365);
    }
}

impl Ca {
    pub fn new(cn: &str) -> Result<Ca, Error> {
        let k = key(false)?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.key_identifier_method = KeyIdMethod::Sha256;
        validity(&mut p, false);
        let cert = p.self_signed(&k)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            der: cert.der().to_vec(),
            issuer: Issuer::new(p, k),
            next_serial: Cell::new(1000),
        })
    }

    fn serial(&self) -> u64 {
        let s = self.next_serial.get();
        self.next_serial.set(s + 1);
        s
    }

    fn sign(&self, mut p: CertificateParams, rsa: bool) -> Result<Leaf, Error> {
        let serial = self.serial();
        p.serial_number = Some(SerialNumber::from(serial));
        p.use_authority_key_identifier_extension = true;
        let k = key(rsa)?;
        let cert = p.signed_by(&k, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: k.serialize_pem(),
            der: cert.der().to_vec(),
            serial,
        })
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str], rsa: bool) -> Result<Leaf, Error> {
        let mut p =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        p.distinguished_name = dn;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut p, false);
        self.sign(p, rsa)
    }

    /// A partner certificate as `spec` describes.
    pub fn client(&self, spec: &ClientSpec) -> Result<Leaf, Error> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        for (t, v) in &spec.dn {
            dn.push(t.clone(), v.as_str());
        }
        for (t, v) in &spec.dn_values {
            dn.push(t.clone(), v.clone());
        }
        p.distinguished_name = dn;
        for u in &spec.uris {
            p.subject_alt_names
                .push(SanType::URI(u.as_str().try_into()?));
        }
        for d in &spec.dns {
            p.subject_alt_names
                .push(SanType::DnsName(d.as_str().try_into()?));
        }
        p.extended_key_usages = if spec.server_eku_only {
            vec![ExtendedKeyUsagePurpose::ServerAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        validity(&mut p, spec.expired);
        if let (Some(l), false) = (spec.lifetime, spec.expired) {
            p.not_after = OffsetDateTime::now_utc() + l;
        }
        self.sign(p, spec.rsa)
    }

    /// A CRL revoking `serials`, valid for `valid_for` from now.
    pub fn crl(&self, serials: &[u64], valid_for: Duration) -> Result<String, Error> {
        let now = OffsetDateTime::now_utc();
        let p = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + valid_for,
            crl_number: SerialNumber::from(self.serial()),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        p.signed_by(&self.issuer)?.pem()
    }
}
