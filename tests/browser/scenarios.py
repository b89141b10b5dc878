"""NeoChat's real-browser scenarios: `python3 tests/browser/scenarios.py NAME`.

Each scenario gets a fresh server (NEOCHAT_SERVER, on a temporary db), a
headless Chromium and line clients, and follows the DOM contract of the web
client. A scenario fails on any console error, page error or dialog (see
harness.py for the one narrow exception during a deliberate restart).
"""

import base64
import json
import os
import re
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    Browser, Failure, LineClient, check, composer, conv, convs, expect_chat_view,
    expect_login_view, fill_credentials, goto, log, login, member, open_conv, rows,
    run, say, signup, token_storage, wait_conv, wait_until,
)
from playwright.sync_api import expect  # noqa: E402

PW = "correct-horse-1"
BOB_PW = "battery-staple-2"


def dom_order(page, first, second):
    """True when element handle/locator `first` precedes `second` in the DOM."""
    a = first.element_handle()
    b = second.element_handle()
    return page.evaluate(
        "([a, b]) => !!(a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING)", [a, b]
    )


def conv_names(page):
    """The conversations' names, in the sidebar's order."""
    return [(re.match(r"[#@][A-Za-z0-9_.\-]*", c["label"]) or re.match("", "")).group(0) or c["label"]
            for c in convs(page)]


def saved_token(page):
    """The token the page keeps in localStorage, once it has one: the reply
    to its /token comes a round trip after the chat view shows."""
    raw = wait_until(lambda: token_storage(page)["local"], "neochat.token in localStorage")
    return json.loads(raw)


def text_of(loc):
    """The exact textContent of the `.text` of a row (no normalisation)."""
    return loc.locator(".text").evaluate("e => e.textContent")


# Records every outgoing WebSocket message of the page (run before the page's
# own script, so the page cannot have kept the original send).
RECORD_WS = """
(() => {
    const send = WebSocket.prototype.send;
    window.__sent = [];
    WebSocket.prototype.send = function (data) {
        window.__sent.push(String(data));
        return send.call(this, data);
    };
})();
"""

# Records every text #status shows and whether #upload-progress was ever
# visible: both may flash for less than a frame on loopback.
RECORD_UI = """
(() => {
    window.__statuses = [];
    window.__progressSeen = false;
    const look = () => {
        const s = document.getElementById('status');
        if (s) {
            const t = s.textContent;
            if (window.__statuses[window.__statuses.length - 1] !== t) window.__statuses.push(t);
        }
        const p = document.getElementById('upload-progress');
        if (p && !p.hidden && p.checkVisibility()) window.__progressSeen = true;
    };
    new MutationObserver(look).observe(document, {
        subtree: true, childList: true, attributes: true, characterData: true,
    });
})();
"""


# --------------------------------------------------------------------------


def signup_and_login(env):
    b, s = env.browser, env.server
    page = b.page(b.context())
    goto(page, s)
    expect_login_view(page)
    expect(page.get_by_label("Remember me")).to_be_checked()
    err = page.locator("#login-error")
    expect(err).to_have_attribute("role", "alert")

    # A too-short password: the server's words, and no account made.
    fill_credentials(page, "alice", "short")
    page.get_by_role("button", name="Sign up", exact=True).click()
    expect(err).to_contain_text("password must be 8-72 bytes")
    expect(page.locator("#chat-view")).to_be_hidden()
    probe = env.line(name="probe")
    probe.expect(r"^\? choice")
    for line in ("L", "alice", "short"):
        probe.send(line)
    probe.expect(r"^! wrong username or password$")
    probe.close()

    # The same form, now with a good password, signs up.
    fill_credentials(page, "alice", PW)
    page.get_by_role("button", name="Sign up", exact=True).click()
    expect_chat_view(page, "alice")
    saved_token(page)
    stored = token_storage(page)
    check(stored["local"], f"remember me checked, but no neochat.token in localStorage: {stored}")
    tok = json.loads(stored["local"])
    check(tok.get("user") == "alice" and isinstance(tok.get("token"), str) and len(tok["token"]) >= 16,
          f"neochat.token should be {{user: alice, token: ...}}: {tok}")
    check(PW not in stored["local"], "the password is kept in localStorage")

    # The server agrees that alice is online; the page sees bob arrive.
    bob = env.line("bob", BOB_PW)
    bob.expect(r"^\* online \(2\): alice, bob$")
    expect(member(page, "bob")).to_be_visible()

    # Log out, then log in again with the password.
    page.get_by_role("button", name="Log out", exact=True).click()
    expect_login_view(page)
    bob.expect(r"^\* alice left$")
    login(page, "alice", PW)
    bob.expect(r"^\* alice joined$")
    expect(member(page, "bob")).to_be_visible()

    # A wrong password.
    page.get_by_role("button", name="Log out", exact=True).click()
    bob.expect(r"^\* alice left$")
    expect_login_view(page)
    fill_credentials(page, "alice", "not-the-password")
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(err).to_have_text("wrong username or password")
    expect(page.locator("#chat-view")).to_be_hidden()

    # A taken name.
    fill_credentials(page, "Bob", "another-good-pw")
    page.get_by_role("button", name="Sign up", exact=True).click()
    expect(err).to_have_text("username taken")
    expect(page.locator("#chat-view")).to_be_hidden()

    # And the page still logs in after those failures.
    fill_credentials(page, "alice", PW)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect_chat_view(page, "alice")
    bob.expect(r"^\* alice joined$")


def chat_with_line_client(env):
    b, s = env.browser, env.server
    # A zone 5:30 off UTC: a time shown in UTC (or only off by hours) fails.
    page = b.page(b.context(timezone_id="Asia/Kolkata", locale="en-US"))
    goto(page, s)
    signup(page, "alice", PW)
    bob = env.line("bob", BOB_PW)
    expect(member(page, "bob")).to_be_visible()
    expect(page.locator("#room-title")).to_have_text("#lobby")
    expect(page.get_by_role("button", name="Rooms", exact=True)).to_be_hidden()
    expect(page.get_by_role("button", name="Leave room")).to_be_hidden()

    # Page -> line client.
    say(page, "hello from the page")
    bob.expect(r"^alice: hello from the page$")

    # Line client -> page: sender and time shown.
    bob.send("hi from the line")
    row = rows(page, "hi from the line", who="bob")
    expect(row).to_have_count(1)
    expect(row).not_to_have_class(re.compile(r"\bown\b"))
    t = row.locator("time")
    expect(t).to_have_text(re.compile(r"^\d\d:\d\d$"))
    info = t.evaluate(
        """t => { const d = new Date(t.getAttribute('datetime'));
                   const p = n => String(n).padStart(2, '0');
                   return {ms: d.getTime(), local: p(d.getHours()) + ':' + p(d.getMinutes()),
                           text: t.textContent, attr: t.getAttribute('datetime'), now: Date.now()}; }"""
    )
    check(info["ms"] == info["ms"] and abs(info["now"] - info["ms"]) < 5 * 60_000,
          f"<time datetime> should be about now: {info}")
    check(info["text"] == info["local"], f"<time> should show the local HH:MM of its datetime: {info}")

    # Own message: shown once, as own, with the sender's name. bob's line
    # above arrived after it, so a late duplicate would be there by now.
    own = rows(page, "hello from the page")
    expect(own).to_have_count(1)
    expect(own).to_have_class(re.compile(r"\bown\b"))
    expect(own.locator(".who")).to_have_text("alice")
    expect(own.locator("time")).to_have_text(re.compile(r"^\d\d:\d\d$"))
    check(dom_order(page, own, row), "own message should come before bob's later reply")

    # Shift+Enter: two lines, two messages; Enter sends.
    box = composer(page)
    box.fill("line one")
    box.press("Shift+Enter")
    box.press_sequentially("line two")
    expect(box).to_have_value("line one\nline two")
    box.press("Enter")
    expect(box).to_have_value("")
    bob.expect(r"^alice: line one$")
    bob.expect(r"^alice: line two$")
    expect(rows(page, "line one", cls="own")).to_have_count(1)
    expect(rows(page, "line two", cls="own")).to_have_count(1)

    # "//x" sends "/x"; /me is an action both ways.
    say(page, "//slash at the start")
    bob.expect(r"^alice: /slash at the start$")

    # The "Send" button sends too.
    box.fill("by the button")
    page.get_by_role("button", name="Send", exact=True).click()
    bob.expect(r"^alice: by the button$")
    bob.send("last")
    expect(rows(page, "last", who="bob")).to_have_count(1)
    expect(rows(page, "hello from the page")).to_have_count(1)
    expect(rows(page, "by the button")).to_have_count(1)

    # /me both ways, shown once each.
    say(page, "/me waves")
    bob.expect(r"^\* alice waves$")
    expect(page.locator("#log .msg").filter(has_text="waves")).to_have_count(1)
    bob.send("/me dances")
    expect(page.locator("#log .msg").filter(has_text="dances")).to_have_count(1)

    # Contract details the flow above does not depend on.
    env.soft('the log is role=log named "Chat log"',
             lambda: expect(page.get_by_role("log", name="Chat log", exact=True)).to_have_count(1, timeout=2000))
    env.soft('own /me shown with class "me"',
             lambda: expect(page.locator("#log .msg.me").filter(has_text="waves")).to_have_count(1, timeout=2000))
    env.soft('a received /me shown with class "me"',
             lambda: expect(page.locator("#log .msg.me").filter(has_text="dances")).to_have_count(1, timeout=2000))


def alice_and_bob(env):
    """The page signed up as alice, and bob on a line client, seen online
    by the page: the start of most scenarios."""
    page = env.browser.page(env.browser.context())
    goto(page, env.server)
    signup(page, "alice", PW)
    bob = env.line("bob", BOB_PW)
    expect(member(page, "bob")).to_be_visible()
    return page, bob


def private_message(env):
    page, bob = alice_and_bob(env)

    bob.send("/msg alice psst, alice")
    c = wait_conv(page, "@bob", lambda c: c["unread"] == "1", "@bob with unread count 1")
    check(not c["current"], f"@bob should not become current by itself: {c}")
    expect(page.locator("#room-title")).to_have_text("#lobby")
    expect(rows(page, "psst, alice")).to_have_count(0)
    names = [c["label"] for c in convs(page)]
    check(names and names[0].startswith("#lobby") and names[-1].startswith("@bob"),
          f"#lobby first, private conversations last: {names}")
    expect(page).to_have_title("(1) NeoChat")

    open_conv(page, "@bob")
    expect(rows(page, "psst, alice", who="bob")).to_have_count(1)
    wait_conv(page, "@bob", lambda c: c["unread"] in ("", "0"), "@bob unread cleared once opened")
    expect(page).to_have_title("NeoChat")
    expect(page.get_by_role("button", name="Upload a file")).to_be_disabled()

    say(page, "back at you")
    bob.expect(r"^@alice: back at you$")
    expect(rows(page, "back at you", cls="own")).to_have_count(1)
    bob.send("/msg alice second")
    expect(rows(page, "second", who="bob")).to_have_count(1)
    expect(rows(page, "back at you")).to_have_count(1)

    # The lobby shows none of it; the member menu opens the conversation.
    open_conv(page, "#lobby")
    expect(rows(page, "back at you")).to_have_count(0)
    expect(rows(page, "second")).to_have_count(0)
    member(page, "bob").click()
    menu = page.get_by_role("menu")
    expect(menu).to_be_visible()
    expect(menu.get_by_role("menuitem", name="Message bob")).to_be_visible()
    expect(menu.get_by_role("menuitem", name="Kick")).to_have_count(0)  # alice is no operator
    menu.get_by_role("menuitem", name="Message bob").click()
    expect(page.locator("#room-title")).to_have_text("@bob")
    expect(rows(page, "second", who="bob")).to_have_count(1)
    say(page, "via the menu")
    bob.expect(r"^@alice: via the menu$")


def rooms(env):
    s = env.server
    page, bob = alice_and_bob(env)

    join = page.get_by_label("Join or create a room")
    join.fill("rust")
    page.get_by_role("button", name="Join", exact=True).click()
    expect(page.locator("#room-title")).to_have_text("#rust")
    wait_conv(page, "#rust", lambda c: c["current"], "#rust current after joining")
    expect(page.get_by_role("button", name="Leave room")).to_be_visible()
    expect(member(page, "alice")).to_be_visible()
    expect(member(page, "bob")).to_have_count(0)

    bob.send("/join #rust")
    bob.expect(r"^#rust \* online \(2\): alice, bob$")
    expect(member(page, "bob")).to_be_visible()
    bob.send("rust talk")
    expect(rows(page, "rust talk", who="bob")).to_have_count(1)
    say(page, "from the page in rust")
    bob.expect(r"^#rust alice: from the page in rust$")

    # A topic set from the composer reaches the room and the header.
    say(page, "/topic Rust talk")
    bob.expect(r"^#rust \* topic: Rust talk \(set by alice\)$")
    expect(page.locator("#topic")).to_contain_text("Rust talk")

    # "#go" with the hash is accepted; rooms are sorted after the lobby.
    join.fill("#go")
    page.get_by_role("button", name="Join", exact=True).click()
    expect(page.locator("#room-title")).to_have_text("#go")
    wait_until(lambda: conv_names(page) == ["#lobby", "#go", "#rust"],
               "conversations ordered #lobby, #go, #rust")
    page.get_by_role("button", name="Leave room").click()
    expect(page.locator("#room-title")).to_have_text("#lobby")
    wait_until(lambda: conv(page, "#go") is None, "#go gone from the list after leaving")

    # In the lobby: #rust's lines are not shown here, and count as unread.
    expect(page.get_by_role("button", name="Leave room")).to_be_hidden()
    expect(rows(page, "rust talk")).to_have_count(0)
    bob.send("more rust")
    wait_conv(page, "#rust", lambda c: c["unread"] == "1", "#rust unread 1")
    bob.send("/to #lobby in the lobby")
    expect(rows(page, "in the lobby", who="bob")).to_have_count(1)
    expect(rows(page, "more rust")).to_have_count(0)
    lobby = conv(page, "#lobby")
    check(lobby["current"] and lobby["unread"] in ("", "0"), f"#lobby current, no unread: {lobby}")
    check(conv(page, "#rust")["unread"] == "1", f"#rust unread still 1: {conv(page, '#rust')}")

    open_conv(page, "#rust")
    expect(rows(page, "more rust", who="bob")).to_have_count(1)
    expect(rows(page, "in the lobby")).to_have_count(0)
    wait_conv(page, "#rust", lambda c: c["unread"] in ("", "0"), "#rust unread cleared")

    # Leave the room.
    page.get_by_role("button", name="Leave room").click()
    bob.expect(r"^#rust \* alice left$")
    expect(page.locator("#room-title")).to_have_text("#lobby")
    wait_until(lambda: conv(page, "#rust") is None, "#rust gone from the list after leaving")
    bob.send("after you left")
    bob.send("/to #lobby lobby again")
    expect(rows(page, "lobby again", who="bob")).to_have_count(1)
    expect(rows(page, "after you left")).to_have_count(0)
    check(conv(page, "#rust") is None, "#rust came back after a line of a room alice left")

    # The owner of a room gets the moderation items in the member menu.
    join.fill("ops")
    page.get_by_role("button", name="Join", exact=True).click()
    expect(page.locator("#room-title")).to_have_text("#ops")
    bob.send("/join #ops")
    bob.expect(r"^#ops \* online \(2\): alice, bob$")
    expect(member(page, "bob")).to_be_visible()

    def kick_from_menu():
        member(page, "bob").click()
        menu = page.get_by_role("menu")
        expect(menu).to_be_visible()
        expect(menu.get_by_role("menuitem", name="Message bob")).to_be_visible()
        kick = menu.get_by_role("menuitem", name="Kick", exact=True)
        try:
            expect(kick).to_be_visible(timeout=3000)
        except AssertionError:
            page.keyboard.press("Escape")
            raise
        kick.click()
        bob.expect(r"^#ops ! you were kicked from #ops by alice")

    before = len(env.soft_failures)
    env.soft("Kick in the member menu right after creating a room (alice owns #ops)", kick_from_menu)
    if len(env.soft_failures) > before:
        # Whether it comes after a new login (the page reads /help only then).
        page.reload()
        expect_chat_view(page, "alice")
        open_conv(page, "#ops")
        expect(member(page, "bob")).to_be_visible()
        env.soft("Kick in the member menu after a reload (alice owns #ops)", kick_from_menu)


def catch_up_after_reconnect(env):
    b, s = env.browser, env.server
    ctx = b.context()
    page = b.page(ctx, "first")
    goto(page, s)
    signup(page, "alice", PW)
    bob = env.line("bob", BOB_PW)
    bob.send("seen before")
    expect(rows(page, "seen before", who="bob")).to_have_count(1)

    # The page goes away (its WebSocket closes); bob posts meanwhile.
    page.close()
    bob.expect(r"^\* alice left$")
    bob.send("missed one")
    bob.send("missed two")
    bob.sync()

    # A new page with the same storage logs in by itself and catches up.
    page = b.page(ctx, "second")
    page.add_init_script(RECORD_WS)
    goto(page, s)
    expect_chat_view(page, "alice")
    bob.expect(r"^\* alice joined$")
    m1 = rows(page, "missed one", who="bob")
    m2 = rows(page, "missed two", who="bob")
    expect(m1).to_have_count(1)
    expect(m2).to_have_count(1)
    expect(m1).to_have_class(re.compile(r"\bhistory\b"))
    expect(m2).to_have_class(re.compile(r"\bhistory\b"))
    marker = page.locator("#log .new-marker")
    expect(marker).to_have_count(1)
    expect(marker).to_have_attribute("role", "separator")
    expect(marker).to_have_text("new")
    check(dom_order(page, m1, m2), "missed lines in order")
    # The contract allows the marker before the unseen catch-up lines or
    # after the catch-up (before the first live line); not between them.
    before = dom_order(page, marker, m1)
    check(before or dom_order(page, m2, marker),
          "the new marker sits between the missed lines, not before or after them")
    sent = page.evaluate("window.__sent")
    check(PW not in sent, f"the page sent the password on a token login: {sent}")

    bob.send("live now")
    live = rows(page, "live now", who="bob")
    expect(live).to_have_count(1)
    expect(live).not_to_have_class(re.compile(r"\bhistory\b"))
    check(dom_order(page, m2, live), "the live line after the catch-up")
    expect(marker).to_have_count(1)
    check(dom_order(page, marker, live), "the marker before the live line")


def catch_up_same_page(env):
    """The page's network drops while the server and the page stay up (a
    proxy in between cuts the connection); bob posts meanwhile, among others
    the same words he said before; the page reconnects by itself and shows
    every missed line once, with the "new" marker."""
    b = env.browser
    proxy = env.proxy()
    ctx = b.context()
    ctx.add_init_script(RECORD_UI)
    page = b.page(ctx)
    goto(page, proxy)
    signup(page, "alice", PW)
    bob = env.line("bob", BOB_PW)
    expect(member(page, "bob")).to_be_visible()
    bob.send("ok")
    bob.send("seen before")
    seen = rows(page, "seen before", who="bob")
    expect(seen).to_have_count(1)
    expect(rows(page, "ok", who="bob")).to_have_count(1)
    page.evaluate("window.__statuses = []")

    n = proxy.cut()
    log(f"cut {n} connections of {proxy.accepted} accepted")
    check(n >= 1, "the page had no connection through the proxy")
    bob.expect(r"^\* alice left$")
    bob.send("ok")  # the same words again: a new message all the same
    bob.send("missed while away")
    bob.sync()
    bob.expect(r"^\* alice joined$", timeout=30)  # the page came back by itself
    missed = rows(page, "missed while away", who="bob")
    expect(missed).to_have_count(1)
    expect(page.locator("#status")).to_have_text("")
    statuses = page.evaluate("window.__statuses")
    check(any(re.search(r"reconnecting in \d+ s|connecting", t) for t in statuses),
          f"no reconnecting status shown while the network was down: {statuses}")
    expect(seen).to_have_count(1)
    marker = page.locator("#log .new-marker")
    expect(marker).to_have_count(1)
    check(dom_order(page, seen, marker), "the new marker should come after the lines seen before the drop")
    bob.send("live again")
    live = rows(page, "live again", who="bob")
    expect(live).to_have_count(1)
    check(dom_order(page, marker, live), "the marker should come before the live line")
    env.soft("the 'ok' bob said again while the page was away is shown (twice in all)",
             lambda: expect(rows(page, "ok", who="bob")).to_have_count(2, timeout=2000))
    env.soft("the new marker comes before the missed lines, which are what is new to the user",
             lambda: check(dom_order(page, marker, missed), "marker after the missed lines"))


def reload_after_restart(env):
    b, s = env.browser, env.server
    ctx = b.context()
    ctx.add_init_script(RECORD_WS)
    ctx.add_init_script(RECORD_UI)
    page = b.page(ctx)
    goto(page, s)
    expect(page.get_by_label("Remember me")).to_be_checked()
    signup(page, "alice", PW)
    token = saved_token(page)["token"]
    bob = env.line("bob", BOB_PW)
    expect(member(page, "bob")).to_be_visible()

    with b.expected_ws_failures():
        s.stop()
        expect(page.locator("#status")).to_have_text(re.compile(r"reconnecting in \d+ s|connection lost|connecting"))
        wait_until(
            lambda: any(re.search(r"reconnecting in \d+ s", t) for t in page.evaluate("window.__statuses")),
            "a 'reconnecting in N s' status while the server is down",
        )
        # Enter while disconnected keeps the text in the box.
        box = composer(page)
        box.fill("typed while down")
        box.press("Enter")
        expect(box).to_have_value("typed while down")
        page.evaluate("window.__sent = []")
        s.start()
        # The page logs back in by itself (a countdown of a few seconds).
        expect(page.locator("#status")).to_have_text("", timeout=20_000)
    expect_chat_view(page, "alice")
    sent = page.evaluate("window.__sent")
    check(token in sent, f"the reconnect should log in with the token: {sent}")
    check(PW not in sent, f"the reconnect sent the password: {sent}")
    expect(page.get_by_label("Password", exact=True)).to_have_value("")

    bob = env.line("bob", BOB_PW, register=False, name="bob2")
    bob.expect(r"^\* online \(2\): alice, bob$")
    bob.send("after the restart")
    expect(rows(page, "after the restart", who="bob")).to_have_count(1)
    box = composer(page)
    if box.input_value():
        box.fill("")

    # A reload logs in from the stored token, without the password.
    page.reload()
    expect_chat_view(page, "alice")
    sent = page.evaluate("window.__sent")
    check(token in sent, f"the reload should log in with the token: {sent}")
    check(PW not in sent, f"the reload sent the password: {sent}")
    expect(page.get_by_label("Password", exact=True)).to_have_value("")
    say(page, "back after reload")
    bob.expect(r"^alice: back after reload$")


def _logout_and_check(env, page, token, bob):
    page.get_by_role("button", name="Log out", exact=True).click()
    expect_login_view(page)
    bob.expect(r"^\* alice left$")
    stored = token_storage(page)
    check(stored == {"local": None, "session": None}, f"a token is left after Log out: {stored}")
    page.reload()
    expect_login_view(page)
    bob.send("/who")
    bob.expect(r"^\* online \(1\): bob$")
    expect_login_view(page)
    check(token_storage(page) == {"local": None, "session": None}, "a token came back after reload")
    expect(page.locator("#login-error")).not_to_contain_text("token")
    # The remembered token no longer logs in anywhere.
    probe = env.line(name="probe")
    probe.expect(r"^\? choice")
    probe.send("T")
    probe.expect(r"^\? token")
    probe.send(token)
    m = probe.expect(r"^(! invalid or expired token|\* logged in as .*)$")
    check(m.group(1).startswith("!"), f"the page's token still logs in after Log out: {m.group(1)!r}")
    probe.close()
    bob.send("/who")
    bob.expect(r"^\* online \(1\): bob$")


def logout(env):
    """A session that began from the stored token (a reload), then Log out."""
    b, s = env.browser, env.server
    ctx = b.context()
    page = b.page(ctx)
    goto(page, s)
    signup(page, "alice", PW)
    token = saved_token(page)["token"]
    bob = env.line("bob", BOB_PW)
    expect(member(page, "bob")).to_be_visible()
    page.reload()
    expect_chat_view(page, "alice")
    bob.expect(r"^\* alice joined$")  # the account's only connection closed and came back
    _logout_and_check(env, page, token, bob)
    # And logging in again works.
    login(page, "alice", PW)
    bob.expect(r"^\* alice joined$")


def logout_after_password_login(env):
    """Log out right after signing up with the password: the token the page
    asked for (/token) for "Remember me" must not stay valid either."""
    b, s = env.browser, env.server
    page = b.page(b.context())
    goto(page, s)
    signup(page, "alice", PW)
    token = saved_token(page)["token"]
    bob = env.line("bob", BOB_PW)
    expect(member(page, "bob")).to_be_visible()
    _logout_and_check(env, page, token, bob)


def stale_token(env):
    """A remembered token the server no longer accepts: the login form
    shows, with the server's message; a password login then works. And a
    valid remembered token logs in without the login form ever painting."""
    b, s = env.browser, env.server
    ctx = b.context()
    page = b.page(ctx)
    goto(page, s)
    expect_login_view(page)
    page.evaluate("""() => localStorage.setItem('neochat.token',
        JSON.stringify({user: 'alice', token: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'}))""")
    a = env.line("alice", PW, name="alice-line")
    a.send("/quit")
    a.expect(r"^\* bye$")
    bob = env.line("bob", BOB_PW)
    page.reload()
    expect_login_view(page)
    # "a message" (the contract): the server's words or the page's own.
    expect(page.locator("#login-error")).to_have_text(re.compile(r"expired|invalid", re.I))
    expect(page.locator("#chat-view")).to_be_hidden()
    login(page, "alice", PW)
    bob.expect(r"^\* alice joined$")

    # With a good token, a fresh page shows no login form at any frame.
    ctx.add_init_script("""(() => {
        window.__loginPainted = 0;
        const f = () => {
            const v = document.getElementById('login-view');
            if (v && v.checkVisibility()) window.__loginPainted += 1;
            requestAnimationFrame(f);
        };
        requestAnimationFrame(f);
    })()""")
    page.close()
    bob.expect(r"^\* alice left$")
    page = b.page(ctx, "second")
    goto(page, s)
    expect_chat_view(page, "alice")
    bob.expect(r"^\* alice joined$")
    env.soft("the login form stays hidden while a remembered token logs in",
             lambda: check(page.evaluate("window.__loginPainted") == 0,
                           f"login view painted in {page.evaluate('window.__loginPainted')} frames"))


def long_log(env):
    """300 lines: the newest is shown at the bottom, scrolling up renders
    the oldest, and new lines appear once back at the bottom."""
    b, s = env.browser, env.server
    page, bob = alice_and_bob(env)
    n = 300
    for i in range(n):
        bob.send(f"line {i:03d}")
    last = rows(page, f"line {n - 1:03d}", who="bob")
    expect(last).to_have_count(1)
    in_log = """r => { const l = document.getElementById('log').getBoundingClientRect();
                       const b = r.getBoundingClientRect();
                       return b.height > 0 && b.top >= l.top - 1 && b.bottom <= l.bottom + 1; }"""
    wait_until(lambda: last.evaluate(in_log), "the newest line inside the log's view (scrolled to the bottom)")
    shown = page.locator("#log .msg").count()
    log(f"{shown} rows in the DOM for {n} lines")
    env.soft("virtual scrolling: far fewer rows in the DOM than lines",
             lambda: check(shown < n, f"{shown} rows in the DOM"))
    page.locator("#log").evaluate("l => { l.scrollTop = 0; l.dispatchEvent(new Event('scroll')); }")
    first = rows(page, "line 000", who="bob")
    expect(first).to_have_count(1)
    wait_until(lambda: first.evaluate(in_log) or
               page.locator("#log").evaluate("l => { l.scrollTop = 0; return false; }"),
               "the oldest line inside the log's view after scrolling to the top")
    # Every line is there once when walking down the log.
    page.locator("#log").evaluate("l => { l.scrollTop = l.scrollHeight; }")
    wait_until(lambda: last.count() == 1 and last.evaluate(in_log), "back at the bottom")
    bob.send("newest")
    newest = rows(page, "newest", who="bob")
    expect(newest).to_have_count(1)
    wait_until(lambda: newest.evaluate(in_log), "a new line shown at the bottom")
    for i in (0, 150, 299):
        check(rows(page, f"line {i:03d}").count() <= 1, f"line {i:03d} shown twice")


long_log.server_args = ("--rate", "off")


def png_bytes(w=3, h=2):
    raw = b"".join(b"\x00" + bytes([255, 0, 0] * w) for _ in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


FETCH_BYTES = """async href => {
    const r = await fetch(href);
    const b = new Uint8Array(await r.arrayBuffer());
    let s = ''; for (const x of b) s += String.fromCharCode(x);
    return {status: r.status, b64: btoa(s)};
}"""


def upload_and_download(env):
    b, s = env.browser, env.server
    ctx = b.context()
    ctx.add_init_script(RECORD_UI)
    page = b.page(ctx)
    goto(page, s)
    signup(page, "alice", PW)
    bob = env.line("bob", BOB_PW)
    expect(member(page, "bob")).to_be_visible()
    png = png_bytes()
    text = "héllo, file ✓\nsecond line\n".encode("utf-8")

    # The PNG through the "Upload a file" button's file chooser.
    with page.expect_file_chooser() as fc:
        page.get_by_role("button", name="Upload a file").click()
    fc.value.set_files([{"name": "dot.png", "mimeType": "image/png", "buffer": png}])
    m = bob.expect(r"^alice: \[file\] dot\.png \(([^)]+)\) (https://127\.0\.0\.1:\d+(/files/[^/\s]+/dot\.png))$")
    png_path, png_size = m.group(3), m.group(1)
    check(page.evaluate("window.__progressSeen"), "no visible #upload-progress during the PNG upload")
    expect(page.locator("#upload-progress")).to_be_hidden()
    img = page.locator("#log img.thumb[alt='dot.png']")
    expect(img).to_have_count(1)
    wait_until(lambda: img.evaluate("i => i.complete && i.naturalWidth") == 3,
               "the thumbnail to load (naturalWidth 3)")
    src = img.evaluate("i => ({origin: new URL(i.src).origin, path: new URL(i.src).pathname, here: location.origin})")
    check(src["origin"] == src["here"] and src["path"] == png_path, f"thumb src should be same-origin {png_path}: {src}")
    link = page.locator("#log a.file").filter(has_text=re.compile(r"^dot\.png$"))
    expect(link).to_have_count(1)
    expect(page.locator("#log .msg.own .text").filter(
        has=page.locator("a.file", has_text=re.compile(r"^dot\.png$")))).to_contain_text(png_size)
    got = page.evaluate(FETCH_BYTES, link.get_attribute("href"))
    check(got["status"] == 200 and base64.b64decode(got["b64"]) == png, f"the PNG fetched back differs: {got}")

    # The text file through the file input itself.
    page.evaluate("window.__progressSeen = false")
    page.set_input_files("#file-input", files=[{"name": "note.txt", "mimeType": "text/plain", "buffer": text}])
    m = bob.expect(r"^alice: \[file\] note\.txt \(([^)]+)\) (https://127\.0\.0\.1:\d+(/files/[^/\s]+/note\.txt))$")
    txt_path = m.group(3)
    check(page.evaluate("window.__progressSeen"), "no visible #upload-progress during the text upload")
    link = page.locator("#log a.file").filter(has_text=re.compile(r"^note\.txt$"))
    expect(link).to_have_count(1)
    href = link.evaluate("a => ({origin: new URL(a.href).origin, path: new URL(a.href).pathname, here: location.origin})")
    check(href["origin"] == href["here"] and href["path"] == txt_path, f"link should be same-origin {txt_path}: {href}")
    expect(page.locator("#log img.thumb[alt='note.txt']")).to_have_count(0)
    got = page.evaluate(FETCH_BYTES, link.get_attribute("href"))
    check(got["status"] == 200 and base64.b64decode(got["b64"]) == text, f"the text fetched back differs: {got}")
    # The announcements are own messages, shown once each.
    expect(page.locator("#log .msg.own a.file")).to_have_count(2)

    # Dropping a file on the log uploads it too.
    def drop():
        page.evaluate("""() => {
            const dt = new DataTransfer();
            dt.items.add(new File(['dropped bytes'], 'drop.txt', {type: 'text/plain'}));
            const log = document.getElementById('log');
            for (const type of ['dragenter', 'dragover', 'drop'])
                log.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""")
        bob.expect(r"^alice: \[file\] drop\.txt \(", timeout=5)
        expect(page.locator("#log a.file").filter(has_text=re.compile(r"^drop\.txt$"))).to_have_count(1)

    env.soft("a file dropped on the log is uploaded", drop)

    # A name the protocol refuses (a space): uploaded under a fixed-up name.
    def spaced():
        page.set_input_files("#file-input", files=[
            {"name": "two words.txt", "mimeType": "text/plain", "buffer": b"spaced\n"}])
        bob.expect(r"^alice: \[file\] two\Swords\.txt \(", timeout=5)

    env.soft("a file named 'two words.txt' is uploaded (the protocol forbids the space)", spaced)


def html_injection(env):
    b, s = env.browser, env.server
    page, bob = alice_and_bob(env)
    lines = [
        "<img src=x onerror=alert(1)><b>bold</b>",
        "<script>alert(2)</script>",
        "javascript:alert(1)",
        "[click](javascript:alert(3))",
        "&lt;b&gt;not decoded&lt;/b&gt;",
        "W" * 3000,
        "مرحبا بالعالم — שלום עולם, and some English",
        "see https://example.com/safe?x=1 please",
    ]
    for line in lines:
        bob.send(line)
    say(page, "<i>mine</i> <u>too</u>")
    bob.expect(r"^alice: <i>mine</i> <u>too</u>$")
    expect(rows(page, who="bob")).to_have_count(len(lines))
    got = [r.evaluate("r => r.querySelector('.text').textContent") for r in rows(page, who="bob").all()]
    check(got == lines, f"lines should be shown literally, in order: {got!r}")
    mine = rows(page, cls="own").filter(has_text="mine")
    expect(mine).to_have_count(1)
    check(text_of(mine) == "<i>mine</i> <u>too</u>", f"own line not literal: {text_of(mine)!r}")
    for tag in ("img", "b", "script", "i", "u"):
        expect(page.locator(f"#log {tag}")).to_have_count(0)
    # Exactly one link: the https URL (so links do work), safe attributes.
    links = page.locator("#log a")
    expect(links).to_have_count(1)
    expect(links).to_have_attribute("href", "https://example.com/safe?x=1")
    expect(links).to_have_attribute("target", "_blank")
    rel = links.get_attribute("rel") or ""
    check("noopener" in rel.split() and "noreferrer" in rel.split(), f"rel should be noopener noreferrer: {rel!r}")
    # No horizontal overflow from the long word.
    ov = page.evaluate("""() => {
        const log = document.getElementById('log');
        const rows = Array.from(log.querySelectorAll('.msg'));
        const lr = log.getBoundingClientRect();
        return {logScroll: log.scrollWidth, logClient: log.clientWidth,
                docScroll: document.documentElement.scrollWidth, inner: innerWidth,
                widest: Math.max(...rows.map(r => r.getBoundingClientRect().right)), logRight: lr.right};
    }""")
    check(ov["logScroll"] <= ov["logClient"] + 1, f"the log overflows horizontally: {ov}")
    check(ov["docScroll"] <= ov["inner"], f"the document overflows horizontally: {ov}")
    check(ov["widest"] <= ov["logRight"] + 1, f"a row sticks out of the log: {ov}")


TARGETS_JS = """() => {
    const bad = [], seen = [];
    for (const el of document.querySelectorAll('button, input, textarea, select')) {
        if (!el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})) continue;
        const r = el.getBoundingClientRect();
        if (r.width === 0 || r.height === 0) continue;
        // A closed drawer slid off-screen sideways is not tappable.
        if (r.right <= 0 || r.left >= innerWidth) continue;
        let w = r.width, h = r.height;
        const type = (el.getAttribute('type') || '').toLowerCase();
        if (type === 'checkbox' || type === 'radio') {
            // The label is part of a checkbox's target (WCAG 2.5.8).
            const l = el.closest('label') || (el.id && document.querySelector(`label[for="${el.id}"]`));
            if (l) { const lr = l.getBoundingClientRect(); w = Math.max(w, lr.width); h = Math.max(h, lr.height); }
        }
        seen.push(el.id || el.tagName.toLowerCase());
        const isButton = el.tagName === 'BUTTON' || ['button', 'submit', 'reset'].includes(type);
        const ok = isButton ? Math.min(w, h) >= 43.99 : h >= 43.99;
        if (!ok) bad.push(`${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}` +
            `[${(el.getAttribute('aria-label') || el.textContent || el.name || type).trim().slice(0, 30)}]` +
            ` ${w.toFixed(1)}x${h.toFixed(1)}`);
    }
    return {bad, seen};
}"""


def small_targets(page, at_least, where):
    """The visible controls under 44 px; fails if fewer than `at_least`
    controls were even looked at (a check that saw nothing proves nothing)."""
    r = page.evaluate(TARGETS_JS)
    check(len(r["seen"]) >= at_least, f"{where}: only {r['seen']} checked for size")
    log(f"{where}: sizes checked for {r['seen']}")
    return r["bad"]

IN_VIEW_JS = """el => {
    if (!el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})) return false;
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && r.left >= -1 && r.right <= innerWidth + 1 &&
           r.top >= -1 && r.bottom <= innerHeight + 1;
}"""


def phone_viewport(env):
    b, s = env.browser, env.server
    ctx = b.context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                    device_scale_factor=3)
    page = b.page(ctx)
    goto(page, s)
    expect_login_view(page)
    width = lambda: page.evaluate("document.documentElement.scrollWidth")  # noqa: E731
    check(width() <= 390, f"login view wider than the phone: scrollWidth {width()}")
    bad = small_targets(page, 5, "login view")
    check(not bad, f"login view: touch targets under 44 px: {bad}")

    signup(page, "alice", PW)
    env.line("bob", BOB_PW)
    check(width() <= 390, f"chat view wider than the phone: scrollWidth {width()}")
    box = composer(page)
    expect(box).to_be_visible()
    check(box.evaluate(IN_VIEW_JS), "the composer is not inside the phone's viewport")
    check(page.get_by_role("button", name="Send", exact=True).evaluate(IN_VIEW_JS), "Send not in view")
    nav = page.get_by_role("navigation", name="Conversations", include_hidden=True)
    check(not nav.evaluate(IN_VIEW_JS), "the sidebar should be a closed drawer on a phone")
    bad = small_targets(page, 5, "chat view")
    check(not bad, f"chat view: touch targets under 44 px: {bad}")

    rooms_button = page.get_by_role("button", name="Rooms", exact=True)
    expect(rooms_button).to_be_visible()
    rooms_button.tap()
    wait_until(lambda: nav.evaluate(IN_VIEW_JS), "the drawer to open inside the viewport")
    expect(page.get_by_role("navigation", name="Conversations")).to_be_visible()
    expect(member(page, "bob")).to_be_visible()
    check(page.get_by_label("Join or create a room").evaluate(IN_VIEW_JS), "join input not in the open drawer")
    bad = small_targets(page, 8, "open drawer")
    check(not bad, f"open drawer: touch targets under 44 px: {bad}")
    check(width() <= 390, f"open drawer wider than the phone: scrollWidth {width()}")

    # The web app manifest.
    man = page.locator("link[rel=manifest]")
    expect(man).to_have_count(1)
    for url in (man.evaluate("l => l.href"), s.origin + "/manifest.webmanifest"):
        r = ctx.request.get(url)
        check(r.status == 200, f"{url}: HTTP {r.status}")
        try:
            data = json.loads(r.text())
        except ValueError as e:
            raise Failure(f"{url} is not JSON: {e}: {r.text()[:200]!r}")
        check(isinstance(data.get("name"), str) and data["name"], f"manifest without a name: {data}")
        icons = data.get("icons")
        check(isinstance(icons, list) and icons, f"manifest without icons: {data}")
        for icon in icons:
            iu = page.evaluate("([s, base]) => new URL(s, base).href", [icon.get("src", ""), url])
            ir = ctx.request.get(iu)
            check(ir.status == 200 and len(ir.body()) > 0, f"manifest icon {iu}: HTTP {ir.status}")


def harness_selftest():
    """The harness's detectors really fail: console errors, page errors and
    dialogs are recorded; the WebSocket-failure filter only works inside its
    window; waits and line expectations time out; row and conversation
    matching is exact."""
    import socket
    import threading

    b = Browser()
    try:
        page = b.page(b.context(), "self")
        page.set_content("<div id=log></div>")
        page.evaluate("console.error('boom')")
        wait_until(lambda: b.errors, "console.error to be recorded")
        try:
            b.check_no_errors()
            raise AssertionError("check_no_errors passed with an error recorded")
        except Failure:
            pass
        b.errors.clear()
        page.evaluate("setTimeout(() => { throw new Error('uncaught') }, 0)")
        wait_until(lambda: any("uncaught" in t for _, t in b.errors), "a page error to be recorded")
        b.errors.clear()
        page.evaluate("setTimeout(() => alert(1), 0)")
        wait_until(lambda: any("dialog" in t for _, t in b.errors), "a dialog to be recorded")
        b.errors.clear()
        msg = "WebSocket connection to 'wss://127.0.0.1:1/ws' failed: x"
        page.evaluate("m => console.error(m)", msg)
        wait_until(lambda: b.errors, "a WebSocket failure outside the window to count")
        b.errors.clear()
        with b.expected_ws_failures():
            page.evaluate("m => console.error(m)", msg)
            wait_until(lambda: b.ignored, "the WebSocket failure to be ignored inside the window")
            page.evaluate("console.error('other')")
            wait_until(lambda: b.errors, "another error inside the window to count")
        b.errors.clear()

        page.set_content("""<div id=log>
            <div class="msg own"><span class=who>al</span><span class=text>hi there</span></div>
            <div class="msg"><span class=who>bob</span><span class=text>hi</span></div></div>
            <div id=rooms><button class=conv>#lobby</button><button class=conv>#rust<span class=unread>3</span></button>
            <button class=conv>#rust3</button></div>""")
        check(rows(page, "hi").count() == 1 and rows(page, "hi there", cls="own").count() == 1
              and rows(page, "hi", who="al").count() == 0, "rows() matching is not exact")
        check(conv(page, "#rust")["unread"] == "3" and conv(page, "#rust3")["unread"] == ""
              and conv(page, "#rus") is None, f"conv() matching is wrong: {convs(page)}")
        check(not b.errors, f"unexpected errors: {b.errors}")
    finally:
        b.close()

    try:
        wait_until(lambda: False, "nothing", timeout=0.3)
        raise AssertionError("wait_until did not time out")
    except Failure:
        pass

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def peer():
        c, _ = srv.accept()
        c.sendall(b"hello\nworld\n")
        c.recv(100)
        c.close()

    threading.Thread(target=peer, daemon=True).start()
    c = LineClient(srv.getsockname()[1], name="fake")
    c.expect(r"^hello$")
    try:
        c.expect(r"^hell$", timeout=0.5)  # "world" is skipped, then nothing
        raise AssertionError("expect matched a line it should not have")
    except Failure:
        pass
    c.send("bye")
    try:
        c.expect(r"^anything$", timeout=5)
        raise AssertionError("expect did not see the close")
    except Failure as e:
        check("closed" in str(e), f"expected a close failure: {e}")
    c.close()
    log("harness self-test ok")


# --------------------------------------------------------------------------
# Notifications, keyboard, zoom, failures mid-way, spoofing.

# Records every Notification the page makes (then makes the real one), and
# lets a scenario hide and show the tab: document.hidden and
# visibilityState follow window.__setHidden, with a visibilitychange event.
RECORD_NOTIFY = """
(() => {
    window.__notes = [];
    const Real = window.Notification;
    function Recording(title, options) {
        window.__notes.push({title, body: (options && options.body) || ''});
        try { return new Real(title, options); } catch (e) { return {close() {}}; }
    }
    Object.defineProperty(Recording, 'permission', {get: () => Real.permission});
    Recording.requestPermission = (...a) => Real.requestPermission(...a);
    window.Notification = Recording;
    let hidden = false;
    Object.defineProperty(Document.prototype, 'hidden', {configurable: true, get: () => hidden});
    Object.defineProperty(Document.prototype, 'visibilityState', {
        configurable: true, get: () => (hidden ? 'hidden' : 'visible')});
    window.__setHidden = (h) => { hidden = h; document.dispatchEvent(new Event('visibilitychange')); };
})();
"""


def notifications(env):
    """With the tab hidden: a private message and a mention notify, a plain
    line does not; the title counts what is unread; showing the tab clears
    the count of the conversation shown, and nothing notifies while it is
    visible."""
    b, s = env.browser, env.server
    ctx = b.context()
    ctx.grant_permissions(["notifications"], origin=s.origin)
    ctx.add_init_script(RECORD_NOTIFY)
    page = b.page(ctx)
    goto(page, s)
    signup(page, "alice", PW)
    check(page.evaluate("Notification.permission") == "granted", "notifications not granted in the context")
    expect(page.get_by_role("button", name="Enable notifications")).to_be_hidden()
    bob = env.line("bob", BOB_PW)
    expect(member(page, "bob")).to_be_visible()
    expect(page).to_have_title("NeoChat")

    page.evaluate("window.__setHidden(true)")
    bob.send("just chatting")
    expect(page).to_have_title("(1) NeoChat")
    bob.send("hey alice, look at this")
    expect(page).to_have_title("(2) NeoChat")
    bob.send("/msg alice psst")
    expect(page).to_have_title("(3) NeoChat")
    wait_conv(page, "@bob", lambda c: c["unread"] == "1", "@bob unread 1")
    notes = wait_until(lambda: (lambda n: n if len(n) >= 2 else None)(page.evaluate("window.__notes")),
                       "two notifications (the mention and the private message)")
    log(f"notifications: {notes}")
    env.soft("the mention notifies, with the sender and the room",
             lambda: check(any("bob" in n["title"] and "#lobby" in n["title"] and n["body"] == "hey alice, look at this"
                               for n in notes), f"{notes}"))
    env.soft("the private message notifies as @bob",
             lambda: check(any(n["title"] == "@bob" and n["body"] == "psst" for n in notes), f"{notes}"))
    env.soft("a plain line does not notify",
             lambda: check(not any("just chatting" in n["body"] for n in notes), f"{notes}"))
    check(len(notes) == 2, f"exactly two notifications: {notes}")

    # Back to the tab: the lobby (shown) is read, @bob is not.
    page.evaluate("window.__setHidden(false)")
    expect(page).to_have_title("(1) NeoChat")
    wait_conv(page, "#lobby", lambda c: c["unread"] in ("", "0"), "#lobby read once the tab shows")
    bob.send("alice, still there?")
    bob.send("/msg alice again")
    expect(rows(page, "alice, still there?", who="bob")).to_have_count(1)
    wait_conv(page, "@bob", lambda c: c["unread"] == "2", "@bob unread 2")
    expect(page).to_have_title("(2) NeoChat")
    check(len(page.evaluate("window.__notes")) == 2, "a notification while the tab is visible")
    open_conv(page, "@bob")
    expect(page).to_have_title("NeoChat")


def drag_and_drop_upload(env):
    """Files dragged over the page show the drop hint; dropped on the log
    they are uploaded and announced in the room; in a private conversation
    nothing is uploaded."""
    s = env.server
    page, bob = alice_and_bob(env)
    png = base64.b64encode(png_bytes()).decode()
    drag = """([types, png]) => {
        const dt = new DataTransfer();
        const bytes = Uint8Array.from(atob(png), c => c.charCodeAt(0));
        dt.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
        dt.items.add(new File(['two\\n'], 'second.txt', {type: 'text/plain'}));
        const log = document.getElementById('log');
        for (const type of types)
            log.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
    }"""
    page.evaluate(drag, [["dragenter", "dragover"], png])
    expect(page.locator("#drop-hint")).to_be_visible()
    page.evaluate(drag, [["drop"], png])
    expect(page.locator("#drop-hint")).to_be_hidden()
    m = bob.expect(r"^alice: \[file\] dropped\.png \([^)]+\) https://127\.0\.0\.1:\d+(/files/[^/\s]+/dropped\.png)$")
    bob.expect(r"^alice: \[file\] second\.txt \(")
    img = page.locator("#log img.thumb[alt='dropped.png']")
    expect(img).to_have_count(1)
    wait_until(lambda: img.evaluate("i => i.complete && i.naturalWidth") == 3, "the dropped image's thumbnail")
    check(img.evaluate("i => new URL(i.src).pathname") == m.group(1), "thumbnail path")
    expect(page.locator("#log a.file").filter(has_text=re.compile(r"^second\.txt$"))).to_have_count(1)

    # In a private conversation: refused on the page, nothing announced.
    bob.send("/msg alice hi")
    open_conv(page, "@bob")
    page.evaluate(drag, [["dragenter", "dragover"], png])
    expect(page.locator("#drop-hint")).to_be_hidden()
    page.evaluate(drag, [["drop"], png])
    expect(page.locator("#log .msg.error").filter(has_text="rooms only")).to_have_count(1)
    bob.send("/history 5")
    got = bob.read_until(r"^\* end of history$")
    check(sum("[file]" in line for line in got) == 2, f"only the two room uploads in history: {got}")


def focused(page):
    return page.evaluate("""() => { const e = document.activeElement;
        return e ? {tag: e.tagName.toLowerCase(), id: e.id, cls: e.className, text: e.textContent.trim().slice(0, 60),
                    label: e.getAttribute('aria-label') || ''} : null; }""")


def tab_to(page, pred, what, limit=40, key="Tab"):
    """Presses Tab until the focused element satisfies pred(focused)."""
    for _ in range(limit):
        page.keyboard.press(key)
        f = focused(page)
        if f and pred(f):
            return f
    raise Failure(f"{what}: not reached with {limit} presses of {key} (last focus {focused(page)})")


def keyboard_only(env):
    """Sign up, send, switch conversations, open and close the member menu
    with the keyboard alone; focus never falls back to the page's body."""
    b, s = env.browser, env.server
    page = b.page(b.context())
    goto(page, s)
    expect_login_view(page)
    f = focused(page)
    check(f["id"] == "username", f"the username has the focus on the login form: {f}")
    page.keyboard.type("alice")
    page.keyboard.press("Tab")
    check(focused(page)["id"] == "password", f"Tab goes to the password: {focused(page)}")
    page.keyboard.type(PW)
    tab_to(page, lambda f: f["id"] == "signup-button", "Sign up")
    page.keyboard.press("Enter")
    expect_chat_view(page, "alice")
    bob = env.line("bob", BOB_PW)
    expect(member(page, "bob")).to_be_visible()

    tab_to(page, lambda f: f["id"] == "message", "the message box")
    page.keyboard.type("typed on the keyboard")
    page.keyboard.press("Enter")
    bob.expect(r"^alice: typed on the keyboard$")
    expect(composer(page)).to_have_value("")

    # Join a room from the keyboard, then switch back to the lobby.
    tab_to(page, lambda f: f["id"] == "join-input", "the join box", key="Shift+Tab")
    page.keyboard.type("rust")
    page.keyboard.press("Enter")
    expect(page.locator("#room-title")).to_have_text("#rust")
    tab_to(page, lambda f: "conv" in f["cls"] and f["text"].startswith("#lobby"), "#lobby", key="Shift+Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#room-title")).to_have_text("#lobby")
    f = focused(page)
    check(f["tag"] != "body", "focus fell to the body after switching conversations with Enter")
    check("conv" in f["cls"] and f["text"].startswith("#lobby"), f"focus stays on #lobby: {f}")
    # A line arriving elsewhere redraws the list: the focus stays.
    bob.send("/join #rust")
    bob.send("unread in rust")
    wait_conv(page, "#rust", lambda c: c["unread"] == "1", "#rust unread 1")
    f = focused(page)
    check("conv" in f["cls"] and f["text"].startswith("#lobby"), f"focus kept when the list redraws: {f}")
    page.keyboard.press("Tab")
    check(focused(page)["text"].startswith("#rust"), f"Tab goes on to #rust: {focused(page)}")
    page.keyboard.press("Enter")
    expect(page.locator("#room-title")).to_have_text("#rust")
    expect(rows(page, "unread in rust", who="bob")).to_have_count(1)

    # The member menu: Enter opens it on its first item, Escape closes it
    # and gives the focus back to the member.
    tab_to(page, lambda f: "member" in f["cls"] and f["text"] == "bob", "bob in the member list")
    page.keyboard.press("Enter")
    menu = page.get_by_role("menu")
    expect(menu).to_be_visible()
    check(focused(page)["text"] == "Message bob", f"the menu's first item has the focus: {focused(page)}")
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    check(focused(page)["text"] == "bob", f"Escape gives the focus back to bob: {focused(page)}")
    page.keyboard.press("Enter")
    expect(menu).to_be_visible()
    page.keyboard.press("Enter")
    expect(page.locator("#room-title")).to_have_text("@bob")
    check(focused(page)["id"] == "message", f"the message box has the focus in @bob: {focused(page)}")
    page.keyboard.type("private by keyboard")
    page.keyboard.press("Enter")
    bob.expect(r"^@alice: private by keyboard$")


WIDE_JS = """() => {
    const d = document.documentElement, log = document.getElementById('log');
    const wide = [];
    for (const el of document.querySelectorAll('body *')) {
        if (!el.checkVisibility({checkVisibilityCSS: true})) continue;
        const r = el.getBoundingClientRect();
        if (r.width && (r.right > innerWidth + 1 || r.left < -1)) wide.push(`${el.tagName}#${el.id}.${el.className} ${r.left | 0}..${r.right | 0}`);
    }
    return {doc: d.scrollWidth, inner: innerWidth, log: log.scrollWidth, logClient: log.clientWidth,
            wide: wide.slice(0, 8)};
}"""


def zoom_200(env):
    """200% zoom of a 1280x800 window (a 640x400 viewport at 2 device pixels
    a pixel): no horizontal scrolling anywhere, the composer in view, the
    sidebar a drawer that opens."""
    b, s = env.browser, env.server
    page = b.page(b.context(viewport={"width": 640, "height": 400}, device_scale_factor=2))
    goto(page, s)
    expect_login_view(page)

    def no_sideways(where):
        r = page.evaluate(WIDE_JS)
        check(r["doc"] <= r["inner"] and r["log"] <= r["logClient"] + 1 and not r["wide"],
              f"{where}: horizontal overflow: {r}")

    no_sideways("login view")
    page.get_by_role("button", name="Sign up", exact=True).click()
    expect(page.locator("#login-error")).not_to_be_empty()
    no_sideways("login view with an error")
    signup(page, "alice", PW)
    bob = env.line("bob", BOB_PW)
    expect(member(page, "bob")).to_have_count(1)
    bob.send("W" * 3000)
    bob.send("see https://example.com/" + "a" * 400)
    bob.send("مرحبا " * 200)
    expect(rows(page, who="bob")).to_have_count(3)
    no_sideways("chat view with long lines")
    check(composer(page).evaluate(IN_VIEW_JS), "the message box is not in view at 200%")
    check(page.get_by_role("button", name="Send", exact=True).evaluate(IN_VIEW_JS), "Send is not in view at 200%")
    page.get_by_role("button", name="Rooms", exact=True).click()
    nav = page.locator("#sidebar")
    wait_until(lambda: nav.evaluate(IN_VIEW_JS), "the drawer to open inside the viewport")
    no_sideways("open drawer")
    check("conv" in focused(page)["cls"], f"the open drawer has the focus: {focused(page)}")
    page.keyboard.press("Escape")
    wait_until(lambda: not nav.evaluate(IN_VIEW_JS), "Escape to close the drawer")
    env.soft("Escape gives the focus back to the Rooms button",
             lambda: check(focused(page)["id"] == "drawer-button", f"focus on {focused(page)}"))
    # Picking a conversation in the drawer closes it; the focus leaves it.
    page.get_by_role("button", name="Rooms", exact=True).click()
    wait_until(lambda: nav.evaluate(IN_VIEW_JS), "the drawer to open again")
    page.keyboard.press("Enter")
    wait_until(lambda: not nav.evaluate(IN_VIEW_JS), "choosing a conversation to close the drawer")
    env.soft("the focus is not left in the closed drawer",
             lambda: check(not nav.evaluate("n => n.contains(document.activeElement)")
                           and focused(page)["tag"] != "body", f"focus on {focused(page)}"))
    # Resized back to 100%: the sidebar is beside the log again.
    page.set_viewport_size({"width": 1280, "height": 800})
    wait_until(lambda: nav.evaluate(IN_VIEW_JS), "the sidebar shown at 1280 px")
    expect(page.get_by_role("button", name="Rooms", exact=True)).to_be_hidden()
    no_sideways("back at 100%")


def server_closes_mid_login(env):
    """The server dies right after the page sent the password: the form
    shows an error, keeps the username, and logs in once the server is
    back."""
    b, s = env.browser, env.server
    page = b.page(b.context())
    env.line("alice", PW, name="signup").close()
    killed = []

    def route(ws):
        server = ws.connect_to_server()

        def from_page(msg):
            if msg == PW and not killed:
                killed.append(1)
                s.proc.kill()  # a crash, with the password in flight
                s.proc.wait()
                s.proc = None
                return
            server.send(msg)

        ws.on_message(from_page)

    page.route_web_socket(re.compile(r"/ws$"), route)
    goto(page, s)
    with b.expected_ws_failures():
        expect_login_view(page)
        fill_credentials(page, "alice", PW)
        page.get_by_role("button", name="Log in", exact=True).click()
        wait_until(lambda: killed, "the page to send the password")
        err = page.locator("#login-error")
        expect(err).not_to_be_empty()
        log(f"login error shown: {err.text_content()!r}")
        expect_login_view(page)
        expect(page.get_by_label("Username", exact=True)).to_have_value("alice")
        expect(page.get_by_role("button", name="Log in", exact=True)).to_be_enabled()
        expect(page.locator("#status")).to_have_text(re.compile(r"^$|connection lost"))
        s.start()
    page.get_by_label("Password", exact=True).fill(PW)
    page.get_by_role("button", name="Log in", exact=True).click()
    expect_chat_view(page, "alice")


def draft_survives_reconnect(env):
    """The page's connection drops while the user is typing: the reconnect
    leaves the message box alone, and the draft is sent once back."""
    b = env.browser
    proxy = env.proxy()
    page = b.page(b.context())
    goto(page, proxy)
    signup(page, "alice", PW)
    bob = env.line("bob", BOB_PW)
    expect(member(page, "bob")).to_be_visible()
    box = composer(page)
    box.click()
    page.keyboard.type("half a thought")
    check(proxy.cut() >= 1, "the page had no connection through the proxy")
    bob.expect(r"^\* alice left$")
    page.keyboard.type(", typed while away")
    bob.expect(r"^\* alice joined$", timeout=30)
    expect(page.locator("#status")).to_have_text("")
    bob.sync()
    bob.send("are you back?")
    expect(rows(page, "are you back?", who="bob")).to_have_count(1)
    expect(box).to_have_value("half a thought, typed while away")
    page.keyboard.type(" and done")
    page.keyboard.press("Enter")
    bob.expect(r"^alice: half a thought, typed while away and done$")
    expect(box).to_have_value("")


def name_spoofing(env):
    """Users named like the server's own replies: "token" (`* token joined`,
    `/me SECRET` reads `* token SECRET`) must not replace the page's saved
    token, and "online" (`/me (2): x, y` reads `* online (2): x, y`) must
    not replace the member list. A /who typed by the user shows its answer."""
    b, s = env.browser, env.server
    page = b.page(b.context())
    goto(page, s)
    signup(page, "alice", PW)
    before = saved_token(page)
    tok = env.line("token", BOB_PW)
    expect(member(page, "token")).to_be_visible()
    mine = env.line("mallory", BOB_PW)
    mine.send("/token")
    theirs = mine.expect(r"^\* token (\S+)$").group(1)
    tok.send(f"/me {theirs}")
    online = env.line("online", BOB_PW)
    expect(member(page, "online")).to_be_visible()
    online.send("/me (2): ghost, phantom")
    expect(page.locator("#log .msg").filter(has_text="ghost, phantom")).to_have_count(1)
    expect(page.locator("#log .msg").filter(has_text=theirs)).to_have_count(1)
    after = json.loads(token_storage(page)["local"])
    check(after["token"] == before["token"], f"a user named 'token' replaced the saved token: {before} -> {after}")
    for name in ("alice", "token", "online", "mallory"):
        expect(member(page, name)).to_have_count(1)
    expect(member(page, "ghost")).to_have_count(0)
    say(page, "/who")
    # (Shown as a notice, or as a /me of "online": the line is the same.)
    expect(page.locator("#log .msg").filter(
        has_text=re.compile(r"online \(4\): alice, mallory, online, token"))).to_have_count(1)
    page.reload()
    expect_chat_view(page, "alice")
    expect(page.locator("#room-title")).to_have_text("#lobby")


def takeover(env):
    """Two tabs of one user both chat; four more sessions of that user take
    over the two oldest (the tabs), which say so and do not come back."""
    b, s = env.browser, env.server
    ctx = b.context()
    one = b.page(ctx, "one")
    goto(one, s)
    signup(one, "alice", PW)
    saved_token(one)
    two = b.page(ctx, "two")
    goto(two, s)
    expect_chat_view(two, "alice")
    bob = env.line("bob", BOB_PW)
    expect(member(one, "bob")).to_have_count(1)
    expect(member(two, "bob")).to_have_count(1)
    say(one, "from tab one")
    bob.expect(r"^alice: from tab one$")
    expect(rows(two, "from tab one", who="alice", cls="own")).to_have_count(1)
    bob.send("to both")
    expect(rows(one, "to both", who="bob")).to_have_count(1)
    expect(rows(two, "to both", who="bob")).to_have_count(1)
    lines = [env.line("alice", PW, register=False, name=f"alice{i}") for i in range(4)]
    for page in (one, two):
        expect(page.locator("#status")).to_contain_text("logged in elsewhere")
    composer(one).fill("after the takeover")
    composer(one).press("Enter")
    expect(composer(one)).to_have_value("after the takeover")
    one.wait_for_timeout(2500)  # longer than the first reconnect delay
    for c in lines:
        c.send("/rooms")
        m = c.expect(r"^(\* rooms \(|! logged in from another connection)")
        check(m.group(1).startswith("*"), f"{c.name} was taken over: the page came back")
    bob.send("/who")
    bob.expect(r"^\* online \(2\): alice, bob$")


harness_selftest.no_env = True

SCENARIOS = {f.__name__: f for f in [
    harness_selftest, signup_and_login, chat_with_line_client, private_message, rooms,
    catch_up_after_reconnect, catch_up_same_page, reload_after_restart, logout, logout_after_password_login,
    stale_token, long_log, upload_and_download,
    html_injection, phone_viewport, notifications, drag_and_drop_upload, keyboard_only, zoom_200,
    server_closes_mid_login, draft_survives_reconnect, name_spoofing, takeover,
]}

if __name__ == "__main__":
    sys.exit(run(SCENARIOS, sys.argv))
