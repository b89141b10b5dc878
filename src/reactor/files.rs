//! Files on the loop: carrying out `/upload` (the slot's URL), a `PUT`
//! of a slot's body and a `GET` of a stored file, with every byte of disk
//! I/O on the two files threads (`crate::files::Writer`: one writes
//! uploads, one reads downloads) and every row on the store thread.
//!
//! An upload's body is handed to the writing thread a read at a time
//! through its bounded queue; when the queue is full the chunk waits on
//! the connection, which reads no more until there is room (the thread
//! wakes the loop then), so a slow disk holds back its uploader through
//! TCP, never the loop and never memory. Once the thread has the whole
//! file under its hash, the store records it; only then does the uploader
//! get `201` and the room the announcement.
//!
//! A download asks the reading thread for [`CHUNK`] bytes at a time, and
//! for the next only when the socket has taken all but [`LOW_WATER`] of
//! what was queued: a download holds at most three quarters of a MiB of
//! output however big the file and however slow the reader, counted in
//! `--max-total-output` with all other output (one of the
//! [`BULK_DOWNLOADS`] also keeps the vector its pieces are read into),
//! and one whose reader takes nothing for 30 s is dropped.

use std::time::Instant;

use log::{debug, info, warn};

use super::conn::{Closing, Conn};
use super::route::NOBODY;
use super::{Server, wall_clock};
use crate::chat::session::ConnId;
use crate::chat::uploads::{self, Slot};
use crate::files::{Failure, Job, Outcome, Sha, Stored};
use crate::store::ops::{FileRow, Op};
use crate::store::{self};
use crate::transport::http::{self, FileRequest};
use crate::transport::range::byte_range;

/// Bytes read from disk per request of a download.
pub(super) const CHUNK: usize = crate::files::READ_PIECE;
/// A download asks for more when less than this is waiting for its
/// socket: two pieces, so that the next is read while one is still being
/// sent, and the socket never waits for the disk thread.
const LOW_WATER: usize = 2 * CHUNK;
/// How long a download's client may take nothing before it is dropped.
const DOWNLOAD_IDLE: std::time::Duration = crate::transport::BODY_IDLE;
/// Downloads at a time whose buffers are kept from piece to piece
/// (`Transport::set_bulk`): each keeps up to about 2.25 MiB that is not
/// output, so this bounds that memory at about 18 MiB; a download past it
/// frees and maps its buffers as it goes, as all did before.
const BULK_DOWNLOADS: usize = 8;

/// A connection's part in a file transfer.
pub(super) enum Transfer {
    /// A `GET` waits for the store to find the file.
    Lookup {
        name: String,
        head: bool,
        range: Option<String>,
    },
    /// A `PUT` is sending its body, or the thread is finishing it.
    Upload(Box<Upload>),
    /// A stored file is being sent.
    Download(Download),
}

pub(super) struct Upload {
    id: u64,
    slot: Slot,
    /// A job the queue had no room for: the connection reads no more
    /// until it is handed over.
    held: Option<Job>,
    /// The whole body arrived and `Finish` was sent.
    finishing: bool,
}

pub(super) struct Download {
    id: u64,
    sha: Sha,
    /// The next byte to ask for, and one past the last to send.
    next: u64,
    end: u64,
    /// A read is out (or held for room in the queue).
    asked: bool,
    held: Option<Job>,
    /// When the last piece was queued: a client that takes nothing for
    /// [`DOWNLOAD_IDLE`] is dropped.
    since: Instant,
    /// A bulk download's last piece's vector, for the reading thread to
    /// fill with the next ([`Job::Read`]).
    spare: Vec<u8>,
    /// One of the [`BULK_DOWNLOADS`] that keep their buffers.
    bulk: bool,
}

/// An upload stored on disk whose row the store is writing.
pub(super) struct Recording {
    slot: Slot,
    url: String,
}

impl Transfer {
    /// A job waits for room in a queue: read nothing meanwhile.
    pub(super) fn blocked(&self) -> bool {
        match self {
            Transfer::Upload(up) => up.held.is_some(),
            _ => false,
        }
    }
}

impl Server {
    /// Where the client on `id` reaches the server: `--public-url`, else
    /// the local address it connected to; `https` when the server speaks
    /// TLS.
    fn base_url(&self, id: ConnId) -> String {
        if let Some(url) = &self.config.public_url {
            return url.clone();
        }
        let scheme = if self.transport.tls.is_some() {
            "https"
        } else {
            "http"
        };
        // Never the client's `Host` header: it would let anybody make the
        // server announce a link to a host of their choice.
        let Some(conn) = self.conns.get(id) else {
            return format!("{scheme}://localhost");
        };
        match conn.stream.local_addr() {
            Ok(addr) => format!("{scheme}://{addr}"),
            Err(_) => format!("{scheme}://localhost"),
        }
    }

    /// `/upload` handed out `slot`: the client gets its URL.
    pub(super) fn upload_slot(&mut self, id: ConnId, slot: &str) {
        let base = self.base_url(id);
        let line = format!("* upload {base}/files/{slot}\n");
        self.chat.hub.uploads.set_base(slot, base);
        self.queue(id, line.as_bytes());
    }

    /// A request of the files routes arrived on `id`.
    pub(super) fn file_request(&mut self, id: ConnId, request: FileRequest, now: Instant) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        // A transfer holds no place among the logins waiting.
        self.limits.not_pending(&conn.admission);
        let tls = conn.transport.is_tls();
        match request {
            FileRequest::Put {
                slot,
                length,
                expect_continue,
            } => {
                let Some(taken) = self.chat.hub.uploads.take(&slot, now) else {
                    debug!("conn {}: PUT to an unknown, used or expired slot", id.key);
                    return self.answer(id, &http::error(404, "Not Found", tls));
                };
                // A slot is used up by any PUT that reaches it.
                let Some(length) = length else {
                    self.chat.hub.uploads.end(&taken, false);
                    return self.answer(id, &http::error(411, "Length Required", tls));
                };
                // Refused before the body is read, not after.
                if self
                    .chat
                    .hub
                    .file_room(&taken.owner, &taken.room, wall_clock())
                    .is_none()
                {
                    self.chat.hub.uploads.end(&taken, false);
                    return self.answer(id, &http::error(403, "Forbidden", tls));
                }
                if length != taken.size {
                    self.chat.hub.uploads.end(&taken, false);
                    let body = format!("this upload is {} bytes, not {length}\n", taken.size);
                    let answer = http::respond(
                        400,
                        "Bad Request",
                        &[],
                        "text/plain; charset=utf-8",
                        body.as_bytes(),
                        tls,
                    );
                    return self.answer(id, &answer);
                }
                self.next_transfer += 1;
                let tid = self.next_transfer;
                let begin = Job::Begin {
                    id: tid,
                    slot: format!("{tid}-{slot}"),
                    expected: length,
                };
                let held = self.disk_in.try_send(begin).err();
                if held.is_some() {
                    self.held.push(id);
                }
                info!(
                    "upload of {} ({} bytes) by {} begins from {}",
                    taken.name, taken.size, taken.owner, conn.peer
                );
                conn.transport.begin_body(length, expect_continue, now);
                conn.transfer = Some(Box::new(Transfer::Upload(Box::new(Upload {
                    id: tid,
                    slot: taken,
                    held,
                    finishing: false,
                }))));
                self.transfers.insert(tid, id);
                if !conn.dirty {
                    conn.dirty = true;
                    self.dirty.push(id.key);
                }
            }
            FileRequest::Get {
                id: file,
                name,
                head,
                range,
            } => {
                if !uploads::is_id(&file) {
                    return self.answer(id, &http::error(404, "Not Found", tls));
                }
                conn.transfer = Some(Box::new(Transfer::Lookup { name, head, range }));
                self.store_op(Op::FindFile { conn: id, id: file });
            }
        }
    }

    /// Answers a files request with a whole response, and closes.
    fn answer(&mut self, id: ConnId, response: &[u8]) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.transport.respond(response);
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(id.key);
        }
        self.mark_closing(id, Closing::AfterFlush, "HTTP request answered");
    }

    /// The next piece of an upload's body.
    pub(super) fn upload_body(&mut self, id: ConnId, bytes: Vec<u8>) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let Some(Transfer::Upload(up)) = conn.transfer.as_deref_mut() else {
            return;
        };
        let job = Job::Chunk { id: up.id, bytes };
        if let Err(job) = self.disk_in.try_send(job) {
            up.held = Some(job);
            self.held.push(id);
        }
    }

    /// An upload's body is complete: it is finished if its uploader may
    /// still post where it was asked from.
    pub(super) fn upload_done(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let tls = conn.transport.is_tls();
        let Some(Transfer::Upload(up)) = conn.transfer.as_deref_mut() else {
            return;
        };
        let allowed = self
            .chat
            .hub
            .file_room(&up.slot.owner, &up.slot.room, wall_clock())
            .is_some();
        if !allowed {
            info!(
                "upload of {} by {} refused: no longer allowed in the room",
                up.slot.name, up.slot.owner
            );
            self.end_upload(id);
            return self.answer(id, &http::error(403, "Forbidden", tls));
        }
        up.finishing = true;
        let job = Job::Finish { id: up.id };
        if let Err(job) = self.disk_in.try_send(job) {
            up.held = Some(job);
            self.held.push(id);
        }
    }

    /// The connection's upload ends without storing anything: its slot's
    /// reservation goes, and what the thread wrote is removed.
    fn end_upload(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let Some(transfer) = conn.transfer.take() else {
            return;
        };
        self.end_transfer(*transfer);
    }

    /// A connection's transfer ends, however it ended (it closed, or was
    /// refused): nothing half-done stays behind.
    pub(super) fn end_transfer(&mut self, transfer: Transfer) {
        match transfer {
            Transfer::Lookup { .. } => {}
            // The whole body arrived and the thread is finishing it: the
            // upload is complete, and is recorded and announced although
            // its client went away (an abort now would come too late to
            // remove what the finish stores).
            Transfer::Upload(up) if up.finishing && up.held.is_none() => {
                if let Some(id) = self.transfers.remove(&up.id) {
                    self.orphans.insert(up.id, (id, up.slot));
                }
            }
            Transfer::Upload(up) => {
                self.transfers.remove(&up.id);
                self.chat.hub.uploads.end(&up.slot, false);
                self.control_in.push_back(Job::Abort { id: up.id });
            }
            Transfer::Download(down) => {
                self.transfers.remove(&down.id);
                self.control_out.push_back(Job::Close { id: down.id });
                if down.bulk {
                    self.bulk_downloads -= 1;
                }
            }
        }
        self.send_control();
    }

    /// Hands over the jobs that end transfers (they must not be lost to
    /// a full queue), in order.
    fn send_control(&mut self) {
        while let Some(job) = self.control_in.pop_front() {
            if let Err(job) = self.disk_in.try_send(job) {
                self.control_in.push_front(job);
                break;
            }
        }
        while let Some(job) = self.control_out.pop_front() {
            if let Err(job) = self.disk_out.try_send(job) {
                self.control_out.push_front(job);
                break;
            }
        }
    }

    /// What the files threads did; and the jobs that waited for room.
    pub(super) fn drain_files(&mut self) {
        self.send_control();
        let held = std::mem::take(&mut self.held);
        for id in held {
            self.hand_over(id);
        }
        while let Some(outcome) = self.disk_in.try_recv() {
            self.upload_outcome(outcome);
        }
        while let Some(outcome) = self.disk_out.try_recv() {
            self.download_outcome(outcome);
        }
    }

    /// Tries again to hand over the job connection `id` holds.
    fn hand_over(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let (held, to_writer) = match conn.transfer.as_deref_mut() {
            Some(Transfer::Upload(up)) => (&mut up.held, true),
            Some(Transfer::Download(down)) => (&mut down.held, false),
            _ => return,
        };
        let Some(job) = held.take() else {
            return;
        };
        let thread = if to_writer {
            &self.disk_in
        } else {
            &self.disk_out
        };
        match thread.try_send(job) {
            Ok(()) => {
                // Its input waited meanwhile, with no new edge to say so.
                if to_writer && conn.closing.is_none() {
                    self.read_again(id);
                }
            }
            Err(job) => {
                *held = Some(job);
                self.held.push(id);
            }
        }
    }

    fn upload_outcome(&mut self, outcome: Outcome) {
        let (tid, result) = match outcome {
            Outcome::Stored { id, stored } => (id, Ok(stored)),
            Outcome::Failed { id, why } => (id, Err(why)),
            Outcome::Data { .. } => return,
        };
        // An upload whose client went away while it was finished.
        if let Some((id, slot)) = self.orphans.remove(&tid) {
            match result {
                Ok(stored) => self.record(id, slot, stored),
                Err(why) => {
                    warn!(
                        "upload of {} by {} not stored: {why:?}",
                        slot.name, slot.owner
                    );
                    self.chat.hub.uploads.end(&slot, false);
                    self.control_in.push_back(Job::Abort { id: tid });
                }
            }
            return;
        }
        let Some(id) = self.transfers.remove(&tid) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let tls = conn.transport.is_tls();
        let Some(transfer) = conn.transfer.take() else {
            return;
        };
        let Transfer::Upload(up) = *transfer else {
            conn.transfer = Some(transfer);
            return;
        };
        match result {
            Ok(stored) => self.record(id, up.slot, stored),
            Err(why) => {
                self.chat.hub.uploads.end(&up.slot, false);
                // The thread forgets the upload it failed.
                self.control_in.push_back(Job::Abort { id: tid });
                let (status, reason) = match &why {
                    Failure::WrongLength => (400, "Bad Request"),
                    Failure::DiskFull => (507, "Insufficient Storage"),
                    Failure::Io(_) => (500, "Internal Server Error"),
                };
                warn!(
                    "upload of {} by {} not stored: {why:?}",
                    up.slot.name, up.slot.owner
                );
                self.answer(id, &http::error(status, reason, tls));
            }
        }
    }

    /// The bytes are stored: the store records the file, and the upload
    /// is announced once it has.
    fn record(&mut self, id: ConnId, slot: Slot, stored: Stored) {
        let Some(file) = uploads::random_id() else {
            self.chat.hub.uploads.end(&slot, false);
            let tls = self.conns.get(id).is_some_and(|c| c.transport.is_tls());
            return self.answer(id, &http::error(503, "Service Unavailable", tls));
        };
        let base = if slot.base.is_empty() {
            self.base_url(id)
        } else {
            slot.base.clone()
        };
        let url = format!("{base}/files/{file}/{}", http::url_encode(&slot.name));
        let row = FileRow {
            id: file,
            sha: stored.sha,
            owner: slot.owner.clone(),
            name: slot.name.clone(),
            size: stored.size,
            mime: stored.kind.mime.to_owned(),
            inline: stored.kind.inline,
            room: slot.room.clone(),
            created_at: wall_clock(),
        };
        self.recording.insert(id, Recording { slot, url });
        self.store_op(Op::RecordFile { conn: id, row });
    }

    /// The store answered a [`Op::RecordFile`] of connection `id` (which
    /// may have closed since: the file is announced all the same).
    pub(super) fn file_recorded(&mut self, id: ConnId, result: Result<(), store::Error>) {
        let Some(Recording { slot, url }) = self.recording.remove(&id) else {
            return;
        };
        let tls = self.conns.get(id).is_some_and(|c| c.transport.is_tls());
        if let Err(e) = result {
            warn!(
                "upload of {} by {} not recorded: {e}",
                slot.name, slot.owner
            );
            self.chat.hub.uploads.end(&slot, false);
            return self.answer(id, &http::error(503, "Service Unavailable", tls));
        }
        self.chat.hub.uploads.end(&slot, true);
        info!(
            "stored {} ({} bytes) by {}: {url}",
            slot.name, slot.size, slot.owner
        );
        if let Some(room) = self.chat.hub.find_room(&slot.room) {
            let text = uploads::announcement(&slot.name, slot.size, &url);
            self.chat.hub.announce_file(
                &slot.owner,
                room,
                &text,
                wall_clock(),
                &mut self.chat.actions,
            );
            self.apply(NOBODY);
        }
        let body = format!("{url}\n");
        let answer = http::respond(
            201,
            "Created",
            &[("Location", &url)],
            "text/plain; charset=utf-8",
            body.as_bytes(),
            tls,
        );
        self.answer(id, &answer);
    }

    /// The store answered a [`Op::FindFile`] of connection `id`.
    pub(super) fn file_found(&mut self, id: ConnId, result: Result<Option<FileRow>, store::Error>) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let tls = conn.transport.is_tls();
        let Some(transfer) = conn.transfer.take() else {
            return;
        };
        let Transfer::Lookup { name, head, range } = *transfer else {
            conn.transfer = Some(transfer);
            return;
        };
        let row = match result {
            Ok(Some(row)) if row.name == name => row,
            Ok(_) => return self.answer(id, &http::error(404, "Not Found", tls)),
            Err(e) => {
                warn!("cannot look a file up: {e}");
                return self.answer(id, &http::error(503, "Service Unavailable", tls));
            }
        };
        let size = row.size;
        let (first, last) = match range.as_deref().map(|r| byte_range(r, size)) {
            None | Some(Ok(None)) => (0, size),
            Some(Ok(Some((first, last)))) => (first, last + 1),
            Some(Err(_)) => {
                let answer = http::respond(
                    416,
                    "Range Not Satisfiable",
                    &[("Content-Range", &format!("bytes */{size}"))],
                    "text/plain; charset=utf-8",
                    b"range not satisfiable\n",
                    tls,
                );
                return self.answer(id, &answer);
            }
        };
        let partial = first != 0 || last != size;
        let length = (last - first).to_string();
        let disposition = disposition(&row);
        let content_range = format!("bytes {first}-{}/{size}", last.saturating_sub(1));
        let mut headers: Vec<(&str, &str)> = vec![
            ("Content-Type", &row.mime),
            ("Content-Length", &length),
            ("Accept-Ranges", "bytes"),
            ("Content-Disposition", &disposition),
            ("Content-Security-Policy", "sandbox"),
            ("Cache-Control", "private, max-age=86400"),
        ];
        if partial {
            headers.push(("Content-Range", &content_range));
        }
        let response = if partial {
            http::head(206, "Partial Content", &headers, tls)
        } else {
            http::head(200, "OK", &headers, tls)
        };
        conn.transport.push_raw(&response);
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(id.key);
        }
        if head || first == last {
            self.mark_closing(id, Closing::AfterFlush, "HTTP request answered");
            return;
        }
        self.next_transfer += 1;
        let tid = self.next_transfer;
        self.transfers.insert(tid, id);
        let bulk = self.bulk_downloads < BULK_DOWNLOADS;
        if bulk {
            self.bulk_downloads += 1;
            conn.transport.set_bulk(true);
        }
        conn.transfer = Some(Box::new(Transfer::Download(Download {
            id: tid,
            sha: row.sha,
            next: first,
            end: last,
            asked: false,
            held: None,
            since: Instant::now(),
            spare: Vec::new(),
            bulk,
        })));
        self.feed(id.key);
    }

    /// Asks for the next piece of connection `key`'s download once its
    /// socket has taken most of what was queued.
    pub(super) fn feed(&mut self, key: usize) {
        let Some(conn) = self.conns.at_mut(key) else {
            return;
        };
        if conn.closing.is_some() || conn.unsent() >= LOW_WATER {
            return;
        }
        let Some(Transfer::Download(down)) = conn.transfer.as_deref_mut() else {
            return;
        };
        if down.asked || down.next >= down.end {
            return;
        }
        down.asked = true;
        let len = usize::try_from(down.end - down.next).map_or(CHUNK, |n| n.min(CHUNK));
        let job = Job::Read {
            id: down.id,
            sha: down.sha,
            offset: down.next,
            len,
            buf: std::mem::take(&mut down.spare),
        };
        if let Err(job) = self.disk_out.try_send(job) {
            down.held = Some(job);
            self.held.push(conn.id);
        }
    }

    fn download_outcome(&mut self, outcome: Outcome) {
        let (tid, bytes) = match outcome {
            Outcome::Data { id, bytes } => (id, Some(bytes)),
            Outcome::Failed { id, why } => {
                warn!("a download failed: {why:?}");
                (id, None)
            }
            Outcome::Stored { .. } => return,
        };
        let Some(&id) = self.transfers.get(&tid) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let Some(Transfer::Download(down)) = conn.transfer.as_deref_mut() else {
            return;
        };
        let Some(bytes) = bytes.filter(|b| !b.is_empty()) else {
            // The file went (it expired) or cannot be read: the response
            // is cut short, which the client sees as a short body.
            return self.close_download(id, Closing::Now);
        };
        down.asked = false;
        down.since = Instant::now();
        down.next += bytes.len() as u64;
        let done = down.next >= down.end;
        conn.transport.push_raw(&bytes);
        // Downloads count toward --max-total-output like any output.
        self.ledger.add(id.key, bytes.len());
        // Only a bulk download keeps its vector between pieces: any other
        // holds no memory while it waits for the disk, as before.
        if down.bulk {
            down.spare = bytes;
        }
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(id.key);
        }
        if done {
            self.close_download(id, Closing::AfterFlush);
        }
        if self.ledger.total() > self.config.max_total_output {
            self.shed_output();
        }
    }

    /// Drops downloads whose client has taken nothing for
    /// [`DOWNLOAD_IDLE`] (once a second, from the timers).
    pub(super) fn drop_stalled(&mut self, now: Instant) {
        let stalled: Vec<ConnId> = self
            .transfers
            .values()
            .filter(|id| {
                self.conns.get(**id).is_some_and(|c| {
                    matches!(c.transfer.as_deref(),
                        Some(Transfer::Download(d)) if now.duration_since(d.since) >= DOWNLOAD_IDLE)
                })
            })
            .copied()
            .collect();
        for id in stalled {
            debug!("conn {}: download stalled", id.key);
            self.close_download(id, Closing::Now);
        }
    }

    fn close_download(&mut self, id: ConnId, how: Closing) {
        if let Some(conn) = self.conns.get_mut(id) {
            // What is left drains as any output does, freed as it goes.
            conn.transport.set_bulk(false);
            if let Some(transfer) = conn.transfer.take() {
                self.end_transfer(*transfer);
            }
        }
        let reason = if how == Closing::Now {
            "download failed"
        } else {
            "download sent"
        };
        self.mark_closing(id, how, reason);
    }
}

impl Conn {
    /// A job of this connection's transfer waits for room.
    pub(super) fn transfer_blocked(&self) -> bool {
        self.transfer.as_deref().is_some_and(Transfer::blocked)
    }
}

/// `Content-Disposition` of a stored file: plain images inline, anything
/// else an attachment (with the name, ASCII-only in `filename`, exact in
/// `filename*`).
fn disposition(row: &FileRow) -> String {
    if row.inline {
        return "inline".to_owned();
    }
    let ascii: String = row
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' && c != '%' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        http::url_encode(&row.name)
    )
}
