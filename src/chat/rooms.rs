//! Rooms: what one room holds (members online and their connections, the
//! owner, the topic, the ring of history), and the hub's room commands
//! (`/join`, `/part`, `/rooms`, `/who`, `/topic`, `/history` from the ring).
//! A room's fan-out list is its members' online connections, so a line to
//! it costs what the room has, not what the server has.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::history::{Entry, Ring};
use super::hub::{Hub, LOBBY_ID, RoomId, fold};
use super::session::{Action, ConnId};
use crate::store::ops::{LOBBY, Op, RoomRow, SanctionKind};

/// A set of connections with O(1) insert, remove and iteration.
#[derive(Debug, Default)]
pub(super) struct ConnSet {
    pub(super) list: Vec<ConnId>,
    at: HashMap<ConnId, usize>,
}

impl ConnSet {
    pub(super) fn insert(&mut self, id: ConnId) {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.at.entry(id) {
            slot.insert(self.list.len());
            self.list.push(id);
        }
    }

    pub(super) fn reserve(&mut self, n: usize) {
        self.list.reserve(n.saturating_sub(self.list.len()));
        self.at.reserve(n.saturating_sub(self.at.len()));
    }

    pub(super) fn remove(&mut self, id: ConnId) {
        let Some(i) = self.at.remove(&id) else {
            return;
        };
        self.list.swap_remove(i);
        if let Some(moved) = self.list.get(i) {
            self.at.insert(*moved, i);
        }
    }
}

/// A ban or a mute in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sanction {
    /// Unix seconds it ends at; `None` for ever.
    pub until: Option<i64>,
    pub reason: String,
    pub by: String,
}

impl Sanction {
    /// Whether it still holds at `wall`.
    pub fn holds(&self, wall: i64) -> bool {
        self.until.is_none_or(|u| wall < u)
    }
}

/// One room (the lobby too).
#[derive(Debug)]
pub struct Room {
    /// Lowercase, without `#`; [`LOBBY`] for the lobby.
    pub(super) name: String,
    /// What its lines start with: nothing in the lobby, `#name ` elsewhere
    /// (made once: every message of the room starts with it).
    prefix: String,
    pub(super) owner: Option<String>,
    /// The topic and who set it.
    pub(super) topic: Option<(String, String)>,
    /// Accounts that are members, online or not, by folded name (empty
    /// for the lobby: everybody is).
    pub(super) members: HashSet<String>,
    /// Its operators besides the owner, by folded name (none in the lobby:
    /// server operators are the hub's).
    pub(super) ops: HashSet<String>,
    /// Bans and mutes by folded name (the lobby's are server-wide). An
    /// ended one may linger until it is looked at.
    pub(super) sanctions: HashMap<(String, SanctionKind), Sanction>,
    /// Online members, by folded name, as registered.
    pub(super) online: BTreeMap<String, String>,
    pub(super) conns: ConnSet,
    pub(super) ring: Ring,
    /// The number of the newest message (never goes back).
    pub(super) count: u64,
}

impl Room {
    pub(super) fn new(name: &str, owner: Option<String>) -> Room {
        let prefix = if name == LOBBY {
            String::new()
        } else {
            format!("#{name} ")
        };
        Room {
            name: name.to_owned(),
            prefix,
            owner,
            topic: None,
            members: HashSet::new(),
            ops: HashSet::new(),
            sanctions: HashMap::new(),
            online: BTreeMap::new(),
            conns: ConnSet::default(),
            ring: Ring::default(),
            count: 0,
        }
    }

    pub(super) fn from_row(row: &RoomRow) -> Room {
        let mut room = Room::new(&row.name, row.owner.clone());
        room.topic = row.topic.clone();
        room.members = row.members.iter().map(|m| fold(m)).collect();
        room.ops = row.ops.iter().map(|m| fold(m)).collect();
        room.count = row.count;
        for m in &row.recent {
            room.ring.push(Entry::from_message(m));
        }
        room
    }

    pub(super) fn is_lobby(&self) -> bool {
        self.name == LOBBY
    }

    /// What its lines start with: nothing in the lobby, `#name ` elsewhere.
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `#name` (`#lobby` for the lobby).
    pub fn tag(&self) -> String {
        format!("#{}", self.name)
    }

    /// `[#room ]* online (N): a, b, ...`, at most `cap` names.
    pub(super) fn online_line(&self, cap: usize) -> Vec<u8> {
        let mut line = format!("{}* online ({}): ", self.prefix(), self.online.len());
        for (i, shown) in self.online.values().take(cap).enumerate() {
            if i > 0 {
                line.push_str(", ");
            }
            line.push_str(shown);
        }
        if self.online.len() > cap {
            line.push_str(&format!(" and {} more", self.online.len() - cap));
        }
        line.push('\n');
        line.into_bytes()
    }

    /// `[#room ]* topic: <text>`, as a login, `/join` and `/topic` show it.
    pub(super) fn topic_line(&self) -> Option<Vec<u8>> {
        let (topic, _) = self.topic.as_ref()?;
        Some(format!("{}* topic: {topic}\n", self.prefix()).into_bytes())
    }

    /// `[#room ]* topic: <text> (set by <name>)`, as the room is told when
    /// it changes.
    pub(super) fn topic_set_line(&self) -> Option<Vec<u8>> {
        let (topic, by) = self.topic.as_ref()?;
        Some(format!("{}* topic: {topic} (set by {by})\n", self.prefix()).into_bytes())
    }
}

impl Hub {
    /// Makes `room` current for connection `id`.
    pub fn set_current(&mut self, shown: &str, id: ConnId, room: RoomId) {
        if let Some(account) = self.online.get_mut(&fold(shown))
            && let Some(slot) = account.conns.iter_mut().find(|(c, _)| *c == id)
        {
            slot.1 = room;
        }
    }

    /// `/join #name` (checked, lowercase, not the lobby) by connection
    /// `id`, whose account is not a member of it (the command makes a
    /// member's room current itself).
    pub fn join(
        &mut self,
        id: ConnId,
        shown: &str,
        name: &str,
        wall: i64,
        out: &mut Vec<Action>,
    ) -> Result<RoomId, String> {
        let key = fold(shown);
        let mut created = false;
        let room = match self.by_name.get(name) {
            Some(&r) => {
                if let Some(line) = self.room_ban_line(r, shown, wall) {
                    return Err(line);
                }
                r
            }
            None => {
                if self.by_name.len() >= self.config.max_rooms {
                    return Err(format!(
                        "! too many rooms (max {}): join an existing one",
                        self.config.max_rooms
                    ));
                }
                let owned = self
                    .by_name
                    .values()
                    .filter(|r| r_owner_is(self, **r, shown))
                    .count();
                if owned >= self.config.max_owned {
                    return Err(format!(
                        "! you own too many rooms (max {})",
                        self.config.max_owned
                    ));
                }
                let r = RoomId(self.rooms.insert(Room::new(name, Some(shown.to_owned()))));
                self.by_name.insert(name.to_owned(), r);
                out.push(Action::Store(Op::CreateRoom {
                    name: name.to_owned(),
                    owner: shown.to_owned(),
                    at: wall,
                }));
                created = true;
                r
            }
        };
        let Some(account) = self.online.get_mut(&key) else {
            return Err("! you are not online".to_owned());
        };
        account.rooms.push(room);
        let conns: Vec<ConnId> = account.conns.iter().map(|(c, _)| *c).collect();
        let quiet = self.quiet(room);
        let r = &mut self.rooms[room.0];
        r.members.insert(key.clone());
        r.online.insert(key, shown.to_owned());
        for c in &conns {
            r.conns.insert(*c);
        }
        let count = r.count;
        let name = r.name.clone();
        out.push(Action::Send(r.online_line(usize::MAX)));
        if let Some(topic) = r.topic_line() {
            out.push(Action::Send(topic));
        }
        self.catch_up(room, None, wall, out);
        // A new room's owner is stored as its member with it.
        if !created {
            out.push(Action::Store(Op::Join {
                room: name.clone(),
                account: shown.to_owned(),
                seen: count,
            }));
        }
        if !quiet {
            out.push(Action::ToRoom {
                room,
                except: Some(id),
                line: format!("#{name} * {shown} joined\n").into_bytes(),
            });
        }
        self.set_current(shown, id, room);
        Ok(room)
    }

    /// `/part` of `room` (not the lobby) by the account of `shown`.
    pub fn part(
        &mut self,
        id: ConnId,
        shown: &str,
        room: RoomId,
        out: &mut Vec<Action>,
    ) -> Result<(), String> {
        let key = fold(shown);
        let tag = self.rooms.get(room.0).map(Room::tag).unwrap_or_default();
        let Some(account) = self.online.get_mut(&key) else {
            return Err("! you are not online".to_owned());
        };
        let Some(pos) = account.rooms.iter().position(|r| *r == room) else {
            return Err(format!("! you are not in {tag}"));
        };
        account.rooms.swap_remove(pos);
        let conns: Vec<ConnId> = account.conns.iter().map(|(c, _)| *c).collect();
        // The lobby becomes current for the connection that left, and for
        // the account's others that were in the room.
        for slot in &mut account.conns {
            if slot.1 == room || slot.0 == id {
                slot.1 = LOBBY_ID;
            }
        }
        let quiet = self.quiet(room);
        let r = &mut self.rooms[room.0];
        r.online.remove(&key);
        for c in &conns {
            r.conns.remove(*c);
        }
        r.members.remove(&key);
        let bye = format!("{tag} * bye\n").into_bytes();
        out.push(Action::Send(bye.clone()));
        for c in conns.iter().filter(|c| **c != id) {
            out.push(Action::SendTo(*c, bye.clone()));
        }
        let name = r.name.clone();
        if r.members.is_empty() {
            self.by_name.remove(&name);
            self.rooms.remove(room.0);
            out.push(Action::Store(Op::DeleteRoom { name }));
            return Ok(());
        }
        out.push(Action::Store(Op::Part {
            room: name,
            account: shown.to_owned(),
        }));
        if !quiet {
            out.push(Action::ToRoom {
                room,
                except: Some(id),
                line: format!("{tag} * {shown} left\n").into_bytes(),
            });
        }
        Ok(())
    }

    /// `* rooms (N): #lobby (12 online), #rust (3 online, 40 members)`.
    pub fn rooms_line(&self) -> Vec<u8> {
        let lobby = &self.rooms[LOBBY_ID.0];
        let mut line = format!(
            "* rooms ({}): #lobby ({} online)",
            self.by_name.len() + 1,
            lobby.online.len()
        );
        for r in self.by_name.values() {
            let room = &self.rooms[r.0];
            line.push_str(&format!(
                ", #{} ({} online, {} members)",
                room.name,
                room.online.len(),
                room.members.len()
            ));
        }
        line.push('\n');
        line.into_bytes()
    }

    /// `/who` of a room: every online member.
    pub fn who_line(&self, room: RoomId) -> Vec<u8> {
        self.rooms
            .get(room.0)
            .map_or_else(Vec::new, |r| r.online_line(usize::MAX))
    }

    /// The topic line, or that there is none.
    pub fn topic_of(&self, room: RoomId) -> Vec<u8> {
        let Some(r) = self.rooms.get(room.0) else {
            return Vec::new();
        };
        r.topic_line()
            .unwrap_or_else(|| format!("{}* no topic\n", r.prefix()).into_bytes())
    }

    /// Whether `shown` may set `room`'s topic: its owner and operators,
    /// and server operators (the lobby's: server operators only).
    pub fn may_set_topic(&self, room: RoomId, shown: &str) -> bool {
        self.rank(room, shown) >= super::moderation::Rank::Operator
    }

    /// Sets `room`'s topic, told to the whole room, and to the setter if
    /// not a member (a server operator).
    pub fn set_topic(&mut self, room: RoomId, shown: &str, text: &str, out: &mut Vec<Action>) {
        let member = self.is_member(shown, room);
        let Some(r) = self.rooms.get_mut(room.0) else {
            return;
        };
        r.topic = Some((text.to_owned(), shown.to_owned()));
        let line = r.topic_set_line().expect("just set");
        if !member {
            out.push(Action::Send(line.clone()));
        }
        out.push(Action::ToRoom {
            room,
            except: None,
            line,
        });
        out.push(Action::Store(Op::Topic {
            room: r.name.clone(),
            topic: Some(text.to_owned()),
            by: shown.to_owned(),
        }));
    }

    /// The last `n` messages of `room` from the ring, if it holds them all
    /// (or all the room ever had).
    pub fn recent(&self, room: RoomId, n: usize, wall: i64) -> Option<Vec<Vec<u8>>> {
        let r = self.rooms.get(room.0)?;
        let complete = r.ring.len() as u64 >= r.count;
        if n > r.ring.len() && !complete {
            return None;
        }
        let prefix = r.prefix();
        Some(
            r.ring
                .last(n, self.since(wall))
                .map(|e| e.history_line(prefix))
                .collect(),
        )
    }
}

/// Whether `shown` owns `room`.
pub(super) fn r_owner_is(hub: &Hub, room: RoomId, shown: &str) -> bool {
    hub.rooms
        .get(room.0)
        .and_then(|r| r.owner.as_deref())
        .is_some_and(|o| o.eq_ignore_ascii_case(shown))
}
