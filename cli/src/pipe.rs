//! A closed standard output (`artifacts completions bash | head -3`, `artifacts builds ls | head -1`)
//! ends the program quietly, as it ends `cat`, instead of a panic (`println!` panics when it cannot
//! write) or an error message. Exit status 141, what a shell shows for a program SIGPIPE stopped.
//!
//! SIGPIPE itself stays ignored (Rust's default): writes to a socket the gateway closed, e.g. an upload
//! it refused with 413, must fail with an error the client reports, not kill it.

/// The status of a program stopped by SIGPIPE, as a shell shows it.
const CLOSED_PIPE_STATUS: i32 = 128 + libc::SIGPIPE;

/// Installs the panic hook that turns a failed write to a closed standard output into a quiet exit.
pub fn quiet_on_closed_output() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if (message.contains("Broken pipe") || message.contains("BrokenPipe")) && output_closed() {
            std::process::exit(CLOSED_PIPE_STATUS);
        }
        default(info);
    }));
}

/// Whether `err` is a write to a closed standard output (or error): exits quietly if so.
pub fn exit_if_closed_output(err: &anyhow::Error) {
    let broken_pipe = err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe && output_closed() {
        std::process::exit(CLOSED_PIPE_STATUS);
    }
}

/// Whether standard output or error is a pipe (or socket) nobody reads any more.
fn output_closed() -> bool {
    [1, 2].into_iter().any(closed)
}

/// Whether `fd` is a pipe (or socket) whose reader is gone.
fn closed(fd: i32) -> bool {
    let mut poll = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd, no timeout.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready == 1 && poll.revents & libc::POLLERR != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_without_reader_is_closed_output() {
        let mut fds = [0; 2];
        // SAFETY: a two-int array for pipe(2).
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        assert!(!closed(fds[1]), "a pipe with a reader is open");
        unsafe { libc::close(fds[0]) };
        assert!(closed(fds[1]), "without its reader it is closed");
        unsafe { libc::close(fds[1]) };
    }
}
