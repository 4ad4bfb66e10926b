//! Private keys: loading user key files and generating temporary ed25519 key pairs.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{HashAlg, PrivateKey};

use crate::config::Secret;
use crate::error::KeyError;

/// A key pair generated for one build (`{{ .SSHPublicKey }}`, ansible's private key file).
pub struct TempKeyPair {
    key: Arc<PrivateKey>,
    public_openssh: String,
}

impl fmt::Debug for TempKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TempKeyPair")
            .field("public", &self.public_openssh)
            .finish_non_exhaustive()
    }
}

impl TempKeyPair {
    /// A fresh ed25519 key pair from the kernel's CSPRNG. `comment` ends the public key line
    /// (e.g. `kiln_<build>`).
    pub fn generate_ed25519(comment: &str) -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .map_err(KeyError::Random)?;
        let pair = Ed25519Keypair::from_seed(&seed);
        seed.fill(0);
        let mut key = PrivateKey::from(pair);
        key.set_comment(comment);
        Self::from_key(key)
    }

    fn from_key(key: PrivateKey) -> Result<Self, KeyError> {
        let public_openssh = key
            .public_key()
            .to_openssh()
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        Ok(TempKeyPair {
            key: Arc::new(key),
            public_openssh,
        })
    }

    /// The `authorized_keys` line: `ssh-ed25519 AAAA... comment`.
    pub fn public_key_openssh(&self) -> &str {
        &self.public_openssh
    }

    /// `SHA256:...` fingerprint of the public key (what `ssh-keygen -lf` prints).
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The private key in OpenSSH format. Secret: write it only to a 0600 file.
    pub fn private_key_openssh(&self) -> Result<Secret, KeyError> {
        let pem = self
            .key
            .to_openssh(LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))?;
        Ok(Secret::new(pem.as_str()))
    }

    /// Write the private key to `path`, created with mode 0600 (fails if the file exists).
    pub fn write_private_key(&self, path: &Path) -> Result<(), KeyError> {
        let pem = self.private_key_openssh()?;
        write_secret_file(path, pem.expose().as_bytes())
            .map_err(|e| KeyError::Write(path.to_path_buf(), e))
    }

    pub(crate) fn private_key(&self) -> Arc<PrivateKey> {
        self.key.clone()
    }
}

/// Create `path` with mode 0600 (never world-readable, not even briefly) and write `data`.
pub fn write_secret_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Load a private key file (OpenSSH, PEM PKCS#1/PKCS#8/SEC1; ed25519, rsa, ecdsa).
pub fn load_private_key(path: &Path, passphrase: Option<&Secret>) -> Result<PrivateKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|e| KeyError::Read(path.to_path_buf(), e))?;
    russh::keys::decode_secret_key(&text, passphrase.map(Secret::expose)).map_err(|e| {
        let msg = e.to_string();
        if matches!(e, russh::keys::Error::KeyIsEncrypted) {
            KeyError::NeedsPassphrase(path.to_path_buf())
        } else {
            KeyError::Parse(path.to_path_buf(), msg)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_key_round_trips() {
        let k = TempKeyPair::generate_ed25519("kiln_test").expect("generate");
        assert!(k.public_key_openssh().starts_with("ssh-ed25519 AAAA"));
        assert!(k.public_key_openssh().ends_with(" kiln_test"));
        assert!(k.fingerprint().starts_with("SHA256:"));
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("id");
        k.write_private_key(&p).expect("write");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = load_private_key(&p, None).expect("load");
        assert_eq!(
            back.public_key().to_openssh().expect("pub"),
            k.public_key_openssh()
        );
        // a second write must not clobber
        assert!(k.write_private_key(&p).is_err());
        let k2 = TempKeyPair::generate_ed25519("x").expect("generate");
        assert_ne!(k.public_key_openssh(), k2.public_key_openssh());
    }

    #[test]
    fn missing_or_bad_key_file_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("nope");
        assert!(matches!(
            load_private_key(&p, None),
            Err(KeyError::Read(..))
        ));
        std::fs::write(&p, "not a key").expect("write");
        assert!(matches!(
            load_private_key(&p, None),
            Err(KeyError::Parse(..))
        ));
    }
}
