//! Run-time test PKI written to a temp dir: CA + CRL, ECDSA and RSA server
//! certificates, and partner certificates good and bad.

use mtlsgate::demo::pki::{Ca, ClientSpec, Leaf};
use rcgen::DnType;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub struct Pki {
    /// Keeps the directory alive for the test's duration.
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub ca: Ca,
    pub other_ca: Ca,
    pub leaves: HashMap<&'static str, Leaf>,
}

pub fn write(dir: &Path, name: &str, l: &Leaf) {
    std::fs::write(dir.join(format!("{name}.crt")), &l.cert_pem).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), &l.key_pem).unwrap();
}

impl Pki {
    pub fn new() -> Pki {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let ca = Ca::new("Test CA").unwrap();
        let other_ca = Ca::new("Other CA").unwrap();
        let mut leaves = HashMap::new();
        leaves.insert(
            "server",
            ca.server(&["localhost", "127.0.0.1"], false).unwrap(),
        );
        leaves.insert(
            "server-rsa",
            ca.server(&["localhost", "127.0.0.1"], true).unwrap(),
        );
        leaves.insert("api", ca.server(&["api.example.test"], false).unwrap());
        let mut good = ClientSpec::named("Partner A").uri("spiffe://partner.example/a");
        good.dn
            .insert(0, (DnType::OrganizationName, "Partner A Ltd".into()));
        leaves.insert("good", ca.client(&good).unwrap());
        let mut c = ClientSpec::named("Partner C").uri("spiffe://partner.example/c");
        c.dns.push("api.partner-c.example".into());
        leaves.insert("partner-c", ca.client(&c).unwrap());
        leaves.insert(
            "outsider",
            ca.client(&ClientSpec::named("Outsider").uri("spiffe://other.example/x"))
                .unwrap(),
        );
        let mut expired = ClientSpec::named("Expired").uri("spiffe://partner.example/expired");
        expired.expired = true;
        leaves.insert("expired", ca.client(&expired).unwrap());
        leaves.insert(
            "revoked",
            ca.client(&ClientSpec::named("Revoked").uri("spiffe://partner.example/revoked"))
                .unwrap(),
        );
        let mut eku = ClientSpec::named("Wrong EKU").uri("spiffe://partner.example/eku");
        eku.server_eku_only = true;
        leaves.insert("wrong-eku", ca.client(&eku).unwrap());
        leaves.insert(
            "foreign",
            other_ca
                .client(&ClientSpec::named("Foreign").uri("spiffe://partner.example/f"))
                .unwrap(),
        );
        std::fs::write(dir.join("ca.crt"), &ca.cert_pem).unwrap();
        std::fs::write(dir.join("other-ca.crt"), &other_ca.cert_pem).unwrap();
        let crl = ca
            .crl(&[leaves["revoked"].serial], time::Duration::days(7))
            .unwrap();
        std::fs::write(dir.join("ca.crl"), crl).unwrap();
        for (name, l) in &leaves {
            write(&dir, name, l);
        }
        Pki {
            _tmp: tmp,
            dir,
            ca,
            other_ca,
            leaves,
        }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Adds a partner certificate signed by the test CA and writes it as `name`.
    pub fn add_client(&mut self, name: &'static str, spec: &ClientSpec) -> &Leaf {
        let l = self.ca.client(spec).unwrap();
        write(&self.dir, name, &l);
        self.leaves.insert(name, l);
        &self.leaves[name]
    }

    /// Rewrites the CRL to revoke these certificates.
    pub fn revoke(&self, names: &[&str]) {
        let serials: Vec<u64> = names.iter().map(|n| self.leaves[n].serial).collect();
        let crl = self.ca.crl(&serials, time::Duration::days(7)).unwrap();
        std::fs::write(self.dir.join("ca.crl"), crl).unwrap();
    }
}
