// Runs before the page's first paint (a small classic script in <head>; the
// app itself is a deferred module). A browser that holds a login token goes
// straight to the chat, so the login form is not painted only to vanish a
// moment later; every other visitor sees the form at once, without waiting
// for the app.
try {
  if (localStorage.getItem("neochat.token") || sessionStorage.getItem("neochat.token")) {
    document.documentElement.classList.add("remembered");
  }
} catch {
  // Storage refused (a privacy mode): the form shows, as for a new visitor.
}
