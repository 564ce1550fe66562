//! The cluster a node belongs to: a random id made by `--init` (see [`crate::node`]), kept in
//! the node's directory, carried by every peer RPC ([`crate::http::CLUSTER_HEADER`]), and
//! adopted by a new node from the first `AppendEntries` or `InstallSnapshot` it takes.
//!
//! Without it, nodes of two clusters (a node whose directory was wiped and that was started
//! again with `--init`; `--init` on several nodes) could take each other's RPCs: a leader of
//! a later term would make the other cluster's nodes follow it, and their journals would
//! mix records that no single cluster committed.
//!
//! The file, [`CLUSTER_ID_FILE`], holds 32 lowercase hexadecimal digits and a newline, and,
//! when the id was adopted rather than made here, a second line `adopted`. It is written
//! once, durably and atomically (a temporary file, fsynced, renamed into place, the directory
//! fsynced): after a crash at any point the directory has no id, or the whole file
//! (temporary files left behind are removed when it is loaded).
//!
//! The origin matters to `--init`: the id is adopted before openraft sees the request that
//! carried it, so a node that stopped in between (or whose log refused that request) holds
//! the id but neither its leader's vote nor an entry: its store counts as new, and `--init`
//! there would start a second cluster under the first one's id, whose leader the first
//! cluster's would meet (openraft takes two committed leaders of one term for an impossible
//! state and panics) and whose log conflicts with the first one's committed entries. `--init`
//! is refused on an adopted id ([`ClusterIdentity::create`]).

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::files::{remove_stale_tmp, replace_file, DaxError};
use crate::lock;

/// The file in a node's directory that holds the id of its cluster.
pub const CLUSTER_ID_FILE: &str = "cluster.id";

/// The cluster id of one node: none yet, or the one in its directory. Shared by the node's
/// server (which checks and adopts) and client (which sends it) sides.
#[derive(Clone, Debug)]
pub struct ClusterIdentity {
    path: PathBuf,
    id: Arc<Mutex<Option<Known>>>,
    /// Held by the one making or adopting the id, across its write and fsync: readers
    /// (every peer RPC checks the id) take only `id`, for a moment.
    writer: Arc<Mutex<()>>,
}

/// A node's cluster id and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Known {
    id: String,
    /// Taken from a leader's RPC ([`ClusterIdentity::adopt`]), not made by `--init`.
    adopted: bool,
}

/// The second line of [`CLUSTER_ID_FILE`] for an adopted id.
const ADOPTED: &str = "adopted";

impl Known {
    /// The file's text.
    fn text(&self) -> String {
        if self.adopted {
            format!("{}\n{ADOPTED}\n", self.id)
        } else {
            format!("{}\n", self.id)
        }
    }

    /// The file's text read back: the id, then nothing or [`ADOPTED`].
    fn parse(text: &str) -> Option<Known> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let id = lines.next()?;
        let adopted = match lines.next() {
            None => false,
            Some(ADOPTED) => true,
            Some(_) => return None,
        };
        (valid(id) && lines.next().is_none()).then(|| Known {
            id: id.to_string(),
            adopted,
        })
    }
}

/// A cluster id that is not 32 lowercase hexadecimal digits.
fn valid(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A new random cluster id: 128 bits from the standard library's randomly keyed hasher
/// (seeded from the operating system), mixed with the time and the process id.
fn random_id() -> String {
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u32(std::process::id());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        h.write_u128(now.as_nanos());
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

impl ClusterIdentity {
    /// The identity kept in directory `dir`: its [`CLUSTER_ID_FILE`] if there is one (an
    /// error if it does not hold an id), else none yet.
    pub fn load(dir: &Path) -> Result<Self, DaxError> {
        let path = dir.join(CLUSTER_ID_FILE);
        remove_stale_tmp(&path)?;
        let id = match std::fs::read_to_string(&path) {
            Ok(text) => match Known::parse(&text) {
                Some(known) => Some(known),
                None => {
                    return Err(DaxError::Inconsistent(format!(
                        "{}: {:?} is not a cluster id (32 hexadecimal digits, then \
                         `{ADOPTED}` on a line of its own if it was adopted)",
                        path.display(),
                        text.trim()
                    )));
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(DaxError::Io(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", path.display()),
                )))
            }
        };
        Ok(ClusterIdentity {
            path,
            id: Arc::new(Mutex::new(id)),
            writer: Arc::new(Mutex::new(())),
        })
    }

    /// The cluster id, if the node has one.
    pub fn get(&self) -> Option<String> {
        lock(&self.id).as_ref().map(|k| k.id.clone())
    }

    /// Makes a new random cluster id and stores it durably, unless the node made one already
    /// (an `--init` that stopped before the cluster's first entry); returns the node's id.
    /// Refused if the node adopted its id: it joined a cluster, and a cluster of its own
    /// would be a second one under that id (module documentation).
    pub fn create(&self) -> Result<String, DaxError> {
        let _writer = lock(&self.writer);
        let known = lock(&self.id).clone();
        match &known {
            Some(Known { id, adopted: false }) => return Ok(id.clone()),
            Some(Known { id, adopted: true }) => {
                return Err(DaxError::Inconsistent(format!(
                    "{}: this node joined cluster {id} (its id was adopted from a leader); \
                     `--init` would start a second cluster under that id: start the node \
                     without `--init` to rejoin its cluster, or remove its directory to \
                     start a new one",
                    self.path.display()
                )))
            }
            None => {}
        }
        let new = Known {
            id: random_id(),
            adopted: false,
        };
        let made = new.id.clone();
        self.store(new)?;
        Ok(made)
    }

    /// Writes `known` durably, then makes it the node's id; by the holder of `writer`.
    fn store(&self, known: Known) -> Result<(), DaxError> {
        replace_file(&self.path, known.text().as_bytes())?;
        *lock(&self.id) = Some(known);
        Ok(())
    }

    /// Checks the cluster id an RPC carries (`None`: an earlier version's, which carries
    /// none): refused if the node has another one.
    pub fn check(&self, carried: Option<&str>) -> Result<(), OtherCluster> {
        match (lock(&self.id).as_ref().map(|k| k.id.as_str()), carried) {
            (Some(ours), Some(theirs)) if ours != theirs => Err(OtherCluster {
                ours: ours.to_string(),
                theirs: theirs.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Takes `carried` as this node's cluster id, stored durably before it returns, if the
    /// node has none yet; refused if it has another one.
    pub fn adopt(&self, carried: &str) -> Result<(), AdoptError> {
        if !valid(carried) {
            return Err(AdoptError::Invalid(carried.to_string()));
        }
        let _writer = lock(&self.writer);
        let known = lock(&self.id).clone();
        match known.as_ref().map(|k| k.id.as_str()) {
            Some(ours) if ours == carried => return Ok(()),
            Some(ours) => {
                return Err(AdoptError::Other(OtherCluster {
                    ours: ours.to_string(),
                    theirs: carried.to_string(),
                }))
            }
            None => {}
        }
        self.store(Known {
            id: carried.to_string(),
            adopted: true,
        })?;
        tracing::info!(cluster = carried, "joined cluster");
        Ok(())
    }
}

/// An RPC of another cluster than the node's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("other cluster: this node belongs to cluster {ours}, the RPC to cluster {theirs}")]
pub struct OtherCluster {
    /// The node's cluster id.
    pub ours: String,
    /// The one the RPC carried.
    pub theirs: String,
}

/// Why a cluster id was not adopted.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The node belongs to another cluster.
    #[error(transparent)]
    Other(#[from] OtherCluster),
    /// The id carried is not one.
    #[error("{0:?} is not a cluster id (32 hexadecimal digits)")]
    Invalid(String),
    /// It could not be stored.
    #[error("cluster id not stored: {0}")]
    Store(#[from] DaxError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_adopted_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let a = ClusterIdentity::load(dir.path()).unwrap();
        assert_eq!(a.get(), None);
        assert!(a.check(Some("x")).is_ok());
        let id = a.create().unwrap();
        assert!(valid(&id), "{id}");
        assert_eq!(a.create().unwrap(), id);
        let other = random_id();
        assert_ne!(other, id);
        assert!(a.check(Some(&id)).is_ok() && a.check(None).is_ok());
        assert_eq!(a.check(Some(&other)).unwrap_err().theirs, other);
        assert!(matches!(a.adopt(&other), Err(AdoptError::Other(_))));
        // While an id is being written and synced, peer RPCs' checks do not wait for it.
        let writing = lock(&a.writer);
        assert_eq!(a.get(), Some(id.clone()));
        assert!(a.check(Some(&other)).is_err() && a.check(Some(&id)).is_ok());
        drop(writing);
        assert_eq!(
            ClusterIdentity::load(dir.path()).unwrap().get(),
            Some(id.clone())
        );

        // A new node adopts once; a crash's temporary file is removed, and damage refused.
        let b_dir = tempfile::tempdir().unwrap();
        std::fs::write(b_dir.path().join("cluster.id.tmp.1.0"), "half").unwrap();
        let b = ClusterIdentity::load(b_dir.path()).unwrap();
        assert!(!b_dir.path().join("cluster.id.tmp.1.0").exists());
        assert!(matches!(b.adopt("nope"), Err(AdoptError::Invalid(_))));
        b.adopt(&other).unwrap();
        b.adopt(&other).unwrap();
        let reloaded = ClusterIdentity::load(b_dir.path()).unwrap();
        assert_eq!(reloaded.get(), Some(other.clone()));

        // `--init` makes no cluster of its own under an adopted id, before or after a restart.
        for b in [&b, &reloaded] {
            let e = b.create().unwrap_err().to_string();
            assert!(e.contains(&format!("joined cluster {other}")), "{e}");
        }
        let file = b_dir.path().join(CLUSTER_ID_FILE);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("{other}\nadopted\n")
        );
        // A made id is one line (as an earlier version wrote an id of either origin).
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CLUSTER_ID_FILE)).unwrap(),
            format!("{id}\n")
        );

        for bad in [
            "12\n",
            "",
            &format!("{other}\nmade\n"),
            &format!("{other}\nadopted\nx\n"),
        ] {
            std::fs::write(&file, bad).unwrap();
            let e = ClusterIdentity::load(b_dir.path()).unwrap_err();
            assert!(
                e.to_string().contains("is not a cluster id"),
                "{bad:?}: {e}"
            );
        }
    }
}
