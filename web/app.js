// NeoChat web client. It speaks the same line protocol as the terminal
// client, over a WebSocket to /ws on the page's own origin: one line per
// text message. Text from the network only ever reaches the page as text
// (textContent and text nodes, never parsed as markup), and only http(s) URLs become links.

const $ = (id) => document.getElementById(id);
const LOBBY = "#lobby";
const TOKEN_KEY = "neochat.token";
const TOKEN_REFRESH_MS = 7 * 24 * 3600 * 1000;
const HISTORY_MAX = 200;
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
const IMAGE = /\.(png|jpe?g|gif|webp)$/i;
const DUP_WINDOW_MS = 120 * 1000;

// ---------------------------------------------------------------- state

const state = {
  ws: null,
  phase: "out", // out | login | chat
  user: null,
  attempt: null, // the login being made: {mode, username, password, token}
  sentChoice: false,
  burst: false, // between "logged in" and the end of the /help reply
  burstRooms: new Set(),
  expect: [], // replies to commands the page sent itself, in order
  isOp: false,
  convs: new Map(),
  current: LOBBY,
  retry: 0,
  retryTimer: 0,
  countdown: 0,
  stopped: false, // no automatic reconnect (taken over, banned, logged out)
  uploads: [],
  uploading: false,
  avgH: 26,
  droppedAt: 0, // when the last chat connection closed
  fresh: true, // no login yet since the page loaded: its log is empty
  boxFor: null, // the conversation whose draft the message box holds
};

function conv(key, create = true) {
  let c = state.convs.get(key);
  if (!c && create) {
    c = {
      key,
      items: [],
      unread: 0,
      topic: "",
      members: [],
      more: 0,
      draft: "",
      stick: true,
      scroll: 0,
      exhausted: false,
      loading: false,
      marker: null,
      caught: 0,
    };
    state.convs.set(key, c);
    if (key.startsWith("@") && state.user) savePrivate();
    renderSidebar();
  }
  return c;
}

const isRoom = (key) => key.startsWith("#");
const current = () => conv(state.current);
const sameName = (a, b) => a && b && a.toLowerCase() === b.toLowerCase();

// --------------------------------------------------------------- storage

function savedToken() {
  for (const store of [localStorage, sessionStorage]) {
    try {
      const v = JSON.parse(store.getItem(TOKEN_KEY) || "null");
      if (v && typeof v.token === "string" && typeof v.user === "string") return v;
    } catch {
      store.removeItem(TOKEN_KEY);
    }
  }
  return null;
}

function saveToken(token, remember) {
  forgetToken();
  const store = remember ? localStorage : sessionStorage;
  store.setItem(TOKEN_KEY, JSON.stringify({ user: state.user, token, at: Date.now() }));
}

function forgetToken() {
  localStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(TOKEN_KEY);
}

const remembered = () => localStorage.getItem(TOKEN_KEY) !== null;

// ------------------------------------------------------------ connection

function status(text) {
  $("status").textContent = text;
}

function connect() {
  clearTimeout(state.retryTimer);
  clearInterval(state.countdown);
  if (state.ws) {
    state.ws.onclose = null;
    state.ws.close();
  }
  unsent();
  status("connecting…");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws`);
  state.ws = ws;
  state.sentChoice = false;
  state.expect = [];
  state.phase = "login";
  ws.onmessage = (e) => {
    if (ws === state.ws && typeof e.data === "string") handle(e.data);
  };
  ws.onclose = () => {
    clearTimeout(opening);
    if (ws === state.ws) closed();
  };
  ws.onopen = () => clearTimeout(opening);
  // A connection that never opens (a black-holed network) is given up.
  const opening = setTimeout(() => ws.close(), 10000);
}

// Lines go out through a queue paced below the server's flood limit (a
// burst of 20, then 10 a second): a pasted paragraph is sent in full
// instead of being cut by "! slow down".
const PACE_BURST = 15;
const PACE_PER_SEC = 8;
const out = { queue: [], tokens: PACE_BURST, at: 0, timer: 0 };

function sendRaw(line, typed = null) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
  out.queue.push({ line, typed });
  pump();
  return true;
}

function pump() {
  clearTimeout(out.timer);
  const now = performance.now();
  out.tokens = Math.min(PACE_BURST, out.tokens + ((now - out.at) / 1000) * PACE_PER_SEC);
  out.at = now;
  const ws = state.ws;
  while (out.queue.length && out.tokens >= 1 && ws && ws.readyState === WebSocket.OPEN) {
    ws.send(out.queue.shift().line);
    out.tokens -= 1;
  }
  if (out.queue.length) out.timer = setTimeout(pump, 1000 / PACE_PER_SEC);
}

// What the user typed that had not gone out when the connection dropped
// goes back into the message box.
function unsent() {
  const typed = out.queue.filter((q) => q.typed !== null).map((q) => q.typed);
  out.queue = [];
  clearTimeout(out.timer);
  if (!typed.length) return;
  for (const { item, c } of typed) {
    // Shown as sent, but never sent: taken back off the log.
    const i = c.items.indexOf(item);
    if (i >= 0) c.items.splice(i, 1);
    c.rendered = null;
  }
  const box = $("message");
  box.value = typed.map((t) => t.text).join("\n") + (box.value ? "\n" + box.value : "");
  autosize();
  scheduleRender();
}

// A line cut into pieces of at most `max` bytes of UTF-8, at a space
// where there is one near the end, never inside a character.
function pieces(text, max) {
  const enc = new TextEncoder();
  if (enc.encode(text).length <= max) return [text];
  const parts = [];
  let part = "";
  let bytes = 0;
  for (const ch of text) {
    const n = enc.encode(ch).length;
    if (bytes + n > max) {
      const cut = part.lastIndexOf(" ");
      if (cut > part.length * 0.8) {
        parts.push(part.slice(0, cut));
        part = part.slice(cut + 1);
      } else {
        parts.push(part);
        part = "";
      }
      bytes = enc.encode(part).length;
    }
    part += ch;
    bytes += n;
  }
  if (part) parts.push(part);
  return parts;
}

// A command whose reply the page reads itself instead of showing.
function quietly(line, expectation) {
  if (sendRaw(line)) state.expect.push(expectation);
}

function connected() {
  return state.phase === "chat" && state.ws && state.ws.readyState === WebSocket.OPEN;
}

function closed() {
  unsent();
  const was = state.phase;
  // Lines stamped after this were not seen live (see isDuplicate).
  if (was === "chat") state.droppedAt = Date.now();
  state.ws = null;
  state.phase = "out";
  state.expect = [];
  if (state.stopped) return;
  if (was === "chat" || (state.attempt && state.attempt.mode === "T")) {
    scheduleReconnect();
  } else if (state.attempt) {
    // A password login cut short: the form keeps what was typed.
    state.attempt = null;
    status("");
    loginError("connection lost; try again");
    setBusy(false);
  } else {
    status("");
  }
}

function scheduleReconnect() {
  const saved = savedToken();
  if (!saved) {
    showLogin("connection lost: log in again");
    return;
  }
  state.attempt = { mode: "T", token: saved.token, username: saved.user };
  // 1, 2, 4, 8, then 15 s, each a quarter either way at random, so that
  // a restarted server is not met by every browser in the same second.
  const base = Math.min(15, 2 ** state.retry);
  const delay = Math.max(1, Math.round(base * (0.75 + Math.random() * 0.5)));
  state.retry = Math.min(state.retry + 1, 4);
  let left = delay;
  const tick = () => status(`reconnecting in ${left} s`);
  tick();
  state.countdown = setInterval(() => {
    left -= 1;
    if (left > 0) tick();
  }, 1000);
  state.retryTimer = setTimeout(connect, delay * 1000);
}

function reconnectNow() {
  if (state.phase === "out" && state.attempt && state.attempt.mode === "T" && !state.stopped) {
    connect();
  }
}

// ----------------------------------------------------------------- login

function loginError(text) {
  $("login-error").textContent = text;
}

function setBusy(busy) {
  $("login-button").disabled = busy;
  $("signup-button").disabled = busy;
}

function showLogin(message = "") {
  $("chat-view").hidden = true;
  document.documentElement.classList.remove("remembered");
  $("login-view").hidden = false;
  loginError(message);
  setBusy(false);
  status("");
  document.title = "NeoChat";
  $("username").focus();
}

function startLogin(mode) {
  const username = $("username").value.trim();
  const password = $("password").value;
  if (!username) return loginError("enter a username");
  if (mode === "R" && !NAME.test(username)) {
    return loginError("invalid username: 1-32 letters, digits, '_', '-' or '.'");
  }
  const bytes = new TextEncoder().encode(password).length;
  if (mode === "R" && (bytes < 8 || bytes > 72)) return loginError("password must be 8-72 bytes");
  if (!password) return loginError("enter your password");
  loginError("");
  setBusy(true);
  state.stopped = false;
  state.attempt = { mode, username, password, remember: $("remember").checked };
  connect();
}

function loggedIn(name) {
  const attempt = state.attempt || {};
  if (state.user && !sameName(state.user, name)) {
    state.convs.clear();
    state.current = LOBBY;
    state.fresh = true;
  }
  state.user = name;
  state.phase = "chat";
  state.byToken = attempt.mode === "T";
  state.retry = 0;
  state.burst = true;
  state.burstRooms = new Set();
  for (const c of state.convs.values()) c.caught = 0;
  status("");
  $("password").value = "";
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  setBusy(false);
  conv(LOBBY);
  if (state.fresh) restorePrivate();
  // The reply to /help ends the login's burst of catch-up lines, and says
  // whether the moderation commands are ours.
  quietly("/help", { kind: "help", ops: false, started: false, login: true });
  if (attempt.mode !== "T") {
    quietly("/token", { kind: "token", remember: attempt.remember !== false });
  } else {
    const saved = savedToken();
    if (saved && Date.now() - (saved.at || 0) > TOKEN_REFRESH_MS) {
      quietly("/token", { kind: "token", remember: remembered() });
    }
  }
  state.attempt = { mode: "T" };
  if (state.current !== LOBBY && isRoom(state.current)) {
    quietly(`/join ${state.current}`, { kind: "talking" });
  }
  showConv();
  // For the benchmarks: when the chat first showed after the page loaded.
  if (!performance.getEntriesByName("neochat:chat").length) performance.mark("neochat:chat");
}

function loginLine(line) {
  const a = state.attempt;
  if (line.startsWith("? choice")) {
    if (!a || state.sentChoice) {
      // A failed attempt: start again on a fresh connection when asked.
      finishAttempt();
      return;
    }
    state.sentChoice = true;
    sendRaw(a.mode);
  } else if (line.startsWith("? username")) {
    if (a && a.username) sendRaw(a.username);
  } else if (line.startsWith("? password")) {
    if (a && a.password) sendRaw(a.password);
    if (a) a.password = "";
  } else if (line.startsWith("? token")) {
    if (a && a.token) sendRaw(a.token);
  } else if (line.startsWith("! ")) {
    const text = line.slice(2);
    if (text === "invalid or expired token") {
      forgetToken();
      state.attempt = null;
      showLogin("your saved login has expired: log in again");
      finishAttempt();
      return;
    }
    if (/^(banned until|too many failed|server full|kicked by)/.test(text)) state.stopped = true;
    showLogin(text);
    // Bad input re-prompts on the server: start over on a new connection.
    finishAttempt();
  } else {
    const m = /^\* (?:registered and )?logged in as (\S+)$/.exec(line);
    if (m) loggedIn(m[1]);
  }
}

function finishAttempt() {
  state.attempt = null;
  setBusy(false);
  status("");
  if (state.ws) {
    const ws = state.ws;
    state.ws = null;
    state.phase = "out";
    ws.onclose = null;
    ws.close();
  }
}

function logout() {
  state.stopped = true;
  const saved = savedToken();
  forgetToken();
  localStorage.removeItem(privateKey());
  const ws = state.ws;
  if (connected()) {
    // `/logout` revokes the token this connection logged in with. One that
    // logged in with the password holds a token it did not use: a second
    // connection logs in with it and logs out, which revokes it, before
    // this one goes (so the account never looks offline and back).
    const bye = () => ws.readyState === WebSocket.OPEN && ws.send("/logout");
    out.queue = [];
    if (!state.byToken && saved) revoke(saved.token, bye);
    else bye();
  }
  state.phase = "out";
  state.attempt = null;
  clearTimeout(state.retryTimer);
  clearInterval(state.countdown);
  if (ws) {
    ws.onclose = null;
    ws.onmessage = null;
    // Let /logout reach the server (and close) first.
    setTimeout(() => ws.close(), 6000);
  }
  state.ws = null;
  state.user = null;
  state.convs.clear();
  state.current = LOBBY;
  state.uploads = [];
  state.fresh = true;
  state.boxFor = null;
  showLogin("");
}

// Logs in with `token` on a connection of its own and logs out, which
// revokes the token; then `after` (also when that fails, within 5 s).
function revoke(token, after) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws`);
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    after();
  };
  const timer = setTimeout(() => {
    ws.close();
    finish();
  }, 5000);
  ws.onmessage = (e) => {
    const line = String(e.data);
    if (line.startsWith("? choice")) ws.send("T");
    else if (line.startsWith("? token")) ws.send(token);
    else if (line.startsWith("* logged in as ")) ws.send("/logout");
    else if (line.startsWith("! ") && !line.startsWith("! slow")) ws.close();
  };
  ws.onclose = finish;
}

// ------------------------------------------------------------ line input

function handle(line) {
  if (state.phase !== "chat") return loginLine(line);
  const e = state.expect[0];
  if (e && e.kind === "token" && line.startsWith("* token ")) {
    // A secret: kept, never shown. Only as the reply to our /token: a user
    // named "token" says "* token joined" and can /me anything.
    state.expect.shift();
    saveToken(line.slice(8), e.remember);
    return;
  }
  if (expected(line)) return;
  lineIn(line, false);
}

// Feeds a line to the oldest pending quiet command; true if it took it.
function expected(line) {
  const e = state.expect[0];
  if (!e) return false;
  const done = () => state.expect.shift();
  const error = line.startsWith("! ");
  switch (e.kind) {
    case "help":
      if (line === "* commands:") {
        e.started = true;
        return true;
      }
      if (e.started && line.startsWith("*   ")) {
        if (/^\* {3}\/kick\b/.test(line)) e.ops = true;
        if (line.startsWith("*   //text")) {
          done();
          state.isOp = e.ops;
          if (e.login) endBurst();
        }
        return true;
      }
      return false;
    case "talking":
      if (line.startsWith("* talking in ")) return done(), true;
      if (error) done();
      return false;
    case "who": {
      const m = /^(#\S+ )?\* online \(\d+\): (.*)$/.exec(line);
      if (m) {
        done();
        setMembers(m[1] ? m[1].trim() : LOBBY, m[2]);
        return true;
      }
      if (error) done();
      return false;
    }
    case "history":
      if (line.startsWith("~")) {
        e.lines.push(line);
        return true;
      }
      if (line === "* end of history") {
        done();
        olderHistory(e);
        return true;
      }
      if (error) {
        done();
        const c = conv(e.key, false);
        if (c) c.loading = false, c.exhausted = true;
      }
      return false;
    case "upload":
      if (line.startsWith("* upload ")) {
        done();
        put(e.file, line.slice(9), e.key);
        return true;
      }
      if (error) {
        done();
        state.uploading = false;
        nextUpload();
      }
      return false;
    default:
      done();
      return false;
  }
}

// Splits "<name>: <text>" (a message) from anything else.
function said(rest) {
  const i = rest.indexOf(": ");
  if (i > 0 && NAME.test(rest.slice(0, i))) return { who: rest.slice(0, i), text: rest.slice(i + 2) };
  return null;
}

const HISTORY_LINE = /^~(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (.*)$/;

// One server line while chatting; `older` for lines of a /history reply.
function lineIn(line, older) {
  let t = Date.now();
  let hist = false;
  const h = HISTORY_LINE.exec(line);
  if (h) {
    t = Date.parse(h[1]);
    line = h[2];
    hist = true;
  }
  let key = LOBBY;
  let rest = line;
  const room = /^(#[a-z0-9_.-]{1,32}) (.*)$/.exec(line);
  if (room) {
    key = room[1];
    rest = room[2];
  }
  let item;
  const pm = /^(-> )?@([A-Za-z0-9][A-Za-z0-9_.-]{0,31}): (.*)$/.exec(rest);
  if (!room && pm) {
    key = "@" + pm[2];
    key = existingKey(key);
    item = { t, who: pm[1] ? state.user : pm[2], text: pm[3], kind: pm[1] ? "own" : "msg" };
  } else if (rest.startsWith("* ")) {
    if (!hist && notice(key, rest.slice(2), !!room)) return;
    item = { t, text: rest.slice(2), kind: isAction(rest.slice(2), key) ? "me" : "notice" };
    if (item.kind === "me") item.mine = sameName(rest.slice(2).split(" ")[0], state.user);
    else if (!room && !hist && !noticeIsLobby(rest.slice(2))) key = state.current;
  } else if (rest.startsWith("! ")) {
    if (!hist && errorLine(key, rest.slice(2), !!room)) return;
    item = { t, text: rest.slice(2), kind: "error" };
    if (!room) key = state.current;
  } else {
    const m = said(rest);
    if (!m) {
      item = { t, text: rest, kind: "notice" };
    } else {
      item = { t, who: m.who, text: m.text, kind: sameName(m.who, state.user) ? "own" : "msg" };
    }
  }
  item.hist = hist;
  if (room && !state.convs.has(key) && !hist) {
    // A line of a room we do not show (left already): keep it out.
    if (!older) return;
  }
  const c = conv(key);
  if (hist && !older) {
    if (isDuplicate(c, item, state.droppedAt)) return;
    if (c.caught === 0) c.firstCaught = item;
    c.caught += 1;
  }
  if (older) return item;
  add(c, item, !hist || state.burst);
}

// The private conversations' names (never their text) are kept in the
// browser, so that a reload lists them again.
function privateKey() {
  return `neochat.private.${(state.user || "").toLowerCase()}`;
}

function savePrivate() {
  const keys = [...state.convs.keys()].filter((k) => k.startsWith("@")).slice(0, 100);
  try {
    localStorage.setItem(privateKey(), JSON.stringify(keys));
  } catch {
    // Storage full or refused: the list is only a convenience.
  }
}

function restorePrivate() {
  try {
    const keys = JSON.parse(localStorage.getItem(privateKey()) || "[]");
    for (const k of keys) if (typeof k === "string" && /^@[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/.test(k)) conv(k);
  } catch {
    localStorage.removeItem(privateKey());
  }
}

// The key under which a private conversation is kept (first spelling).
function existingKey(key) {
  for (const k of state.convs.keys()) if (sameName(k, key)) return k;
  return key;
}

// `* bob dances` (a /me) rather than a notice of the server: the name of
// someone online in that conversation, then what no server notice says.
const SERVER_NOTICE =
  /^\S+ (joined|left|was (kicked|banned) by .*|is no longer banned|is offline; .*|is (now )?(an )?operator.*)$/;
function isAction(text, key) {
  const name = text.split(" ")[0];
  const c = state.convs.get(key);
  const present = sameName(name, state.user) || (c && c.members.some((m) => sameName(m, name)));
  return present && text.length > name.length + 1 && !SERVER_NOTICE.test(text);
}

function noticeIsLobby(text) {
  return /^(\S+ (joined|left)|\S+ was (kicked|banned) by .*|online \(\d+\): .*|\d+ messages since you left.*|\d+ older private messages.*|server shutting down)$/.test(text);
}

// A notice that changes the page's state; true if it is not shown.
function notice(key, text, inRoom) {
  const c = conv(key, inRoom ? state.convs.has(key) || state.burst || state.joining === key : true);
  let m;
  // Unasked for, outside a login or a join, it is a /me of a user named
  // "online" (a typed /who is shown as its answer).
  if ((m = /^online \((\d+)\): (.*)$/.exec(text)) && (state.burst || (inRoom && state.joining === key))) {
    if (inRoom) {
      conv(key);
      if (state.burst) state.burstRooms.add(key);
      if (state.joining === key) {
        state.joining = null;
        switchTo(key);
        // A room just made is ours to moderate: ask again what we may do.
        if (/^1$/.test(m[1]) && !state.isOp) {
          quietly("/help", { kind: "help", ops: false, started: false, login: false });
        }
      }
    }
    setMembers(key, m[2]);
    return true;
  }
  if (!c) return true;
  if ((m = /^topic: (.*)$/.exec(text))) {
    c.topic = m[1].replace(/ \(set by [^)]*\)$/, "");
    if (key === state.current) renderHeader();
    return state.burst;
  }
  if (text === "bye" && inRoom) {
    dropConv(key);
    return true;
  }
  if ((m = /^(\S+) joined$/.exec(text))) {
    addMember(c, m[1]);
  } else if ((m = /^(\S+) (left|was kicked by .*|was banned by .*)$/.exec(text))) {
    removeMember(c, m[1]);
    if (!inRoom && m[2] === "left") for (const r of state.convs.values()) removeMember(r, m[1]);
  } else if ((m = /^talking in (#\S+)$/.exec(text))) {
    return true;
  } else if (text === "bye") {
    return true;
  } else if (text === "server shutting down") {
    status("the server is restarting");
  }
  return false;
}

// An error line that changes the page's state; true if it is not shown.
function errorLine(key, text, inRoom) {
  if (inRoom && /^you were kicked from /.test(text)) {
    const lobby = conv(LOBBY);
    add(lobby, { t: Date.now(), text, kind: "error" }, true);
    dropConv(key);
    return true;
  }
  if (/^(logged in from another connection|kicked by |banned until )/.test(text)) {
    state.stopped = true;
    status(text.startsWith("logged") ? "disconnected: logged in elsewhere (reload to come back)" : text);
  }
  if (inRoom && !state.convs.has(key)) return true;
  return false;
}

function dropConv(key) {
  state.convs.delete(key);
  if (state.current === key) state.current = LOBBY;
  renderSidebar();
  showConv();
}

function setMembers(key, list) {
  const c = conv(key, isRoom(key) ? state.convs.has(key) : true);
  if (!c) return;
  let more = 0;
  const names = list.split(", ").filter(Boolean);
  const last = names.length ? /^(\S+) and (\d+) more$/.exec(names[names.length - 1]) : null;
  if (last) {
    names[names.length - 1] = last[1];
    more = Number(last[2]);
  }
  c.members = names;
  c.more = more;
  if (key === state.current) renderMembers();
}

function addMember(c, name) {
  if (!c.members.some((n) => sameName(n, name))) {
    c.members.push(name);
    c.members.sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
    if (c.key === state.current) renderMembers();
  }
}

function removeMember(c, name) {
  const i = c.members.findIndex((n) => sameName(n, name));
  if (i >= 0) {
    c.members.splice(i, 1);
    if (c.key === state.current) renderMembers();
  }
}

// A history line the page shows already: the same line of an earlier
// history reply (same time to the second), or one it received live. A live
// line carries this browser's clock, so it matches by sender and text
// within two minutes, and only for a history line stamped before the page
// stopped receiving (`seenUntil`: the drop, for a login's catch-up, so
// that what was said after a drop is new even when it repeats an earlier
// "ok"; no limit for older lines asked for with /history, which the page
// was there for).
function isDuplicate(c, item, seenUntil, everywhere = false) {
  const reach = everywhere ? c.items.length : 400;
  for (let i = c.items.length - 1, n = 0; i >= 0 && n < reach; i--, n++) {
    const o = c.items[i];
    if (o.text !== item.text || !sameName(o.who || "", item.who || "") || o.kind !== item.kind) continue;
    // History is stamped to the second: a line of the second in which the
    // page stopped may be either, and is shown (better twice than never).
    if (o.hist ? o.t === item.t : item.t + 1000 <= seenUntil && Math.abs(o.t - item.t) <= DUP_WINDOW_MS) {
      return true;
    }
  }
  return false;
}

function endBurst() {
  state.burst = false;
  for (const c of [...state.convs.values()]) {
    if (isRoom(c.key) && c.key !== LOBBY && !state.burstRooms.has(c.key)) {
      // Not rejoined at login: no longer a member (kicked while away).
      dropConv(c.key);
      continue;
    }
    if (c.caught > 0) setMarker(c);
    c.firstCaught = null;
  }
  if (!state.convs.has(state.current)) state.current = LOBBY;
  if (isRoom(state.current)) refreshMembers(state.current);
  if (state.fresh) {
    // A reloaded page knows only what it missed: the recent past of the
    // conversation shown comes from /history (the others' when opened).
    state.fresh = false;
    current().opened = true;
    loadOlder(current());
  }
  showConv();
}

// The "new" marker. On a page that already showed the conversation (a
// reconnect), the lines the login brought are the ones missed: the marker
// goes before them. On a page just loaded, they are shown as the past, and
// the marker goes after them, before what arrives live.
function setMarker(c) {
  if (c.marker) {
    const i = c.items.indexOf(c.marker);
    if (i >= 0) c.items.splice(i, 1);
  }
  c.marker = { kind: "marker", t: Date.now() };
  const first = c.firstCaught ? c.items.indexOf(c.firstCaught) : -1;
  const before = !state.fresh && first > 0;
  c.items.splice(before ? first : c.items.length, 0, c.marker);
  c.rendered = null;
  if (c.key === state.current) render();
}

// --------------------------------------------------------------- history

function loadOlder(c) {
  if (c.loading || c.exhausted || !connected()) return;
  const have = c.items.filter((i) => i.kind !== "marker").length;
  const n = Math.min(HISTORY_MAX, have + 50);
  c.loading = true;
  c.asked = n;
  const target = c.key === LOBBY ? "#lobby" : c.key;
  quietly(`/history ${target} ${n}`, { kind: "history", key: c.key, lines: [] });
}

function olderHistory(e) {
  const c = conv(e.key, false);
  if (!c) return;
  c.loading = false;
  const fresh = [];
  for (const line of e.lines) {
    const item = lineIn(line, true);
    if (item && !isDuplicate(c, item, Infinity, true) && !fresh.some((f) => f.t === item.t && f.text === item.text)) {
      fresh.push(item);
    }
  }
  const oldest = c.items.find((i) => i.kind !== "marker");
  const older = fresh.filter((i) => !oldest || i.t <= oldest.t);
  if (older.length === 0 || c.asked >= HISTORY_MAX || e.lines.length < c.asked) c.exhausted = true;
  if (older.length) {
    c.items.unshift(...older);
    if (c.key === state.current) render();
  }
}

// ---------------------------------------------------------------- output

function add(c, item, countUnread) {
  c.items.push(item);
  const mine = item.kind === "own";
  const mention =
    !mine && item.who && state.user && new RegExp(`(^|[^A-Za-z0-9_.-])${escapeRe(state.user)}($|[^A-Za-z0-9_-])`, "i").test(item.text);
  const personal = c.key.startsWith("@") && !mine;
  const seen = c.key === state.current && !document.hidden;
  if (countUnread && !mine && !seen && item.kind !== "notice") {
    c.unread += 1;
    renderSidebar();
    updateTitle();
  }
  if ((personal || mention) && !item.hist && document.hidden) notify(c, item);
  // One render a frame, however many lines arrive in it.
  if (c.key === state.current) scheduleRender();
}

function escapeRe(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function notify(c, item) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  try {
    const n = new Notification(c.key.startsWith("@") ? c.key : `${item.who} in ${c.key}`, {
      body: item.text.slice(0, 200),
      tag: c.key,
      icon: "/icon.svg",
    });
    n.onclick = () => {
      window.focus();
      switchTo(c.key);
      n.close();
    };
  } catch {
    // Some browsers only allow notifications from a service worker.
  }
}

function updateTitle() {
  let n = 0;
  for (const c of state.convs.values()) n += c.unread;
  document.title = n ? `(${n}) NeoChat` : "NeoChat";
  // On a phone the list is in the drawer: its button shows the count.
  const badge = $("drawer-unread");
  badge.textContent = n ? String(n) : "";
  $("drawer-button").setAttribute("aria-label", n ? `Rooms, ${n} unread` : "Rooms");
}

// --------------------------------------------------- the virtual message log

function timeText(t) {
  const d = new Date(t);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

function rowOf(item) {
  if (item.el) return item.el;
  let el;
  if (item.kind === "marker") {
    el = document.createElement("div");
    el.className = "new-marker";
    el.setAttribute("role", "separator");
    el.textContent = "new";
  } else {
    el = document.createElement("div");
    el.className = `msg ${item.kind}${item.mine ? " own" : ""}${item.hist ? " history" : ""}`;
    const time = document.createElement("time");
    const d = new Date(item.t);
    time.dateTime = d.toISOString();
    time.title = d.toLocaleString();
    time.textContent = timeText(item.t);
    el.append(time);
    if (item.who) {
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = item.who;
      el.append(who);
    }
    const text = document.createElement("span");
    text.className = "text";
    text.dir = "auto";
    fillText(text, item.text);
    el.append(text);
  }
  item.el = el;
  return el;
}

const FILE = /^\[file\] (\S+) \(([^)]*)\) (https?:\/\/\S+)$/;
const URLS = /https?:\/\/[^\s<>"']+/g;

// Text as text; http(s) URLs as links; a file announcement as a link to
// the file (on this page's origin) and, for an image, a thumbnail.
function fillText(span, text) {
  const f = FILE.exec(text);
  if (f) {
    let path = null;
    try {
      const u = new URL(f[3]);
      if (u.pathname.startsWith("/files/")) path = u.pathname;
    } catch {
      path = null;
    }
    if (path) {
      const a = document.createElement("a");
      a.className = "file";
      a.href = path;
      a.textContent = f[1];
      a.download = f[1];
      span.append("[file] ", a, ` (${f[2]})`);
      if (IMAGE.test(path)) {
        const img = document.createElement("img");
        img.className = "thumb";
        img.alt = f[1];
        img.loading = "lazy";
        img.decoding = "async";
        img.src = path;
        img.addEventListener(
          "load",
          () => {
            current().rendered = null;
            scheduleRender();
          },
          { once: true },
        );
        const link = document.createElement("a");
        link.href = path;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        link.append(img);
        span.append(link);
      }
      return;
    }
  }
  let last = 0;
  for (const m of text.matchAll(URLS)) {
    let href = null;
    try {
      const u = new URL(m[0]);
      if (u.protocol === "http:" || u.protocol === "https:") href = u.href;
    } catch {
      href = null;
    }
    if (!href) continue;
    span.append(text.slice(last, m.index));
    const a = document.createElement("a");
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    a.textContent = m[0];
    span.append(a);
    last = m.index + m[0].length;
  }
  span.append(text.slice(last));
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

const heightOf = (item) => item.h || state.avgH;
const BLOCK = 16;

// Renders the rows near the viewport of the current conversation, with
// spacers standing for the rest; keeps the first visible row in place
// (or the bottom, when the reader is at the bottom).
function render() {
  const c = current();
  const log = $("log");
  const rows = $("rows");
  const items = c.items;
  const vh = log.clientHeight || 600;
  const over = vh;
  let top = log.scrollTop;
  if (c.stick) {
    let total = 0;
    for (const it of items) total += heightOf(it);
    top = Math.max(0, total - vh);
  }
  // The window: from a screen above the viewport to a screen below it.
  // Its ends are rounded to blocks of BLOCK rows, so that a scroll
  // changes the DOM every few frames, not at every one.
  let y = 0;
  let i = 0;
  while (i < items.length && y + heightOf(items[i]) < top - over) y += heightOf(items[i++]);
  while (i % BLOCK) y -= heightOf(items[--i]);
  const start = i;
  const padTop = y;
  let anchor = null;
  let anchorOffset = 0;
  while (i < items.length && (y < top + vh + over || i % BLOCK)) {
    if (!anchor && y + heightOf(items[i]) > top) {
      anchor = items[i];
      anchorOffset = y - top;
    }
    y += heightOf(items[i++]);
  }
  const end = i;
  if (c.rendered && c.rendered[0] === start && c.rendered[1] === end && c.rendered[2] === items.length && !c.stick) {
    return;
  }
  let rest = 0;
  for (; i < items.length; i++) rest += heightOf(items[i]);
  $("pad-top").style.height = `${padTop}px`;
  $("pad-bottom").style.height = `${rest}px`;
  const wanted = items.slice(start, end).map(rowOf);
  let cur = rows.firstChild;
  for (const el of wanted) {
    if (el === cur) cur = cur.nextSibling;
    else rows.insertBefore(el, cur);
  }
  while (cur) {
    const next = cur.nextSibling;
    rows.removeChild(cur);
    cur = next;
  }
  // Measure what is shown; the rows above the anchor move it.
  let sum = 0;
  let count = 0;
  let y2 = padTop;
  let anchorY = null;
  for (let k = start; k < end; k++) {
    const it = items[k];
    const h = it.el.getBoundingClientRect().height;
    if (h > 0) {
      it.h = h;
      sum += h;
      count += 1;
    }
    if (it === anchor) anchorY = y2;
    y2 += heightOf(it);
  }
  if (count) state.avgH = Math.max(16, Math.min(200, (state.avgH * 3 + sum / count) / 4));
  if (c.stick) {
    log.scrollTop = log.scrollHeight;
  } else if (anchor && anchorY !== null) {
    const want = anchorY - anchorOffset;
    if (Math.abs(log.scrollTop - want) > 1) log.scrollTop = want;
  }
  c.rendered = [start, end, items.length];
}

function onScroll() {
  const c = current();
  const log = $("log");
  c.stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
  c.scroll = log.scrollTop;
  if (c.stick && c.unread) {
    c.unread = 0;
    renderSidebar();
    updateTitle();
  }
  if (log.scrollTop < log.clientHeight) loadOlder(c);
  scheduleRender();
}

// -------------------------------------------------------------- the chrome

function orderedConvs() {
  const all = [...state.convs.values()];
  const rank = (c) => (c.key === LOBBY ? 0 : isRoom(c.key) ? 1 : 2);
  return all.sort((a, b) => rank(a) - rank(b) || a.key.toLowerCase().localeCompare(b.key.toLowerCase()));
}

function renderSidebar() {
  const ul = $("rooms");
  const items = orderedConvs().map((c) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "conv";
    b.dataset.key = c.key;
    if (c.key === state.current) b.setAttribute("aria-current", "true");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = c.key;
    const unread = document.createElement("span");
    unread.className = "unread";
    unread.textContent = c.unread ? String(c.unread) : "";
    if (c.unread) unread.setAttribute("aria-label", `${c.unread} unread`);
    b.append(name, unread);
    li.append(b);
    return li;
  });
  refocus(ul, "key", () => ul.replaceChildren(...items));
}

// Redraws a list without losing the keyboard focus on one of its buttons.
function refocus(list, attr, redraw) {
  const had = list.contains(document.activeElement) ? document.activeElement.dataset[attr] : undefined;
  redraw();
  if (had === undefined) return;
  const again = [...list.querySelectorAll("button")].find((b) => b.dataset[attr] === had);
  if (again) again.focus();
}

function renderHeader() {
  const c = current();
  $("room-title").textContent = c.key;
  $("topic").textContent = c.topic;
  $("leave-button").hidden = !isRoom(c.key) || c.key === LOBBY;
  $("upload-button").disabled = !isRoom(c.key);
  $("upload-button").title = isRoom(c.key) ? "Upload a file" : "Files can be shared in rooms only";
}

function renderMembers() {
  const c = current();
  const list = c.key.startsWith("@") ? [c.key.slice(1)] : c.members.slice(0, 300);
  const items = list.map((name) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "member";
    b.dataset.name = name;
    b.setAttribute("aria-haspopup", "menu");
    const span = document.createElement("span");
    span.className = "name";
    span.textContent = name;
    b.append(span);
    li.append(b);
    return li;
  });
  const extra = c.members.length - list.length + (c.more || 0);
  if (extra > 0 && !c.key.startsWith("@")) {
    const li = document.createElement("li");
    li.className = "more";
    li.textContent = `and ${extra} more`;
    items.push(li);
  }
  refocus($("members"), "name", () => $("members").replaceChildren(...items));
  $("members-title").textContent = c.key.startsWith("@") ? "Conversation with" : `Online (${c.members.length + (c.more || 0)})`;
}

function showConv() {
  const c = current();
  if (c.unread && !document.hidden) {
    c.unread = 0;
    updateTitle();
  }
  renderSidebar();
  renderHeader();
  renderMembers();
  $("rows").replaceChildren();
  c.rendered = null;
  const log = $("log");
  if (!c.stick) {
    render();
    log.scrollTop = c.scroll;
  }
  render();
  if (c.stick) {
    // Twice: the first pass measures the rows the estimate placed.
    render();
  }
  // The box holds the draft of the conversation shown: a reconnect, which
  // shows it again, leaves what is being typed alone.
  if (state.boxFor !== c.key) {
    state.boxFor = c.key;
    $("message").value = c.draft;
    autosize();
  }
}

function switchTo(key) {
  if (!state.convs.has(key)) return;
  const before = current();
  before.draft = $("message").value;
  before.scroll = $("log").scrollTop;
  state.current = key;
  closeDrawer();
  showConv();
  if (isRoom(key) && connected()) {
    quietly(`/join ${key}`, { kind: "talking" });
    refreshMembers(key);
  }
  if (!current().opened) {
    current().opened = true;
    loadOlder(current());
  }
}

function refreshMembers(key) {
  if (key !== LOBBY && connected()) quietly(`/who ${key}`, { kind: "who" });
}

function openDrawer() {
  $("sidebar").classList.add("open");
  $("scrim").hidden = false;
  $("drawer-button").setAttribute("aria-expanded", "true");
  const first = $("sidebar").querySelector("button[aria-current]") || $("sidebar").querySelector("button");
  if (first) first.focus();
}

function closeDrawer() {
  if (!$("sidebar").classList.contains("open")) return;
  $("sidebar").classList.remove("open");
  $("scrim").hidden = true;
  $("drawer-button").setAttribute("aria-expanded", "false");
  // The focus would stay in the hidden drawer (the page's body, for the keyboard).
  if ($("sidebar").contains(document.activeElement)) $("drawer-button").focus();
}

function openMemberMenu(button) {
  const name = button.dataset.name;
  const c = current();
  const menu = $("member-menu");
  const room = c.key.startsWith("@") ? null : c.key;
  const entries = [[`Message ${name}`, () => openPrivate(name)]];
  if (state.isOp && room && !sameName(name, state.user)) {
    entries.push(
      ["Kick", () => command(`/kick ${room} ${name}`)],
      ["Mute 30 min", () => command(`/mute ${room} ${name} 30m`)],
      ["Unmute", () => command(`/unmute ${room} ${name}`)],
      ["Ban 1 day", () => command(`/ban ${room} ${name} 1d`)],
      ["Unban", () => command(`/unban ${room} ${name}`)],
    );
    if (room !== LOBBY) entries.push(["Make room operator", () => command(`/op ${room} ${name}`)]);
  }
  menu.replaceChildren(
    ...entries.map(([label, act]) => {
      const b = document.createElement("button");
      b.type = "button";
      b.setAttribute("role", "menuitem");
      b.textContent = label;
      b.addEventListener("click", () => {
        closeMenu();
        act();
      });
      return b;
    }),
  );
  const r = button.getBoundingClientRect();
  menu.hidden = false;
  const w = menu.offsetWidth;
  const h = menu.offsetHeight;
  menu.style.left = `${Math.max(4, Math.min(r.left, innerWidth - w - 4))}px`;
  menu.style.top = `${Math.max(4, Math.min(r.bottom, innerHeight - h - 4))}px`;
  menu.dataset.for = name;
  menu.firstChild.focus();
}

function closeMenu() {
  const menu = $("member-menu");
  if (menu.hidden) return;
  menu.hidden = true;
  const back = $("members").querySelector(`button[data-name="${CSS.escape(menu.dataset.for || "")}"]`);
  if (back) back.focus();
}

function openPrivate(name) {
  const key = existingKey("@" + name);
  conv(key);
  switchTo(key);
  $("message").focus();
}

function command(line) {
  if (!connected()) {
    status("not connected: the command was not sent");
    return;
  }
  sendRaw(line);
}

// ----------------------------------------------------------------- sending

function sendText(text) {
  const c = current();
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  for (const line of lines) {
    if (line.startsWith("/") && !line.startsWith("//")) {
      sendCommand(line, c);
      continue;
    }
    const literal = line.startsWith("//") ? line.slice(1) : line;
    const prefix = c.key.startsWith("@") ? `/msg ${c.key.slice(1)} ` : `/to ${c.key} `;
    // The server takes lines of up to 4096 bytes (by default): longer
    // text goes as several messages.
    for (const piece of pieces(literal, 4000 - prefix.length)) {
      const item = { t: Date.now(), who: state.user, text: piece, kind: "own", hist: false };
      add(c, item, false);
      sendRaw(prefix + piece, { text: piece, item, c });
    }
  }
}

function sendCommand(line, c) {
  const [name, ...args] = line.split(" ");
  const cmd = name.toLowerCase();
  if (cmd === "/join" && args[0]) {
    const key = normalRoom(args[0]);
    if (key && state.convs.has(key)) return switchTo(key);
    if (key) state.joining = key;
  }
  if (cmd === "/logout") return logout();
  if (cmd === "/quit") {
    state.stopped = true;
  }
  sendRaw(line);
  if (cmd === "/me" && args.length && !c.key.startsWith("@")) {
    add(c, { t: Date.now(), text: `${state.user} ${args.join(" ")}`, kind: "me", mine: true, hist: false }, false);
  } else if (cmd === "/msg" && args.length > 1) {
    const key = existingKey("@" + args[0]);
    add(conv(key), { t: Date.now(), who: state.user, text: args.slice(1).join(" "), kind: "own", hist: false }, false);
  }
}

function normalRoom(text) {
  const name = text.trim().replace(/^#/, "").toLowerCase();
  return /^[a-z0-9_.-]{1,32}$/.test(name) ? `#${name}` : null;
}

function autosize() {
  const box = $("message");
  box.style.height = "auto";
  box.style.height = `${Math.min(box.scrollHeight + 2, 160)}px`;
}

// ----------------------------------------------------------------- uploads

function safeName(name) {
  let n = [...name.normalize("NFC")]
    .map((ch) => (/[\s/\\\p{Cc}\p{Cf}]/u.test(ch) ? "_" : ch))
    .join("");
  if (/^\.+$/.test(n) || !n) n = "file";
  const chars = [...n];
  if (chars.length > 100) {
    const dot = n.lastIndexOf(".");
    const ext = dot > 0 && n.length - dot <= 10 ? n.slice(dot) : "";
    n = chars.slice(0, 100 - [...ext].length).join("") + ext;
  }
  return n;
}

function queueUploads(files) {
  const c = current();
  if (!isRoom(c.key)) {
    add(c, { t: Date.now(), text: "files can be shared in rooms only", kind: "error" }, false);
    return;
  }
  for (const file of files) state.uploads.push({ file, key: c.key });
  nextUpload();
}

function nextUpload() {
  if (state.uploading || !state.uploads.length || !connected()) return;
  const { file, key } = state.uploads.shift();
  state.uploading = true;
  // The server announces in the connection's current room.
  quietly(`/join ${key}`, { kind: "talking" });
  quietly(`/upload ${safeName(file.name)} ${file.size}`, { kind: "upload", file, key });
}

function put(file, url, key) {
  let path;
  try {
    // Only the path matters: the page's own origin is where it came from.
    path = new URL(url).pathname;
  } catch {
    state.uploading = false;
    return nextUpload();
  }
  const bar = $("upload-bar");
  const progress = $("upload-progress");
  $("upload-label").textContent = `Uploading ${file.name}`;
  progress.value = 0;
  bar.hidden = false;
  const xhr = new XMLHttpRequest();
  xhr.open("PUT", path);
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) progress.value = e.loaded / e.total;
  };
  const finish = (error) => {
    bar.hidden = true;
    state.uploading = false;
    if (error) add(conv(key), { t: Date.now(), text: `upload of ${file.name} failed: ${error}`, kind: "error" }, false);
    nextUpload();
  };
  xhr.onload = () => finish(xhr.status === 201 ? null : `${xhr.status} ${xhr.statusText}`.trim());
  xhr.onerror = () => finish("the connection failed");
  xhr.send(file);
}

// ------------------------------------------------------------------ wiring

function wire() {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    startLogin("L");
  });
  $("signup-button").addEventListener("click", () => startLogin("R"));
  $("logout-button").addEventListener("click", logout);
  $("leave-button").addEventListener("click", () => {
    if (isRoom(state.current) && state.current !== LOBBY) command(`/part ${state.current}`);
  });
  $("rooms").addEventListener("click", (e) => {
    const b = e.target.closest("button.conv");
    if (b) switchTo(b.dataset.key);
  });
  $("members").addEventListener("click", (e) => {
    const b = e.target.closest("button.member");
    if (b) openMemberMenu(b);
  });
  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("join-input");
    const key = normalRoom(input.value);
    if (!key) {
      add(current(), { t: Date.now(), text: "a room name is 1-32 of a-z, 0-9, '_', '-', '.'", kind: "error" }, false);
      return;
    }
    input.value = "";
    if (state.convs.has(key)) return switchTo(key);
    state.joining = key;
    command(`/join ${key}`);
  });
  $("send-form").addEventListener("submit", (e) => {
    e.preventDefault();
    submitMessage();
  });
  const box = $("message");
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submitMessage();
    }
  });
  box.addEventListener("input", autosize);
  $("upload-button").addEventListener("click", () => $("file-input").click());
  $("file-input").addEventListener("change", (e) => {
    queueUploads([...e.target.files]);
    e.target.value = "";
  });
  const main = $("main");
  main.addEventListener("dragover", (e) => {
    if (!e.dataTransfer || ![...e.dataTransfer.types].includes("Files")) return;
    e.preventDefault();
    $("drop-hint").hidden = !isRoom(state.current);
  });
  main.addEventListener("dragleave", (e) => {
    if (!main.contains(e.relatedTarget)) $("drop-hint").hidden = true;
  });
  main.addEventListener("drop", (e) => {
    e.preventDefault();
    $("drop-hint").hidden = true;
    if (e.dataTransfer && e.dataTransfer.files.length) queueUploads([...e.dataTransfer.files]);
  });
  $("log").addEventListener("scroll", onScroll, { passive: true });
  // A log too short to scroll: reaching up still asks for older lines.
  $("log").addEventListener(
    "wheel",
    (e) => {
      if (e.deltaY < 0 && $("log").scrollTop === 0) loadOlder(current());
    },
    { passive: true },
  );
  $("log").addEventListener("keydown", (e) => {
    if ((e.key === "PageUp" || e.key === "Home") && $("log").scrollTop === 0) loadOlder(current());
  });
  $("drawer-button").addEventListener("click", () =>
    $("sidebar").classList.contains("open") ? closeDrawer() : openDrawer(),
  );
  $("scrim").addEventListener("click", closeDrawer);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      closeMenu();
      closeDrawer();
    }
  });
  $("member-menu").addEventListener("keydown", (e) => {
    const items = [...$("member-menu").querySelectorAll("button")];
    const i = items.indexOf(document.activeElement);
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      const next = (i + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
      items[next].focus();
    } else if (e.key === "Tab") {
      closeMenu();
    }
  });
  document.addEventListener("click", (e) => {
    if (!e.target.closest("#member-menu") && !e.target.closest("button.member")) closeMenu();
  });
  const notifyButton = $("notify-button");
  const canAsk = () => "Notification" in window && Notification.permission === "default";
  notifyButton.hidden = !canAsk();
  notifyButton.addEventListener("click", async () => {
    try {
      await Notification.requestPermission();
    } catch {
      // Refused or unsupported: nothing to do.
    }
    notifyButton.hidden = !canAsk();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.phase === "chat") {
      const c = current();
      if (c.stick && c.unread) {
        c.unread = 0;
        renderSidebar();
      }
      updateTitle();
    }
  });
  addEventListener("resize", () => {
    for (const c of state.convs.values()) {
      c.rendered = null;
      for (const it of c.items) it.h = 0;
    }
    if (state.phase === "chat") scheduleRender();
  });
  addEventListener("online", reconnectNow);
}

function submitMessage() {
  const box = $("message");
  const text = box.value;
  if (!text.trim()) return;
  if (!connected()) {
    // What was typed stays in the box until it can be sent.
    status(state.phase === "out" && !state.stopped ? $("status").textContent || "not connected" : "not connected");
    return;
  }
  sendText(text);
  box.value = "";
  current().draft = "";
  current().stick = true;
  autosize();
  render();
}

wire();
const saved = savedToken();
if (saved) {
  // Remembered: log in with the token, no form.
  $("login-view").hidden = true;
  state.user = saved.user;
  state.attempt = { mode: "T", token: saved.token, username: saved.user };
  connect();
} else {
  showLogin("");
}
