//! `tls-server-end-point` channel binding (RFC 5929) for SCRAM-SHA-256-PLUS.

/// The `tls-server-end-point` hash of a DER certificate, or `None` when its signature
/// algorithm is not one PostgreSQL can bind to.
pub(crate) fn end_point_hash(cert_der: &[u8]) -> Option<Vec<u8>> {
    let algorithm = signature_hash(cert_der)?;
    Some(ring::digest::digest(algorithm, cert_der).as_ref().to_vec())
}

/// The digest for a certificate's `signatureAlgorithm`, per RFC 5929 §4.1.
fn signature_hash(cert_der: &[u8]) -> Option<&'static ring::digest::Algorithm> {
    use ring::digest::{SHA256, SHA384, SHA512};
    let oid = signature_algorithm_oid(cert_der)?;
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    if let Some(rest) = oid.strip_prefix(RSA) {
        return match rest {
            [0x04] | [0x05] | [0x0b] => Some(&SHA256), // md5, sha1, sha256 WithRSA
            [0x0c] => Some(&SHA384),
            [0x0d] => Some(&SHA512),
            _ => None, // RSASSA-PSS, SHA-224: PostgreSQL cannot bind either
        };
    }
    if let Some(rest) = oid.strip_prefix(ECDSA) {
        return match rest {
            [0x01] | [0x03, 0x02] => Some(&SHA256), // ecdsa-with-SHA1, -SHA256
            [0x03, 0x03] => Some(&SHA384),
            [0x03, 0x04] => Some(&SHA512),
            _ => None,
        };
    }
    None
}

/// Reads `Certificate.signatureAlgorithm.algorithm` (the OID's content bytes) from DER:
/// `SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE { OID, … }, … }`.
pub(crate) fn signature_algorithm_oid(der: &[u8]) -> Option<&[u8]> {
    let (tag, cert, _) = tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _tbs, rest) = tlv(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, alg, _) = tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = tlv(alg)?;
    (tag == 0x06).then_some(oid)
}

/// One DER tag-length-value: (tag, content, what follows).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    use super::*;

    #[test]
    fn real_certificate_binds_with_sha256() {
        let pem = crate::config::tests::TEST_CA_PEM;
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        // ecdsa-with-SHA256
        assert_eq!(
            signature_algorithm_oid(der.as_ref()),
            Some(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02][..])
        );
        assert_eq!(
            end_point_hash(der.as_ref()),
            Some(
                ring::digest::digest(&ring::digest::SHA256, der.as_ref())
                    .as_ref()
                    .to_vec()
            )
        );
    }

    /// A DER certificate skeleton with the given signature algorithm OID (content bytes).
    fn skeleton(oid: &[u8]) -> Vec<u8> {
        let tbs = [0x30, 0x03, 0x02, 0x01, 0x05];
        let mut alg = vec![0x06, oid.len() as u8];
        alg.extend_from_slice(oid);
        alg.extend_from_slice(&[0x05, 0x00]);
        let mut alg_seq = vec![0x30, alg.len() as u8];
        alg_seq.extend(alg);
        let sig = [0x03, 0x02, 0x00, 0xff];
        let mut body = Vec::new();
        body.extend_from_slice(&tbs);
        body.extend(alg_seq);
        body.extend_from_slice(&sig);
        // Long-form length on the outer sequence, to exercise it.
        let mut der = vec![0x30, 0x81, body.len() as u8];
        der.extend(body);
        der
    }

    #[test]
    fn signature_hash_follows_rfc_5929() {
        let sha256_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
        let sha1_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
        let sha512_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
        let pss = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
        let ecdsa384 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
        let ed25519 = [0x2b, 0x65, 0x70];
        let len = |oid: &[u8]| end_point_hash(&skeleton(oid)).map(|h| h.len());
        assert_eq!(len(&sha256_rsa), Some(32));
        assert_eq!(len(&sha1_rsa), Some(32));
        assert_eq!(len(&sha512_rsa), Some(64));
        assert_eq!(len(&ecdsa384), Some(48));
        assert_eq!(len(&pss), None);
        assert_eq!(len(&ed25519), None);
        let der = skeleton(&sha256_rsa);
        assert_eq!(signature_algorithm_oid(&der), Some(&sha256_rsa[..]));
        assert_eq!(
            end_point_hash(&der),
            Some(
                ring::digest::digest(&ring::digest::SHA256, &der)
                    .as_ref()
                    .to_vec()
            )
        );
        assert_eq!(signature_algorithm_oid(&der[..der.len() - 1]), None);
        assert_eq!(signature_algorithm_oid(b""), None);
    }
}
