//! `[tenancy]`: the mode, the header of `header` mode, and the named tenants of `key` mode
//! (`[[tenancy.keys]]`, `[tenancy.tenant_ids]`), validated once and turned into the one map
//! lookup a request makes.
//!
//! Stored tenant ids carry one prefix per origin, so no two origins can ever produce the same
//! id:
//! - `k:` and 32 hex digits: a key's own tenant (`tenancy::key_tenant`, a hash of the key);
//! - `h:` and the header's value: `header` mode;
//! - `single`: `single` mode;
//! - `n:` and the name: a named tenant, unless `[tenancy.tenant_ids]` gives the name an
//!   existing id (one of the three above), so that it takes over those rows where they lie.
//!
//! A key's own id given to a name belongs to that name from then on: only the keys listed for
//! it reach those rows, the key itself included only while it is listed.

use std::collections::{BTreeMap, HashMap};

use super::{ConfigError, FileTenancy, TenancyMode, err};

/// Prefix of a key's own tenant id (and of the key hashes in `[[tenancy.keys]]`).
pub const KEY_PREFIX: &str = "k:";
/// Prefix of a named tenant's id when `[tenancy.tenant_ids]` does not give it another.
pub const NAMED_PREFIX: &str = "n:";
/// Prefix of a tenant named by the trusted header in `header` mode.
pub const HEADER_PREFIX: &str = "h:";
/// The one tenant of `single` mode.
pub const SINGLE_TENANT: &str = "single";
/// Longest header value taken as a tenant in `header` mode.
pub const MAX_HEADER_TENANT_LEN: usize = 128;
const MAX_NAME_LEN: usize = 64;
/// Hex digits in a key hash (128 bits).
const KEY_HASH_HEX: usize = 32;

#[derive(Debug, Clone)]
pub struct Tenancy {
    pub mode: TenancyMode,
    pub header: http::HeaderName,
    /// Key hash (`k:…`) → what that key acts for, when it is not its own tenant. Built at
    /// load, so a request costs one lookup.
    pub keys: HashMap<String, KeyMapping>,
    /// Names given an existing tenant's id (`[tenancy.tenant_ids]`): name → id.
    pub tenant_ids: BTreeMap<String, String>,
}

/// A key that does not act for its own tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMapping {
    /// Listed in `[[tenancy.keys]]`: it acts for this named tenant.
    Named(NamedTenant),
    /// Not listed, but its own tenant id now belongs to the tenant `name` (through
    /// `[tenancy.tenant_ids]`): that tenant's list decides who reaches its rows, so a key
    /// taken off the list (a leaked one, say) is refused instead of reaching them forever.
    Retired { name: String },
}

/// A tenant of `[[tenancy.keys]]`: its name and the id its rows are stored under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedTenant {
    pub name: String,
    pub id: String,
}

impl Tenancy {
    /// The stored tenant id of a key, from its hash (`k:…`): its named tenant's id when the
    /// configuration maps it, otherwise the hash itself (the key's own tenant). `None`: the
    /// key is retired (`KeyMapping::Retired`).
    pub fn tenant_for_key(&self, key_hash: String) -> Option<String> {
        match self.keys.get(&key_hash) {
            None => Some(key_hash),
            Some(KeyMapping::Named(named)) => Some(named.id.clone()),
            Some(KeyMapping::Retired { .. }) => None,
        }
    }

    fn named(&self) -> impl Iterator<Item = &NamedTenant> {
        self.keys.values().filter_map(|m| match m {
            KeyMapping::Named(named) => Some(named),
            KeyMapping::Retired { .. } => None,
        })
    }

    /// Mappings that are legal but do nothing, or hide data the operator may expect to see.
    pub(super) fn warnings(&self, out: &mut Vec<String>) {
        if self.mode != TenancyMode::Key && !(self.keys.is_empty() && self.tenant_ids.is_empty()) {
            out.push(format!(
                "tenancy.keys / tenancy.tenant_ids are set but tenancy.mode is {:?}: keys do not \
                 choose the tenant in that mode, so the mappings do nothing",
                self.mode
            ));
            return;
        }
        for (name, id) in &self.tenant_ids {
            if !self.named().any(|t| &t.name == name) {
                out.push(format!(
                    "tenancy.tenant_ids names tenant {name:?}, which no [[tenancy.keys]] entry \
                     uses: no key reaches its rows"
                ));
            }
            if let Some(KeyMapping::Named(other)) = self.keys.get(id)
                && &other.name != name
            {
                out.push(format!(
                    "key {id} is mapped to tenant {:?}, but tenancy.tenant_ids gives that key's \
                     rows to tenant {name:?}: the key no longer reaches them",
                    other.name
                ));
            }
        }
    }
}

/// Whether `s` is a key hash as `assistants-proxy tenant-id` prints it: `k:` and 32
/// lowercase hex digits.
pub fn is_key_hash(s: &str) -> bool {
    s.strip_prefix(KEY_PREFIX).is_some_and(|hex| {
        hex.len() == KEY_HASH_HEX
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Whether `s` can be a tenant's name: 1–64 ASCII letters, digits, `-`, `_` or `.`.
pub fn is_tenant_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `s` is an id the proxy stores rows under without a name: a key's, `header`
/// mode's or `single` mode's.
fn is_unnamed_id(s: &str) -> bool {
    if s == SINGLE_TENANT || is_key_hash(s) {
        return true;
    }
    s.strip_prefix(HEADER_PREFIX).is_some_and(|v| {
        !v.is_empty()
            && v.len() <= MAX_HEADER_TENANT_LEN
            && v.bytes().all(|b| (b' '..=b'~').contains(&b))
            && v.trim() == v
    })
}

/// Validates `[tenancy]` and builds the key map. `Config::resolve` calls it; so does
/// `assistants-proxy tenant-id`, which needs this section of a file and nothing else.
pub fn resolve_tenancy(f: FileTenancy) -> Result<Tenancy, ConfigError> {
    let header_text = f.header.unwrap_or_else(|| "x-tenant-id".to_owned());
    let Ok(header) = http::HeaderName::from_bytes(header_text.as_bytes()) else {
        return err(format!(
            "tenancy.header {header_text:?} is not a header name"
        ));
    };

    let mut seen_ids: HashMap<&str, &str> = HashMap::new();
    for (name, id) in &f.tenant_ids {
        if !is_tenant_name(name) {
            return err(format!(
                "tenancy.tenant_ids: {name:?} is not a tenant name (1-{MAX_NAME_LEN} ASCII \
                 letters, digits, '-', '_' or '.')"
            ));
        }
        if !is_unnamed_id(id) {
            // The value is not repeated: it may be a key pasted in the wrong place.
            return err(format!(
                "tenancy.tenant_ids.{name} is not an existing tenant id: expected a key's \
                 tenant id as `assistants-proxy tenant-id` prints it (\"k:\" and 32 lowercase \
                 hex digits), \"single\", or \"h:\" and a header value"
            ));
        }
        if let Some(first) = seen_ids.insert(id, name) {
            return err(format!(
                "tenancy.tenant_ids gives {id:?} to two tenants, {first:?} and {name:?}: one \
                 tenant id has one name"
            ));
        }
    }

    let mut keys = HashMap::with_capacity(f.keys.len());
    for (i, entry) in f.keys.into_iter().enumerate() {
        let at = format!("tenancy.keys[{i}]");
        if !is_key_hash(&entry.key_hash) {
            // The value is not repeated: it may be the key itself, pasted in the wrong place.
            return err(format!(
                "{at}.key_hash is not a key hash: expected \"k:\" and 32 lowercase hex digits, \
                 as `assistants-proxy tenant-id` prints it (never the key itself)"
            ));
        }
        if !is_tenant_name(&entry.tenant) {
            return err(format!(
                "{at}.tenant {:?} is not a tenant name (1-{MAX_NAME_LEN} ASCII letters, digits, \
                 '-', '_' or '.')",
                entry.tenant
            ));
        }
        let id = match f.tenant_ids.get(&entry.tenant) {
            Some(existing) => existing.clone(),
            None => format!("{NAMED_PREFIX}{}", entry.tenant),
        };
        let named = KeyMapping::Named(NamedTenant {
            name: entry.tenant,
            id,
        });
        if let Some(KeyMapping::Named(first)) = keys.insert(entry.key_hash.clone(), named) {
            return err(format!(
                "{at}.key_hash {} is listed twice (first for tenant {:?}): a key acts for one \
                 tenant",
                entry.key_hash, first.name
            ));
        }
    }
    for (name, id) in &f.tenant_ids {
        if is_key_hash(id) && !keys.contains_key(id) {
            keys.insert(id.clone(), KeyMapping::Retired { name: name.clone() });
        }
    }

    Ok(Tenancy {
        mode: f.mode.unwrap_or_default(),
        header,
        keys,
        tenant_ids: f.tenant_ids,
    })
}
