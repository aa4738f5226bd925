//! The application map and the ACL tries, written from a snapshot in two
//! generations.
//!
//! `SIPAUTH_APPS` keys carry a generation (0 or 1), and so does every ACL
//! id the tries are keyed by (its top bit, `acl::GENERATION_BIT`); an
//! application entry points at ACL entries of its own generation. The
//! program reads `Config::generation` once per packet and looks up only
//! that generation. A sync therefore:
//!
//! 1. deletes whatever the idle generation still holds (left by a sync that
//!    failed half-way, or by an earlier agent: the maps are pinned);
//! 2. writes the new ACL entries, then the new applications, into the idle
//!    generation;
//! 3. flips `Config::generation` (one aligned 32-bit field of the array
//!    value): from here on packets see the new set;
//! 4. deletes the old generation, applications first, so that a packet
//!    still running against it finds no application rather than an
//!    application whose ACL is half gone.
//!
//! A packet is judged either against the old snapshot or the new one, never
//! a mix; a sync that fails before step 3 leaves the live generation as it
//! was.

use std::collections::HashMap as StdHashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData, MapError};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use sipauth_common::{acl, apps};

use super::{XdpError, map_err};
use sipauth_model::snapshot::Snapshot;

/// What the maps hold, for inspection (admin views, tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclView {
    /// The live generation.
    pub generation: u32,
    pub apps: Vec<(apps::Key, apps::Value)>,
    /// (ACL id with its generation bit, network).
    pub v4: Vec<(u32, Ipv4Net)>,
    pub v6: Vec<(u32, Ipv6Net)>,
}

pub(super) struct AclMaps {
    apps: HashMap<MapData, apps::Key, apps::Value>,
    v4: LpmTrie<MapData, acl::V4Key, acl::Value>,
    v6: LpmTrie<MapData, acl::V6Key, acl::Value>,
    /// ACL uuid -> id (below `acl::GENERATION_BIT`), stable for the life of
    /// the process.
    ids: StdHashMap<String, u32>,
    next_id: u32,
}

impl AclMaps {
    pub(super) fn new(
        apps: HashMap<MapData, apps::Key, apps::Value>,
        v4: LpmTrie<MapData, acl::V4Key, acl::Value>,
        v6: LpmTrie<MapData, acl::V6Key, acl::Value>,
    ) -> Self {
        Self {
            apps,
            v4,
            v6,
            ids: StdHashMap::new(),
            next_id: 1,
        }
    }

    /// The id of an ACL uuid, assigned on first use.
    pub(super) fn id(&mut self, uuid: &str) -> Result<u32, XdpError> {
        if let Some(&id) = self.ids.get(uuid) {
            return Ok(id);
        }
        let id = self.next_id;
        if id >= acl::GENERATION_BIT {
            return Err(XdpError::AclIds);
        }
        self.next_id += 1;
        self.ids.insert(uuid.to_owned(), id);
        Ok(id)
    }

    pub(super) fn known_id(&self, uuid: &str) -> Option<u32> {
        self.ids.get(uuid).copied()
    }

    /// Writes the applications with an IP ACL, and the ACLs they use, as
    /// generation `generation`. The generation must be empty.
    pub(super) fn write(&mut self, generation: u32, snapshot: &Snapshot) -> Result<(), XdpError> {
        let acls: StdHashMap<&str, &[IpNet]> = snapshot
            .acls
            .iter()
            .map(|a| (a.uuid.as_str(), a.entries.as_slice()))
            .collect();
        let mut written: StdHashMap<&str, u32> = StdHashMap::new();
        let mut gated = Vec::new();
        for app in &snapshot.applications {
            if !app.sip_auth_type.uses_acl() {
                continue;
            }
            let Some(hash) = apps::hash_of(app.app_id.as_bytes()) else {
                tracing::debug!(app_id = %app.app_id, "application id cannot be a Request-URI user part: not gated in XDP");
                continue;
            };
            // An application without its ACL is left to user space: the
            // program drops only what it can judge.
            let Some((uuid, entries)) = app
                .ip_acl_uuid
                .as_deref()
                .and_then(|u| acls.get_key_value(u))
            else {
                tracing::warn!(app_id = %app.app_id, acl = ?app.ip_acl_uuid, "application's IP ACL is not in the snapshot: not gated in XDP");
                continue;
            };
            let wire = if let Some(&wire) = written.get(uuid) {
                wire
            } else {
                let wire = acl::wire_id(self.id(uuid)?, generation);
                self.write_acl(wire, entries)?;
                written.insert(uuid, wire);
                wire
            };
            gated.push((hash, wire));
        }
        // Applications last: none points at an ACL still being written.
        for (hash, acl_id) in gated {
            let key = apps::Key {
                hash,
                generation,
                pad: 0,
            };
            self.apps
                .insert(key, apps::Value { acl_id, flags: 0 }, 0)
                .map_err(map_err(apps::NAME))?;
        }
        Ok(())
    }

    fn write_acl(&mut self, wire: u32, entries: &[IpNet]) -> Result<(), XdpError> {
        for net in entries {
            match net.trunc() {
                IpNet::V4(n) => {
                    let key = Key::new(
                        32 + u32::from(n.prefix_len()),
                        acl::v4_key(wire, n.network().octets()),
                    );
                    self.v4.insert(&key, 1, 0).map_err(map_err(acl::V4_NAME))?;
                }
                IpNet::V6(n) => {
                    let key = Key::new(
                        32 + u32::from(n.prefix_len()),
                        acl::v6_key(wire, n.network().octets()),
                    );
                    self.v6.insert(&key, 1, 0).map_err(map_err(acl::V6_NAME))?;
                }
            }
        }
        Ok(())
    }

    /// Deletes every entry of generation `generation`, applications first.
    pub(super) fn clear(&mut self, generation: u32) -> Result<(), XdpError> {
        let stale: Vec<apps::Key> = self
            .apps
            .keys()
            .filter(|k| !matches!(k, Ok(k) if k.generation != generation))
            .collect::<Result<_, _>>()
            .map_err(map_err(apps::NAME))?;
        for key in stale {
            ignore_missing(self.apps.remove(&key)).map_err(map_err(apps::NAME))?;
        }
        let stale: Vec<Key<acl::V4Key>> = self
            .v4
            .keys()
            .filter(
                |k| !matches!(k, Ok(k) if acl::generation_of(acl::id_of(&k.data())) != generation),
            )
            .collect::<Result<_, _>>()
            .map_err(map_err(acl::V4_NAME))?;
        for key in stale {
            ignore_missing(self.v4.remove(&key)).map_err(map_err(acl::V4_NAME))?;
        }
        let stale: Vec<Key<acl::V6Key>> = self
            .v6
            .keys()
            .filter(
                |k| !matches!(k, Ok(k) if acl::generation_of(acl::id_of(&k.data())) != generation),
            )
            .collect::<Result<_, _>>()
            .map_err(map_err(acl::V6_NAME))?;
        for key in stale {
            ignore_missing(self.v6.remove(&key)).map_err(map_err(acl::V6_NAME))?;
        }
        Ok(())
    }

    pub(super) fn view(&self, generation: u32) -> Result<AclView, XdpError> {
        let apps = self
            .apps
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(apps::NAME))?;
        let v4 = self
            .v4
            .keys()
            .map(|k| {
                k.map(|k| {
                    let d = k.data();
                    let prefix = u8::try_from(k.prefix_len().saturating_sub(32)).unwrap_or(32);
                    let ip = Ipv4Addr::new(d[4], d[5], d[6], d[7]);
                    (
                        acl::id_of(&d),
                        Ipv4Net::new(ip, prefix.min(32)).expect("prefix clamped"),
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map_err(map_err(acl::V4_NAME))?;
        let v6 = self
            .v6
            .keys()
            .map(|k| {
                k.map(|k| {
                    let d = k.data();
                    let prefix = u8::try_from(k.prefix_len().saturating_sub(32)).unwrap_or(128);
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&d[4..]);
                    (
                        acl::id_of(&d),
                        Ipv6Net::new(Ipv6Addr::from(octets), prefix.min(128))
                            .expect("prefix clamped"),
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map_err(map_err(acl::V6_NAME))?;
        Ok(AclView {
            generation,
            apps,
            v4,
            v6,
        })
    }
}

/// A key that went away between listing and deleting is deleted.
fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {
            Ok(())
        }
        r => r,
    }
}
