//! The few raw terminal operations the client needs beyond rustyline and
//! rpassword: remembering and restoring the terminal mode, reading a hidden
//! password without a window where it could echo, and the screen width.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;

/// The terminal mode of stdin when the client started, to put back if the
/// process must exit while rustyline has the terminal in raw mode (the
/// server closed the connection under the user's prompt).
pub struct SavedMode(Option<libc::termios>);

impl SavedMode {
    pub fn capture() -> SavedMode {
        let mut mode = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr fills `mode` when it returns 0.
        let ok = unsafe { libc::tcgetattr(libc::STDIN_FILENO, mode.as_mut_ptr()) } == 0;
        // SAFETY: initialised by the successful call above.
        SavedMode(ok.then(|| unsafe { mode.assume_init() }))
    }

    /// Puts the terminal back as it was and turns off bracketed paste, which
    /// rustyline switches on while it edits a line.
    pub fn restore(&self) {
        if let Some(mode) = &self.0 {
            // SAFETY: plain syscall with a termios we read from this fd.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, mode) };
            let off = b"\x1b[?2004l";
            // SAFETY: writes a static buffer to stdout.
            unsafe { libc::write(libc::STDOUT_FILENO, off.as_ptr().cast(), off.len()) };
        }
    }
}

unsafe extern "C" {
    // POSIX; the libc crate does not bind it.
    fn tzset();
}

/// Reads the local time zone (TZ, /etc/localtime) once, before any thread
/// starts: `localtime_r` alone need not.
pub fn init_time_zone() {
    // SAFETY: called from main before other threads exist.
    unsafe { tzset() };
}

/// Whether a terminal is there to ask a password on (`/dev/tty`, which is
/// what rpassword reads, whatever stdin is).
pub fn has_tty() -> bool {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_ok()
}

/// Shows `prompt` on the terminal and reads a password that is never
/// echoed.
///
/// rpassword writes the prompt first and only then turns echo off, so keys
/// typed right after the prompt appears could still be echoed; echo is
/// turned off here before the prompt. SIGINT is ignored meanwhile because
/// rpassword answers Ctrl-C by raising it, which would kill the process
/// with echo still off; ignored, it comes back as `ErrorKind::Interrupted`
/// after rpassword has restored the terminal.
pub fn read_password(prompt: &str) -> io::Result<String> {
    let tty = OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let fd = tty.as_raw_fd();
    let mut mode = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr fills `mode` when it returns 0.
    if unsafe { libc::tcgetattr(fd, mode.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful call above.
    let original = unsafe { mode.assume_init() };
    let mut quiet = original;
    quiet.c_lflag &= !(libc::ECHO | libc::ECHONL);
    // SAFETY: plain syscalls on our own terminal and signal disposition.
    let old_handler = unsafe {
        libc::tcsetattr(fd, libc::TCSANOW, &quiet);
        libc::signal(libc::SIGINT, libc::SIG_IGN)
    };
    let result = rpassword::prompt_password(prompt);
    // SAFETY: as above, putting back what was there.
    unsafe {
        libc::tcsetattr(fd, libc::TCSANOW, &original);
        libc::signal(libc::SIGINT, old_handler);
    }
    result
}

/// The width of the terminal on stdout, if it is one.
pub fn columns() -> Option<usize> {
    let mut size = std::mem::MaybeUninit::<libc::winsize>::uninit();
    // SAFETY: TIOCGWINSZ fills a winsize when it returns 0.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, size.as_mut_ptr()) } == 0;
    if !ok {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let cols = unsafe { size.assume_init() }.ws_col;
    (cols > 0).then_some(usize::from(cols))
}

/// How many screen rows rustyline used for `prompt` + `line` once Enter was
/// pressed, counting the row the cursor moved to: a line that exactly fills
/// its last row pushes the cursor onto one more.
pub fn rows_used(width: usize, columns: usize) -> usize {
    width / columns.max(1) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows() {
        assert_eq!(rows_used(0, 80), 1);
        assert_eq!(rows_used(79, 80), 1);
        assert_eq!(rows_used(80, 80), 2);
        assert_eq!(rows_used(81, 80), 2);
        assert_eq!(rows_used(160, 80), 3);
        assert_eq!(rows_used(5, 0), 6);
    }
}
